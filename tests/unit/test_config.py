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


def test_credentials_are_never_configured_to_travel_in_clear() -> None:
    """Kafka SASL, TSDB tokens and Grafana credentials over plain transport need an explicit opt-in."""
    import pytest
    from pydantic import ValidationError

    from fleetpulse.dashboards.settings import GrafanaSettings, InfluxSourceSettings
    from fleetpulse.streams.settings import InfluxV1Sink, InfluxV2Sink

    refused = [
        lambda **kw: KafkaSettings(
            security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_password="pw", **kw
        ),  # type: ignore[arg-type]
        lambda **kw: InfluxV2Sink(url="http://tsdb:8086", token="tok", **kw),  # type: ignore[arg-type]
        lambda **kw: InfluxV1Sink(url="http://tsdb:8086", username="u", password="pw", **kw),  # type: ignore[arg-type]
        lambda **kw: InfluxSourceSettings(url="http://tsdb:8086", token="tok", **kw),  # type: ignore[arg-type]
        lambda **kw: GrafanaSettings(url="http://grafana:3000", token="tok", **kw),  # type: ignore[arg-type]
        # scheme-less: grafana-client falls back to plain http
        lambda **kw: GrafanaSettings(url="//grafana.example.org:3000", token="tok", **kw),  # type: ignore[arg-type]
        lambda **kw: InfluxV2Sink(url="HTTP://tsdb:8086", token="tok", **kw),  # type: ignore[arg-type]
    ]
    for build in refused:
        with pytest.raises(ValidationError, match="clear"):
            build()
        assert build(allow_insecure=True).allow_insecure
    assert InfluxV2Sink(url="http://127.0.0.1:8428").token.get_secret_value() == ""  # no credentials: fine
    assert InfluxV2Sink(url="https://tsdb:8086", token="tok").url == "https://tsdb:8086"  # type: ignore[arg-type]
