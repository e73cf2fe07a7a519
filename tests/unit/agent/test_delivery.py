"""Delivery without a broker: the retry loop, producer security settings, and nothing lost when Kafka is down."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import ssl
import struct
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError, TopicAuthorizationFailedError
from pydantic import SecretStr

from fleetpulse import logs
from fleetpulse.agents import delivery as delivery_module
from fleetpulse.agents.delivery import Delivery, DeliveryLoop, DrainResult, producer_config, rejection_reason
from fleetpulse.agents.identity import RecordSigner
from fleetpulse.agents.settings import DeliverySettings
from fleetpulse.agents.spool import Spool
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings, KeyPasswordMissing
from fleetpulse.contract import DeviceEnrolment, DeviceInventory, HealthReport, Priority, Topics, decode, encode
from fleetpulse.contract.auth import ENROLMENT_TYPE, INVENTORY_TYPE, MAC_HEADER, TYPE_HEADER, mac_matches
from fleetpulse.retry import RetryPolicy
from fleetpulse.tls import TLS_FILES_UNREADABLE
from tests.harness import free_port, listener, self_signed_tls, tls_listener


class FailingBroker:
    """Stands in for :class:`Delivery`: every drain fails with the given result (nothing sent)."""

    def __init__(self, result: DrainResult) -> None:
        self.result = result
        self.attempts = 0

    def drain(self, spool: Spool, budget_s: float | None = None) -> DrainResult:
        self.attempts += 1
        return self.result


def one_report_spool(path: Path) -> Spool:
    spool = Spool(path, 10**6, initial_seq=0)
    spool.append_report(
        lambda seq: HealthReport(
            device_id="d1", seq=seq, collected_at=datetime.now(UTC), kind="laptop", platform="linux"
        )
    )
    return spool


def test_ten_thousand_failures_through_the_delivery_loop_stay_capped_and_jittered(tmp_path: Path) -> None:
    """An expired credential for months: the delay saturates at the cap and never overflows (it did at 1,024)."""
    broker = FailingBroker(DrainResult(0, "not acknowledged: KafkaTimeoutError: timeout"))
    loop = DeliveryLoop(broker, RetryPolicy(base_s=2.0, cap_s=300.0), clock=lambda: 0.0)
    with one_report_spool(tmp_path / "s.db") as spool:
        delays = [loop.step(spool) for _ in range(10_000)]
        assert spool.count() == 1, "records stay spooled through every failure"
    assert broker.attempts == 10_000
    assert all(d is not None and 0 < d <= 300.0 for d in delays)
    assert [round(d or 0) for d in delays[:3]] != [0, 0, 0]
    assert 1.0 <= (delays[0] or 0) <= 2.0, "the first retry comes soon"
    saturated = [d or 0.0 for d in delays[20:]]
    assert min(saturated) >= 150.0, "capped delays keep equal jitter's lower half"
    assert len({round(d, 3) for d in saturated}) > 1000, "jittered, so a fleet does not reconnect in lockstep"
    assert loop.backoff.failures == 10_000


def test_delivery_loop_recovers_and_resets_after_success(tmp_path: Path) -> None:
    broker = FailingBroker(DrainResult(0, "flush: KafkaTimeoutError"))
    loop = DeliveryLoop(broker, RetryPolicy(base_s=1.0, cap_s=20.0), clock=lambda: 0.0)
    with one_report_spool(tmp_path / "s.db") as spool:
        for _ in range(50):
            loop.step(spool)
        broker.result = DrainResult(1)
        assert loop.step(spool) is None
        assert not loop.failing
        broker.result = DrainResult(0, "flush: KafkaTimeoutError")
        assert (loop.step(spool) or 0) <= 1.0, "after recovery the backoff starts small again"


def test_rejected_credentials_are_reported_with_their_reason_and_retried_only_at_the_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rejected = DrainResult(0, "send: SaslAuthenticationFailedError", rejected="authentication failed (SASL)")
    broker = FailingBroker(rejected)
    loop = DeliveryLoop(broker, RetryPolicy(base_s=2.0, cap_s=300.0), clock=lambda: 0.0)
    with (
        caplog.at_level(logging.ERROR, logger="fleetpulse.agents.delivery"),
        one_report_spool(tmp_path / "s.db") as spool,
    ):
        delays = [loop.step(spool) or 0.0 for _ in range(100)]
    assert min(delays) >= 150.0, "no blind full-rate retrying of a refused credential"
    assert max(delays) <= 300.0, "still retried: an operator may fix the credential"
    reasons = [getattr(r, "fields", {}).get("reason") for r in caplog.records]
    assert reasons.count("authentication failed (SASL)") == 100


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (SaslAuthenticationFailedError("bad password"), "authentication failed"),
        (TopicAuthorizationFailedError(), "authorization failed"),
        (KafkaConnectionError(ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] expired")), "TLS"),
        # mutual TLS: the broker refused the agent's client certificate, or got none (its alert, on the first read)
        (
            KafkaConnectionError(ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")),
            "TLS",
        ),
        (KafkaConnectionError(ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] alert")), "TLS client"),
        (KeyPasswordMissing("kafka.ssl_keyfile is encrypted but kafka.ssl_key_password is not set"), "TLS client key"),
        (KafkaConnectionError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")), None),
        (KafkaConnectionError("socket disconnected"), None),
        (TimeoutError("flush"), None),
    ],
)
def test_permanent_failures_are_told_apart_from_transient_ones(exc: BaseException, reason: str | None) -> None:
    found = rejection_reason(exc)
    assert (found is None) if reason is None else (found is not None and found.startswith(reason))


def test_a_wrapped_certificate_failure_is_found_in_the_cause_chain() -> None:
    try:
        try:
            raise ssl.SSLCertVerificationError(1, "certificate has expired")
        except ssl.SSLError as inner:
            raise KafkaConnectionError("handshake failed") from inner
    except KafkaConnectionError as outer:
        assert rejection_reason(outer) == "TLS certificate rejected"


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


class _NoProducerExpected:
    """Stands in for the producer where the session must be refused before a client opens."""

    def __init__(self, **config: Any) -> None:
        raise AssertionError("a producer was opened for a session the broker refuses at TLS")


class _ProducerWithoutBroker(KafkaProducer):  # type: ignore[misc]
    """The real producer, told the topic has partition 0: ``send()`` runs, and logs, as it would against a broker."""

    sends = 0

    def __init__(self, **config: Any) -> None:
        super().__init__(**{**config, "api_version": (2, 8), "enable_idempotence": False})  # no broker to ask
        self._metadata.partitions_for_topic = lambda topic: {0}
        self._partition = lambda *args, **kwargs: 0

    def send(self, *args: Any, **kwargs: Any) -> Any:
        _ProducerWithoutBroker.sends += 1
        return super().send(*args, **kwargs)


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """:func:`fleetpulse.logs.configure` changes process-wide loggers; the next tests get them back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in logs.RECORD_DUMPING_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.mark.usefixtures("restored_logging")
def test_attack_a_debug_log_does_not_hold_the_device_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: with ``log_level = "DEBUG"`` kafka-python logged every record it sent, so the enrolment that opens
    each session put the device's report key in the agent's log, for anyone who reads logs to sign as the device."""
    monkeypatch.setattr(delivery_module, "KafkaProducer", _ProducerWithoutBroker)
    logs.configure("DEBUG")  # what log_level = "DEBUG" in agent.toml does
    written = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)
    key = os.urandom(32)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=1_000)
    settings = DeliverySettings(max_block_ms=1_000, flush_timeout_s=0.5, delivery_timeout_ms=1_000)
    delivery = Delivery(kafka, settings, client_id="t", signer=RecordSigner("d1", key, "test"))
    with one_report_spool(tmp_path / "s.db") as spool:
        result = delivery.drain(spool)
        delivery.close(timeout_s=0)
        assert spool.count() == 1, "nothing acknowledged: nothing lost"
    assert result.error is not None
    assert _ProducerWithoutBroker.sends >= 2, "the enrolment and the report went through send()"
    assert logging.getLogger("fleetpulse.agents").isEnabledFor(logging.DEBUG), "the agent's own DEBUG stays on"
    assert key.hex() not in written.getvalue()


def test_a_session_closed_with_records_pending_leaves_no_network_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python's close flushes first and raises when records are still pending: before, each such
    session left its network thread retrying the broker for the agent's lifetime."""
    monkeypatch.setattr(delivery_module, "KafkaProducer", _ProducerWithoutBroker)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", request_timeout_ms=1_000)
    settings = DeliverySettings(max_block_ms=1_000, flush_timeout_s=0.5, delivery_timeout_ms=1_000)
    delivery = Delivery(kafka, settings, client_id="pending-session")
    with one_report_spool(tmp_path / "s.db") as spool:
        for _ in range(3):
            assert delivery.drain(spool).error is not None  # each failed session is closed, a new one opened
        delivery.close(timeout_s=0)
        assert spool.count() == 1, "nothing acknowledged: nothing lost"
    assert [t.name for t in threading.enumerate() if t.name.startswith("pending-session")] == []


