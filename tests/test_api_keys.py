"""API keys given hashed (`role:sha256:<hex>`): the environment then holds no usable key,
callers still send the key itself, and a malformed digest stops the start."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from stripe_lifecycle.api.deps import key_fingerprint
from stripe_lifecycle.settings import hashed_key, parse_api_keys

from .cli_helpers import LIFECYCLE, clean_env, run_cli
from .conftest import ADMIN_KEY, SUPPORT_KEY, app_settings, free_port, running_api

ADMIN_DIGEST = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()


def test_a_key_given_hashed_matches_the_key_and_keeps_its_fingerprint() -> None:
    plain, hashed, upper = parse_api_keys(
        f"support:{SUPPORT_KEY},admin:sha256:{ADMIN_DIGEST},admin:SHA256-is-a-plain-key-not-a-digest"
    )
    assert (plain.role, hashed.role) == ("support", "admin")
    assert plain.matches(SUPPORT_KEY) and not plain.matches(ADMIN_KEY)
    assert hashed.matches(ADMIN_KEY) and not hashed.matches(SUPPORT_KEY)
    # The digest is not a key: whoever reads the environment cannot call with it.
    assert not hashed.matches(ADMIN_DIGEST) and not hashed.matches(f"sha256:{ADMIN_DIGEST}")
    assert hashed.fingerprint == key_fingerprint(ADMIN_KEY)
    assert plain.fingerprint == key_fingerprint(SUPPORT_KEY)
    # Only the `sha256:` prefix (lowercase) marks a digest; uppercase hex digits are fine.
    assert upper.matches("SHA256-is-a-plain-key-not-a-digest")
    (same,) = parse_api_keys(f"admin:sha256:{ADMIN_DIGEST.upper()}")
    assert same.matches(ADMIN_KEY)
    assert ADMIN_DIGEST not in repr(hashed)


@pytest.mark.parametrize(
    "digest",
    ["", "abc123", ADMIN_DIGEST[:-1], ADMIN_DIGEST + "0", "g" * 64, f" {ADMIN_DIGEST[1:]}"],
)
def test_a_malformed_digest_fails_fast_naming_the_variable(tmp_path: Path, digest: str) -> None:
    value = f"support:{SUPPORT_KEY},admin:sha256:{digest}"
    result = run_cli("migrate", env=clean_env(LIFECYCLE_API_KEYS=value), cwd=tmp_path)
    assert result.returncode == 2
    assert "LIFECYCLE_API_KEYS" in result.stderr
    assert "entry 2" in result.stderr and "64 hex digits" in result.stderr
    assert SUPPORT_KEY not in result.stderr
    if digest:
        assert digest.strip() not in result.stderr


def test_lifecycle_keys_hash_prints_the_form_to_configure(tmp_path: Path) -> None:
    # It needs no configuration, not even a valid one: it runs where keys are made.
    env = clean_env(LIFECYCLE_API_KEYS="owner:nope")
    result = subprocess.run(
        [LIFECYCLE, "keys", "hash"],
        input=f"{ADMIN_KEY}\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"sha256:{ADMIN_DIGEST}\n"
    assert hashed_key(ADMIN_KEY) == f"sha256:{ADMIN_DIGEST}"
    (configured,) = parse_api_keys(f"admin:{result.stdout.strip()}")
    assert configured.matches(ADMIN_KEY)
    empty = subprocess.run(
        [LIFECYCLE, "keys", "hash"],
        input="\n",
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2 and "no key" in empty.stderr and empty.stdout == ""


@pytest.fixture
async def hashed_api(sqlite_url: str, task_queue: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = app_settings(
        sqlite_url,
        f"127.0.0.1:{free_port()}",
        task_queue,
        api_keys=f"support:{hashed_key(SUPPORT_KEY)},admin:sha256:{ADMIN_DIGEST}",
    )
    async with running_api(settings) as (_, http):
        yield http


async def test_the_api_takes_the_keys_whose_digests_are_configured(
    hashed_api: httpx.AsyncClient,
) -> None:
    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    for key in (SUPPORT_KEY, ADMIN_KEY):
        assert (await hashed_api.get("/v1/segments", headers=bearer(key))).status_code == 200
    for key in (ADMIN_DIGEST, f"sha256:{ADMIN_DIGEST}", "sk_wrong", ADMIN_KEY + "x"):
        refused = await hashed_api.get("/v1/segments", headers=bearer(key))
        assert refused.status_code == 401, key
    # The roles hold: the support key is still refused the admin routes.
    sync = await hashed_api.post("/v1/sync", headers=bearer(SUPPORT_KEY))
    assert sync.status_code == 403


async def test_the_dashboard_signs_in_with_a_key_configured_hashed(
    hashed_api: httpx.AsyncClient,
) -> None:
    wrong = await hashed_api.post("/dashboard/login", data={"key": ADMIN_DIGEST})
    assert wrong.status_code == 401
    signed_in = await hashed_api.post("/dashboard/login", data={"key": ADMIN_KEY})
    assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/dashboard")
    # The session's key is found among the configured digests by its fingerprint.
    page = await hashed_api.get("/dashboard")
    assert page.status_code == 200, page.text
    assert key_fingerprint(ADMIN_KEY) in page.text
