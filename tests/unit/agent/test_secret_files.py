"""Agent secrets from files: ``<field>_file`` options and systemd credentials (``$CREDENTIALS_DIRECTORY``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleetpulse.agents.delivery import producer_config
from fleetpulse.agents.settings import load_agent_settings, secret_fields
from fleetpulse.agents.trust import UntrustedPathError

SASL = "sasl-from-file-7c1d"
KEY = "key-from-file-51aa"
FLEET = "fleet-from-file-e90b"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def test_every_agent_secret_can_come_from_a_file() -> None:
    assert set(secret_fields(load_agent_settings(None, {}).__class__)) == {
        ("kafka", "sasl_password"),
        ("kafka", "ssl_key_password"),
        ("identity", "secret"),
    }


def test_file_options_in_toml_and_environment(tmp_path: Path) -> None:
    toml = write(
        tmp_path / "agent.toml",
        f'[kafka]\nsecurity_protocol = "SASL_SSL"\nsasl_mechanism = "SCRAM-SHA-512"\nsasl_username = "agent"\n'
        f'sasl_password_file = "{write(tmp_path / "s" / "sasl", SASL + chr(10))}"\n',
    )
    env = {
        "FLEETPULSE_AGENT_KAFKA__SSL_KEY_PASSWORD_FILE": str(write(tmp_path / "s" / "key", KEY)),
        "FLEETPULSE_AGENT_IDENTITY__SECRET_FILE": str(write(tmp_path / "s" / "fleet", FLEET + "\r\n")),
    }
    settings = load_agent_settings(toml, env)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL, "one trailing newline is not part of it"
    assert settings.kafka.ssl_key_password is not None
    assert settings.kafka.ssl_key_password.get_secret_value() == KEY
    assert settings.identity.secret is not None
    assert settings.identity.secret.get_secret_value() == FLEET
    config = producer_config(settings.kafka, settings.delivery, client_id="c")
    assert (config["sasl_plain_password"], config["ssl_password"]) == (SASL, KEY), "what the producer is given"


def test_systemd_credentials_fill_unset_secrets_only(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    write(creds / "kafka.sasl_password", SASL)
    write(creds / "identity.secret", FLEET)
    env = {"CREDENTIALS_DIRECTORY": str(creds), "FLEETPULSE_AGENT_IDENTITY__SECRET": "set-directly"}
    settings = load_agent_settings(None, env)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL
    assert settings.identity.secret is not None
    assert settings.identity.secret.get_secret_value() == "set-directly", "an explicit value wins"
    assert settings.kafka.ssl_key_password is None, "no credential, no value"


@pytest.mark.parametrize(
    ("content", "error"),
    [(None, "cannot read secret file"), ("", "is empty"), ("x" * 70_000, "larger than")],
)
def test_bad_secret_files_are_clear_errors_without_the_secret(tmp_path: Path, content: str | None, error: str) -> None:
    path = tmp_path / "sasl"
    if content is not None:
        write(path, content)
    with pytest.raises(ValueError, match=error) as caught:
        load_agent_settings(None, {"FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD_FILE": str(path)})
    assert str(path) in str(caught.value)
    assert "kafka.sasl_password" in str(caught.value)
    assert (content or "unset") not in str(caught.value)


def test_a_value_and_a_file_for_one_secret_is_an_error(tmp_path: Path) -> None:
    env = {
        "FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD": "direct-value-3a",
        "FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD_FILE": str(write(tmp_path / "sasl", SASL)),
    }
    with pytest.raises(ValueError, match="either sasl_password or sasl_password_file") as caught:
        load_agent_settings(None, env)
    assert "direct-value-3a" not in str(caught.value)
    assert SASL not in str(caught.value)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="a privileged agent: needs root")
def test_privileged_agent_refuses_a_secret_file_others_can_write(tmp_path: Path) -> None:
    path = write(tmp_path / "sasl", SASL, mode=0o666)
    with pytest.raises(UntrustedPathError, match="writable by every user"):
        load_agent_settings(None, {"FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD_FILE": str(path)}, privileged=True)


def test_real_cli_reads_systemd_credentials_and_prints_them_masked(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    write(creds / "kafka.sasl_password", SASL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_AGENT")}
    env.update(CREDENTIALS_DIRECTORY=str(creds), FLEETPULSE_AGENT_SPOOL_DIR=str(tmp_path / "spool"))
    proc = subprocess.run(
        [sys.executable, "-m", "fleetpulse.agents.cli", "config", "show"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["kafka"]["sasl_password"] == "**********", "loaded from the credential, shown masked"
    assert SASL not in proc.stdout + proc.stderr
