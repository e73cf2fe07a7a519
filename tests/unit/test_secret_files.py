"""Server secrets from files: systemd ``LoadCredential=`` ($CREDENTIALS_DIRECTORY) and Kubernetes
secret mounts ($FLEETPULSE_SECRETS_DIR), through the real loader and the real ``fleetpulse`` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetpulse.alerts.store import store_url
from fleetpulse.config import load_settings, secrets_dirs_from_env
from fleetpulse.settings import ServerSettings

SERVER_TOML = """
[kafka]
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "fleetpulse-tickets"

[[alerts.connectors]]
kind = "servicenow"
name = "snow"
instance_url = "https://city.service-now.com"
username = "svc-fleetpulse"

[[alerts.connectors]]
kind = "webhook"
name = "hook"
url = "https://hooks.example.org/fleet"
"""


def _k8s_secret_mount(root: Path, files: dict[str, str]) -> Path:
    """The layout kubelet writes: the files in a timestamped directory, ``..data`` and symlinks to it."""
    payload = root / "..2026_12_01_10_00_00.000000001"
    payload.mkdir(parents=True)
    for name, value in files.items():
        (payload / name).write_text(value, encoding="utf-8")
        (root / name).symlink_to(Path("..data") / name)
    (root / "..data").symlink_to(payload.name)
    return root


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(SERVER_TOML, encoding="utf-8")
    return path


def test_systemd_credentials_fill_secrets_the_toml_leaves_out(toml: Path, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "FLEETPULSE_KAFKA__SASL_PASSWORD").write_text("kafka-pw\n", encoding="utf-8")
    (credentials / "FLEETPULSE_ALERTS__CONNECTORS__SNOW__PASSWORD").write_text("snow-pw", encoding="utf-8")
    (credentials / "FLEETPULSE_MDM__SECRET").write_text("mdm-key\r\n", encoding="utf-8")
    (credentials / "unrelated-credential").write_text("ignored", encoding="utf-8")
    dirs = secrets_dirs_from_env({"CREDENTIALS_DIRECTORY": str(credentials)})
    settings = load_settings(ServerSettings, toml, dirs)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "kafka-pw"  # one trailing newline cut
    assert settings.mdm.secret is not None
    assert settings.mdm.secret.get_secret_value() == "mdm-key"
    (snow, hook) = settings.alerts.connectors
    assert snow.secrets() == ["snow-pw"]
    assert hook.secrets() == []


def test_kubernetes_secret_mount_layout(toml: Path, tmp_path: Path) -> None:
    mount = _k8s_secret_mount(
        tmp_path / "run-secrets",
        {"FLEETPULSE_KAFKA__SASL_PASSWORD": "from-mount", "FLEETPULSE_ALERTS__CONNECTORS__SNOW__PASSWORD": "snow"},
    )
    settings = load_settings(ServerSettings, toml, secrets_dirs_from_env({"FLEETPULSE_SECRETS_DIR": str(mount)}))
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "from-mount"


def test_a_secret_file_wins_over_the_environment(toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPULSE_KAFKA__SASL_PASSWORD", "from-env")
    (tmp_path / "FLEETPULSE_KAFKA__SASL_PASSWORD").write_text("from-file", encoding="utf-8")
    (tmp_path / "FLEETPULSE_ALERTS__CONNECTORS__SNOW__PASSWORD").write_text("snow", encoding="utf-8")
    settings = load_settings(ServerSettings, toml, [tmp_path])
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == "from-file"


def test_a_secret_for_a_connector_that_is_not_configured_is_an_error(toml: Path, tmp_path: Path) -> None:
    (tmp_path / "FLEETPULSE_ALERTS__CONNECTORS__TOPDESK__APP_PASSWORD").write_text("td-secret-value", encoding="utf-8")
    with pytest.raises(ValueError, match="no entry named 'topdesk'") as raised:
        load_settings(ServerSettings, toml, [tmp_path])
    assert "td-secret-value" not in str(raised.value)


def test_the_same_secret_in_two_directories_is_an_error(toml: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "FLEETPULSE_KAFKA__SASL_PASSWORD").write_text(name, encoding="utf-8")
    with pytest.raises(ValueError, match="more than one secrets directory"):
        load_settings(ServerSettings, toml, [tmp_path / "a", tmp_path / "b"])


def test_a_missing_secrets_directory_is_an_error(toml: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="secrets directory not found"):
        load_settings(ServerSettings, toml, [tmp_path / "absent"])


def test_the_real_cli_reads_systemd_credentials(toml: Path, tmp_path: Path) -> None:
    """``fleetpulse config show`` as systemd starts it: without the credential the ServiceNow password is
    missing (exit 2); with ``$CREDENTIALS_DIRECTORY`` it loads and shows the password masked."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_") and k != "CREDENTIALS_DIRECTORY"}
    command = [sys.executable, "-m", "fleetpulse", "--config", str(toml), "config", "show"]
    missing = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert missing.returncode == 2
    assert "alerts.connectors.0.servicenow.password: Field required" in missing.stderr
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "FLEETPULSE_ALERTS__CONNECTORS__SNOW__PASSWORD").write_text("snow-cred-42", encoding="utf-8")
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    loaded = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["alerts"]["connectors"][0]["password"] == "**********"
    assert "snow-cred-42" not in loaded.stdout + loaded.stderr


