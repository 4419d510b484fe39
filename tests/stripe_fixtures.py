"""Stripe payloads collected from public sources, read where they live: the captured
cross-check beside the project's own corpus (`tests/corpus.py`).

Locally and in CI the repository is cloned beside `shared/`; the payloads, their sources
and licences are described in `shared/fixtures/stripe/README.md` and `MANIFEST.json`.
Tests read them from there instead of copying them into the repo. A clone on its own has
no `shared/`: the tests marked `needs_shared` are then skipped, saying why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stripe"
SKIP_REASON = (
    "../shared/fixtures/stripe not found: the captured cross-check needs the project "
    "cloned beside shared/"
)
needs_shared = pytest.mark.skipif(not FIXTURES_DIR.is_dir(), reason=SKIP_REASON)


def load_fixture(name: str) -> dict[str, Any]:
    """One fixture file (a JSON object) by its file name."""
    data = _read_json(name)
    if not isinstance(data, dict):
        raise TypeError(f"{name} is not a JSON object")
    return data


def manifest() -> list[dict[str, Any]]:
    """The MANIFEST.json entries: one per file, with its source and envelope kind; none
    without `shared/` (the tests over them are `needs_shared`)."""
    if not FIXTURES_DIR.is_dir():
        return []
    data = _read_json("MANIFEST.json")
    if not isinstance(data, list):
        raise TypeError("MANIFEST.json is not a JSON list")
    return data


def _read_json(name: str) -> Any:
    with (FIXTURES_DIR / name).open(encoding="utf-8") as file:
        return json.load(file)
