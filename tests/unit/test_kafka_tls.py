"""Kafka clients over TLS: the options both client libraries get, the client key's password, and the one-line
reason a service gives when TLS turns it away (an untrusted broker certificate, a refused or missing client
certificate). Against local TLS endpoints with openssl-made certificates; tests/integration/test_kafka_acls.py
runs the services on a real broker that speaks TLS only."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings, KeyPasswordMissing, kafka_python_security, ssl_key_password
from fleetpulse.contract import DeviceControl
from fleetpulse.streams.devices import ControlPublishError, publish_control
from fleetpulse.streams.kafka_admin import KafkaConnectError, aiokafka_auth, ensure_topics, ssl_context, tls_refusal
from tests.harness import free_port, listener, self_signed_tls, tls_listener
from tests.unit.agent.test_identity_cli import agent_cli

KEY_PASSWORD = "k3y-pass-phrase"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path
    """the client key, encrypted with ``KEY_PASSWORD`` (PKCS#8)"""


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate (CN=fleetpulse-mdm), all from it."""
    d = tmp_path_factory.mktemp("pki")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
        "-keyout", d / "ca.key", "-out", d / "ca.crt",
    )  # fmt: skip
    for name, subject, ext in (
        ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
        ("client", "/CN=fleetpulse-mdm", "extendedKeyUsage=clientAuth"),
    ):
        (d / f"{name}.ext").write_text(f"{ext}\nauthorityKeyIdentifier=keyid\nsubjectKeyIdentifier=hash\n")
        _openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
            "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-days", "1", "-in", d / f"{name}.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
            "-set_serial", "7", "-extfile", d / f"{name}.ext", "-out", d / f"{name}.crt",
        )  # fmt: skip
    (d / "password").write_text(KEY_PASSWORD)
    _openssl(
        "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", d / "client.key", "-out", d / "client-encrypted.key",
        "-passout", f"file:{d / 'password'}",
    )  # fmt: skip
    return Pki(
        d / "ca.crt",
        d / "server.crt",
        d / "server.key",
        d / "client.crt",
        d / "client.key",
        d / "client-encrypted.key",
    )


@contextlib.contextmanager
def tls_endpoint(pki: Pki, client_certificates: bool) -> Iterator[int]:
    """A TLS listener on 127.0.0.1 with the PKI's server certificate; ``client_certificates``: it requires one
    the CA issued (mutual TLS, a Kafka listener with ``ssl.client.auth=required``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_certificates:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki.ca)
    with tls_listener(context) as port:
        yield port


def mtls(pki: Pki, port: int, **overrides: object) -> KafkaSettings:
    fields: dict[str, object] = {
        "bootstrap_servers": f"127.0.0.1:{port}",
        "security_protocol": "SSL",
        "ssl_cafile": pki.ca,
        "ssl_certfile": pki.client_cert,
        "ssl_keyfile": pki.client_key,
        **overrides,
    }
    return KafkaSettings.model_validate(fields)


def test_an_encrypted_key_without_its_password_fails_at_once_and_names_the_setting(pki: Pki) -> None:
    """OpenSSL would ask for the pass phrase on the terminal (a service started from one waits there for good):
    both client libraries get a password that refuses instead, and an unencrypted key never asks for it."""
    kafka = mtls(pki, 9093, ssl_keyfile=pki.client_key_encrypted)
    password = kafka_python_security(kafka)["ssl_password"]
    assert password is ssl_key_password(kafka)
    assert callable(password)
    context = ssl.create_default_context()
    with pytest.raises(KeyPasswordMissing, match="ssl_key_password is not set"):
        context.load_cert_chain(pki.client_cert, pki.client_key_encrypted, password=password)
    context.load_cert_chain(pki.client_cert, pki.client_key, password=password)  # unencrypted: never asked
    with pytest.raises(KafkaConnectError, match=r"kafka\.ssl_keyfile is encrypted but kafka\.ssl_key_password"):
        ssl_context(kafka)


def test_the_key_password_opens_an_encrypted_key_in_both_client_libraries(pki: Pki) -> None:
    kafka = mtls(pki, 9093, ssl_keyfile=pki.client_key_encrypted, ssl_key_password=SecretStr(KEY_PASSWORD))
    assert kafka_python_security(kafka)["ssl_password"] == KEY_PASSWORD
    ssl.create_default_context().load_cert_chain(pki.client_cert, pki.client_key_encrypted, KEY_PASSWORD)
    assert ssl_context(kafka) is not None
    wrong = mtls(pki, 9093, ssl_keyfile=pki.client_key_encrypted, ssl_key_password=SecretStr("not-the-password"))
    with pytest.raises(KafkaConnectError, match="cannot load the Kafka TLS files") as refused:
        ssl_context(wrong)
    assert "not-the-password" not in str(refused.value)


def test_both_client_libraries_get_the_same_security(pki: Pki) -> None:
    """kafka-python takes file paths, aiokafka (and the Faust worker) an SSL context built from the same files:
    the same protocol and SASL login, and a context that verifies the broker against ``ssl_cafile``."""
    kafka = KafkaSettings(
        bootstrap_servers="127.0.0.1:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="fleetpulse-worker",
        sasl_password=SecretStr("pw"),
        ssl_cafile=pki.ca,
    )
    python, aio = kafka_python_security(kafka), aiokafka_auth(kafka)
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert python[key] == aio[key], key
    assert python["ssl_cafile"] == str(pki.ca)
    assert "ssl_password" not in python
    context = aio["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


def test_the_worker_hands_faust_its_tls_context(pki: Pki) -> None:
    import faust

    from fleetpulse.streams.app import faust_credentials

    scram = faust_credentials(
        KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="fleetpulse-worker",
            sasl_password=SecretStr("pw"),
            ssl_cafile=pki.ca,
        )
    )
    assert isinstance(scram, faust.SASLCredentials)
    assert (scram.protocol.value, scram.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-512")
    assert scram.ssl_context is not None
    assert scram.ssl_context.get_ca_certs()
    certificate = faust_credentials(mtls(pki, 9093))
    assert isinstance(certificate, faust.SSLCredentials)
    assert certificate.protocol.value == "SSL"
    assert certificate.context.get_ca_certs()


def test_an_untrusted_broker_certificate_is_named(pki: Pki) -> None:
    with tls_endpoint(pki, client_certificates=False) as port:
        untrusted = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL")  # no ssl_cafile
        reason = tls_refusal(untrusted, timeout_s=2)
        assert reason is not None
        assert "not trusted" in reason
        assert "kafka.ssl_cafile" in reason
        assert tls_refusal(mtls(pki, port), timeout_s=0.5) is None, "trusted: the handshake passes"


def test_a_refused_or_missing_client_certificate_is_named(pki: Pki, tmp_path: Path) -> None:
    with tls_endpoint(pki, client_certificates=True) as port:
        assert tls_refusal(mtls(pki, port), timeout_s=2) is None, "the CA's client certificate passes"
        missing = mtls(pki, port, ssl_certfile=None, ssl_keyfile=None)
        reason = tls_refusal(missing, timeout_s=2)
        assert "refused this client's TLS certificate" in (reason or ""), reason
        rogue_cert, _ = self_signed_tls(tmp_path, "fleetpulse-mdm")  # its name, not the CA's signature
        rogue = mtls(pki, port, ssl_certfile=rogue_cert, ssl_keyfile=tmp_path / "fleetpulse-mdm.key")
        reason = tls_refusal(rogue, timeout_s=2)
        assert "refused this client's TLS certificate" in (reason or ""), reason


def test_no_tls_matter_gives_no_tls_reason(pki: Pki) -> None:
    assert tls_refusal(KafkaSettings(bootstrap_servers="127.0.0.1:9")) is None  # PLAINTEXT
    assert tls_refusal(mtls(pki, free_port()), timeout_s=1) is None  # nothing listening


def test_a_service_turned_away_at_tls_stops_with_the_reason(pki: Pki) -> None:
    """What every service does first (ensure_topics) fails with one line that says what to fix, not with the
    client library's "Unable to bootstrap"."""
    with tls_endpoint(pki, client_certificates=True) as port:
        missing = mtls(pki, port, ssl_certfile=None, ssl_keyfile=None)
        with pytest.raises(KafkaConnectError, match=rf"127\.0\.0\.1:{port} \(SSL\): the broker refused this client"):
            asyncio.run(ensure_topics(missing, 12, 1))
    with pytest.raises(KafkaConnectError, match=r"cannot connect to Kafka at 127\.0\.0\.1:"):
        asyncio.run(ensure_topics(mtls(pki, free_port()), 12, 1))


def test_re_enrolment_turned_away_at_tls_says_why_before_any_client_waits(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IT's command: the reason from one handshake, not after kafka-python's 30-second bootstrap wait."""

    def no_client(*_: object) -> None:
        raise AssertionError("kafka-python's producer was started")

    monkeypatch.setattr("fleetpulse.agents.kafka_publish.make_producer", no_client)
    control = DeviceControl(device_id="pc-1", action="re_enrol", issued_by="it-admin", issued_at=datetime.now(UTC))
    with tls_endpoint(pki, client_certificates=True) as port:
        missing = mtls(pki, port, ssl_certfile=None, ssl_keyfile=None)
        with pytest.raises(ControlPublishError, match="refused this client's TLS certificate"):
            publish_control(missing, control)


def agent_check(tmp_path: Path, kafka: KafkaSettings, max_block_ms: int = 60_000) -> subprocess.CompletedProcess[str]:
    """``fleetpulse-agent check`` (the real CLI, configured by environment variables) against ``kafka``."""
    (tmp_path / "machine-id").write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    env = {
        "FLEETPULSE_AGENT_IDENTITY__SECRET": "s",
        "FLEETPULSE_AGENT_IDENTITY__MACHINE_ID_FILE": str(tmp_path / "machine-id"),
        "FLEETPULSE_AGENT_SPOOL_DIR": str(tmp_path / "spool"),
        "FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "FLEETPULSE_AGENT_KAFKA__SECURITY_PROTOCOL": kafka.security_protocol,
        # the TLS cases must not need kafka-python's bootstrap wait to name their reason
        "FLEETPULSE_AGENT_DELIVERY__MAX_BLOCK_MS": str(max_block_ms),
    }
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if (path := getattr(kafka, name)) is not None:
            env[f"FLEETPULSE_AGENT_KAFKA__{name.upper()}"] = str(path)
    return agent_cli("check", env=env)


def test_the_agents_check_names_each_tls_refusal_with_one_handshake(pki: Pki, tmp_path: Path) -> None:
    """``fleetpulse-agent check`` after an install: the reason, at once, not kafka-python's bootstrap timeout."""
    with tls_endpoint(pki, client_certificates=True) as port:
        untrusted = agent_check(tmp_path, mtls(pki, port, ssl_cafile=None))
        missing = agent_check(tmp_path, mtls(pki, port, ssl_certfile=None, ssl_keyfile=None))
    assert (untrusted.returncode, missing.returncode) == (1, 1)
    assert untrusted.stderr.startswith("error: the broker's TLS certificate is not trusted"), untrusted.stderr
    assert "kafka.ssl_cafile" in untrusted.stderr
    assert missing.stderr.startswith("error: the broker refused this client's TLS certificate"), missing.stderr
    assert "Traceback" not in untrusted.stderr + missing.stderr


def test_the_agents_check_names_an_encrypted_key_without_its_password_and_shows_no_key(
    pki: Pki, tmp_path: Path
) -> None:
    out = agent_check(tmp_path, mtls(pki, 9, ssl_keyfile=pki.client_key_encrypted))
    assert out.returncode == 1
    assert out.stderr.startswith("error: cannot load the Kafka TLS files"), out.stderr
    assert "ssl_key_password is not set" in out.stderr
    assert "PRIVATE KEY" not in out.stdout + out.stderr


def answer_garbage(conn: socket.socket) -> None:
    """Something at the bootstrap address that is not a broker: it answers a request with a frame header
    announcing 2 GiB, then bytes that are no Kafka response."""
    conn.settimeout(2)
    conn.recv(4096)
    conn.sendall(b"\x7f\xff\xff\xff" + bytes(range(256)) * 16)


def test_the_agents_check_against_something_that_is_no_broker_prints_one_error_line(tmp_path: Path) -> None:
    with listener(answer_garbage) as port:
        out = agent_check(tmp_path, KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), max_block_ms=3_000)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: 127.0.0.1:{port}:"), out.stderr
    assert [line for line in lines if not line.startswith("{")] == lines[-1:], "one line besides structured logs"
    assert "Traceback" not in out.stderr
    assert not out.stdout
