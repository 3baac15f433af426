"""Where handler code comes from: the operator's allow-list of handler modules.

A definition, a stored workflow or a job never makes statesaga import code. Handler modules
come only from what the operator allows:

- `--handlers MODULE` on every command that runs handlers (repeat it, or separate with
  commas), else the `STATESAGA_HANDLERS` environment variable (same format);
- `[tool.statesaga] handlers = ["module", ...]` in the working directory's pyproject.toml
  (trusted like the directory itself, as pytest trusts a conftest.py there);
- installed packages, which register handler modules under the `statesaga.handlers`
  entry-point group (`trip = "statesaga.examples.trip_handlers"`): installing a package is
  allowing it. statesaga registers its own examples there.

The modules the operator names (the first two) are imported when a command starts; an
installed package's module only when a definition (or a stored workflow) asks for it. A
definition's `handlers:` key is a hint, never an import instruction: each entry must name an
allowed module (or an entry point's name), else the definition is refused, located at that
entry, with nothing imported. In Python, pass handlers or modules directly:
`Engine(store, queue, handlers=[my_module, my_function])`.

Allowed modules are looked for in the working directory, then the definition's folder, *after*
`sys.path`, so a file there (say a `redis.py`) can never shadow an installed package. The
working directory is trusted like a project root (its pyproject.toml allows modules too); the
definition's folder is not: it supplies the allowed modules and nothing else, so a module an
allowed one imports (an optional `ujson`, say) is never taken from a file planted next to a YAML.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.machinery import ModuleSpec
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ..errors import RegistryError

if TYPE_CHECKING:
    from ..registry import Registry

GROUP = "statesaga.handlers"
ENV = "STATESAGA_HANDLERS"
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def split_modules(values: Iterable[str]) -> list[str]:
    """`("a,b", " c d")` -> `["a", "b", "c", "d"]`: the format of --handlers and the variable."""
    return [m for value in values for m in value.replace(",", " ").split()]


@dataclass(frozen=True)
class AllowList:
    """Allowed handler modules, each with where it was allowed (for messages)."""

    #: module -> where it was allowed ("--handlers", "$STATESAGA_HANDLERS", ...)
    modules: Mapping[str, str] = field(default_factory=dict)
    #: an installed entry point's name -> its module (a definition may use either)
    names: Mapping[str, str] = field(default_factory=dict)
    #: the modules imported when a command starts (the operator named them)
    eager: tuple[str, ...] = ()

    @classmethod
    def installed(cls) -> AllowList:
        """The modules installed packages register under `statesaga.handlers`."""
        modules: dict[str, str] = {}
        claims: dict[str, set[str]] = {}
        for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
            dist = f" {ep.dist.name}" if ep.dist is not None else ""
            modules.setdefault(ep.module, f"entry point {GROUP}:{ep.name} of{dist or ' a package'}")
            claims.setdefault(ep.name, set()).add(ep.module)
        # A name two packages give to different modules stands for neither: a definition
        # must then name the module itself.
        names = {name: next(iter(m)) for name, m in claims.items() if len(m) == 1}
        return cls(modules, names)

    @classmethod
    def of(cls, modules: Iterable[str], source: str = "the caller") -> AllowList:
        listed = split_modules(modules)
        bad = [m for m in listed if not _MODULE.fullmatch(m)]
        if bad:
            raise RegistryError(
                f"not a module name ({source}): {bad[0]!r}; give dotted names like my_app.handlers"
            )
        return cls(dict.fromkeys(listed, source), {}, tuple(dict.fromkeys(listed)))

    @classmethod
    def for_operator(
        cls,
        given: Sequence[str] = (),
        *,
        environ: Mapping[str, str] | None = None,
        project: Path | None = None,
    ) -> AllowList:
        """What a command may import: `--handlers` (else $STATESAGA_HANDLERS), the project's
        `[tool.statesaga] handlers`, and installed packages' entry points."""
        env = os.environ if environ is None else environ
        if split_modules(given):
            first = cls.of(given, "--handlers")
        else:
            first = cls.of([env.get(ENV, "")], f"${ENV}")
        pyproject = (project or Path.cwd()) / "pyproject.toml"
        return first | cls.of(_pyproject_handlers(pyproject), str(pyproject)) | cls.installed()

    def __or__(self, other: AllowList) -> AllowList:
        return AllowList(
            {**other.modules, **self.modules},
            {**other.names, **self.names},
            tuple(dict.fromkeys([*self.eager, *other.eager])),
        )

    def resolve(self, hint: str) -> str | None:
        """The allowed module a definition's `handlers:` entry stands for, or None."""
        if hint in self.modules:
            return hint
        return self.names.get(hint)

    def refusal(self, hint: str) -> str:
        """Why `hint` may not be imported, and how an operator allows it."""
        return (
            f"handler module {hint!r} is not on the operator's allow-list; allow it with "
            f"--handlers {hint}, ${ENV}, [tool.statesaga] handlers in pyproject.toml, or an "
            f"installed package's {GROUP!r} entry point ({self.summary()})"
        )

    def summary(self) -> str:
        allowed = sorted(self.modules)
        return "allowed: " + (", ".join(allowed) if allowed else "none")

    def missing(self, search: Sequence[Path] = ()) -> list[str]:
        """Allowed modules that cannot be found (checked without importing them)."""
        out = []
        with search_path(search, self.modules):
            for module in self.modules:
                try:
                    found = importlib.util.find_spec(module) is not None
                except (ImportError, ValueError):
                    found = False
                if not found:
                    out.append(module)
        return out

    def load(
        self, registry: Registry, hints: Sequence[str], search: Sequence[Path] = ()
    ) -> list[tuple[int, str]]:
        """Register the handler modules `hints` name; each must be allowed (or already
        registered). Returns (index, problem) for each refused or unimportable hint."""
        problems: list[tuple[int, str]] = []
        for i, hint in enumerate(hints):
            module = self.resolve(hint)
            if registry.has_module(hint) or (module is not None and registry.has_module(module)):
                continue
            if module is None:
                problems.append((i, self.refusal(hint)))
                continue
            try:
                import_allowed(registry, module, search)
            except ImportError as exc:
                problems.append((i, f"allowed handler module {module!r} cannot be imported: {exc}"))
        return problems

    def load_eager(self, registry: Registry, search: Sequence[Path] = ()) -> None:
        """Import the modules the operator named (--handlers, the variable, pyproject)."""
        for module in self.eager:
            if registry.has_module(module):
                continue
            try:
                import_allowed(registry, module, search)
            except ImportError as exc:
                raise RegistryError(
                    f"handler module {module!r} ({self.modules[module]}) cannot be imported: {exc}"
                ) from None


