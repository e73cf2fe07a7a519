"""``fleetpulse`` without extras is the agent: its wheel installs into a clean venv and runs.

The wheel and the sdist are built from a copy of the checkout the way a release is (isolated
build, dependencies from the package index), and the agent's wheel goes into a venv that borrows
nothing from this interpreter, with exactly its five light dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
AGENT_DEPENDENCIES = {"pydantic", "pydantic-settings", "typer", "psutil", "kafka-python"}
IGNORED = (
    ".git",
    ".local",
    "*.egg-info",
    "build",
    "dist",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    "deploy",
    "target",
)


def _run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=900, cwd=cwd, env=env, check=False
    )
    assert proc.returncode == 0, f"{command}: {proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def distributions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(wheel, sdist) built from a copy of the checkout: pip builds in-tree, never litter the checkout."""
    tmp = tmp_path_factory.mktemp("dist")
    source = tmp / "src"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(*IGNORED))
    _run(sys.executable, "-m", "build", "--outdir", tmp / "out", source)
    (wheel,) = (tmp / "out").glob("fleetpulse-*.whl")
    (sdist,) = (tmp / "out").glob("fleetpulse-*.tar.gz")
    return wheel, sdist


def _clean_venv(where: Path) -> Path:
    venv.EnvBuilder(system_site_packages=False, with_pip=True, clear=True).create(where)
    return where / "bin"


def _outside_env(tmp: Path) -> dict[str, str]:
    """No PYTHONPATH and another working directory: only the venv's own install can be imported."""
    return {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "HOME": str(tmp)}


@pytest.mark.slow
def test_agent_wheel_installs_in_a_clean_venv_and_runs_once(distributions: tuple[Path, Path], tmp_path: Path) -> None:
    wheel, _ = distributions
    bin_dir = _clean_venv(tmp_path / "venv")
    env = _outside_env(tmp_path)
    _run(bin_dir / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, env=env)
    requires = json.loads(
        _run(
            bin_dir / "python",
            "-c",
            "import importlib.metadata as m, json; print(json.dumps(m.requires('fleetpulse')))",
        )
    )
    base = {
        r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for r in requires
        if "extra ==" not in r and "python_version" not in r  # tomli: the agent's backport for 3.10 only
    }
    assert base == AGENT_DEPENDENCIES
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    out = _run(
        bin_dir / "fleetpulse-agent",
        "once",
        cwd=tmp_path,
        env={**env, "FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE": str(machine_id)},
    )
    assert json.loads(out)["schema_version"] == 1
    where = _run(
        bin_dir / "python", "-c", "import fleetpulse.agents.cli as c; print(c.__file__)", cwd=tmp_path, env=env
    )
    assert str(tmp_path / "venv") in where, "the venv's own install ran, not the repository checkout"


@pytest.mark.slow
def test_sdist_carries_every_component_and_no_links(distributions: tuple[Path, Path]) -> None:
    _, sdist = distributions
    with tarfile.open(sdist) as archive:
        members = archive.getmembers()
    names = {m.name.split("/", 1)[1] for m in members if "/" in m.name}
    for component in ("agents", "streams", "models", "alerts", "dashboards"):
        assert f"{component}/__init__.py" in names, component
    assert "fleetpulse/__init__.py" in names
    assert not [m.name for m in members if m.issym() or m.islnk()]


@pytest.mark.slow
def test_wheel_lays_the_components_out_as_fleetpulse_subpackages(distributions: tuple[Path, Path]) -> None:
    import zipfile

    wheel, _ = distributions
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("agents/cli.py", "streams/app.py", "models/state.py", "alerts/api/app.py", "dashboards/cli.py"):
        assert f"fleetpulse/{module}" in names, module
    assert "fleetpulse/alerts/store/migrations/env.py" in names
