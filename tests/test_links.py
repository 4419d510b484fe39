"""Tracked-link tokens: round trip with the issue time, tokens from before issue times,
each link kind's lifetime to the second, and every kind of tampering refused."""

from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from stripe_lifecycle.domain.links import (
    HOSTED_SURVEY,
    PORTAL,
    LinkKind,
    TokenContents,
    expired,
    link_kind,
    read_token,
    read_unsubscribe_token,
    seal,
    tracked_url,
)
from stripe_lifecycle.domain.links import make_token as make_timed_token

SECRET = b"s3cret-for-links"
MESSAGE = "7d0a3c1e-5b2f-4f8e-9a61-2c4d8e0f1a2b"
ISSUED = datetime(2027, 1, 12, 9, 30, 5, tzinfo=UTC)
make_token = partial(make_timed_token, issued_at=ISSUED)


def test_round_trip_and_url() -> None:
    token = make_token(SECRET, MESSAGE, "update_payment")
    assert read_token(SECRET, token) == TokenContents(MESSAGE, "update_payment", ISSUED)
    assert tracked_url("https://b.example", SECRET, MESSAGE, "offer", ISSUED) == (
        f"https://b.example/t/{make_token(SECRET, MESSAGE, 'offer')}"
    )
    assert "=" not in token and "/" not in token and "+" not in token


def test_the_issue_time_is_kept_to_the_second() -> None:
    token = make_timed_token(SECRET, MESSAGE, "offer", ISSUED + timedelta(microseconds=999))
    assert read_token(SECRET, token) == TokenContents(MESSAGE, "offer", ISSUED)


def test_tokens_from_before_issue_times_still_read_without_one() -> None:
    # As links and unsubscribe links were sealed before: no issue time in the payload.
    legacy_link = seal(SECRET, b"link", f"{MESSAGE}:update_payment".encode())
    legacy_unsubscribe = seal(SECRET, b"unsubscribe", b"cus_Old1:marketing")
    assert read_token(SECRET, legacy_link) == TokenContents(MESSAGE, "update_payment", None)
    assert read_unsubscribe_token(SECRET, legacy_unsubscribe) == TokenContents(
        "cus_Old1", "marketing", None
    )
    # Neither reads as the other kind.
    assert read_token(SECRET, legacy_unsubscribe) is None
    assert read_unsubscribe_token(SECRET, legacy_link) is None


def test_a_timed_token_cannot_pass_for_one_without_a_time() -> None:
    # The payload of a timed token sealed for the bare purpose would name the link
    # "update_payment:<time>", and the other way round: refused both ways.
    timed_payload = f"{MESSAGE}:update_payment:{int(ISSUED.timestamp())}".encode()
    assert read_token(SECRET, seal(SECRET, b"link", timed_payload)) == TokenContents(
        f"{MESSAGE}:update_payment", str(int(ISSUED.timestamp())), None
    )
    assert read_token(SECRET, seal(SECRET, b"link@issued", b"m:offer:soon")) is None
    assert read_token(SECRET, seal(SECRET, b"link@issued", b"m:offer:99999999999999999")) is None


DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("kind", "age", "is_expired"),
    [
        (LinkKind.BILLING, timedelta(0), False),
        (LinkKind.BILLING, 30 * DAY, False),  # the last second of its 30 days
        (LinkKind.BILLING, 30 * DAY + timedelta(seconds=1), True),
        (LinkKind.SURVEY, 90 * DAY, False),
        (LinkKind.SURVEY, 90 * DAY + timedelta(seconds=1), True),
        (LinkKind.OTHER, 90 * DAY, False),
        (LinkKind.OTHER, 90 * DAY + timedelta(seconds=1), True),
        (LinkKind.OTHER, -DAY, False),  # a clock behind the sender's
    ],
)
def test_each_kind_of_link_lives_its_lifetime(kind: str, age: timedelta, is_expired: bool) -> None:
    assert expired(kind, ISSUED, ISSUED + age) is is_expired


@pytest.mark.parametrize(
    ("link", "destination", "opens_portal", "kind"),
    [
        ("update_payment", PORTAL, False, LinkKind.BILLING),
        ("manage", PORTAL, False, LinkKind.BILLING),
        # Dunning's fix-your-card link stores the invoice page but opens the portal.
        ("update_payment", "https://invoice.stripe.com/i/x", True, LinkKind.BILLING),
        ("survey", HOSTED_SURVEY, False, LinkKind.SURVEY),
        ("offer", "https://app.example/offer", False, LinkKind.OTHER),
        ("update_payment", "https://invoice.stripe.com/i/x", False, LinkKind.OTHER),
    ],
)
def test_link_kinds(link: str, destination: str, opens_portal: bool, kind: str) -> None:
    assert link_kind(link, destination, opens_portal) == kind


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t.split(".")[0] + "." + make_token(SECRET, MESSAGE, "offer").split(".")[1],
        lambda t: make_token(SECRET, MESSAGE, "offer").split(".")[0] + "." + t.split(".")[1],
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
        lambda t: t.replace(".", ""),
        lambda t: t + ".extra",
    ],
)
def test_tampered_tokens_are_refused(tamper: object) -> None:
    assert callable(tamper)
    assert read_token(SECRET, tamper(make_token(SECRET, MESSAGE, "update_payment"))) is None


@pytest.mark.parametrize(
    "token",
    [
        make_token(b"other", MESSAGE, "update_payment"),
        make_token(SECRET, MESSAGE, ""),
        "",
        "!!!.???",
    ],
)
def test_foreign_empty_and_nameless_tokens_are_refused(token: str) -> None:
    assert read_token(SECRET, token) is None


def _flip_spare_bits(token: str) -> str:
    """The MAC's last character with the bits base64 ignores changed: decodes the same."""
    body, mac = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(mac[-1])
    return f"{body}.{mac[:-1]}{alphabet[last ^ 0b1]}"


@pytest.mark.parametrize(
    "respell",
    [
        # Characters outside the alphabet are skipped by lenient base64 decoding.
        lambda t: t[:3] + "!" + t[3:],
        lambda t: t.replace(".", ".\n", 1),
        lambda t: t[:5] + "<b>" + t[5:],
        # Padding we never write.
        lambda t: t.split(".")[0] + "==." + t.split(".")[1],
        _flip_spare_bits,
    ],
)
def test_only_the_spelling_issued_is_accepted(respell: object) -> None:
    # A token spelled otherwise decodes to the same bytes under lenient base64: refused,
    # so an altered token is never echoed back (the preferences form's action).
    assert callable(respell)
    token = make_token(SECRET, MESSAGE, "update_payment")
    assert read_token(SECRET, respell(token)) is None