@pytest.fixture
def untrusted_tls_endpoint(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS listener with a self-signed certificate, and a CA file that did not sign it."""
    _, context = self_signed_tls(tmp_path, "server")
    other, _ = self_signed_tls(tmp_path, "other")
    with tls_listener(context) as port:
        yield port, other


def test_an_untrusted_broker_certificate_is_named_before_any_client_opens(
    tmp_path: Path, untrusted_tls_endpoint: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python would name it only after its bootstrap timeout, amid its retries: one handshake names it
    first, and no producer is opened for a session the broker refuses."""
    port, wrong_ca = untrusted_tls_endpoint
    monkeypatch.setattr(delivery_module, "KafkaProducer", _NoProducerExpected)
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=wrong_ca, request_timeout_ms=2_000
    )
    delivery = Delivery(kafka, DeliverySettings(max_block_ms=2_000, flush_timeout_s=2.0), client_id="t")
    with one_report_spool(tmp_path / "s.db") as spool:
        result = delivery.drain(spool)
        assert spool.count() == 1
    assert result.rejected is not None
    assert result.rejected.startswith("the broker's TLS certificate is not trusted")
    assert "kafka.ssl_cafile" in result.rejected


def test_unreadable_tls_files_are_a_rejection_that_names_the_file_not_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "KafkaProducer", _NoProducerExpected)
    missing = tmp_path / "no-such-ca.pem"
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", security_protocol="SSL", ssl_cafile=missing)
    delivery = Delivery(kafka, DeliverySettings(), client_id="t")
    with one_report_spool(tmp_path / "s.db") as spool:
        result = delivery.drain(spool)
    assert result.rejected is not None
    assert result.rejected.startswith(TLS_FILES_UNREADABLE)


