"""The distribution installs `statesaga` and nothing with a generic top-level name."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib.util as u, json, pathlib
generic = [n for n in ("framework", "adapters", "statecharts", "examples") if u.find_spec(n)]
import statesaga, statesaga.adapters, statesaga.statecharts, statesaga.examples
from statesaga.charts.lifecycles import lifecycle
print(json.dumps({"generic": generic, "step_states": len(lifecycle("step").states),
                  "typed": (pathlib.Path(statesaga.__file__).parent / "py.typed").exists()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("editable", [False, True], ids=["wheel", "editable"])
def test_install_exposes_only_statesaga(tmp_path: Path, editable: bool, source_copy: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    target = ["-e", str(source_copy)] if editable else [str(source_copy)]
    subprocess.run(
        [py, "-m", "pip", "install", "-q", *target], check=True, cwd=tmp_path, capture_output=True
    )
    out = subprocess.run(
        [py, "-c", CHECK], check=True, cwd=tmp_path, capture_output=True, text=True
    )
    assert '"generic": []' in out.stdout, out.stdout
    from statesaga.charts.lifecycles import lifecycle

    assert f'"step_states": {len(lifecycle("step").states)}' in out.stdout
    assert '"typed": true' in out.stdout
    cli = subprocess.run(
        [env_dir / "bin" / "statesaga", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert cli.returncode == 0 and "statesaga" in cli.stdout


def test_importing_statesaga_loads_no_heavy_adapter() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import statesaga, statesaga.cli"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    modules = {
        line.split("|")[-1].strip().split(".")[0] for line in out.stderr.splitlines() if "|" in line
    }
    assert not modules & {"redis", "rq", "arango"}, sorted(modules & {"redis", "rq", "arango"})


@pytest.mark.slow
def test_validate_does_not_import_adapters(tmp_path: Path) -> None:
    code = (
        "import sys; from statesaga.cli import main\n"
        "try:\n    main(['validate', *sys.argv[1:]])\nexcept SystemExit as e:\n"
        "    heavy = [m for m in ('redis', 'rq', 'arango') if m in sys.modules]\n"
        "    print(e.code, heavy)\n"
    )
    files = [str(p) for p in sorted((ROOT / "statecharts").glob("*.yaml"))]
    out = subprocess.run(
        [sys.executable, "-c", code, *files], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().endswith("0 []"), out.stdout


TYPED_USER = """
from statesaga import Engine, load_definition

definition = load_definition("trip.yaml")
name: str = definition.name
wrong: int = definition.name
engine: Engine
"""


@pytest.mark.slow
def test_mypy_sees_the_types_of_the_readme_editable_install(
    tmp_path: Path, source_copy: Path
) -> None:
    """The README's editable install (`--config-settings editable_mode=strict`) gives mypy a
    path it can follow; the default editable mode installs an import hook mypy cannot read."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -q -e . --config-settings editable_mode=strict" in readme
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run(
        [
            py,
            "-m",
            "pip",
            "install",
            "-q",
            "-e",
            str(source_copy),
            "--config-settings",
            "editable_mode=strict",
        ],
        check=True,
        cwd=tmp_path,
        capture_output=True,
    )
    user = tmp_path / "user.py"
    user.write_text(TYPED_USER, encoding="utf-8")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--python-executable",
            str(py),
            "--no-incremental",
            str(user),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    # statesaga is found and typed: the one error is the user's own, on line 6
    assert "import-not-found" not in out.stdout, out.stdout
    assert out.stdout.splitlines()[0].startswith("user.py:6: error: Incompatible types"), out.stdout
    assert "Found 1 error" in out.stdout
