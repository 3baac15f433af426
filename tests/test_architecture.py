"""The package's shape, checked: the module-level import graph of `statesaga` has no cycles, the
core never imports its adapters or a queue/store client library, every module says what it is,
and `import statesaga` changes nothing in the import system.

The graph is read from the source with `ast`, not by importing: only imports that run when a
module is imported count (module and class bodies, including `try`/`if` blocks), not those
inside functions or under `if TYPE_CHECKING:`. `python tests/test_architecture.py` prints it.
"""

from __future__ import annotations

import ast
import importlib
import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The source folders and the import names they install as (pyproject's package-dir).
SOURCES = {"statesaga": ROOT / "framework", "statesaga.adapters": ROOT / "adapters"}
#: Packages of the distribution that hold data and examples, not code of the framework: an
#: import of them is no edge of the graph (and not one to `statesaga` either).
DATA_PACKAGES = frozenset({"statesaga.statecharts", "statesaga.examples"})
CLIENT_LIBRARIES = ("rq", "redis", "arango")


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module
    #: modules imported when this one is imported, each with the line of its first import
    eager: dict[str, int] = field(default_factory=dict)
    #: modules imported only when a function runs
    deferred: dict[str, int] = field(default_factory=dict)
    #: modules imported only for the type checker (`if TYPE_CHECKING:`)
    typing_only: dict[str, int] = field(default_factory=dict)
    #: top-level names of third-party modules imported eagerly, with their line
    external: dict[str, int] = field(default_factory=dict)


def _discover(sources: dict[str, Path]) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for prefix, folder in sources.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
                continue
            name = ".".join([prefix, *parts])
            # adapters/ sits inside framework/'s import name, so walk it only once, as itself.
            if prefix == "statesaga" and name.startswith("statesaga.adapters"):
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            modules[name] = Module(name, path, path.name == "__init__.py", tree)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


EAGER, IN_FUNCTION, TYPING_ONLY = "eager", "deferred", "typing_only"


def _imports(body: list[ast.stmt], when: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement under `body`, with when it runs: EAGER (when the module is
    imported), IN_FUNCTION (when a function runs) or TYPING_ONLY (never)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, when
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _imports(node.body, IN_FUNCTION if when == EAGER else when)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.body, TYPING_ONLY)
            yield from _imports(node.orelse, when)
        else:
            for child_field in ("body", "orelse", "finalbody", "handlers", "cases"):
                children = getattr(node, child_field, None)
                if isinstance(children, list):
                    stmts = [c for c in children if isinstance(c, ast.stmt)]
                    # except handlers and match cases hold their statements one level down
                    for c in children:
                        if isinstance(c, ast.ExceptHandler | ast.match_case):
                            stmts.extend(c.body)
                    yield from _imports(stmts, when)


def _targets(mod: Module, node: ast.Import | ast.ImportFrom, known: set[str]) -> list[str]:
    """The modules an import statement loads, as full dotted names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        package = mod.name if mod.is_package else mod.name.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    else:
        base = node.module or ""
    # `from pkg import sub` loads the submodule `pkg.sub`; `from pkg import name` runs pkg only.
    subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    names = [a.name for a in node.names if f"{base}.{a.name}" not in known]
    return subs + ([base] if names or not subs else [])


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def build_graph(sources: dict[str, Path] = SOURCES) -> dict[str, Module]:
    """Every statesaga module with the statesaga modules it imports, eagerly or in a function.

    Importing `a.b.c` runs `a` and `a.b` first; an edge to those packages is kept unless the
    importer lives inside them (a package being imported is already in sys.modules, so its
    submodules reach its attributes only through names it has already bound)."""
    modules = _discover(sources)
    known = set(modules) | DATA_PACKAGES
    for mod in modules.values():
        for node, when in _imports(mod.tree.body, EAGER):
            for target in _targets(mod, node, known):
                if target.split(".")[0] != "statesaga":
                    if when == EAGER:
                        mod.external.setdefault(target, node.lineno)
                    continue
                own = set(_ancestors(mod.name))
                hits = [a for a in _ancestors(target) if a not in own and a in modules]
                hits += [target] if target in modules else []
                for hit in hits:
                    if hit != mod.name:
                        getattr(mod, when).setdefault(hit, node.lineno)
    return modules


def find_cycle(modules: dict[str, Module]) -> list[str] | None:
    """A cycle in the eager import graph (`[a, b, ..., a]`), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in sorted(modules[name].eager):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(modules):
        if name not in state and (found := visit(name)):
            return found
    return None


def reaches(modules: dict[str, Module], start: str, goal: str) -> bool:
    """Whether importing `start` imports `goal` (through eager imports)."""
    seen, todo = {start}, [start]
    while todo:
        for dep in modules[todo.pop()].eager:
            if dep == goal:
                return True
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return False


def _write(root: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return {"statesaga": root / "framework", "statesaga.adapters": root / "adapters"}


def test_the_reader_finds_the_cycle_this_package_once_had(tmp_path: Path) -> None:
    """statesaga -> engine -> plugins -> lifecycles -> statesaga (for __version__), while a
    function-level and a TYPE_CHECKING import do not count as edges."""
    sources = _write(
        tmp_path,
        {
            "framework/__init__.py": "from .engine import Engine\n__version__ = '1'\n",
            "framework/engine.py": "from . import plugins\n",
            "framework/plugins.py": "from .charts.lifecycles import lifecycle\n",
            "framework/charts/__init__.py": "",
            "framework/charts/lifecycles.py": (
                "from typing import TYPE_CHECKING\n"
                "from .. import __version__\n"
                "if TYPE_CHECKING:\n    from ..plugins import x\n"
                "def f():\n    from ..engine import Engine\n"
            ),
            "adapters/__init__.py": "",
        },
    )
    graph = build_graph(sources)
    assert find_cycle(graph) == [
        "statesaga",
        "statesaga.engine",
        "statesaga.plugins",
        "statesaga.charts.lifecycles",
        "statesaga",
    ]
    lifecycles = graph["statesaga.charts.lifecycles"]
    assert set(lifecycles.eager) == {"statesaga"}
    assert lifecycles.deferred == {"statesaga.engine": 6}
    assert lifecycles.typing_only == {"statesaga.plugins": 4}
    assert reaches(graph, "statesaga.engine", "statesaga.charts.lifecycles")


def test_the_reader_sees_no_cycle_through_a_package_being_imported(tmp_path: Path) -> None:
    """A submodule importing a sibling through its package (`from . import b`) does not
    depend on the package's __init__, which is already being imported."""
    sources = _write(
        tmp_path,
        {
            "framework/__init__.py": "from .a import A\n",
            "framework/a.py": "from . import b\nfrom .sub.c import C\n",
            "framework/b.py": "",
            "framework/sub/__init__.py": "from .c import C\n",
            "framework/sub/c.py": "from ..b import B\n",
            "adapters/__init__.py": "",
        },
    )
    graph = build_graph(sources)
    assert find_cycle(graph) is None
    assert set(graph["statesaga.a"].eager) == {"statesaga.b", "statesaga.sub", "statesaga.sub.c"}
    assert set(graph["statesaga.sub.c"].eager) == {"statesaga.b"}


@pytest.fixture(scope="module")
def graph() -> dict[str, Module]:
    return build_graph()


def _where(mod: Module, line: int) -> str:
    path = mod.path.relative_to(ROOT) if mod.path.is_relative_to(ROOT) else mod.path
    return f"{path}:{line}"


def test_the_graph_sees_the_whole_package(graph: dict[str, Module]) -> None:
    # Guards the checks below against passing on an empty or half-read graph.
    assert {"statesaga", "statesaga.charts.chart", "statesaga.adapters.stores.sqlite"} <= set(graph)
    assert "statesaga.charts.chart" in graph["statesaga"].eager
    assert sum(len(m.eager) for m in graph.values()) > 100


def test_module_level_imports_have_no_cycle(graph: dict[str, Module]) -> None:
    cycle = find_cycle(graph)
    if cycle:
        steps = [
            f"{a} -> {b} ({_where(graph[a], graph[a].eager[b])})"
            for a, b in itertools.pairwise(cycle)
        ]
        pytest.fail("import cycle:\n  " + "\n  ".join(steps))


def test_no_function_level_import_dodges_a_cycle(graph: dict[str, Module]) -> None:
    """An import moved into a function because the module imports it back is a cycle hidden,
    not removed; the concept that both need belongs in a module of its own."""
    dodges = [
        f"{_where(mod, line)}: {mod.name} imports {dep} in a function; {dep} imports it back"
        for mod in graph.values()
        for dep, line in sorted(mod.deferred.items())
        if dep not in mod.eager and reaches(graph, dep, mod.name)
    ]
    assert not dodges, "\n".join(dodges)


def test_framework_imports_no_queue_or_store_client(graph: dict[str, Module]) -> None:
    found = [
        f"{_where(mod, line)}: {mod.name} imports {name}"
        for mod in graph.values()
        if not mod.name.startswith("statesaga.adapters")
        for name, line in mod.external.items()
        if name.split(".")[0] in CLIENT_LIBRARIES
    ]
    assert not found, "\n".join(found)


def test_framework_never_imports_adapters(graph: dict[str, Module]) -> None:
    """The dependency rule: the core reaches adapters only through entry points, found by
    name at run time, never by an import statement (eager or in a function)."""
    found = [
        f"{_where(mod, line)}: {mod.name} imports {dep}"
        for mod in graph.values()
        if not mod.name.startswith("statesaga.adapters")
        for dep, line in {**mod.typing_only, **mod.deferred, **mod.eager}.items()
        if dep.startswith("statesaga.adapters")
    ]
    assert not found, "\n".join(found)


def test_every_module_says_what_it_is(graph: dict[str, Module]) -> None:
    missing = [
        str(m.path.relative_to(ROOT)) for m in graph.values() if not ast.get_docstring(m.tree)
    ]
    assert not missing, "modules without a docstring: " + ", ".join(missing)


def test_every_package_says_what_it_holds(graph: dict[str, Module]) -> None:
    """The tree tells the story: each folder under framework/ is a package whose __init__ says
    what concept it holds."""
    folders = [
        d
        for d in [SOURCES["statesaga"], *SOURCES["statesaga"].rglob("*")]
        if d.is_dir() and any(d.glob("*.py")) and "__pycache__" not in d.parts
    ]
    assert len(folders) > 5
    bad = []
    for d in folders:
        init = d / "__init__.py"
        if not init.is_file() or not ast.get_docstring(ast.parse(init.read_text("utf-8"))):
            bad.append(str(d.relative_to(ROOT)))
    assert not bad, "packages without an __init__.py docstring: " + ", ".join(bad)


def test_every_rule_is_a_named_check_listed_in_order(graph: dict[str, Module]) -> None:
    """A module of rules lists them in CHECKS (stages of `_check_*` functions, in the order
    they run), each exactly once: a rule written but left out would never run."""
    ruled = [
        m.name
        for m in graph.values()
        for n in m.tree.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
        if n.target.id == "CHECKS"
    ]
    assert {"statesaga.charts.checks", "statesaga.definitions.checks"} <= set(ruled)
    for name in ruled:
        module = importlib.import_module(name)
        written = sorted(n for n in vars(module) if n.startswith("_check_"))
        listed = [check.__name__ for stage in module.CHECKS for check in stage]
        assert sorted(listed) == written, name


def test_importing_statesaga_installs_no_import_hook() -> None:
    """Modules that moved moved for real (CHANGELOG.md lists them): `import statesaga` adds no
    finder, path hook or module alias that other code would then import through. In a fresh
    interpreter, since this one has imported statesaga already. (A dependency may add its own:
    `transitions` imports `six`, whose importer serves six.moves.)"""
    probe = (
        "import sys\n"
        "def owner(hook):\n"
        "    return hook.__module__ if isinstance(hook, type) else type(hook).__module__\n"
        "before = [*sys.meta_path, *sys.path_hooks]\n"
        "import statesaga\n"
        "added = [h for h in [*sys.meta_path, *sys.path_hooks] if h not in before]\n"
        "ours = [h for h in added if owner(h).split('.')[0] in ('statesaga', 'framework')]\n"
        "assert not ours, ours\n"
        "aliased = [n for n, m in sys.modules.items() if n.startswith('statesaga')"
        " and getattr(m, '__name__', n) != n]\n"
        "assert not aliased, aliased\n"
        "print('ok', len(sys.meta_path))\n"
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok ")


#: The longest a class may be: past it, a class holds more than one concept (STYLE.md).
CLASS_LINES_MAX = 300
#: Client libraries of the backends: only adapters/ may name their exceptions.
BACKENDS = ("sqlite3", "redis", "rq", "arango")


def test_runtime_never_imports_the_engine(graph: dict[str, Module]) -> None:
    """statesaga.runtime stands on its own: the Engine is a facade built on a Runtime, so no
    runtime module imports it, not in a function and not for the type checker, and nothing
    a runtime module imports leads back to it."""
    found = [
        f"{_where(mod, line)}: {mod.name} imports {dep}"
        for mod in graph.values()
        if mod.name.startswith("statesaga.runtime")
        for dep, line in {**mod.typing_only, **mod.deferred, **mod.eager}.items()
        if dep in ("statesaga.engine", "statesaga.app") or reaches(graph, dep, "statesaga.engine")
    ]
    assert not found, "\n".join(found)


def long_classes(modules: dict[str, Module], limit: int = CLASS_LINES_MAX) -> list[str]:
    return [
        f"{_where(mod, node.lineno)}: class {node.name} is {length} lines (at most {limit})"
        for mod in modules.values()
        for node in ast.walk(mod.tree)
        if isinstance(node, ast.ClassDef)
        for length in [(node.end_lineno or node.lineno) - node.lineno + 1]
        if length > limit
    ]


def test_no_class_is_over_300_lines(graph: dict[str, Module]) -> None:
    found = long_classes(graph)
    assert not found, "\n".join(found)


def port_features() -> frozenset[str]:
    """The members of the port Protocols: what an adapter offers is asked of it directly
    (each optional one has a default in the Protocol), never probed for."""
    from statesaga import ports

    names: set[str] = set()
    for proto in (ports.Store, ports.Browsable, ports.Queue, ports.WorkerQueue):
        for klass in proto.__mro__:
            if klass.__module__ == ports.__name__:
                names |= {n for n in vars(klass) if not n.startswith("_")}
                names |= set(getattr(klass, "__annotations__", {}))
    return frozenset(names)


def feature_probes(modules: dict[str, Module], features: frozenset[str]) -> list[str]:
    return [
        f"{_where(mod, node.lineno)}: {node.func.id}(..., {node.args[1].value!r}) probes a "
        "port feature; ask the port (statesaga.ports declares it, with a default)"
        for mod in modules.values()
        if not mod.name.startswith("statesaga.adapters")
        for node in ast.walk(mod.tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if node.func.id in ("getattr", "hasattr") and len(node.args) >= 2
        if isinstance(node.args[1], ast.Constant) and node.args[1].value in features
    ]


def test_no_port_feature_is_probed_with_getattr(graph: dict[str, Module]) -> None:
    features = port_features()
    assert {"in_process", "renew", "exists", "unreadable", "check", "browse"} <= features
    found = feature_probes(graph, features)
    assert not found, "\n".join(found)


def backend_names(mod: Module) -> Iterator[tuple[int, str]]:
    """Where a module names a backend's client library: an import of it (anywhere), or an
    expression such as `sqlite3.OperationalError` or `redis.exceptions.TimeoutError`."""
    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in BACKENDS:
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in BACKENDS:
                yield node.lineno, node.module


def test_no_framework_module_knows_a_backends_exceptions(graph: dict[str, Module]) -> None:
    """Adapters raise the framework's errors (statesaga.errors); above adapters/ nothing
    catches, tests or even imports sqlite3, redis, rq or arango, in a function or not."""
    found = [
        f"{_where(mod, line)}: {mod.name} names {name}"
        for mod in graph.values()
        if not mod.name.startswith("statesaga.adapters")
        for line, name in backend_names(mod)
    ]
    assert not found, "\n".join(found)


def test_the_new_rules_fail_on_what_they_forbid(tmp_path: Path) -> None:
    """Each rule above, on a small package that breaks it."""
    sources = _write(
        tmp_path,
        {
            "framework/__init__.py": '"""p"""\n',
            "framework/engine.py": '"""e"""\n',
            "framework/runtime/__init__.py": '"""r"""\n',
            "framework/runtime/jobs.py": (
                '"""j"""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n'
                "    from ..engine import Engine\n"
            ),
            "framework/web.py": (
                '"""w"""\ndef f(store, queue):\n    import sqlite3\n'
                '    return getattr(queue, "in_process", False)\n'
                "class Big:\n" + "    x = 1\n" * 300
            ),
            "adapters/__init__.py": "",
        },
    )
    modules = build_graph(sources)
    assert modules["statesaga.runtime.jobs"].typing_only == {"statesaga.engine": 4}
    assert [f.split(": ", 1)[1] for f in long_classes(modules)] == [
        "class Big is 301 lines (at most 300)"
    ]
    assert "'in_process'" in feature_probes(modules, frozenset({"in_process"}))[0]
    assert list(backend_names(modules["statesaga.web"])) == [(3, "sqlite3")]


def print_graph() -> None:
    """The eager import graph as text: `module (lines): the statesaga modules it imports`."""
    modules = build_graph()
    width = max(len(n) for n in modules)
    for name in sorted(modules):
        mod = modules[name]
        lines = len(mod.path.read_text(encoding="utf-8").splitlines())
        deps = ", ".join(d.removeprefix("statesaga.") for d in sorted(mod.eager)) or "-"
        print(f"{name:<{width}} {lines:>4}: {deps}")
    cycle = find_cycle(modules)
    print("cycle: " + (" -> ".join(cycle) if cycle else "none"))


if __name__ == "__main__":
    print_graph()
    sys.exit(0)
