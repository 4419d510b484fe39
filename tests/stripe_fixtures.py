"""Stripe payloads collected from public sources, read where they live.

The repository is cloned beside `shared/` (locally and in CI); the payloads, their
sources and licences are described in `shared/fixtures/stripe/README.md` and
`MANIFEST.json`. Tests read them from there instead of copying them into the repo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stripe"


def load_fixture(name: str) -> dict[str, Any]:
    """One fixture file (a JSON object) by its file name."""
    data = _read_json(name)
    if not isinstance(data, dict):
        raise TypeError(f"{name} is not a JSON object")
    return data


def manifest() -> list[dict[str, Any]]:
    """The MANIFEST.json entries: one per file, with its source and envelope kind."""
    data = _read_json("MANIFEST.json")
    if not isinstance(data, list):
        raise TypeError("MANIFEST.json is not a JSON list")
    return data


def _read_json(name: str) -> Any:
    with (FIXTURES_DIR / name).open(encoding="utf-8") as file:
        return json.load(file)
