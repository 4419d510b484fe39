"""The architecture's seams hold: pure modules stay pure, workflows stay deterministic and
call every activity, signal and update through its typed definition, and the worker
implements every activity a workflow can call under the name the workflow uses."""

import ast
import importlib
import inspect
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio import activity

import stripe_lifecycle.activities as activities_package
from stripe_lifecycle.activities import interface

SRC = Path(interface.__file__).parents[1]

# Libraries that do I/O or talk to a server: never in the pure domain nor in workflow code.
IO_LIBRARIES = frozenset(
    {
        "aiosqlite",
        "asyncpg",
        "fastapi",
        "httpx",
        "postmarker",
        "requests",
        "sqlalchemy",
        "sqlmodel",
        "stripe",
        "uvicorn",
    }
)
TEMPORAL_CLIENT = "temporalio.client"


def imported_by(package: str) -> set[str]:
    """Every module loaded by importing all of `package`'s modules in a fresh interpreter."""
    script = f"""
import importlib, json, pkgutil, sys
import {package} as pkg
for info in pkgutil.iter_modules(pkg.__path__):
    importlib.import_module("{package}." + info.name)
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("package", ["stripe_lifecycle.domain", "stripe_lifecycle.workflows"])
def test_pure_code_imports_no_io_library(package: str) -> None:
    modules = imported_by(package)
    io = {m for m in modules if m.split(".")[0] in IO_LIBRARIES or m == TEMPORAL_CLIENT}
    assert io == set(), f"{package} pulls in {sorted(io)}"


def test_the_check_sees_an_io_library() -> None:
    # The same check over the API package finds what it is built on.
    modules = imported_by("stripe_lifecycle.api")
    assert {"fastapi", "sqlalchemy", TEMPORAL_CLIENT} <= modules


NAMED_CALLS = frozenset(
    {
        "execute_activity",
        "execute_local_activity",
        "start_activity",
        "start_local_activity",
        "signal",
        "execute_update",
        "start_child_workflow",
        "execute_child_workflow",
    }
)


def calls_by_name(source: str) -> list[str]:
    """Temporal calls whose target is a string (an activity, signal or workflow by name)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        if node.func.attr in NAMED_CALLS or node.func.attr.startswith("execute_activity"):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append(f"{node.func.attr}({first.value!r}) at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", sorted((SRC / "workflows").glob("*.py")), ids=lambda p: p.name)
def test_workflows_call_nothing_by_name(path: Path) -> None:
    assert calls_by_name(path.read_text()) == []


def test_the_name_check_finds_a_call_by_name() -> None:
    source = "async def f():\n    await workflow.execute_activity('send_email', {})\n"
    assert calls_by_name(source) == ["execute_activity('send_email') at line 2"]


def activity_names(cls: type) -> dict[str, str]:
    """Method name -> activity name, for the activity methods of `cls`."""
    names = {}
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        definition = activity._Definition.from_callable(member)
        if definition is not None and definition.name is not None:
            names[name] = definition.name
    return names


@pytest.mark.parametrize("definition", interface.DEFINITIONS, ids=lambda c: c.__name__)
def test_each_activity_definition_has_one_implementation_under_the_same_names(
    definition: type,
) -> None:
    for info in pkgutil.iter_modules(activities_package.__path__):
        importlib.import_module(f"{activities_package.__name__}.{info.name}")
    [implementation] = definition.__subclasses__()
    assert activity_names(implementation) == activity_names(definition) != {}
