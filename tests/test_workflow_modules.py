"""Workflow code outside the sandbox's reloads and restricted modules (`worker.sandbox_runner`
passes our package through): every run shares its modules, so they hold no state a run
could change, and ruff refuses in them what the restricted modules would refuse at run
time."""

import ast
import dataclasses
import enum
import importlib
import pkgutil
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import FunctionType, MappingProxyType, ModuleType
from typing import Any

import pytest
from temporalio.common import RetryPolicy

import stripe_lifecycle.workflows

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")

_IMMUTABLE = (type(None), bool, int, float, str, bytes, enum.Enum, date, timedelta, timezone)


def _shared_value_problem(value: Any) -> str | None:
    """Why a value every run shares could carry one run's changes into another; None: it
    cannot."""
    if isinstance(value, (*_IMMUTABLE, datetime, type, FunctionType, ModuleType)):
        return None
    if type(value) is object:
        return None  # a sentinel: nothing to change
    if isinstance(value, RetryPolicy):
        return None  # the SDK copies it into each command and never changes it
    if isinstance(value, (tuple, frozenset)):
        return next(filter(None, map(_shared_value_problem, value)), None)
    if isinstance(value, MappingProxyType):
        return next(filter(None, map(_shared_value_problem, value.values())), None)
    params = vars(type(value)).get("__dataclass_params__")
    if params is not None and params.frozen:
        return next(
            filter(
                None,
                (_shared_value_problem(getattr(value, f.name)) for f in dataclasses.fields(value)),
            ),
            None,
        )
    return f"a {type(value).__name__}, which a run could change"


def _assigned(body: list[ast.stmt]) -> list[str]:
    names = []
    for statement in body:
        targets = (
            statement.targets
            if isinstance(statement, ast.Assign)
            else [statement.target]
            if isinstance(statement, ast.AnnAssign) and statement.value is not None
            else []
        )
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def shared_state(module: ModuleType) -> list[str]:
    """Each name the module (or a class it defines) assigns a value a run could change."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    problems = []
    for name in _assigned(tree.body):
        problem = _shared_value_problem(getattr(module, name))
        if problem:
            problems.append(f"{module.__name__}.{name}: {problem}")
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name)
            # A dataclass field's default is each instance's own (dataclasses refuse a
            # mutable one); a field with a factory is not in the class at all.
            fields = (
                {f.name for f in dataclasses.fields(cls)}
                if dataclasses.is_dataclass(cls)
                else set()
            )
            for name in _assigned(node.body):
                if name in fields:
                    continue
                problem = _shared_value_problem(vars(cls)[name])
                if problem:
                    problems.append(f"{module.__name__}.{node.name}.{name}: {problem}")
    return problems


def workflow_modules() -> list[ModuleType]:
    package = stripe_lifecycle.workflows
    return [
        importlib.import_module(f"{package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(package.__path__)
    ]


@pytest.mark.parametrize("module", workflow_modules(), ids=lambda m: m.__name__)
def test_a_workflow_module_holds_no_state_a_run_could_change(module: ModuleType) -> None:
    assert shared_state(module) == []


def test_state_a_run_could_change_is_found(tmp_path: Path) -> None:
    source = tmp_path / "flows.py"
    source.write_text(
        "from types import MappingProxyType\n"
        "RUNS: list[str] = []\n"
        "SEEN = MappingProxyType({'a': {1}})\n"
        "LIMIT = 3\n"
        "class Flow:\n"
        "    cache: dict[str, int] = {}\n"
        "    name = 'flow'\n"
    )
    module = ModuleType("flows")
    module.__file__ = str(source)
    exec(compile(source.read_text(), str(source), "exec"), module.__dict__)
    assert shared_state(module) == [
        "flows.RUNS: a list, which a run could change",
        "flows.SEEN: a set, which a run could change",
        "flows.Flow.cache: a dict, which a run could change",
    ]


PROBE = """\
import os
import random
import uuid
from datetime import datetime

from stripe_lifecycle.storage.db import create_engine


def probe() -> object:
    return datetime.now(), random.random(), uuid.uuid4(), os.environ, create_engine
"""


def ruff_findings(path: str) -> list[str]:
    result = subprocess.run(
        [str(RUFF), "check", "--no-cache", "--output-format", "concise", "--stdin-filename", path],
        input=PROBE,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    return [line.split(": ", 1)[1] for line in result.stdout.splitlines() if ": TID251 " in line]


def test_ruff_refuses_the_clock_randomness_and_io_in_workflow_code() -> None:
    findings = ruff_findings("src/stripe_lifecycle/workflows/probe.py")
    banned = {finding.split("`")[1] for finding in findings}
    assert banned == {
        "os",
        "random",
        "uuid.uuid4",
        "datetime.datetime.now",
        "stripe_lifecycle.storage",
    }, findings


def test_ruff_allows_them_outside_workflow_code() -> None:
    assert ruff_findings("src/stripe_lifecycle/activities/probe.py") == []
