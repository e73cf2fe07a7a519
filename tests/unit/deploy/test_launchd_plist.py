"""The agent's macOS LaunchDaemon: the command line the service parser accepts, restart policy, no secret."""

from __future__ import annotations

import plistlib
import re
from pathlib import Path
from typing import Any

from fleetpulse.agents.cli import parse_service_args
from fleetpulse.agents.settings import AgentSettings, secret_fields
from tests.unit.deploy.tools import DEPLOY

PLIST = DEPLOY / "agent" / "macos" / "org.fleetpulse.agent.plist"
CONFIG = Path("/Library/Application Support/fleetpulse/agent.toml")


def daemon() -> dict[str, Any]:
    with PLIST.open("rb") as fh:
        loaded = plistlib.load(fh)
    assert isinstance(loaded, dict)
    return loaded


def test_label_matches_the_file_name() -> None:
    """launchctl and MDM tools find a daemon by label; macOS expects /Library/LaunchDaemons/<label>.plist."""
    assert daemon()["Label"] + ".plist" == PLIST.name


def test_runs_the_resident_service_with_the_root_owned_config() -> None:
    arguments = daemon()["ProgramArguments"]
    assert arguments[0] == "/opt/fleetpulse-agent/bin/fleetpulse-agent"
    # ``--config`` belongs before ``run``: that is the command line the light service parser takes.
    assert parse_service_args(arguments[1:]) == (CONFIG, None)
    assert daemon().get("UserName", "root") == "root"


def test_starts_at_boot_and_restarts_only_after_a_failure() -> None:
    plist = daemon()
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ThrottleInterval"] >= 10, "a crash loop must not spin"
    assert plist["ExitTimeOut"] >= 30, "time to flush the spool after SIGTERM"


def test_holds_no_secret() -> None:
    """The plist is world-readable: secrets come from root-only files named in agent.toml."""
    plist = daemon()
    assert "EnvironmentVariables" not in plist
    secret_names = {path[-1] for path in secret_fields(AgentSettings)}
    text = PLIST.read_text(encoding="utf-8").lower()
    for name in secret_names | {"password", "secret", "token"}:
        assert not re.search(rf"<(key|string)>[^<]*{name}", text), name
