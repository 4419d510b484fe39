"""Signed tracking-link tokens (pure).

A token names a message and one of its link names, signed with HMAC-SHA256. The redirect
endpoint only ever sends the reader to the destination stored for that message under that
name, so a token cannot be made to point anywhere else (no open redirect), and a forged or
altered token is refused.
"""

import base64
import hashlib
import hmac

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


def _sign(secret: bytes, purpose: bytes, first: str, second: str) -> str:
    return seal(secret, purpose, f"{first}:{second}".encode())


def _read(secret: bytes, purpose: bytes, token: str) -> tuple[str, str] | None:
    payload = unseal(secret, purpose, token)
    if payload is None:
        return None
    first, sep, second = payload.decode(errors="replace").rpartition(":")
    return (first, second) if sep and first and second else None


def make_token(secret: bytes, message_id: str, link: str) -> str:
    return _sign(secret, b"link", message_id, link)


def read_token(secret: bytes, token: str) -> tuple[str, str] | None:
    """(message id, link name) of a genuine token; None for anything else."""
    return _read(secret, b"link", token)


def tracked_url(public_url: str, secret: bytes, message_id: str, link: str) -> str:
    return f"{public_url}/t/{make_token(secret, message_id, link)}"


def make_unsubscribe_token(secret: bytes, customer_id: str, category: str) -> str:
    """A token naming a customer and a mail category (marketing, product, billing)."""
    return _sign(secret, b"unsubscribe", customer_id, category)


def read_unsubscribe_token(secret: bytes, token: str) -> tuple[str, str] | None:
    """(customer id, category) of a genuine unsubscribe token; None for anything else."""
    return _read(secret, b"unsubscribe", token)


def unsubscribe_url(public_url: str, secret: bytes, customer_id: str, category: str) -> str:
    return f"{public_url}/u/{make_unsubscribe_token(secret, customer_id, category)}"
