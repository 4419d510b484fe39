"""Weak secrets stop the start: the link secret (which the dashboard's session key derives
from) and plaintext API keys must be long and random, and the error names the setting
without echoing the value."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from stripe_lifecycle.settings import Settings, hashed_key, parse_api_keys

from .cli_helpers import clean_env, run_cli

WEAK_LINK_SECRETS = [
    pytest.param("s", "1 characters long; at least 32", id="one-character"),
    pytest.param("x" * 64, "fewer than 10 different characters", id="repeated"),
    pytest.param("0123456789" * 3 + "0", "31 characters long", id="just-too-short"),
    pytest.param("change-me-to-a-long-random-value-0123", "placeholder", id="placeholder"),
    pytest.param("<Your_Secret_Here>-3fA9kQ2mX7vL1pZ8wN4", "placeholder", id="example-copy"),
]


@pytest.mark.parametrize(("secret", "why"), WEAK_LINK_SECRETS)
def test_a_weak_link_secret_is_refused_naming_the_setting(secret: str, why: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, link_secret=secret)
    message = str(raised.value)
    assert "LIFECYCLE_LINK_SECRET" in message and why in message
    # (A one-character secret is a letter of any sentence.)
    assert len(secret) == 1 or secret not in message


WEAK_KEYS = [
    pytest.param("k1", "2 characters long; at least 24", id="short"),
    pytest.param("a" * 40, "fewer than 10 different characters", id="repeated"),
    pytest.param("changeme-changeme-changeme-0123456", "placeholder", id="placeholder"),
]


@pytest.mark.parametrize(("key", "why"), WEAK_KEYS)
def test_a_weak_plaintext_api_key_is_refused_naming_its_entry(key: str, why: str) -> None:
    strong = secrets.token_urlsafe(24)
    with pytest.raises(ValueError) as raised:
        parse_api_keys(f"support:{strong},admin:{key}")
    message = str(raised.value)
    assert "LIFECYCLE_API_KEYS entry 2" in message and why in message
    assert key not in message and strong not in message


def test_generated_secrets_pass_and_a_hashed_key_needs_only_its_full_digest() -> None:
    for _ in range(20):
        assert Settings(_env_file=None, link_secret=secrets.token_urlsafe(32)).link_secret
        assert Settings(_env_file=None, link_secret=secrets.token_hex(16)).link_secret
        assert parse_api_keys(f"support:{secrets.token_urlsafe(18)}")
    # The digest of any key is accepted as it is: its strength was judged where it was made.
    (hashed,) = parse_api_keys(f"admin:{hashed_key('whatever-was-hashed')}")
    assert hashed.matches("whatever-was-hashed")
    with pytest.raises(ValueError, match="64 hex digits"):
        parse_api_keys("admin:sha256:" + "ab" * 31)


def test_the_api_refuses_to_start_with_a_weak_link_secret_or_key(tmp_path: Path) -> None:
    env = clean_env(LIFECYCLE_LINK_SECRET="hunter2", LIFECYCLE_API_KEYS="admin:swordfish")
    result = run_cli("api", env=env, cwd=tmp_path)
    assert result.returncode == 2
    # Every weak setting at once, each named, neither echoed.
    assert "LIFECYCLE_LINK_SECRET" in result.stderr and "at least 32" in result.stderr
    assert "LIFECYCLE_API_KEYS entry 1" in result.stderr and "at least 24" in result.stderr
    assert "hunter2" not in result.stderr and "swordfish" not in result.stderr


def test_lifecycle_dev_holds_the_secret_it_keeps_to_the_same_rule(tmp_path: Path) -> None:
    # `lifecycle dev` makes a strong one (test_cli.py runs it); one edited by hand is refused.
    data = tmp_path / "data"
    data.mkdir()
    (data / "link-secret").write_text("hunter2\n")
    result = run_cli("dev", env=clean_env(LIFECYCLE_DATA_DIR=str(data)), cwd=tmp_path)
    assert result.returncode == 2
    assert f"the link secret in {data / 'link-secret'} is 7 characters long" in result.stderr
    assert "hunter2" not in result.stderr
