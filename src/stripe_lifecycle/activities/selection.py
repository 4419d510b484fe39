"""Which automation runs for a trigger, and when its mail may go out: decided from the
definitions and settings the worker loaded, and recorded in the workflow's history."""

import dataclasses
from collections.abc import Sequence
from datetime import UTC

from temporalio import activity

from stripe_lifecycle.activities.interface import (
    Automations,
    ChooseAutomation,
    EventTriggers,
    EventTriggersRequest,
    SendTimeRequest,
)
from stripe_lifecycle.domain.automations import Automation, MatchContext, select
from stripe_lifecycle.domain.send_windows import SendWindow, next_send_time, zone_for


def trigger_event_types(automations: Sequence[Automation]) -> list[str]:
    """The event types enabled `event` automations start on, sorted."""
    return sorted({a.trigger_event for a in automations if a.enabled and a.trigger_event})


class AutomationActivities(Automations):
    def __init__(
        self,
        automations: list[Automation],
        *,
        default_window: SendWindow | None = None,
        default_timezone: str = "UTC",
    ) -> None:
        self._automations = automations
        self._default_window = default_window
        self._default_timezone = default_timezone

    @activity.defn(name="choose_automation")
    async def choose_automation(self, trigger: ChooseAutomation) -> Automation | None:
        """The automation to run, as a snapshot the workflow keeps for its whole life.

        An activity, not workflow code: the definitions are a file the worker read, and
        the choice is recorded in history so replays and later edits cannot change it.
        """
        return self.choose(trigger)

    def choose(self, trigger: ChooseAutomation) -> Automation | None:
        """The automation a trigger runs (`select`), with the send window in force now when
        it names none: `choose_automation`'s answer, and `Segments.store_batch`'s."""
        context = MatchContext(
            livemode=trigger.livemode,
            subscription_periods=trigger.subscription_periods,
            invoice_amount=trigger.invoice_amount,
            currency=trigger.currency,
            product_ids=trigger.product_ids,
            price_ids=trigger.price_ids,
            plan=trigger.plan,
            cancellation_reason=trigger.cancellation_reason,
            customer_metadata=trigger.customer_metadata,
            invoice_metadata=trigger.invoice_metadata,
            segments=trigger.segments,
            collection_method=trigger.collection_method,
        )
        chosen = select(
            self._automations,
            trigger.lifecycle,
            context,
            segment=trigger.segment,
            existing=trigger.existing,
            event_type=trigger.event_type,
        )
        if chosen is None or chosen.send_window is not None or chosen.any_time:
            return chosen
        # The snapshot carries the window in force now: a later change of the setting does
        # not move the mail of a running instance either.
        return dataclasses.replace(chosen, send_window=self._default_window)

    @activity.defn(name="event_triggers")
    async def event_triggers(
        self,
        request: EventTriggersRequest,  # noqa: ARG002 (one dataclass in)
    ) -> EventTriggers:
        """A local activity: the definitions are the worker's, the answer is recorded."""
        return EventTriggers(trigger_event_types(self._automations))

    @activity.defn(name="send_time")
    async def send_time(self, request: SendTimeRequest) -> str:
        """When (ISO 8601) mail due at `due` may go out in the customer's zone. A local
        activity: the zone database is the worker's, and the answer is recorded for
        replays."""
        zone = zone_for(request.timezone, request.country, self._default_timezone)
        due = request.due if request.due.tzinfo else request.due.replace(tzinfo=UTC)
        return next_send_time(due, request.window, zone).isoformat()
