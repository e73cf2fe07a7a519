"""Delivery without a broker: backoff, producer security settings, and nothing lost when Kafka is down."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from fleetpulse.agents.delivery import Backoff, Delivery, producer_config
from fleetpulse.agents.settings import DeliverySettings
from fleetpulse.agents.spool import Spool
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import HealthReport
from tests.harness import free_port


def test_backoff_grows_exponentially_with_jitter_and_caps() -> None:
    backoff = Backoff(initial_s=1.0, max_s=20.0)
    delays = [backoff.failed(now=0.0) for _ in range(8)]
    for attempt, delay in enumerate(delays):
        ceiling = min(20.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert not backoff.ready(now=0.0)
    backoff.succeeded()
    assert backoff.ready(now=0.0)
    assert len({round(Backoff(1.0, 20.0).failed(0.0), 6) for _ in range(20)}) > 1, "jittered, not lockstep"


def test_producer_config_is_durable_and_carries_scram_and_mtls_settings(tmp_path: Path) -> None:
    kafka = KafkaSettings(
        bootstrap_servers="k1:9093,k2:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="agent",
        sasl_password=SecretStr("pw"),
        ssl_cafile=tmp_path / "ca.pem",
        ssl_certfile=tmp_path / "agent.crt",
        ssl_keyfile=tmp_path / "agent.key",
        ssl_key_password=SecretStr("keypw"),
    )
    config = producer_config(kafka, DeliverySettings(), client_id="c")
    assert config["acks"] == "all"
    assert config["enable_idempotence"] is True
    assert config["compression_type"] == "gzip"
    assert config["bootstrap_servers"] == ["k1:9093", "k2:9093"]
    assert (config["sasl_mechanism"], config["sasl_plain_username"], config["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "agent",
        "pw",
    )
    assert config["ssl_certfile"].endswith("agent.crt")
    assert config["ssl_password"] == "keypw"
    plain = producer_config(KafkaSettings(), DeliverySettings(compression="none"), client_id="c")
    assert plain["compression_type"] is None
    assert "sasl_plain_password" not in plain


def test_unreachable_broker_keeps_everything_spooled(tmp_path: Path) -> None:
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=2_000)
    delivery = Delivery(kafka, DeliverySettings(max_block_ms=1_000, flush_timeout_s=2.0), client_id="t")
    with Spool(tmp_path / "s.db", 10**6, initial_seq=0) as spool:
        for _ in range(3):
            spool.append_report(
                lambda seq: HealthReport(
                    device_id="d1", seq=seq, collected_at=datetime.now(UTC), kind="laptop", platform="linux"
                )
            )
        started = time.monotonic()
        result = delivery.drain(spool)
        delivery.close(timeout_s=0)
        assert result.error is not None
        assert result.delivered == 0
        assert time.monotonic() - started < 10, "a dead broker must not hang the delivery thread"
        assert [r.seq for r in spool.peek(10)] == [0, 1, 2]