def test_a_connection_closed_mid_handshake_is_no_rejection(tmp_path: Path) -> None:
    """A broker restarting closes connections without a TLS alert: that is retried soon, not held at the cap."""
    ca, _ = self_signed_tls(tmp_path, "ca")

    def hang_up(conn: socket.socket) -> None:  # reads the ClientHello, then closes cleanly: EOF, no alert
        conn.settimeout(2)
        conn.recv(65536)
        conn.shutdown(socket.SHUT_RDWR)

    with listener(hang_up) as port:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", security_protocol="SSL", ssl_cafile=ca)
        assert Delivery(kafka, DeliverySettings(), client_id="t").tls_refusal() is None


def test_a_tls_broker_that_cannot_be_reached_is_left_to_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listening is no TLS matter: the probe says nothing and the session reports the failure as it
    always did (retried soon, not held back as a rejection)."""
    monkeypatch.setattr(delivery_module, "KafkaProducer", _ProducerWithoutBroker)
    ca, _ = self_signed_tls(tmp_path, "ca")
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_port()}", security_protocol="SSL", ssl_cafile=ca, request_timeout_ms=1_000
    )
    delivery = Delivery(kafka, DeliverySettings(max_block_ms=1_000, flush_timeout_s=0.5), client_id="unreached")
    with one_report_spool(tmp_path / "s.db") as spool:
        result = delivery.drain(spool)
        delivery.close(timeout_s=0)
    assert result.error is not None
    assert result.rejected is None


def announce_100_mb(conn: socket.socket) -> None:
    """Something at a plaintext bootstrap address (a spoofed name): it announces a 100 MB response and waits."""
    conn.settimeout(3)
    conn.recv(65536)
    conn.sendall(struct.pack(">i", 99_999_999))
    with contextlib.suppress(OSError):
        conn.recv(1)


def test_a_fake_broker_announcing_a_huge_response_costs_the_agent_no_memory(tmp_path: Path) -> None:
    """kafka-python allocates a response's announced size before reading it: 100 MB per connection by default,
    past the agent unit's memory limit, for anyone answering at the bootstrap address."""
    with listener(announce_100_mb) as port:
        kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2_000)
        delivery = Delivery(kafka, DeliverySettings(max_block_ms=2_000, flush_timeout_s=1.0), client_id="t")
        with one_report_spool(tmp_path / "s.db") as spool:
            tracemalloc.start()
            try:
                result = delivery.drain(spool)
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            delivery.close(timeout_s=0)
            assert spool.count() == 1
    assert result.error is not None
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated for a response that never came"
