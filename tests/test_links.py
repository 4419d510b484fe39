"""Tracked-link tokens: round trip, and every kind of tampering refused."""

import pytest

from stripe_lifecycle.domain.links import make_token, read_token, tracked_url

SECRET = b"s3cret-for-links"
MESSAGE = "7d0a3c1e-5b2f-4f8e-9a61-2c4d8e0f1a2b"


def test_round_trip_and_url() -> None:
    token = make_token(SECRET, MESSAGE, "update_payment")
    assert read_token(SECRET, token) == (MESSAGE, "update_payment")
    assert tracked_url("https://b.example", SECRET, MESSAGE, "offer") == (
        f"https://b.example/t/{make_token(SECRET, MESSAGE, 'offer')}"
    )
    assert "=" not in token and "/" not in token and "+" not in token


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
