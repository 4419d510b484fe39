"""Support's view of a customer, and stopping a customer's dunning."""

import logging
from datetime import timedelta

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError

from stripe_lifecycle.api.deps import TEMPORAL_UNREACHABLE, SessionDep, SupportKey, TemporalDep
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.lifecycles import INVOICE_LIFECYCLES
from stripe_lifecycle.storage.models import Customer, CustomerPublic, LifecyclePublic, SupportAction
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.engine import CancelRequest, LifecycleWorkflow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["customers"])

# Support waits for this page: without a worker the outcomes are left out, not waited for.
OUTCOME_QUERY_TIMEOUT = timedelta(seconds=3)


async def _lifecycles(
    temporal: TemporalDep, customer_id: str, running_only: bool = False
) -> list[LifecyclePublic]:
    customer = contract.visibility_literal(customer_id)
    query = f"CustomerId = {customer} AND WorkflowType != 'CustomerWorkflow'"
    if running_only:
        query += " AND ExecutionStatus = 'Running'"
    found: list[LifecyclePublic] = []
    async for execution in temporal.list_workflows(query):
        attrs = execution.typed_search_attributes
        status_name = (
            execution.status.name.lower()
            if isinstance(execution.status, WorkflowExecutionStatus)
            else "unknown"
        )
        found.append(
            LifecyclePublic(
                workflow_id=execution.id,
                lifecycle=attrs.get(contract.LIFECYCLE) or execution.workflow_type,
                automation=attrs.get(contract.AUTOMATION),
                status=status_name,
            )
        )
    return found


@router.get("/customers/{customer_id}", response_model=CustomerPublic)
async def get_customer(
    customer_id: str, session: SessionDep, temporal: TemporalDep, _caller: SupportKey
) -> CustomerPublic:
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no customer {customer_id}")
    public = CustomerPublic.model_validate(customer, from_attributes=True)
    try:
        public.lifecycles = await _lifecycles(temporal, customer_id)
    except TEMPORAL_UNREACHABLE as exc:
        # The snapshot is still worth showing while Temporal is unreachable.
        log.warning("listing the lifecycles of %s failed: %s", customer_id, exc)
        return public
    try:
        outcomes = {
            ref.workflow_id: ref.status
            for ref in await temporal.get_workflow_handle_for(
                CustomerWorkflow.run, ids.customer_workflow_id(customer_id)
            ).query(CustomerWorkflow.lifecycles, rpc_timeout=OUTCOME_QUERY_TIMEOUT)
        }
    except (*TEMPORAL_UNREACHABLE, WorkflowQueryFailedError) as exc:
        # The query needs a worker; Temporal's own status is shown without it.
        log.warning("the lifecycle outcomes of %s are unavailable: %s", customer_id, exc)
        return public
    for lifecycle in public.lifecycles:
        lifecycle.outcome = outcomes.get(lifecycle.workflow_id)
    return public


class CancelDunning(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class CancelledDunning(BaseModel):
    cancelled: list[str]


class UnknownCustomer(LookupError):
    """No customer with that id: there is nothing to cancel."""


async def stop_dunning(
    session: AsyncSession, temporal: Client, customer_id: str, reason: str, actor: str
) -> list[str]:
    """Stop every running dunning and payment-confirmation sequence of the customer and
    record who did it and why (also when nothing was running). Answers the workflow ids
    that actually stopped; raises `UnknownCustomer` for an unknown customer. Shared by the
    API and the dashboard."""
    if await session.get(Customer, customer_id) is None:
        raise UnknownCustomer(customer_id)
    cancelled: list[str] = []
    for lifecycle in await _lifecycles(temporal, customer_id, running_only=True):
        if lifecycle.lifecycle not in INVOICE_LIFECYCLES:
            continue
        handle = temporal.get_workflow_handle(lifecycle.workflow_id)
        try:
            result = await handle.execute_update(
                LifecycleWorkflow.cancel, CancelRequest(reason=reason, actor=actor)
            )
        except (WorkflowUpdateFailedError, RPCError) as exc:
            # It ended between the listing and the update: nothing left to stop.
            log.info("dunning %s was not cancelled: %s", lifecycle.workflow_id, exc)
            continue
        cancelled.append(result.workflow_id)
    session.add(
        SupportAction(
            customer_id=customer_id,
            action="dunning.cancel",
            actor=actor,
            reason=reason,
            workflow_ids=cancelled,
        )
    )
    await session.commit()
    return cancelled


@router.post("/customers/{customer_id}/dunning/cancel")
async def cancel_dunning(
    customer_id: str,
    body: CancelDunning,
    session: SessionDep,
    temporal: TemporalDep,
    caller: SupportKey,
) -> CancelledDunning:
    """Stop every running dunning and payment-confirmation sequence of this customer;
    answers with what actually stopped."""
    try:
        cancelled = await stop_dunning(session, temporal, customer_id, body.reason, str(caller))
    except UnknownCustomer:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"no customer {customer_id}"
        ) from None
    return CancelledDunning(cancelled=cancelled)
