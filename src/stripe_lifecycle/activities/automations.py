"""Which automation runs for a trigger: decided from the definitions the worker loaded."""

from dataclasses import dataclass, field

from temporalio import activity

from stripe_lifecycle.automations import Automation, MatchContext, select


@dataclass
class ChooseAutomation:
    lifecycle: str
    livemode: bool = False
    subscription_interval: str | None = None
    invoice_amount: int | None = None
    currency: str | None = None
    product_ids: list[str] = field(default_factory=list)
    price_ids: list[str] = field(default_factory=list)
    plan: str | None = None
    cancellation_reason: str | None = None
    customer_metadata: dict[str, str] = field(default_factory=dict)
    invoice_metadata: dict[str, str] = field(default_factory=dict)


class AutomationActivities:
    def __init__(self, automations: list[Automation]) -> None:
        self._automations = automations

    @activity.defn(name="choose_automation")
    async def choose_automation(self, trigger: ChooseAutomation) -> Automation | None:
        """The automation to run, as a snapshot the workflow keeps for its whole life.

        An activity, not workflow code: the definitions are a file the worker read, and
        the choice is recorded in history so replays and later edits cannot change it.
        """
        context = MatchContext(
            livemode=trigger.livemode,
            subscription_interval=trigger.subscription_interval,
            invoice_amount=trigger.invoice_amount,
            currency=trigger.currency,
            product_ids=trigger.product_ids,
            price_ids=trigger.price_ids,
            plan=trigger.plan,
            cancellation_reason=trigger.cancellation_reason,
            customer_metadata=trigger.customer_metadata,
            invoice_metadata=trigger.invoice_metadata,
        )
        return select(self._automations, trigger.lifecycle, context)
