"""Shared settings: kafka-python security options and masked display."""

from __future__ import annotations

from pathlib import Path

from fleetpulse.config import KafkaSettings, kafka_python_security, masked_dump


def test_plaintext_needs_no_security_options() -> None:
    assert kafka_python_security(KafkaSettings()) == {"security_protocol": "PLAINTEXT"}


def test_scram_over_tls_with_client_certificate() -> None:
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="agent",
        sasl_password="s3cret",  # type: ignore[arg-type]
        ssl_cafile=Path("/etc/fleetpulse/ca.pem"),
        ssl_certfile=Path("/etc/fleetpulse/client.pem"),
        ssl_keyfile=Path("/etc/fleetpulse/client.key"),
        ssl_key_password="k3y",  # type: ignore[arg-type]
    )
    assert kafka_python_security(kafka) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "agent",
        "sasl_plain_password": "s3cret",
        "ssl_cafile": "/etc/fleetpulse/ca.pem",
        "ssl_certfile": "/etc/fleetpulse/client.pem",
        "ssl_keyfile": "/etc/fleetpulse/client.key",
        "ssl_password": "k3y",
    }
    shown = str(masked_dump(kafka))
    assert "s3cret" not in shown
    assert "k3y" not in shown
