"""Spool -> Kafka: in order, acknowledged by all in-sync replicas before a record leaves the spool.

The producer is idempotent (``acks=all``), gzip-compressed (stdlib codec, no extra library) and
lingers briefly to batch. A failed attempt closes the producer so the next one starts from a clean
session; records the broker did not acknowledge stay spooled and go again later (at-least-once,
duplicates carry the same ``(device_id, seq)`` and are dropped downstream).

Retries follow the project's one policy (:mod:`fleetpulse.retry`): capped, jittered, finite after any
number of failures. A rejection no retry can fix by itself (credentials refused, topic not
authorised, certificate not trusted, client certificate refused) is reported with its reason and
retried only at the cap, so an operator's fix is picked up without the agent hammering the broker
meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import KafkaProducer
from kafka.errors import (
    AuthorizationError,
    KafkaError,
    SaslAuthenticationFailedError,
    UnsupportedSaslMechanismError,
)

from fleetpulse.agents.settings import DeliverySettings
from fleetpulse.agents.spool import Spool, SpooledRecord
from fleetpulse.config import TLS_CLIENT_CERTIFICATE_REFUSALS, KafkaSettings, KeyPasswordMissing, kafka_python_security
from fleetpulse.contract import Topics
from fleetpulse.retry import Backoff, RetryPolicy
from fleetpulse.tls import TLS_FILES_UNREADABLE, client_context, handshake_refusal

log = logging.getLogger(__name__)


RECEIVE_MAX_BYTES = 1 << 20
"""The largest response the agent's client reads: metadata and produce acknowledgements are far smaller."""


def producer_config(kafka: KafkaSettings, delivery: DeliverySettings, client_id: str) -> dict[str, Any]:
    """kafka-python settings; TLS, SASL/SCRAM and mTLS come from :class:`KafkaSettings` only."""
    config: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": None if delivery.compression == "none" else delivery.compression,
        "linger_ms": delivery.linger_ms,
        "batch_size": delivery.batch_size,
        "max_block_ms": delivery.max_block_ms,
        # the constructor probes the broker; a dead broker must cost no more than a blocked send
        "bootstrap_timeout_ms": delivery.max_block_ms,
        "request_timeout_ms": kafka.request_timeout_ms,
        "delivery_timeout_ms": max(delivery.delivery_timeout_ms, kafka.request_timeout_ms + delivery.linger_ms),
        "retry_backoff_ms": 500,
        "reconnect_backoff_ms": 500,
        "reconnect_backoff_max_ms": 10_000,
        # kafka-python allocates a response's announced size before reading it (100 MB by default): the agent
        # only reads metadata and acknowledgements, so whatever answers at the bootstrap address gets 1 MiB
        "receive_message_max_bytes": RECEIVE_MAX_BYTES,
        **kafka_python_security(kafka),
    }
    return config


class Signer(Protocol):
    """Authenticates this device's records (``fleetpulse.agents.identity.RecordSigner``)."""

    def headers(self, stream: str, value: bytes) -> list[tuple[str, bytes]]: ...

    def enrolment(self) -> tuple[bytes, bytes]:
        """(key, value) of the record that enrols this device's key."""
        ...


def rejection_reason(exc: BaseException) -> str | None:
    """Why the broker or TLS layer refused us for good, or None for failures worth retrying soon.

    kafka-python wraps TLS failures in connection errors, so the whole cause chain is searched.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, SaslAuthenticationFailedError | UnsupportedSaslMechanismError):
            return "authentication failed (SASL credentials rejected)"
        if isinstance(current, AuthorizationError):
            return f"authorization failed ({type(current).__name__})"
        if isinstance(current, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(current):
            return "TLS certificate rejected"
        if isinstance(current, ssl.SSLError) and any(a in str(current) for a in TLS_CLIENT_CERTIFICATE_REFUSALS):
            return (
                "TLS client certificate refused by the broker (mutual TLS: kafka.ssl_certfile, ssl_keyfile), "
                "or what answers at the bootstrap address is not the broker"
            )
        if isinstance(current, KeyPasswordMissing):
            return f"TLS client key not loaded ({current})"
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        pending.extend(a for a in current.args if isinstance(a, BaseException))
    return None


class _ConnectionFailures(logging.Handler):
    """The latest exceptions kafka-python logged for failed connections (a few, so memory stays bounded).

    kafka-python logs why a connection failed (certificate not trusted, SASL credentials refused)
    but its producer raises only "Unable to bootstrap"; this is where the reason is found.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.recent: deque[BaseException] = deque(maxlen=16)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.recent.extend(arg for arg in args if isinstance(arg, BaseException))

    def take(self) -> list[BaseException]:
        self.acquire()  # emit() runs on kafka-python's I/O thread, under the same lock
        try:
            taken = list(self.recent)
            self.recent.clear()
        finally:
            self.release()
        return taken


