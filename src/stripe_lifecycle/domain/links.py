"""Signed tracking-link tokens (pure).

A token names a message and one of its link names, signed with HMAC-SHA256. The redirect
endpoint only ever sends the reader to the destination stored for that message under that
name, so a token cannot be made to point anywhere else (no open redirect), and a forged or
altered token is refused.

Every token issued now carries its issue time (whole seconds since the epoch), so a link
can expire: how long each kind of link lives is `LINK_LIFETIMES`, and `link_kind` says
which kind a message's link is. Tokens issued before the time was kept (sealed for the
bare purpose, without one) still read: their issue time is None, and the endpoint decides
(a tracked link is taken as issued when its message was sent; an unsubscribe link never
expires anyway).
"""

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# Stored destinations that are not URLs but resolved when the link is clicked: a Customer
# Portal session (made then, as they expire within minutes) and the hosted cancellation
# survey page.
PORTAL = "portal:"
HOSTED_SURVEY = "hosted:survey"

# 128 bits of the MAC: far beyond guessing, and keeps links short in email clients.
_MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, purpose: bytes, payload: bytes) -> bytes:
    # The purpose prefixes the MAC, so a token made for one use never passes for another.
    return hmac.new(secret, purpose + b":" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def seal(secret: bytes, purpose: bytes, payload: bytes) -> str:
    """`payload` made tamper-proof for one purpose (links, unsubscribes, sessions, ...)."""
    return f"{_b64(payload)}.{_b64(_mac(secret, purpose, payload))}"


def unseal(secret: bytes, purpose: bytes, token: str) -> bytes | None:
    """The payload of a genuine token sealed for `purpose`; None for anything else."""
    encoded, sep, signature = token.partition(".")
    if not sep:
        return None
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (ValueError, TypeError):
        return None
    # Only the one spelling we issue: base64 decoding skips characters outside its
    # alphabet and ignores spare bits, so an altered token would otherwise still pass
    # (and be echoed back where it is used).
    if _b64(payload) != encoded or _b64(mac) != signature:
        return None
    return payload if hmac.compare_digest(mac, _mac(secret, purpose, payload)) else None


# Tokens with an issue time are sealed for the purpose with this suffix: a token of
# either spelling can only be read as what it was issued as, never the one for the other.
_TIMED = b"@issued"


@dataclass(frozen=True)
class TokenContents:
    """What a genuine token names: (message id, link name) or (customer id, category),
    and when it was issued (None for a token from before issue times were kept)."""

    first: str
    second: str
    issued_at: datetime | None


def _sign(secret: bytes, purpose: bytes, first: str, second: str, issued_at: datetime) -> str:
    issued = int(issued_at.timestamp())
    return seal(secret, purpose + _TIMED, f"{first}:{second}:{issued}".encode())


def _read(secret: bytes, purpose: bytes, token: str) -> TokenContents | None:
    timed = unseal(secret, purpose + _TIMED, token)
    if timed is not None:
        rest, sep, issued = timed.decode(errors="replace").rpartition(":")
        if not sep or not issued.isascii() or not issued.isdigit():
            return None
        try:
            issued_at = datetime.fromtimestamp(int(issued), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    else:
        legacy = unseal(secret, purpose, token)
        if legacy is None:
            return None
        rest, issued_at = legacy.decode(errors="replace"), None
    first, sep, second = rest.rpartition(":")
    return TokenContents(first, second, issued_at) if sep and first and second else None


def make_token(secret: bytes, message_id: str, link: str, issued_at: datetime) -> str:
    return _sign(secret, b"link", message_id, link, issued_at)


def read_token(secret: bytes, token: str) -> TokenContents | None:
    """(message id, link name, issue time) of a genuine token; None for anything else."""
    return _read(secret, b"link", token)


def tracked_url(
    public_url: str, secret: bytes, message_id: str, link: str, issued_at: datetime
) -> str:
    return f"{public_url}/t/{make_token(secret, message_id, link, issued_at)}"


def make_unsubscribe_token(
    secret: bytes, customer_id: str, category: str, issued_at: datetime
) -> str:
    """A token naming a customer and a mail category (marketing, product, billing)."""
    return _sign(secret, b"unsubscribe", customer_id, category, issued_at)


def read_unsubscribe_token(secret: bytes, token: str) -> TokenContents | None:
    """(customer id, category, issue time) of a genuine unsubscribe token; None for
    anything else. Unsubscribe links never expire: the time is kept for the record."""
    return _read(secret, b"unsubscribe", token)


def unsubscribe_url(
    public_url: str, secret: bytes, customer_id: str, category: str, issued_at: datetime
) -> str:
    return f"{public_url}/u/{make_unsubscribe_token(secret, customer_id, category, issued_at)}"


class LinkKind:
    # Opens the customer's billing: a live Customer Portal session is made on each visit.
    BILLING = "billing"
    # The cancellation survey (`hosted:survey`, or the survey page's own link).
    SURVEY = "survey"
    # Any other stored destination: an offer, the invoice page, a help article.
    OTHER = "other"


# How long after it was issued a link still works (README, "Email links"). A link that
# opens billing is the short one: whoever holds a forwarded or archived email holds the
# customer's portal, and dunning mail is about an invoice that is settled or written off
# within weeks. Offers and surveys live long enough for a slow reader; past that the offer
# has run out and the answer is stale. Unsubscribe links never expire (not listed): people
# keep old email, and CAN-SPAM and RFC 8058 expect the link in it to keep working.
LINK_LIFETIMES: dict[str, timedelta] = {
    LinkKind.BILLING: timedelta(days=30),
    LinkKind.SURVEY: timedelta(days=90),
    LinkKind.OTHER: timedelta(days=90),
}


def link_kind(link: str, destination: str, opens_portal: bool) -> str:
    """The kind of a message's link, from its name and stored destination; `opens_portal`
    says the endpoint makes a portal session for it (dunning's `update_payment`)."""
    if destination == PORTAL or opens_portal:
        return LinkKind.BILLING
    if destination == HOSTED_SURVEY or link == "survey":
        return LinkKind.SURVEY
    return LinkKind.OTHER


def expired(kind: str, issued_at: datetime, now: datetime) -> bool:
    """Whether a link of `kind` issued at `issued_at` no longer works at `now`: it works
    up to and including the last second of its lifetime."""
    return now > issued_at + LINK_LIFETIMES[kind]
