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
        load_agent_settings(None, {"FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD_FILE": str(path)}, strict=True)


posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX modes (Windows: the folder's ACL)")
NOBODY_GROUP = 65534


def _shared_group(path: Path) -> None:
    """Give ``path`` a group other than root's (it already has one when the tests do not run as root)."""
    if os.geteuid() == 0:
        os.chown(path, 0, NOBODY_GROUP)


@posix_only
@pytest.mark.parametrize(
    ("mode", "who"), [(0o644, "every user"), (0o604, "every user"), (0o640, "group")], ids=["0644", "0604", "0640"]
)
def test_privileged_agent_refuses_a_secret_file_others_can_read(tmp_path: Path, mode: int, who: str) -> None:
    """Before: only writers were checked, so the Kafka password in a 0644 file was accepted."""
    path = write(tmp_path / "kafka.sasl_password", SASL, mode=mode)
    _shared_group(path)
    for env in ({"FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD_FILE": str(path)}, {"CREDENTIALS_DIRECTORY": str(tmp_path)}):
        with pytest.raises(UntrustedPathError, match=f"readable by {who}") as caught:
            load_agent_settings(None, env, strict=True)
        assert f"kafka.sasl_password: secret file {path} is readable" in str(caught.value)
        assert "chmod 600" in str(caught.value)
        assert SASL not in str(caught.value)
    assert load_agent_settings(None, env).kafka.sasl_password is not None, "an unprivileged (dev) agent reads it"


@posix_only
def test_privileged_agent_refuses_inline_secrets_in_a_config_others_can_read(tmp_path: Path) -> None:
    """Before: identity.secret and the Kafka password inline in a 0644 agent.toml were accepted."""
    toml = write(
        tmp_path / "agent.toml",
        f'[kafka]\nsasl_password = "{SASL}"\n[identity]\nsecret = "{FLEET}"\n',
        mode=0o644,
    )
    with pytest.raises(UntrustedPathError, match="readable by every user") as caught:
        load_agent_settings(toml, {}, strict=True)
    message = str(caught.value)
    assert f"config file {toml} is readable" in message
    assert "kafka.sasl_password, identity.secret inline: chmod 600 it" in message
    assert SASL not in message
    assert FLEET not in message
    assert load_agent_settings(toml, {}).identity.secret is not None, "an unprivileged (dev) agent reads it"
    toml.chmod(0o600)
    assert load_agent_settings(toml, {}, strict=True).identity.secret is not None
    toml.write_text('[kafka]\nsasl_username = "agent"\n')  # no secret in it: readable by all is fine
    toml.chmod(0o644)
    assert load_agent_settings(toml, {}, strict=True).kafka.sasl_username == "agent"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="a root-group file: needs root")
def test_privileged_agent_accepts_a_systemd_credential_readable_by_group_root(tmp_path: Path) -> None:
    """systemd writes credentials root:root 0400 plus an ACL for the service's user; stat shows 0440."""
    creds = tmp_path / "credentials"
    write(creds / "kafka.sasl_password", SASL, mode=0o440)
    settings = load_agent_settings(None, {"CREDENTIALS_DIRECTORY": str(creds)}, strict=True)
    assert settings.kafka.sasl_password is not None
    assert settings.kafka.sasl_password.get_secret_value() == SASL


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


@posix_only
def test_attack_the_service_refuses_a_readable_secret_without_holding_privileges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Linux service holds no capability (SMART comes from its helper), so ``running_privileged`` is False
    for it: the file checks must not depend on it, or the Kafka password in a 0644 file is read again."""
    import fleetpulse.agents.trust as trust
    from fleetpulse.agents.cli import run_service

    monkeypatch.setattr(trust, "running_privileged", lambda: False)
    path = write(tmp_path / "kafka.sasl_password", SASL, mode=0o644)
    _shared_group(path)
    monkeypatch.setenv("FLEETPULSE_AGENT_KAFKA__SASL_PASSWORD_FILE", str(path))
    monkeypatch.setenv("FLEETPULSE_AGENT_SPOOL_DIR", str(tmp_path / "spool"))
    assert run_service(None, max_reports=0) == 2
    err = capsys.readouterr().err
    assert "readable by every user" in err
    assert SASL not in err
    assert not (tmp_path / "spool").exists(), "refused before anything ran"


@posix_only
def test_privileged_agent_refuses_tls_files_others_can_replace_or_read(tmp_path: Path) -> None:
    """Whoever can replace the CA file chooses the broker the agent trusts and sends the agents' SASL password
    to; the client key is a secret like the password files."""
    ca = write(tmp_path / "ca.pem", "any user could put their own CA here\n", mode=0o666)
    cert = write(tmp_path / "client.pem", "certificate\n", mode=0o644)
    key = write(tmp_path / "client.key", "-----BEGIN PRIVATE KEY-----\n", mode=0o644)
    _shared_group(key)
    env = {
        "FLEETPULSE_AGENT_KAFKA__SSL_CAFILE": str(ca),
        "FLEETPULSE_AGENT_KAFKA__SSL_CERTFILE": str(cert),
        "FLEETPULSE_AGENT_KAFKA__SSL_KEYFILE": str(key),
    }
    with pytest.raises(UntrustedPathError, match=f"kafka.ssl_cafile {ca} is writable by every user"):
        load_agent_settings(None, env, strict=True)
    ca.chmod(0o644)
    with pytest.raises(UntrustedPathError, match=f"kafka.ssl_keyfile {key} is readable by every user") as caught:
        load_agent_settings(None, env, strict=True)
    assert "PRIVATE KEY" not in str(caught.value)
    assert load_agent_settings(None, env).kafka.ssl_keyfile == key, "an unprivileged (dev) agent reads them"
    key.chmod(0o600)
    assert load_agent_settings(None, env, strict=True).kafka.ssl_cafile == ca