_connection_failures = _ConnectionFailures()
logging.getLogger("kafka").addHandler(_connection_failures)


def _rejection(cause: BaseException | None) -> str | None:
    """The permanent rejection behind a failed attempt: its own exception first, then the connection failures
    kafka-python logged meanwhile (taken, so the next attempt starts without them)."""
    reasons = [rejection_reason(c) for c in (cause, *_connection_failures.take()) if c is not None]
    return next((r for r in reasons if r is not None), None)


@dataclass(frozen=True)
class DrainResult:
    delivered: int
    error: str | None = None
    rejected: str | None = None
    """Set when the failure is a permanent rejection (see :func:`rejection_reason`): its reason."""


SENDER_STOP_S = 5.0


def _stop_network_thread(producer: KafkaProducer) -> None:
    """Stop a producer whose ``close`` failed.

    kafka-python's ``close`` flushes first and, with records still pending at its timeout (a broker gone
    mid-session), raises before it stops its network thread. That thread would live on for the agent's
    lifetime, one per failed session, retrying the broker and perhaps delivering later what the next
    session sends again. Its sender is stopped without sending; the records stay in the spool.
    """
    sender = getattr(producer, "_sender", None)  # tests/unit/agent/test_delivery.py fails if this goes away
    if sender is None:
        return
    sender.force_close()
    sender.join(SENDER_STOP_S)
    with contextlib.suppress(Exception):  # nothing pending now: marks it closed (no retry from __del__)
        producer.close(timeout=0)


class Delivery:
    def __init__(
        self, kafka: KafkaSettings, delivery: DeliverySettings, client_id: str, signer: Signer | None = None
    ) -> None:
        self.kafka = kafka
        self.settings = delivery
        self.client_id = client_id
        self.signer = signer
        self.topics = Topics(prefix=kafka.topic_prefix)
        # the agent's inventory goes with its reports, MACed: agents may write the health topic only
        self._streams = {"health": self.topics.health, "inventory": self.topics.health, "enrolment": self.topics.health}
        self._producer: KafkaProducer | None = None

    def close(self, timeout_s: float = 5.0) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                producer.close(timeout=timeout_s)
            except Exception:  # closing a broken session must never take the agent down
                log.debug("producer close failed: stopping its network thread", exc_info=True)
                _stop_network_thread(producer)

    def tls_refusal(self) -> str | None:
        """Why the broker turns this agent away at TLS, found with one handshake before a session opens (the
        client would name it only after its bootstrap timeout, amid its retries); None: no TLS, the handshake
        passes, or the broker is unreachable (the session's own error says so)."""
        try:
            context = client_context(self.kafka)
        except (OSError, ssl.SSLError, ValueError) as exc:  # names the file and OpenSSL's reason, never the key
            return f"{TLS_FILES_UNREADABLE}: {exc}"
        return None if context is None else handshake_refusal(self.kafka.bootstrap_servers, context)

    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = KafkaProducer(**producer_config(self.kafka, self.settings, self.client_id))
        return self._producer

    def drain(self, spool: Spool, budget_s: float | None = None) -> DrainResult:
        """Send spooled records oldest first until the spool is empty, an error occurs or ``budget_s`` passes."""
        deadline = time.monotonic() + (budget_s if budget_s is not None else float("inf"))
        delivered = 0
        _connection_failures.take()  # only this attempt's connection failures explain its error
        while time.monotonic() < deadline:
            batch = spool.peek(self.settings.max_batch_records)
            if not batch:
                return DrainResult(delivered)
            if self._producer is None and (refusal := self.tls_refusal()) is not None:
                return DrainResult(delivered, refusal, refusal)
            cause: BaseException | None = None
            try:
                acked, error, cause = self._send_batch(batch)
            except Exception as exc:  # any client failure: keep the records, retry later on a fresh producer
                acked, error, cause = [], f"{type(exc).__name__}: {exc}", exc
            spool.ack(acked)
            delivered += len(acked)
            if error is not None:
                self.close(timeout_s=0)
                return DrainResult(delivered, error, _rejection(cause))
        return DrainResult(delivered)

    def check(self, signer: Signer) -> DrainResult:
        """Open a session and deliver ``signer``'s device enrolment only (``fleetpulse-agent check``, which asks
        :meth:`tls_refusal` first).

        It needs all a report does (TLS, the login, Write on the health topic), and the worker takes it
        as the repeat every session starts with. Nothing is spooled."""
        _connection_failures.take()
        error: str | None = None
        cause: BaseException | None = None
        try:
            producer = self._get_producer()
            sent = self._send_enrolment(producer, signer)
            producer.flush(timeout=self.settings.flush_timeout_s)
            if not sent.is_done:
                error = f"the enrolment was not acknowledged within {self.settings.flush_timeout_s:g} s"
            elif sent.failed():
                cause = sent.exception
                error = f"not acknowledged: {type(cause).__name__}: {cause}"
        except Exception as exc:  # any client failure is the check's answer, not a crash
            error, cause = f"{type(exc).__name__}: {exc}", exc
        self.close(timeout_s=0 if error else 5.0)
        return DrainResult(1) if error is None else DrainResult(0, error, _rejection(cause))

    def _send_enrolment(self, producer: KafkaProducer, signer: Signer) -> Any:
        """Send this device's enrolment (the record that pins its key) on the health topic; its future."""
        key, value = signer.enrolment()
        return producer.send(self.topics.health, value=value, key=key, headers=signer.headers("enrolment", value))

    def _send_batch(self, batch: list[SpooledRecord]) -> tuple[list[int], str | None, BaseException | None]:
        """The ids of the longest acknowledged prefix of ``batch``, and the first error and its exception, if any."""
        fresh = self._producer is None
        producer = self._get_producer()
        futures = []
        error: str | None = None
        cause: BaseException | None = None
        if fresh and self.signer is not None:
            # every session starts with the enrolment: same partition, so the worker pins the key
            # before it reads any report of this session (repeats are no-ops there)
            enrolment = self._send_enrolment(producer, self.signer)
        for record in batch:
            headers = [("seq", str(record.seq).encode())] if record.seq is not None else []
            if self.signer is not None:
                headers.extend(self.signer.headers(record.stream, record.value))
            try:
                futures.append(
                    producer.send(self._streams[record.stream], value=record.value, key=record.key, headers=headers)
                )
            except KafkaError as exc:
                error, cause = f"send: {type(exc).__name__}: {exc}", exc
                break
        try:
            producer.flush(timeout=self.settings.flush_timeout_s)
        except KafkaError as exc:
            if error is None:
                error, cause = f"flush: {type(exc).__name__}: {exc}", exc
        acked: list[int] = []
        if fresh and self.signer is not None and (not enrolment.is_done or enrolment.failed()):
            self.close(timeout_s=0)  # the next attempt opens a new session and enrols again
            return acked, error or "enrolment not acknowledged", cause
        for record, future in zip(batch, futures, strict=False):
            if not future.is_done or future.failed():
                failure = future.exception if future.is_done else None
                if error is None:
                    name = type(failure).__name__ if failure else "timeout"
                    error, cause = f"not acknowledged: {name}: {failure or ''}", failure
                break
            acked.append(record.id)
        return acked, error, cause


