"""Workflow modules read and compiled once per process, for every sandbox that imports them.

Temporal's workflow sandbox imports a workflow's module afresh for each workflow run it
creates (a new customer, or one evicted from the worker's cache and replayed), so that no
run sees another's module state. Each such import looks the module up on disk, reads its
`.pyc` (or compiles the source where none is written) and unmarshals it: about a quarter
of the time a new customer workflow's sandbox takes (`bench.ingest --py-spy`). The code
object that comes out is immutable, so every sandbox can execute the same one: each still
gets a fresh module, executed inside the sandbox under its restrictions; only the reading
and decoding are done once.

It also means a worker runs the workflow code it started with: an install that replaces
the files under a running worker does not put new code into the runs it starts afterwards,
which the rest of the process (imported at start) would not match.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import CodeType, ModuleType


@dataclass(frozen=True)
class _Compiled:
    origin: str
    code: CodeType
    search_locations: list[str] | None


class _CompiledLoader(importlib.machinery.SourceFileLoader):
    """The standard source loader (resources, source, file name), whose code is given."""

    def __init__(self, fullname: str, compiled: _Compiled) -> None:
        super().__init__(fullname, compiled.origin)
        self._code = compiled.code

    def get_code(self, fullname: str) -> CodeType:  # noqa: ARG002 (the signature is importlib's)
        return self._code


class CompiledOnce(importlib.abc.MetaPathFinder):
    """Finds `package`, its parent packages and every module under it, each found on disk
    and compiled the first time it is imported and served from memory after that."""

    def __init__(self, package: str) -> None:
        self.package = package
        parts = package.split(".")
        self._parents = {".".join(parts[:n]) for n in range(1, len(parts))}
        self._compiled: dict[str, _Compiled] = {}

    def _covers(self, fullname: str) -> bool:
        return (
            fullname == self.package
            or fullname.startswith(self.package + ".")
            or fullname in self._parents
        )

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,  # noqa: ARG002 (the signature is importlib's)
    ) -> importlib.machinery.ModuleSpec | None:
        if not self._covers(fullname):
            return None
        compiled = self._compiled.get(fullname)
        if compiled is None:
            found = importlib.machinery.PathFinder.find_spec(fullname, path)
            # Anything but a plain source module (a namespace package, an extension)
            # is left to the finders after this one.
            if found is None or not isinstance(found.loader, importlib.machinery.SourceFileLoader):
                return None
            origin = found.loader.get_filename(fullname)
            code = found.loader.get_code(fullname)
            if code is None:
                return None
            search = found.submodule_search_locations
            compiled = _Compiled(origin, code, None if search is None else list(search))
            # Two threads compiling the same module store equal code: no lock needed.
            self._compiled[fullname] = compiled
        return importlib.util.spec_from_file_location(
            fullname,
            compiled.origin,
            loader=_CompiledLoader(fullname, compiled),
            submodule_search_locations=(
                None if compiled.search_locations is None else list(compiled.search_locations)
            ),
        )


def compile_once(package: str) -> None:
    """Serve `package`'s modules (and its parents) from code compiled once in this process,
    ahead of the standard finders; a second call for the same package changes nothing."""
    if not any(
        isinstance(finder, CompiledOnce) and finder.package == package for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, CompiledOnce(package))
