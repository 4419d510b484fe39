"""The benchmarks start real `lifecycle` processes: the settings they give them pass the
checks those processes make at start (secret strength, keys). A benchmark whose API or
worker refuses its configuration measures nothing, and nothing else runs the benchmarks."""

from __future__ import annotations

import os

import pytest

from bench.api_memory import api_environment
from bench.harness import LINK_SECRET
from stripe_lifecycle.settings import Settings


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process started with `environment` reads."""
    for name in os.environ:
        if name.startswith("LIFECYCLE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        if name.startswith("LIFECYCLE_"):
            monkeypatch.setenv(name, value)
    return Settings()


def test_the_api_memory_benchmarks_api_passes_its_start_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from(
        api_environment("sqlite+aiosqlite:///bench.db", "127.0.0.1:7233", 8123), monkeypatch
    )
    assert settings.api_port == 8123
    assert {key.role for key in settings.parsed_api_keys()} == {"support", "admin"}


def test_the_benchmarks_link_secret_passes_the_start_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_from({"LIFECYCLE_LINK_SECRET": LINK_SECRET}, monkeypatch)
    assert settings.link_secret_bytes() == LINK_SECRET.encode()