def _pyproject_handlers(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"{path}: cannot read [tool.statesaga]: {exc}") from None
    value = data.get("tool", {}).get("statesaga", {}).get("handlers", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RegistryError(f"{path}: [tool.statesaga] handlers must be a list of module names")
    return value


class _Beside(importlib.abc.MetaPathFinder):
    """Finds the named top-level modules in the given folders, and nothing else."""

    def __init__(self, names: Iterable[str], folders: Sequence[str]) -> None:
        self.names = frozenset(names)
        self.folders = list(folders)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if path is not None or fullname not in self.names:
            return None
        return importlib.machinery.PathFinder.find_spec(fullname, self.folders)


@contextmanager
def search_path(folders: Sequence[Path], modules: Iterable[str] = ()) -> Iterator[None]:
    """Let allowed `modules` live in the working directory or next to a definition (in
    `folders`), only while they are imported. Both come *after* sys.path, so installed
    packages and the standard library always win over a file planted there; a definition's
    folder supplies only the allowed modules' own (top-level) names, so a module they import
    (an optional dependency probed with try/except ImportError) is never found there."""
    cwd = str(Path.cwd().resolve())
    added = [cwd] if cwd not in sys.path else []
    beside = [str(f) for f in dict.fromkeys(Path(f).resolve() for f in folders) if str(f) != cwd]
    finder = _Beside({m.partition(".")[0] for m in modules}, beside) if beside else None
    sys.path.extend(added)
    if finder is not None:
        sys.meta_path.append(finder)
    importlib.invalidate_caches()
    try:
        yield
    finally:
        for folder in added:
            if folder in sys.path:
                sys.path.remove(folder)
        if finder is not None and finder in sys.meta_path:
            sys.meta_path.remove(finder)


def _raised_at(exc: BaseException) -> str:
    """` (line N of FILE)`: the last frame of the traceback in a file (not importlib's own),
    which is where the operator's module failed; the traceback itself is not shown."""
    at = ""
    frame = exc.__traceback__
    frame = frame.tb_next if frame is not None else None  # past import_allowed's own frame
    while frame is not None:
        name = frame.tb_frame.f_code.co_filename
        importlib_own = str(frame.tb_frame.f_globals.get("__name__", "")).startswith("importlib")
        if not (name.startswith("<") or importlib_own):
            at = f" (line {frame.tb_lineno} of {name})"
        frame = frame.tb_next
    return at


def import_allowed(registry: Registry, module: str, search: Sequence[Path] = ()) -> list[str]:
    """Import an allowed module and register its handlers. Whatever the module raises while
    it is imported (its own bug, a setting it misses) is an ImportError naming it, so every
    caller reports it in one line as it does a module that is missing."""
    with search_path(search, [module]):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise
        except Exception as exc:
            raise ImportError(
                f"{type(exc).__name__}: {exc}{_raised_at(exc)}", name=module
            ) from None
    return registry.register_module(mod)


__all__ = ["ENV", "GROUP", "AllowList", "import_allowed", "search_path", "split_modules"]
