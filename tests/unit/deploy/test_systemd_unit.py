"""The agent's systemd units, checked by systemd itself (offline: no service manager needed).

The agent runs without any capability or device; the SMART helper holds smartctl's two
capabilities, no network, and writes the folder the agent reads.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.deploy.tools import DEPLOY, tool

AGENT_UNIT = DEPLOY / "agent" / "fleetpulse-agent.service"
SMART_UNIT = DEPLOY / "agent" / "fleetpulse-smart.service"
SMART_TIMER = DEPLOY / "agent" / "fleetpulse-smart.timer"
MAX_EXPOSURE = {AGENT_UNIT.name: 2.0, SMART_UNIT.name: 2.0}
"""systemd's 0-10 exposure score; <= 3 is rated "OK". Measured on systemd 252: 1.5 for each."""


def installed(tmp_path: Path, unit: Path) -> Path:
    """The units as installed side by side: ExecStart points at this environment's fleetpulse-agent."""
    agent = shutil.which("fleetpulse-agent")
    assert agent is not None, "fleetpulse-agent entry point not installed"
    for source in (AGENT_UNIT, SMART_UNIT, SMART_TIMER):
        (tmp_path / source.name).write_text(source.read_text().replace("/usr/bin/fleetpulse-agent", agent))
    return tmp_path / unit.name


def settings(unit: Path) -> dict[str, list[str]]:
    """The unit's [Service] (or [Timer]) settings, every value of a repeated key in order."""
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if re.match(r"^[A-Za-z]+=", line):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize("unit", [AGENT_UNIT, SMART_UNIT, SMART_TIMER], ids=lambda u: u.name)
def test_unit_verifies_cleanly(tmp_path: Path, unit: Path) -> None:
    done = subprocess.run(
        [tool("systemd-analyze"), "verify", str(installed(tmp_path, unit))], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("unit", [AGENT_UNIT, SMART_UNIT], ids=lambda u: u.name)
def test_unit_is_sandboxed(tmp_path: Path, unit: Path) -> None:
    threshold = int(MAX_EXPOSURE[unit.name] * 10)
    done = subprocess.run(
        [
            tool("systemd-analyze"),
            "security",
            "--offline=yes",
            f"--threshold={threshold}",
            str(installed(tmp_path, unit)),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert "Overall exposure level" in done.stdout


def test_the_agent_holds_no_capability_and_no_device() -> None:
    """A compromised agent process gets no raw disk I/O and no CAP_SYS_ADMIN: only the helper has them."""
    agent = settings(AGENT_UNIT)
    assert agent["CapabilityBoundingSet"] == [""]
    assert "AmbientCapabilities" not in agent
    assert "DeviceAllow" not in agent
    assert "SupplementaryGroups" not in agent
    assert agent["PrivateDevices"] == ["yes"]
    helper = settings(SMART_UNIT)
    assert helper["CapabilityBoundingSet"] == ["CAP_SYS_RAWIO CAP_SYS_ADMIN"]
    assert helper["PrivateNetwork"] == ["yes"]
    assert "DynamicUser" not in helper  # root's account owns the device nodes and the snapshot folder


def test_the_agent_reads_the_folder_the_helper_writes() -> None:
    agent, helper = settings(AGENT_UNIT), settings(SMART_UNIT)
    snapshot_dir = "/run/" + helper["RuntimeDirectory"][0]
    assert f"FLEETPULSE_AGENT_SMART_SNAPSHOT_DIR={snapshot_dir}" in agent["Environment"]
    assert helper["ExecStart"][0].endswith(f"smart-snapshot --out {snapshot_dir}")
    assert helper["RuntimeDirectoryPreserve"] == ["yes"]  # a oneshot: its folder must outlive the run
    timer = configparser.ConfigParser()
    timer.read(SMART_TIMER)
    assert timer["Timer"]["OnUnitActiveSec"] == "1h"
    assert "fleetpulse-smart.timer" in agent["Wants"][0]
