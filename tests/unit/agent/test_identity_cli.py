"""Pseudonymous identity and the ``fleetpulse-agent`` commands (run as real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleetpulse.agents.identity import (
    DEVICE_KEY_FILE,
    IdentityError,
    build_identity,
    load_or_create_device_key,
    mapping_entry,
)
from fleetpulse.agents.settings import AgentSettings, IdentitySettings, load_agent_settings
from fleetpulse.contract import HealthReport
from fleetpulse.contract.auth import key_fingerprint

REPO = Path(__file__).resolve().parents[3]
NOBODY = 65534
SAMPLE_CONFIG = REPO / "deploy" / "agent" / "agent.toml"


@pytest.fixture
def machine_id(tmp_path: Path) -> Path:
    path = tmp_path / "machine-id"
    path.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    return path


def test_device_id_is_a_keyed_pseudonym(machine_id: Path) -> None:
    a = build_identity(IdentitySettings(secret=SecretStr("fleet-a"), machine_id_file=machine_id))
    again = build_identity(IdentitySettings(secret=SecretStr("fleet-a"), machine_id_file=machine_id))
    b = build_identity(IdentitySettings(secret=SecretStr("fleet-b"), machine_id_file=machine_id))
    assert a.device_id == again.device_id, "stable across restarts"
    assert a.device_id != b.device_id, "another fleet secret gives an unlinkable id"
    assert "3d1219c7" not in a.device_id
    assert HealthReport.model_fields["device_id"].annotation is not None
    HealthReport.model_validate(
        {
            "device_id": a.device_id,
            "seq": 0,
            "collected_at": "2026-01-01T00:00:00Z",
            "kind": "laptop",
            "platform": "linux",
        }
    )
    assert a.hash_serial("WD-123") != b.hash_serial("WD-123")
    assert "WD-123" not in a.hash_serial("WD-123")


def test_mapping_entry_links_pseudonym_to_machine_for_it(machine_id: Path) -> None:
    settings = IdentitySettings(secret=SecretStr("fleet-a"), machine_id_file=machine_id)
    entry = mapping_entry(build_identity(settings), settings)
    assert entry["device_id"] == build_identity(settings).device_id
    assert entry["machine_id"] == "3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert entry["hostname"]


def agent_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleetpulse.agents.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_config_show_masks_secrets(machine_id: Path) -> None:
    out = agent_cli(
        "config",
        "show",
        env={
            "FLEETPULSE_AGENT_IDENTITY__SECRET": "very-secret-fleet-key",
            "FLEETPULSE_AGENT_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "FLEETPULSE_AGENT_KAFKA__SASL_USERNAME": "agent",
            "FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD": "very-secret-password",
        },
    )
    assert out.returncode == 0, out.stderr
    assert "very-secret" not in out.stdout + out.stderr
    shown = json.loads(out.stdout)
    assert shown["kafka"]["sasl_password"] == "**********"
    assert shown["identity"]["secret"] == "**********"
    assert shown["spool_max_bytes"] == 50 * 1024 * 1024
    assert shown["smart_interval_s"] == 3600


def test_sample_config_loads() -> None:
    settings = load_agent_settings(SAMPLE_CONFIG)
    assert {c.kind for c in settings.collectors} >= {"smart", "battery", "stability"}
    assert settings.interval_s == 900 == AgentSettings().interval_s, "the sample shows the default: 15 minutes"
    assert settings.event_probe_interval_s == 60


def test_once_prints_a_valid_report(tmp_path: Path, machine_id: Path) -> None:
    out = agent_cli(
        "once",
        env={
            "FLEETPULSE_AGENT_IDENTITY__SECRET": "s",
            "FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE": str(machine_id),
            "FLEETPULSE_AGENT_SPOOL_DIR": str(tmp_path / "spool"),
        },
    )
    assert out.returncode == 0, out.stderr
    report = HealthReport.model_validate_json(out.stdout)
    assert report.system is not None
    assert not (tmp_path / "spool").exists(), "once neither spools nor sends"


def test_identity_command_prints_the_register_entry(machine_id: Path, tmp_path: Path) -> None:
    env = {
        "FLEETPULSE_AGENT_IDENTITY__SECRET": "s",
        "FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE": str(machine_id),
        "FLEETPULSE_AGENT_SPOOL_DIR": str(tmp_path / "spool"),
    }
    out = agent_cli("identity", env=env)
    assert out.returncode == 0, out.stderr
    entry = json.loads(out.stdout)
    assert entry["machine_id"] == "3d1219c7c4c5404aaa1f6d2a48adfda4"
    assert entry["device_id"].startswith("d")
    # the device key is created at install (owner-only) and only its fingerprint is ever printed
    key_file = tmp_path / "spool" / "device.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    assert entry["key_fingerprint"] == key_fingerprint(key)
    assert key.hex() not in out.stdout + out.stderr
    assert json.loads(agent_cli("identity", env=env).stdout)["key_fingerprint"] == entry["key_fingerprint"]


def test_device_key_file_others_can_read_or_garbage_is_refused(tmp_path: Path) -> None:
    key = load_or_create_device_key(tmp_path)
    assert load_or_create_device_key(tmp_path) == key
    path = tmp_path / DEVICE_KEY_FILE
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="accessible to other users"):
        load_or_create_device_key(tmp_path)
    path.chmod(0o600)
    path.write_text("not hex")
    with pytest.raises(IdentityError, match="32-byte hex key"):
        load_or_create_device_key(tmp_path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="planting as another user needs chown: root")
def test_attack_a_device_key_planted_by_another_user_is_refused(tmp_path: Path, machine_id: Path) -> None:
    """Before: a user who made the spool folder first (spool_dir under /tmp, /var/tmp) left a key of their
    choosing there, owner-only, and the service signed this device's reports with it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)  # like /tmp: any user may create a folder here
    spool_dir = shared / "fleetpulse-agent"
    spool_dir.mkdir(mode=0o700)
    planted = spool_dir / DEVICE_KEY_FILE
    key = os.urandom(32)
    planted.write_text(key.hex() + "\n")
    planted.chmod(0o600)
    for path in (spool_dir, planted):
        os.chown(path, NOBODY, NOBODY)
    with pytest.raises(IdentityError, match=f"spool folder .* owned by uid {NOBODY}"):
        load_or_create_device_key(spool_dir, strict=True)
    env = {"FLEETPULSE_AGENT_SPOOL_DIR": str(spool_dir), "FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE": str(machine_id)}
    out = agent_cli("run", "--max-reports", "1", env=env)
    assert out.returncode == 1
    assert f"error: device key: spool folder {spool_dir} is owned by uid {NOBODY}" in out.stderr
    assert "Traceback" not in out.stderr
    assert key.hex() not in out.stderr
    assert [p.name for p in spool_dir.iterdir()] == [DEVICE_KEY_FILE], "the service wrote nothing into their folder"
    os.chown(spool_dir, 0, 0)  # their key in a folder of root's
    with pytest.raises(IdentityError, match=f"device key .* owned by uid {NOBODY}"):
        load_or_create_device_key(spool_dir, strict=True)
    os.chown(planted, 0, 0)
    assert load_or_create_device_key(spool_dir, strict=True) == key, "root's own key is read"


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "agent.toml"
    bad.write_text('interval_s = "often"\n')
    out = agent_cli("--config", str(bad), "config", "show")
    assert out.returncode == 2
    assert "invalid configuration" in out.stderr


def test_run_with_unusable_spool_dir_fails_clearly(tmp_path: Path, machine_id: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    out = agent_cli(
        "run",
        env={
            "FLEETPULSE_AGENT_SPOOL_DIR": str(blocker / "spool"),
            "FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE": str(machine_id),
        },
    )
    assert out.returncode == 1
    assert "cannot open the spool" in out.stderr
