"""Read models for support: `GET /v1/customers/{customer_id}`."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from stripe_lifecycle.models import Customer, CustomerPublic

from .deps import SessionDep, SupportKey

router = APIRouter(prefix="/v1", tags=["customers"])


@router.get("/customers/{customer_id}", response_model=CustomerPublic)
async def get_customer(customer_id: str, session: SessionDep, _role: SupportKey) -> CustomerPublic:
    customer = await session.get(Customer, customer_id)
    if customer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no customer {customer_id}")
    return CustomerPublic.model_validate(customer, from_attributes=True)
