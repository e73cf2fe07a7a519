"""The agent's systemd unit, checked by systemd itself (offline: no service manager needed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.unit.deploy.tools import DEPLOY, tool

UNIT = DEPLOY / "agent" / "fleetpulse-agent.service"
MAX_EXPOSURE = 3.0
"""systemd's 0-10 exposure score; <= 3 is rated "OK" (the unit measures 2.2 on systemd 252)."""


def installed_unit(tmp_path: Path) -> Path:
    """The unit as installed: ExecStart points at this environment's fleetpulse-agent."""
    agent = shutil.which("fleetpulse-agent")
    assert agent is not None, "fleetpulse-agent entry point not installed"
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/bin/fleetpulse-agent", agent))
    return unit


def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    done = subprocess.run([analyze, "verify", str(installed_unit(tmp_path))], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr


def test_unit_is_sandboxed(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    done = subprocess.run(
        [analyze, "security", "--offline=yes", f"--threshold={int(MAX_EXPOSURE * 10)}", str(installed_unit(tmp_path))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Overall exposure level" in done.stdout
