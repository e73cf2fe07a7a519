"""The Windows service definition and its installer, checked statically (no Windows here to run them).

The installer runs elevated, and the service as LocalSystem: every file that decides what LocalSystem runs
must be one only administrators can write.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from tests.unit.deploy.tools import DEPLOY

WINDOWS = DEPLOY / "agent" / "windows"
SCRIPT = (WINDOWS / "install-service.ps1").read_text(encoding="utf-8")


def test_python_runs_isolated_from_the_working_directory_and_environment() -> None:
    """``python -m`` puts the working directory first on sys.path: a planted ``fleetpulse`` package there
    would run as LocalSystem. ``-I`` keeps it and PYTHON* variables out."""
    service = ET.parse(WINDOWS / "fleetpulse-agent.xml").getroot()
    executable = service.findtext("executable") or ""
    arguments = (service.findtext("arguments") or "").split()
    assert executable.startswith("%ProgramFiles%\\")
    assert arguments[:3] == ["-I", "-m", "fleetpulse.agents.cli"]


def test_installer_refuses_a_state_folder_another_user_owns_and_names_groups_by_sid() -> None:
    assert "GetOwner([System.Security.Principal.SecurityIdentifier])" in SCRIPT
    assert re.search(r"-notin @\(\$system, \$admins\)", SCRIPT)
    assert "throw" in SCRIPT
    grants = [line for line in SCRIPT.splitlines() if line.startswith("icacls")]
    assert grants
    assert all("SYSTEM:" not in g and "Administrators:" not in g for g in grants)
    assert '/setowner "*$admins"' in SCRIPT


def test_service_wrapper_is_installed_where_only_administrators_write() -> None:
    """WinSW reads the XML beside it, which names the program: never from the folder the kit was unpacked to."""
    assert '$service = Join-Path $env:ProgramFiles "fleetpulse-agent\\service"' in SCRIPT
    runs = [line for line in SCRIPT.splitlines() if line.startswith("& ")]
    assert runs
    assert all(line.startswith('& (Join-Path $service "fleetpulse-agent.exe")') for line in runs)
