"""The worker child process (demo, fault tests, benchmarks) reaches the cluster its parent was configured for."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from fleetpulse.config import KafkaSettings
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.process import settings_env


def test_the_child_gets_every_kafka_setting_its_parent_has_security_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secured = KafkaSettings(
        bootstrap_servers="kafka-0:9093,kafka-1:9093",
        topic_prefix="run1.",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="fleetpulse-worker",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=tmp_path / "ca.crt",
        ssl_certfile=tmp_path / "worker.crt",
        ssl_keyfile=tmp_path / "worker.key",
        ssl_key_password=SecretStr("key-pass"),
        request_timeout_ms=10_000,
    )
    env = settings_env(secured, {"store": "memory"})
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = ServerSettings()
    assert child.kafka == secured
    assert child.streams.store == "memory"


def test_an_unconfigured_parent_passes_no_security_settings() -> None:
    env = settings_env(KafkaSettings(bootstrap_servers="127.0.0.1:9092"), {})
    assert env == {
        "FLEETPULSE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "FLEETPULSE_KAFKA__REQUEST_TIMEOUT_MS": "30000",
    }
