"""`POST /webhooks/postmark`: what Postmark learnt about our mail after sending it.

Postmark signs nothing; its webhooks authenticate with HTTP basic auth set on the webhook
URL (`LIFECYCLE_POSTMARK_WEBHOOK_USER` / `_PASSWORD`). Until both are set every call is
refused with a 503, so a forgotten setting never leaves the endpoint open.

Each call carries one record, found among our messages by `Metadata.message_id` (which
the send path sets) or Postmark's `MessageID` (stored as the provider message id):

- `Delivery`: the message becomes `delivered`.
- `Bounce`: the message becomes `bounced`, its error naming the bounce type; a hard bounce
  (or an address Postmark deactivated) goes on the suppression list.
- `SpamComplaint`: the address goes on the suppression list.
- `SubscriptionChange`: Postmark suppressed the address on a message stream
  (`SuppressSending` true: a bounce, a complaint, an unsubscribe Postmark handled) or lifted
  that (false); the suppression list follows, stream by stream.
- `Open`, `Click` and anything else: recorded only (our own `/t/` links record clicks).

Every record is stored once in `message_events`; a redelivered webhook changes nothing.
Suppressions keep Postmark's per-stream meaning: one learnt on the broadcast (marketing)
stream stops marketing mail only, except a hard bounce, which stops everything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from stripe_lifecycle.api.deps import AppStateDep, SessionDep
from stripe_lifecycle.api.errors import UNPARSABLE_BODY, error
from stripe_lifecycle.settings import Settings
from stripe_lifecycle.storage.db import insert_for
from stripe_lifecycle.storage.models import (
    Message,
    MessageEvent,
    MessageStatus,
    Suppression,
    SuppressionScope,
)

router = APIRouter(tags=["webhooks"])

_basic = HTTPBasic(
    auto_error=False,
    description="LIFECYCLE_POSTMARK_WEBHOOK_USER and LIFECYCLE_POSTMARK_WEBHOOK_PASSWORD",
)

# The record types Postmark's webhooks send (Postmark's webhook docs), which we act on.
KNOWN_RECORD_TYPES = ("Delivery", "Bounce", "SpamComplaint", "Open", "Click", "SubscriptionChange")
RECORD_TYPE_PATTERN = r"^[A-Za-z]+$"
# Bounce types that say the address itself is dead (Postmark's `Type` values).
HARD_BOUNCE_TYPES = frozenset({"HardBounce", "BadEmailAddress"})
# What a message can have become once handed to Postmark, before a bounce reports on it.
_HANDED_OVER = (
    MessageStatus.SENT,
    MessageStatus.UNKNOWN,
    MessageStatus.DELIVERED,
    MessageStatus.BOUNCED,
)
# Bounce dumps and abuse reports can be large and hold the whole original email.
_NOT_STORED = {"Content"}


class PostmarkRecord(BaseModel):
    """The fields we read of Postmark's webhook records; the others are kept as sent."""

    model_config = ConfigDict(extra="allow")

    # Bounded as the columns they are stored in: a value that cannot be stored is refused
    # (422) rather than failing the database write (500). A type Postmark adds later is
    # recorded (a refusal would only make Postmark retry it for hours); one that is not a
    # word (empty, spaces, punctuation) is not Postmark's and is refused.
    RecordType: str = Field(
        min_length=1,
        max_length=32,
        pattern=RECORD_TYPE_PATTERN,
        description="Postmark's record type: " + ", ".join(KNOWN_RECORD_TYPES) + " are acted "
        "on; another word is recorded only",
        examples=list(KNOWN_RECORD_TYPES),
    )
    MessageID: str | None = Field(default=None, max_length=255)
    MessageStream: str | None = Field(default=None, max_length=64)
    # Postmark sends the Metadata the message was sent with (values of any JSON type).
    Metadata: dict[str, Any] | None = None
    # The address: `Recipient` in Delivery, Open, Click and SubscriptionChange records,
    # `Email` in Bounce and SpamComplaint records.
    Recipient: str | None = Field(default=None, max_length=512)
    Email: str | None = Field(default=None, max_length=512)
    # Bounce and SpamComplaint: Postmark's bounce id, type and whether it deactivated the
    # address.
    ID: int | None = None
    Type: str | None = None
    Description: str | None = None
    Details: str | None = None
    Inactive: bool = False
    # SubscriptionChange.
    SuppressSending: bool | None = None
    SuppressionReason: str | None = None
    # Click.
    OriginalLink: str | None = None
    # When it happened, by record type.
    DeliveredAt: str | None = None
    BouncedAt: str | None = None
    ReceivedAt: str | None = None
    ChangedAt: str | None = None


class PostmarkAck(BaseModel):
    record_type: str
    # Our message the record is about, if it could be matched.
    message_id: str | None
    # The same record came before: nothing changed.
    duplicate: bool


def postmark_credentials(
    state: AppStateDep,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(_basic)],
) -> None:
    user = state.settings.postmark_webhook_user
    password = state.settings.postmark_webhook_password
    if not user or password is None or not password.get_secret_value():
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail=(
                "LIFECYCLE_POSTMARK_WEBHOOK_USER and LIFECYCLE_POSTMARK_WEBHOOK_PASSWORD are "
                "not set; no Postmark webhook can be authenticated"
            ),
        )
    # Both compared every time, so timing does not reveal which one was wrong.
    right_user = credentials is not None and hmac.compare_digest(
        credentials.username.encode(), user.encode()
    )
    right_password = credentials is not None and hmac.compare_digest(
        credentials.password.encode(), password.get_secret_value().encode()
    )
    if not (right_user and right_password):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="wrong or missing credentials",
            headers={"WWW-Authenticate": 'Basic realm="postmark"'},
        )


