"""Finding customers by what support is told: an email address, matched in the database
(Temporal does not index emails unless LIFECYCLE_INDEX_EMAIL is set)."""

from __future__ import annotations

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.storage.models import Customer

# The email column's length: a longer address matches no customer.
EMAIL_MAX_LENGTH = 512


async def customers_by_email(session: AsyncSession, email: str) -> list[Customer]:
    """The customers whose email is `email`, ignoring case (Stripe keeps the case the
    customer typed; people do not), oldest id first. Several Stripe customers can share an
    address."""
    found = await session.execute(customers_by_email_statement(email))
    return list(found.scalars())


def customers_by_email_statement(email: str) -> Select[Customer]:
    """The lookup's query: `lower(email)`, as the `ix_customers_email_lower` index holds."""
    return (
        select(Customer)
        .where(func.lower(col(Customer.email)) == email.strip().lower())
        .order_by(col(Customer.customer_id))
    )
