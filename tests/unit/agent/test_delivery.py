"""Delivery without a broker: backoff, producer security settings, and nothing lost when Kafka is down."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from fleetpulse.agents import delivery as delivery_module
from fleetpulse.agents.delivery import Backoff, Delivery, producer_config
from fleetpulse.agents.identity import RecordSigner
from fleetpulse.agents.settings import DeliverySettings
from fleetpulse.agents.spool import Spool
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceEnrolment, DeviceInventory, HealthReport, Priority, Topics, decode, encode
from fleetpulse.contract.auth import ENROLMENT_TYPE, INVENTORY_TYPE, MAC_HEADER, TYPE_HEADER, mac_matches
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


class _Sent:
    is_done = True

    def failed(self) -> bool:
        return False


class _RecordingProducer:
    """Stands in for KafkaProducer: records what would go on the wire."""

    sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []

    def __init__(self, **_config: object) -> None:
        pass

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> _Sent:
        self.sent.append((topic, key, value, headers))
        return _Sent()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def test_each_session_enrols_first_and_every_record_is_maced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery_module, "KafkaProducer", _RecordingProducer)
    _RecordingProducer.sent = []
    key = os.urandom(32)
    signer = RecordSigner("d1", key, "test")
    delivery = Delivery(KafkaSettings(topic_prefix="t."), DeliverySettings(), client_id="t", signer=signer)
    topics = Topics(prefix="t.")
    with Spool(tmp_path / "s.db", 10**6, initial_seq=0) as spool:
        spool.append_report(
            lambda seq: HealthReport(
                device_id="d1", seq=seq, collected_at=datetime.now(UTC), kind="laptop", platform="linux"
            )
        )
        inventory = DeviceInventory(device_id="d1", kind="laptop", model="T14", updated_at=datetime.now(UTC))
        spool.append("inventory", b"d1", encode(inventory), Priority.EVENT)
        spool.append("enrolment", *signer.enrolment(), Priority.EVENT)  # the agent's daily re-enrolment
        assert delivery.drain(spool).delivered == 3
        spool.append_report(
            lambda seq: HealthReport(
                device_id="d1", seq=seq, collected_at=datetime.now(UTC), kind="laptop", platform="linux"
            )
        )
        delivery.drain(spool)  # same session: no second enrolment
        delivery.close()
        delivery.drain(spool)  # nothing spooled: no session opened

    sent = _RecordingProducer.sent
    assert [(topic, dict(headers).get(TYPE_HEADER)) for topic, _, _, headers in sent] == [
        (topics.health, ENROLMENT_TYPE),
        (topics.health, None),
        (topics.health, INVENTORY_TYPE),  # agents may write the health topic only
        (topics.health, ENROLMENT_TYPE),
        (topics.health, None),
    ]
    assert decode(sent[0][2], DeviceEnrolment).key == key.hex()
    assert all(mac_matches(key, value, dict(headers).get(MAC_HEADER)) for _, _, value, headers in sent)
