"""The server image's Dockerfile: hadolint-clean, and it copies every component the package links in."""

from __future__ import annotations

import re
import subprocess

from fleetpulse.compat import tomllib
from tests.harness import REPO
from tests.unit.deploy.tools import DEPLOY, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def test_hadolint_finds_no_problem() -> None:
    proc = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_contains_every_component_folder() -> None:
    """pyproject maps the top-level component folders into fleetpulse.<component>; a missing COPY breaks the install."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.MULTILINE))
    mapped = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    assert mapped, "expected the component folders in pyproject's package-dir"
    assert mapped | {"fleetpulse"} <= copied


def test_runtime_user_is_not_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    final_stage = text.rsplit("FROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final_stage, re.MULTILINE)
