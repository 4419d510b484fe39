"""Workflow modules compiled once per process (`sandbox_code.py`): every new run's sandbox
still executes its module afresh, but from the code the worker started with."""

import importlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from stripe_lifecycle.sandbox_code import CompiledOnce, compile_once
from stripe_lifecycle.worker import sandbox_runner

# Module state counts the runs that imported this module: each run's sandbox has its own.
FLOWS = """
from temporalio import workflow

RUNS: list[str] = []


@workflow.defn(name="Versioned")
class Versioned:
    @workflow.run
    async def run(self) -> str:
        RUNS.append(workflow.info().workflow_id)
        return f"{version} after {{len(RUNS)}} run in this module"
"""


@pytest.fixture
def package(tmp_path: Path) -> Iterator[str]:
    """A throwaway package of one workflow module on `sys.path`, `version` "v1"."""
    name = f"flows_{uuid.uuid4().hex}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "flows.py").write_text(FLOWS.format(version="v1"))
    sys.path.insert(0, str(tmp_path))
    try:
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[module]


def replace_flows(package: str, version: str) -> None:
    """Install a new version of the module's file, as a deploy over a running worker would."""
    path = Path(sys.modules[f"{package}.flows"].__file__ or "")
    before = path.stat().st_mtime
    path.write_text(FLOWS.format(version=version))
    # A later modification time, so the standard loader sees the source is newer than
    # the bytecode it wrote, however coarse the file system's clock.
    os.utime(path, (before + 10, before + 10))


async def two_runs(env: WorkflowEnvironment, package: str, runner: WorkflowRunner) -> list[str]:
    """One run, then the module's file replaced, then a second run on the same worker."""
    flows = importlib.import_module(f"{package}.flows")
    task_queue = f"tq-{uuid.uuid4().hex}"

    async def run() -> str:
        result: str = await env.client.execute_workflow(
            "Versioned", id=f"versioned-{uuid.uuid4().hex}", task_queue=task_queue
        )
        return result

    async with Worker(
        env.client, task_queue=task_queue, workflows=[flows.Versioned], workflow_runner=runner
    ):
        first = await run()
        replace_flows(package, "v2")
        return [first, await run()]


async def test_the_stock_sandbox_reads_the_module_again_for_each_run(
    time_skipping_env: WorkflowEnvironment, package: str
) -> None:
    # What the cache changes: without it, a run started after the file changed runs the
    # new file, which the rest of the worker never imported.
    runs = await two_runs(time_skipping_env, package, SandboxedWorkflowRunner())
    assert runs == ["v1 after 1 run in this module", "v2 after 1 run in this module"]


async def test_each_run_executes_the_module_afresh_from_the_code_compiled_first(
    time_skipping_env: WorkflowEnvironment, package: str
) -> None:
    finder = CompiledOnce(package)
    sys.meta_path.insert(0, finder)
    try:
        runs = await two_runs(
            time_skipping_env, package, sandbox_runner(time_skipping_env.client.data_converter)
        )
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"{package}.missing")
    finally:
        sys.meta_path.remove(finder)
    # The module's state is still the run's own ("after 1 run"): only the code is shared.
    assert runs == ["v1 after 1 run in this module", "v1 after 1 run in this module"]


def test_the_finder_covers_the_package_its_parents_and_its_modules_only() -> None:
    compile_once("stripe_lifecycle.workflows")
    compile_once("stripe_lifecycle.workflows")
    [finder] = [f for f in sys.meta_path if isinstance(f, CompiledOnce)]
    assert finder.package == "stripe_lifecycle.workflows"
    workflows_path = list(importlib.import_module("stripe_lifecycle.workflows").__path__)
    covered = {
        "stripe_lifecycle": None,
        "stripe_lifecycle.workflows": list(importlib.import_module("stripe_lifecycle").__path__),
        "stripe_lifecycle.workflows.customer": workflows_path,
    }
    for name, path in covered.items():
        spec = finder.find_spec(name, path)
        assert spec is not None and spec.origin == sys.modules[name].__file__, name
    # Our other modules (passed through the sandbox) and everything else: the standard
    # finders' (a workflows-like prefix is not under the package).
    root = list(importlib.import_module("stripe_lifecycle").__path__)
    assert finder.find_spec("stripe_lifecycle.worker", root) is None
    assert finder.find_spec("stripe_lifecycle.workflows_extra", root) is None
    assert finder.find_spec("temporalio", None) is None
