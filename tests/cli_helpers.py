"""Running the `lifecycle` command as a user runs it: shared by the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sysconfig
from pathlib import Path

LIFECYCLE = str(Path(sysconfig.get_path("scripts")) / "lifecycle")


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIFECYCLE, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def clean_env(**values: str) -> dict[str, str]:
    """This process's environment without any LIFECYCLE_ setting, plus `values`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFECYCLE_")}
    env.update(values)
    return env
