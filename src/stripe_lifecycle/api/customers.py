"""Support's view of a customer, stopping a customer's dunning, and erasing a customer's
personal data."""

import asyncio
import logging
import time
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DeleteWorkflowExecutionRequest
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from stripe_lifecycle.api.deps import (
    TEMPORAL_UNREACHABLE,
    AdminKey,
    AppStateDep,
    CustomerId,
    SessionDep,
    SupportKey,
    TemporalDep,
)
from stripe_lifecycle.api.errors import ADMIN_ONLY, TEMPORAL_DOWN, UNPARSABLE_BODY, not_found
from stripe_lifecycle.domain import contract, ids
from stripe_lifecycle.domain.lifecycles import INVOICE_LIFECYCLES
from stripe_lifecycle.storage.erasure import erase_customer
from stripe_lifecycle.storage.lookup import EMAIL_MAX_LENGTH, customers_by_email
from stripe_lifecycle.storage.models import Customer, CustomerPublic, LifecyclePublic, SupportAction
from stripe_lifecycle.workflows.customer import CustomerWorkflow
from stripe_lifecycle.workflows.customer_messages import EraseRequest
from stripe_lifecycle.workflows.engine import CancelRequest, LifecycleWorkflow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["customers"])

# Support waits for this page: without a worker the outcomes are left out, not waited for.
OUTCOME_QUERY_TIMEOUT = timedelta(seconds=3)


async def _lifecycles(
    temporal: TemporalDep, customer_id: str, running_only: bool = False
) -> list[LifecyclePublic]:
    customer = contract.visibility_literal(customer_id)
    query = f"{contract.CUSTOMER_ID.name} = {customer} AND WorkflowType != 'CustomerWorkflow'"
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


class CustomerMatch(BaseModel):
    customer_id: str
    status: str
    deleted: bool
    # The customer's entity workflow, and where the Temporal Web UI shows it.
    workflow_id: str
    temporal_ui_url: str


class CustomerMatches(BaseModel):
    customers: list[CustomerMatch]


@router.get("/customers", response_model=CustomerMatches)
async def find_customers(
    email: Annotated[
        str,
        Query(
            min_length=1,
            max_length=EMAIL_MAX_LENGTH,
            description="an email address, matched exactly but ignoring case",
            examples=["ada@example.com"],
        ),
    ],
    session: SessionDep,
    state: AppStateDep,
    _caller: SupportKey,
) -> CustomerMatches:
    """The customers with this email, from the database: Temporal does not index emails
    unless LIFECYCLE_INDEX_EMAIL is set."""
    settings = state.settings
    return CustomerMatches(
        customers=[
            CustomerMatch(
                customer_id=c.customer_id,
                status=c.status,
                deleted=c.deleted,
                workflow_id=ids.customer_workflow_id(c.customer_id),
                temporal_ui_url=settings.temporal_ui_link(ids.customer_workflow_id(c.customer_id)),
            )
            for c in await customers_by_email(session, email)
        ]
    )


@router.get(
    "/customers/{customer_id}", response_model=CustomerPublic, responses=not_found("customer")
)
async def get_customer(
    customer_id: CustomerId, session: SessionDep, temporal: TemporalDep, _caller: SupportKey
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


@router.post(
    "/customers/{customer_id}/dunning/cancel",
    responses={**not_found("customer"), **UNPARSABLE_BODY, **TEMPORAL_DOWN},
)
async def cancel_dunning(
    customer_id: CustomerId,
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
    except TEMPORAL_UNREACHABLE as exc:
        log.warning("dunning cancel: Temporal unreachable: %s", exc)
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="Temporal is unreachable; nothing stopped"
        ) from exc
    return CancelledDunning(cancelled=cancelled)


class Erasure(BaseModel):
    customer_id: str
    # The lifecycles the erasure ended, and the workflow runs deleted from Temporal with
    # the personal data their histories held (`workflow_id/run_id`).
    ended: list[str]
    deleted_runs: list[str]
    # Messages whose address, subject and bodies were erased.
    messages_erased: int


# How long the erasure waits for the customer workflow to continue in a clean run.
NEW_RUN_WAIT = 10.0


@router.delete(
    "/customers/{customer_id}",
    response_model=Erasure,
    responses={**not_found("customer"), **ADMIN_ONLY, **TEMPORAL_DOWN},
)
async def erase_customer_data(
    customer_id: CustomerId, session: SessionDep, temporal: TemporalDep, caller: AdminKey
) -> Erasure:
    """Erase the customer's personal data (a data-erasure request): email, name, message
    addresses and bodies, raw payloads, the `CustomerEmail` search attribute and the
    Temporal histories that held them; the anonymous money figures stay. Recorded with
    who did it. 503 while Temporal is unreachable (nothing erased: ask again)."""
    if await session.get(Customer, customer_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no customer {customer_id}")
    actor = str(caller)
    entity = temporal.get_workflow_handle_for(
        CustomerWorkflow.run, ids.customer_workflow_id(customer_id)
    )
    ended: list[str] = []
    deleted: list[str] = []
    try:
        erased = await entity.execute_update(CustomerWorkflow.erase, EraseRequest(actor=actor))
        ended = erased.ended
        deleted = await _delete_histories(temporal, customer_id, erased.run_id)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise _temporal_unreachable(exc) from exc
        # No workflow ever ran for the customer: only the database holds their data.
    except TEMPORAL_UNREACHABLE as exc:
        raise _temporal_unreachable(exc) from exc
    messages = await erase_customer(session, customer_id, actor)
    await session.commit()
    log.info("personal data of %s erased by %s", customer_id, actor)
    return Erasure(
        customer_id=customer_id, ended=ended, deleted_runs=deleted, messages_erased=messages
    )


def _temporal_unreachable(exc: BaseException) -> HTTPException:
    log.warning("erasure: Temporal unreachable: %s", exc)
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, detail="Temporal is unreachable; nothing erased"
    )


async def _delete_histories(temporal: Client, customer_id: str, erased_run: str) -> list[str]:
    """Delete every workflow run of the customer except the clean one the customer
    workflow continued in: their histories hold the personal data."""
    entity_id = ids.customer_workflow_id(customer_id)
    current = await _clean_run(temporal, entity_id, erased_run)
    runs = {(entity_id, erased_run)}
    customer = contract.visibility_literal(customer_id)
    async for execution in temporal.list_workflows(f"{contract.CUSTOMER_ID.name} = {customer}"):
        runs.add((execution.id, execution.run_id or ""))
    deleted = []
    for workflow_id, run_id in sorted(runs):
        if (workflow_id, run_id) == (entity_id, current) or not run_id:
            continue
        try:
            await temporal.workflow_service.delete_workflow_execution(
                DeleteWorkflowExecutionRequest(
                    namespace=temporal.namespace,
                    workflow_execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
                )
            )
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        deleted.append(f"{workflow_id}/{run_id}")
    return deleted


async def _clean_run(temporal: Client, entity_id: str, erased_run: str) -> str:
    """The run the customer workflow continued in after the erasure; the erased run
    itself if it has not yet (it is then kept: deleting it would lose the customer)."""
    deadline = time.monotonic() + NEW_RUN_WAIT
    while time.monotonic() < deadline:
        run_id = (await temporal.get_workflow_handle(entity_id).describe()).run_id
        if run_id != erased_run:
            return run_id
        await asyncio.sleep(0.1)
    return erased_run
