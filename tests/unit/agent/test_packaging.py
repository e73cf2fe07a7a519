"""``fleetpulse`` without extras is the agent: it installs and runs with the five light dependencies."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
AGENT_DEPENDENCIES = {"pydantic", "pydantic-settings", "typer", "psutil", "kafka-python"}


@pytest.mark.slow
def test_base_install_runs_agent_once(tmp_path: Path) -> None:
    source = tmp_path / "src"  # pip builds in-tree: build from a copy, never litter the checkout
    shutil.copytree(
        REPO,
        source,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".local", "*.egg-info", "build", "__pycache__", ".mypy_cache", ".ruff_cache"
        ),
    )
    env_dir = tmp_path / "venv"
    # system site packages stand in for a package mirror (the machine has no internet);
    # --no-deps/--no-index keep pip from fetching anything
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    requires = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m, json; print(json.dumps(m.requires('fleetpulse')))"],
        check=True,
        capture_output=True,
        text=True,
    )
    base = {
        r.split(";")[0].split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower()
        for r in json.loads(requires.stdout)
        if "extra ==" not in r
    }
    assert base == AGENT_DEPENDENCIES
    machine_id = tmp_path / "machine-id"
    machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    out = subprocess.run(
        [str(env_dir / "bin" / "fleetpulse-agent"), "once"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env={**os.environ, "FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE": str(machine_id), "PYTHONPATH": ""},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["schema_version"] == 1
    where = subprocess.run(
        [str(python), "-c", "import fleetpulse; print(fleetpulse.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    assert str(env_dir) in where.stdout, "the venv's own install ran, not the repository checkout"
    assert sys.prefix != str(env_dir)
