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


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"link:" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(secret: bytes, message_id: str, link: str) -> str:
    payload = f"{message_id}:{link}".encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def read_token(secret: bytes, token: str) -> tuple[str, str] | None:
    """(message id, link name) of a genuine token; None for anything else."""
    encoded, sep, signature = token.partition(".")
    if not sep:
        return None
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        return None
    message_id, sep, link = payload.decode(errors="replace").partition(":")
    return (message_id, link) if sep and message_id and link else None


def tracked_url(public_url: str, secret: bytes, message_id: str, link: str) -> str:
    return f"{public_url}/t/{make_token(secret, message_id, link)}"


def _unsubscribe_mac(secret: bytes, payload: bytes) -> bytes:
    # Its own prefix, so a link token can never pass for an unsubscribe token or back.
    return hmac.new(secret, b"unsubscribe:" + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def make_unsubscribe_token(secret: bytes, customer_id: str, category: str) -> str:
    """A token naming a customer and a mail category (marketing, product, billing)."""
    payload = f"{customer_id}:{category}".encode()
    return f"{_b64(payload)}.{_b64(_unsubscribe_mac(secret, payload))}"


def read_unsubscribe_token(secret: bytes, token: str) -> tuple[str, str] | None:
    """(customer id, category) of a genuine unsubscribe token; None for anything else."""
    encoded, sep, signature = token.partition(".")
    if not sep:
        return None
    try:
        payload, mac = _unb64(encoded), _unb64(signature)
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(mac, _unsubscribe_mac(secret, payload)):
        return None
    customer_id, sep, category = payload.decode(errors="replace").rpartition(":")
    return (customer_id, category) if sep and customer_id and category else None


def unsubscribe_url(public_url: str, secret: bytes, customer_id: str, category: str) -> str:
    return f"{public_url}/u/{make_unsubscribe_token(secret, customer_id, category)}"