USERS = [{"name": "it-lead", "role": "admin", "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"}]


def test_local_logins_and_the_database_uri_arrive_from_a_kubernetes_mount(toml: Path, tmp_path: Path) -> None:
    """What the manifests mount: the operator's libpq URI, password inside, and the logins as JSON text."""
    mount = _k8s_secret_mount(
        tmp_path / "run-secrets",
        {
            "FLEETPULSE_ALERTS__STORE_URL": "postgresql://fleetpulse:pg-pw-7@fleetpulse-pg-rw.fleetpulse:5432/fleetpulse",
            "FLEETPULSE_ALERTS__API__USERS": json.dumps(USERS),
            "FLEETPULSE_ALERTS__CONNECTORS__SNOW__PASSWORD": "snow",
        },
    )
    settings = load_settings(ServerSettings, toml, secrets_dirs_from_env({"FLEETPULSE_SECRETS_DIR": str(mount)}))
    assert [(user.name, user.role) for user in settings.alerts.api.users] == [("it-lead", "admin")]
    url = store_url(settings.alerts.store_url)
    assert (url.drivername, url.username, url.password) == ("postgresql+psycopg", "fleetpulse", "pg-pw-7")
    assert store_url("postgres://u:p@db/fleet").drivername == "postgresql+psycopg"
    assert store_url("sqlite:///tickets.db").drivername == "sqlite"  # every other URL as written


def test_attack_a_malformed_logins_file_is_refused_without_echoing_its_hashes(toml: Path, tmp_path: Path) -> None:
    """A truncated users.json must stop the CLI with a position, never print the password hashes it holds;
    ``config show`` masks the database password inside a mounted URI."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_") and k != "CREDENTIALS_DIRECTORY"}
    mount = tmp_path / "mount"
    mount.mkdir()
    (mount / "FLEETPULSE_ALERTS__CONNECTORS__SNOW__PASSWORD").write_text("snow", encoding="utf-8")
    (mount / "FLEETPULSE_ALERTS__STORE_URL").write_text(
        "postgresql://fleetpulse:pg-pw-7@db/fleetpulse", encoding="utf-8"
    )
    (mount / "FLEETPULSE_ALERTS__API__USERS").write_text(json.dumps(USERS)[:-3], encoding="utf-8")
    env["FLEETPULSE_SECRETS_DIR"] = str(mount)
    command = [sys.executable, "-m", "fleetpulse", "--config", str(toml), "config", "show"]
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert refused.returncode == 2
    assert "alerts.api.users" in refused.stderr
    assert "not a JSON list" in refused.stderr
    assert "argon2id" not in refused.stdout + refused.stderr
    (mount / "FLEETPULSE_ALERTS__API__USERS").write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    deep = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert deep.returncode == 2
    assert "nested too deeply" in deep.stderr
    assert "Traceback" not in deep.stderr
    (mount / "FLEETPULSE_ALERTS__API__USERS").write_text(json.dumps(USERS), encoding="utf-8")
    shown = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["alerts"]["store_url"] == "postgresql://fleetpulse:**********@db/fleetpulse"
    assert "pg-pw-7" not in shown.stdout + shown.stderr
