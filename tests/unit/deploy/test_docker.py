"""The server image's Dockerfile: hadolint-clean, and it copies every component the package links in."""

from __future__ import annotations

import re
import subprocess

from tests.harness import REPO
from tests.unit.deploy.tools import DEPLOY, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def test_hadolint_finds_no_problem() -> None:
    proc = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_contains_every_linked_component() -> None:
    """fleetpulse/<component> are symlinks to top-level folders; a missing COPY would ship dangling links."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+) \./\1$", text, re.MULTILINE))
    linked = {p.name for p in (REPO / "fleetpulse").iterdir() if p.is_symlink()}
    assert linked, "expected component symlinks in fleetpulse/"
    assert linked | {"fleetpulse"} <= copied


def test_runtime_user_is_not_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    final_stage = text.rsplit("FROM ", 1)[1]
    assert re.search(r"^USER 10001:10001$", final_stage, re.MULTILINE)
