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
