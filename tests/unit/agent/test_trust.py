"""A privileged agent takes orders only from files administrators control, and runs only their tools.

The attacks run the real ``fleetpulse-agent`` process as root (what the service is): a local user
who can write the config, a folder above it, or the tool binary must not get code run as root.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetpulse.agents import trust
from fleetpulse.agents.collectors.config import SmartConfig
from fleetpulse.agents.trust import UntrustedPathError, check_trusted, resolve_tool, running_privileged

needs_root = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="the attack is on a privileged agent: needs root"
)
NOBODY = 65534


def evil_tool(path: Path, marker: Path, mode: int = 0o755) -> Path:
    """A ``smartctl`` that leaves a mark when run (as root, were it accepted) and finds no disks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch {marker}\necho '{{\"devices\": []}}'\n")
    path.chmod(mode)
    return path


def config(path: Path, smartctl: Path | str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[[collectors]]\nkind = "smart"\nsmartctl = "{smartctl}"\n')
    path.chmod(mode)
    return path


def agent(tmp_path: Path, config_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_AGENT")}
    env.update(
        FLEETPULSE_AGENT_SPOOL_DIR=str(tmp_path / "spool"),
        FLEETPULSE_AGENT_IDENTITY__DEVICE_ID="trust-test",
        FLEETPULSE_AGENT_DEVICE_KIND="desktop",
        FLEETPULSE_AGENT_SMART_INTERVAL_S="0",
        FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",
    )
    return subprocess.run(
        [sys.executable, "-m", "fleetpulse.agents.cli", "--config", str(config_path), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@needs_root
@pytest.mark.parametrize("command", [["run", "--max-reports", "1"], ["once"]], ids=" ".join)
def test_world_writable_config_naming_a_tool_is_refused(tmp_path: Path, command: list[str]) -> None:
    """Before: accepted, and the named binary ran as root."""
    marker = tmp_path / "pwned"
    tool = evil_tool(tmp_path / "evil" / "smartctl", marker)
    result = agent(tmp_path, config(tmp_path / "etc" / "agent.toml", tool, mode=0o666), *command)
    assert result.returncode == 2
    assert "error: invalid configuration" in result.stderr
    assert "writable by every user" in result.stderr
    assert "agent.toml" in result.stderr
    assert not marker.exists(), "the attacker's binary never ran"


@needs_root
def test_config_in_a_folder_others_can_write_is_refused(tmp_path: Path) -> None:
    """Whoever can write the folder can replace the file, whatever the file's own mode."""
    marker = tmp_path / "pwned"
    folder = tmp_path / "shared"
    cfg = config(folder / "agent.toml", evil_tool(tmp_path / "evil" / "smartctl", marker))
    folder.chmod(0o777)
    result = agent(tmp_path, cfg, "once")
    assert result.returncode == 2
    assert f"(folder {folder})" in result.stderr
    assert not marker.exists()


@needs_root
def test_config_owned_by_another_user_or_reached_through_a_symlink_into_their_folder_is_refused(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "pwned"
    tool = evil_tool(tmp_path / "evil" / "smartctl", marker)
    theirs = config(tmp_path / "user" / "agent.toml", tool)
    os.chown(theirs, NOBODY, NOBODY)
    result = agent(tmp_path, theirs, "once")
    assert result.returncode == 2
    assert f"owned by uid {NOBODY}" in result.stderr

    os.chown(theirs, 0, 0)
    os.chown(theirs.parent, NOBODY, NOBODY)  # root's file, but in the user's folder: they can swap it
    link = tmp_path / "etc" / "agent.toml"
    link.parent.mkdir()
    link.symlink_to(theirs)
    result = agent(tmp_path, link, "once")
    assert result.returncode == 2
    assert f"owned by uid {NOBODY}" in result.stderr
    assert not marker.exists()


@needs_root
@pytest.mark.parametrize("attack", ["world-writable binary", "binary owned by a user", "folder others can write"])
def test_a_tool_others_can_modify_is_never_run(tmp_path: Path, attack: str) -> None:
    """The config is sound, but the binary it names is not: the agent reports instead of running it."""
    marker = tmp_path / "pwned"
    tool = evil_tool(tmp_path / "tools" / "smartctl", marker, mode=0o777 if attack.startswith("world") else 0o755)
    if attack == "binary owned by a user":
        os.chown(tool, NOBODY, NOBODY)
    if attack == "folder others can write":
        tool.parent.chmod(0o777)
    result = agent(tmp_path, config(tmp_path / "etc" / "agent.toml", tool), "once")
    assert result.returncode == 0, result.stderr
    errors = json.loads(result.stdout)["collector_errors"]
    assert [e["collector"] for e in errors] == ["smart"]
    assert "UntrustedPathError" in errors[0]["error"]
    assert "refusing it, since the agent's service acts on it" in errors[0]["error"]
    assert not marker.exists()


@needs_root
def test_a_root_owned_tool_in_root_owned_folders_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tool = evil_tool(tmp_path / "tools" / "smartctl", marker)
    result = agent(tmp_path, config(tmp_path / "etc" / "agent.toml", tool), "once")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout).get("collector_errors", []) == []
    assert marker.exists(), "the trust check does not block a properly installed tool"


def test_tool_paths_must_be_absolute_or_bare_names() -> None:
    assert SmartConfig(smartctl="/usr/sbin/smartctl").smartctl == "/usr/sbin/smartctl"
    assert SmartConfig().smartctl == "smartctl"
    with pytest.raises(ValueError, match="absolute path or a bare name"):
        SmartConfig(smartctl="bin/smartctl")
    with pytest.raises(UntrustedPathError, match="absolute path or a bare name"):
        resolve_tool("./smartctl")


def test_bare_tool_names_come_from_system_folders_never_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evil_tool(tmp_path / "smartctl", tmp_path / "pwned")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(trust, "POSIX_TOOL_DIRS", ())
    with pytest.raises(FileNotFoundError, match="smartctl: not found"):
        resolve_tool("smartctl")
    monkeypatch.setattr(trust, "POSIX_TOOL_DIRS", (str(tmp_path),))
    assert resolve_tool("smartctl") == str(tmp_path / "smartctl")


def test_relative_paths_are_refused() -> None:
    with pytest.raises(UntrustedPathError, match="absolute"):
        check_trusted(Path("agent.toml"), "config file")


@pytest.mark.skipif(os.name != "posix", reason="POSIX privilege detection")
def test_a_service_holding_capabilities_counts_as_privileged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd runs the agent as a dynamic user with CAP_SYS_RAWIO/CAP_SYS_ADMIN: as good as root for smartctl."""
    status = tmp_path / "status"
    monkeypatch.setattr(trust, "_LINUX_STATUS", status)
    monkeypatch.setattr(os, "geteuid", lambda: 61_234)
    status.write_text("Name:\tpython3\nCapEff:\t0000000000220000\n")
    assert running_privileged()
    status.write_text("Name:\tpython3\nCapEff:\t0000000000000000\n")
    assert not running_privileged()
