"""The dependency policy, as files a deployer and CI rely on: every declared dependency has a
lower bound, .ci/constraints-lowest.txt pins exactly those bounds (CI installs and tests them),
and constraints.txt, the known-good set for deployers, pins every runtime dependency at a
version its bound allows."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).parent.parent
#: The extras whose packages a deployment installs (the others are tools: bench, test).
RUNTIME_EXTRAS = ("rq", "arango", "otel", "ui")


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def declared(*extras: str) -> list[Requirement]:
    """The requirements of the package and of `extras`, less references to itself."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [r for r in map(Requirement, lines) if canonicalize_name(r.name) != "statesaga"]


def pins(path: Path) -> dict[str, str]:
    """`name==version` lines of a constraints file, by canonical name."""
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {raw!r} is not a name==version pin"
            found[canonicalize_name(name)] = version.strip()
    return found


def lower_bound(req: Requirement) -> str | None:
    bounds = [s.version for s in req.specifier if s.operator == ">="]
    return bounds[0] if len(bounds) == 1 else None


def test_every_runtime_dependency_has_one_lower_bound() -> None:
    for req in declared(*RUNTIME_EXTRAS):
        assert lower_bound(req) is not None, f"{req}: no lower bound (>=)"


def test_the_lowest_constraints_are_exactly_the_lower_bounds() -> None:
    lowest = pins(ROOT / ".ci" / "constraints-lowest.txt")
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    extras = [e for e in project["optional-dependencies"] if e != "bench"]  # bench: peers
    bounded = {
        canonicalize_name(r.name): lower_bound(r)
        for r in declared(*extras)
        if lower_bound(r) is not None
    }
    runtime = {canonicalize_name(r.name) for r in declared(*RUNTIME_EXTRAS)}
    assert runtime <= set(lowest), f"not in constraints-lowest.txt: {runtime - set(lowest)}"
    for name, version in lowest.items():
        assert name in bounded, f"constraints-lowest.txt pins {name}, which nothing bounds"
        assert Version(version) == Version(str(bounded[name])), name


def test_the_known_good_constraints_pin_every_runtime_dependency_within_its_bounds() -> None:
    good = pins(ROOT / "constraints.txt")
    for req in declared(*RUNTIME_EXTRAS):
        name = canonicalize_name(req.name)
        assert name in good, f"constraints.txt does not pin {req.name}"
        assert req.specifier.contains(good[name], prereleases=True), f"{name}=={good[name]}"