@router.post(
    "/webhooks/postmark",
    dependencies=[Depends(postmark_credentials)],
    responses={
        **UNPARSABLE_BODY,
        401: error("wrong or missing basic auth credentials"),
        503: error("the webhook credentials are not configured"),
    },
)
async def postmark_webhook(
    record: PostmarkRecord, state: AppStateDep, session: SessionDep
) -> PostmarkAck:
    message = await _our_message(session, record)
    message_id = message.id if message is not None else None
    address = (record.Recipient or record.Email or "").strip().lower() or None
    if not await _store_once(session, record, message_id, address):
        return PostmarkAck(record_type=record.RecordType, message_id=message_id, duplicate=True)

    settings = state.settings
    stream = record.MessageStream or settings.postmark_message_stream
    kind = record.RecordType
    if kind == "Delivery" and message is not None:
        if message.status in (MessageStatus.SENT, MessageStatus.UNKNOWN):
            message.status = MessageStatus.DELIVERED
    elif kind == "Bounce":
        bounce_type = record.Type or "Unknown"
        if message is not None and message.status in _HANDED_OVER:
            message.status = MessageStatus.BOUNCED
            message.error = f"{bounce_type}: {record.Description or record.Details or 'bounced'}"
        if address and (bounce_type in HARD_BOUNCE_TYPES or record.Inactive):
            await _suppress(session, settings, address, stream, bounce_type, message_id)
    elif kind == "SpamComplaint" and address:
        await _suppress(session, settings, address, stream, "SpamComplaint", message_id)
    elif kind == "SubscriptionChange" and address and record.SuppressSending is not None:
        if record.SuppressSending:
            reason = record.SuppressionReason or "ManualSuppression"
            await _suppress(session, settings, address, stream, reason, message_id)
        else:
            await session.execute(
                delete(Suppression)
                .where(col(Suppression.email) == address)
                .where(col(Suppression.stream) == stream)
            )
    await session.commit()
    return PostmarkAck(record_type=kind, message_id=message_id, duplicate=False)


async def _our_message(session: AsyncSession, record: PostmarkRecord) -> Message | None:
    ours = (record.Metadata or {}).get("message_id")
    if isinstance(ours, str) and ours:
        message = await session.get(Message, ours)
        if message is not None:
            return message
    if not record.MessageID:
        return None
    found = await session.execute(
        select(Message).where(col(Message.provider_message_id) == record.MessageID).limit(1)
    )
    return found.scalar_one_or_none()


def _event_key(record: PostmarkRecord) -> str:
    """A digest of what identifies the event, so a redelivery has the same key."""
    kind = record.RecordType
    identity: list[Any]
    if kind in ("Bounce", "SpamComplaint") and record.ID is not None:
        identity = [kind, record.ID]
    elif kind == "Delivery":
        identity = [kind, record.MessageID, record.Recipient]
    elif kind == "Open":
        identity = [kind, record.MessageID, record.Recipient, record.ReceivedAt]
    elif kind == "Click":
        identity = [
            kind,
            record.MessageID,
            record.Recipient,
            record.OriginalLink,
            record.ReceivedAt,
        ]
    elif kind == "SubscriptionChange":
        identity = [
            kind,
            record.Recipient,
            record.MessageStream,
            record.ChangedAt,
            record.SuppressSending,
        ]
    else:
        identity = [record.model_dump(mode="json", exclude=_NOT_STORED)]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


async def _store_once(
    session: AsyncSession, record: PostmarkRecord, message_id: str | None, address: str | None
) -> bool:
    """Store the record; False when it was stored before (a redelivered webhook)."""
    when = record.DeliveredAt or record.BouncedAt or record.ReceivedAt or record.ChangedAt
    row = MessageEvent(
        event_key=_event_key(record),
        message_id=message_id,
        record_type=record.RecordType[:32],
        email=address,
        occurred_at=_timestamp(when),
        payload=record.model_dump(mode="json", exclude=_NOT_STORED),
    ).model_dump(exclude={"id"})
    insert = insert_for(session.get_bind().dialect.name)
    stored = await session.execute(
        insert(MessageEvent)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["event_key"])
        .returning(col(MessageEvent.id))
    )
    return stored.scalar_one_or_none() is not None


async def _suppress(
    session: AsyncSession,
    settings: Settings,
    address: str,
    stream: str,
    reason: str,
    message_id: str | None,
) -> None:
    # A dead address is dead on every stream; anything else stops what the stream carries.
    if reason in HARD_BOUNCE_TYPES or stream != settings.postmark_broadcast_stream:
        scope = SuppressionScope.ALL
    else:
        scope = SuppressionScope.MARKETING
    row = Suppression(
        email=address, stream=stream, scope=scope, reason=reason[:64], message_id=message_id
    ).model_dump(exclude={"id"})
    insert = insert_for(session.get_bind().dialect.name)
    await session.execute(
        insert(Suppression)
        .values(**row)
        .on_conflict_do_update(
            index_elements=["email", "stream"],
            set_={"scope": scope, "reason": row["reason"], "message_id": message_id},
            # Never narrow a suppression of everything to marketing mail only.
            where=col(Suppression.scope) != SuppressionScope.ALL,
        )
    )


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