class Drainer(Protocol):
    def drain(self, spool: Spool, budget_s: float | None = None) -> DrainResult: ...


class DeliveryLoop:
    """One delivery attempt per :meth:`step`, and how long to wait before the next.

    The thread that runs it only waits; keeping the decisions here lets a test drive thousands of
    failures through the very loop the agent runs, without sleeping.
    """

    def __init__(self, delivery: Drainer, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.delivery = delivery
        self.backoff = Backoff(policy)
        self._clock = clock

    @property
    def failing(self) -> bool:
        return self.backoff.failures > 0

    def step(self, spool: Spool) -> float | None:
        """Drain ``spool`` once; None when it is empty (wait for new records), else seconds until the retry."""
        if not spool.count():
            return None
        result = self.delivery.drain(spool)
        if result.error is None:
            if self.failing:
                log.info(
                    "delivery recovered",
                    extra={"fields": {"delivered": result.delivered, "after_failures": self.backoff.failures}},
                )
            self.backoff.succeeded()
            log.debug("spool drained", extra={"fields": {"delivered": result.delivered}})
            return None
        now = self._clock()
        delay = self.backoff.failed(now)
        fields: dict[str, Any] = {
            "error": result.error[:500],
            "delivered": result.delivered,
            "spooled": spool.count(),
            "failures": self.backoff.failures,
        }
        if result.rejected is None:
            log.warning(
                "delivery failed; records stay spooled", extra={"fields": {**fields, "retry_in_s": round(delay, 1)}}
            )
            return delay
        # retrying sooner cannot help: wait as long as the policy ever waits (sys.maxsize saturates its exponent)
        delay = self.backoff.policy.delay(sys.maxsize)
        self.backoff.not_before = now + delay
        log.error(
            "delivery rejected; fix the agent's Kafka credentials or certificates, records stay spooled",
            extra={"fields": {**fields, "reason": result.rejected, "retry_in_s": round(delay, 1)}},
        )
        return delay
