"""Topic creation, connection settings and consumer lag, shared by the worker, the demo and benchmarks.

Topics are created explicitly (never auto-created) so the partition count is a decision:
all input topics and the state table's changelog must have the same count, because a
device's reports, its inventory and its state must land on the same partition. Every
component that creates topics (worker, ticket consumer, ``fleetpulse simulate``,
``fleetpulse ingest-mdm``) goes through :func:`create_configured_topics`, so the count and
the replication factor come from ``[streams]`` whichever starts first.

Under least-privilege ACLs (``deploy/k8s/base/kafka-users.yaml``) no service may create the
pipeline's topics: the cluster's topic operator does (``kafka-topics.yaml``), and each principal
sees only the topics it uses. There a refused creation is no error: see :func:`ensure_topics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    TopicAlreadyExistsError,
    TopicAuthorizationFailedError,
    UnknownTopicOrPartitionError,
)
from aiokafka.helpers import create_ssl_context

from fleetpulse.config import KafkaSettings, KeyPasswordMissing, ssl_key_password
from fleetpulse.contract import Topics
from fleetpulse.errors import OperatorError
from fleetpulse.streams.settings import StreamSettings
from fleetpulse.tls import TLS_FILES_UNREADABLE, handshake_refusal

log = logging.getLogger(__name__)

VISIBLE_TIMEOUT_S = 30.0


class KafkaConnectError(OperatorError):
    """This client cannot connect to the configured cluster: its TLS files do not load, no bootstrap server
    answers, or the broker refuses its TLS handshake (an untrusted broker certificate, a missing client one)."""


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of every aiokafka client (and the Faust worker's): ``ssl_cafile`` to trust the brokers,
    ``ssl_certfile``/``ssl_keyfile`` (``ssl_key_password`` for an encrypted key) for mutual TLS."""
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=kafka.ssl_cafile,
            certfile=kafka.ssl_certfile,
            keyfile=kafka.ssl_keyfile,
            password=ssl_key_password(kafka),
        )
    except KeyPasswordMissing as exc:
        raise KafkaConnectError(str(exc)) from None
    except (OSError, ssl.SSLError) as exc:  # names the file and OpenSSL's reason, never the key or its password
        raise KafkaConnectError(f"{TLS_FILES_UNREADABLE}: {exc}") from None
    return context


def tls_refusal(kafka: KafkaSettings, timeout_s: float = 5.0) -> str | None:
    """Why the first bootstrap server turns this client away at TLS, found with one handshake
    (:func:`fleetpulse.tls.handshake_refusal`), or None: no TLS configured, the handshake passes, or the
    server cannot be reached at all."""
    context = ssl_context(kafka)
    return None if context is None else handshake_refusal(kafka.bootstrap_servers, context, timeout_s)


class _LoggedErrors(logging.Handler):
    """The exceptions aiokafka logs while it bootstraps: it raises only "Unable to bootstrap", and logs why
    (a refused SASL login, a closed connection, nothing listening)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        self.errors.extend(arg for arg in args if isinstance(arg, BaseException))


async def _start(kafka: KafkaSettings, admin: AIOKafkaAdminClient) -> None:
    """Start a service's first client at start-up; no way in is a :class:`KafkaConnectError` that says why:
    a TLS refusal if a handshake finds one, else what the client logged."""
    logged = _LoggedErrors()
    aiokafka_log = logging.getLogger("aiokafka")
    aiokafka_log.addHandler(logged)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        with contextlib.suppress(Exception):
            await admin.close()
        reason = await asyncio.to_thread(tls_refusal, kafka)
        raise KafkaConnectError(
            f"cannot connect to Kafka at {kafka.bootstrap_servers} ({kafka.security_protocol}): "
            f"{reason or (str(logged.errors[-1]) if logged.errors else str(exc))}"
        ) from None
    finally:
        aiokafka_log.removeHandler(logged)


def aiokafka_auth(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client needs to reach the configured cluster."""
    auth: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers.split(","),
        "security_protocol": kafka.security_protocol,
        "ssl_context": ssl_context(kafka),
        "request_timeout_ms": kafka.request_timeout_ms,
    }
    if kafka.sasl_mechanism:
        auth["sasl_mechanism"] = kafka.sasl_mechanism
        auth["sasl_plain_username"] = kafka.sasl_username
        auth["sasl_plain_password"] = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return auth


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """How long a topic keeps what (deploy/retention.yaml, which tests/unit/deploy holds this table to)."""

    retention_days: int | None
    """None: kept for good (plain compaction: the latest record per key)."""
    cleanup_policy: str = "delete"
    max_gib_per_partition: int | None = None
    """Set on topics a PC or the MDM bridge's certificate can fill: a flood shortens the replay window, never
    fills the brokers' disks."""

    def config(self) -> dict[str, str]:
        config = {"cleanup.policy": self.cleanup_policy}
        if self.retention_days is not None:
            config["retention.ms"] = str(self.retention_days * DAY_MS)
        if self.max_gib_per_partition is not None:
            config["retention.bytes"] = str(self.max_gib_per_partition * 2**30)
        if "compact" in self.cleanup_policy:  # a tombstone (a retirement) stays a day for consumers to see
            config["delete.retention.ms"] = str(DAY_MS)
        return config


DAY_MS = 24 * 3600 * 1000
TOPIC_POLICIES: dict[str, TopicPolicy] = {
    # by ``Topics`` attribute
    "health": TopicPolicy(7, max_gib_per_partition=4),
    "mobile": TopicPolicy(7, max_gib_per_partition=1),
    "inventory": TopicPolicy(None, "compact"),
    "mobile_inventory": TopicPolicy(30, "compact,delete", max_gib_per_partition=1),
    "scores": TopicPolicy(7),
    "alerts": TopicPolicy(30),
    "labels": TopicPolicy(365),
    "features": TopicPolicy(30),
    "control": TopicPolicy(30),
    "serving": TopicPolicy(None, "compact"),
    "dead_letter": TopicPolicy(14, max_gib_per_partition=1),
}


def topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """Each topic's retention as the cluster's manifests set it, for the topics a service creates itself
    (a single host, the demo): the policy must not depend on which of them started first."""
    return {getattr(topics, attribute): policy.config() for attribute, policy in TOPIC_POLICIES.items()}


async def ensure_topics(kafka: KafkaSettings, partitions: int, replication_factor: int) -> list[str]:
    """Create every fleetpulse topic that does not exist yet; returns the names created.

    Existing topics are left alone (their partition count is not changed: that would
    move devices to other partitions and split their state). Raises
    :class:`TopicCreationError` when the broker refuses the partitions or replication asked for.

    A topic the principal may not create is left to whoever manages the cluster's topics (ACLs): one it
    cannot see either (``list_topics`` omits it, existing or not) is skipped with a log line; one it can
    see is a topic it uses, and if that does not exist :class:`TopicCreationError` names it, so the
    service stops at start with the reason instead of waiting on a topic nobody creates.
    """
    topics = Topics(prefix=kafka.topic_prefix)
    admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
    await _start(kafka, admin)
    try:
        existing = set(await admin.list_topics())
        policy = topic_configs(topics)
        if kafka.security_protocol == "PLAINTEXT":  # no credentials, no ACLs: the services manage the topics
            await _warn_of_drift(admin, {name: config for name, config in policy.items() if name in existing})
        wanted = [
            NewTopic(name, partitions, replication_factor, topic_configs=config)
            for name, config in policy.items()
            if name not in existing
        ]
        if not wanted:
            return []
        not_authorized: list[str] = []
        with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently: same outcome
            response = await admin.create_topics(wanted)
            not_authorized = _raise_for_refused(response.topic_errors)
        if not_authorized:
            await _left_to_the_cluster(admin, not_authorized)
        created = [t.name for t in wanted if t.name not in not_authorized]
        if created:
            await _wait_until_visible(admin, created, VISIBLE_TIMEOUT_S)
        return created
    finally:
        await admin.close()


async def _warn_of_drift(admin: AIOKafkaAdminClient, policy: dict[str, dict[str, str]]) -> None:
    """Log each existing topic whose retention differs from the policy (one WARNING per topic).

    Topics created before the policy, or by hand, keep what they were given (the broker's defaults: a week
    for the labels retraining needs for a year, no size bound on the topic any PC can fill); a service never
    alters a topic, so the operator hears of it instead. Only asked where the services manage the topics
    (no credentials, so no ACLs): in a secured cluster the manifests set them, and asking would add a
    denied DescribeConfigs to the authorizer's log at every start."""
    if not policy:
        return
    try:
        answers = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in policy])
    except KafkaError as exc:  # a check at start-up: never the reason a service does not start
        log.info("topic settings not checked", extra={"fields": {"reason": type(exc).__name__}})
        return
    for answer in answers:
        for error_code, _, _, name, entries in answer.resources:
            if error_code or name not in policy:
                continue
            held = {entry[0]: entry[1] for entry in entries}
            drift = {key: {"topic": held.get(key), "policy": value} for key, value in policy[name].items()}
            drift = {key: values for key, values in drift.items() if values["topic"] != values["policy"]}
            if drift:
                log.warning(
                    "topic retention differs from the policy: alter it (kafka-configs.sh --alter) as "
                    "deploy/retention.yaml says",
                    extra={"fields": {"topic": name, "settings": drift}},
                )


class TopicCreationError(OperatorError):
    """The broker refused to create a topic as configured (e.g. more replicas than brokers), or a topic
    this service uses does not exist and its principal may not create it."""


def _raise_for_refused(topic_errors: list[tuple[Any, ...]]) -> list[str]:
    """CreateTopics reports refusals per topic in its answer instead of raising. Left unchecked,
    the wait below would make the broker auto-create them with its own defaults.

    Returns the topics refused for lack of authorization (the principal may not create them: ACLs)."""
    ok = (0, TopicAlreadyExistsError.errno, TopicAuthorizationFailedError.errno)
    refused = [t for t in topic_errors if t[1] not in ok]
    if refused:
        details = "; ".join(f"{t[0]}: {t[2] if len(t) > 2 and t[2] else f'error {t[1]}'}" for t in refused)
        raise TopicCreationError(f"the broker refused to create {len(refused)} topic(s): {details}")
    return [str(t[0]) for t in topic_errors if t[1] == TopicAuthorizationFailedError.errno]


async def _left_to_the_cluster(admin: AIOKafkaAdminClient, names: list[str]) -> None:
    """Topics this principal may not create: fine while they exist; one it may see and that is missing is an error.

    The broker answers TOPIC_AUTHORIZATION_FAILED alike for an existing topic the principal may not see and
    for one nobody created, so only the topics it may see (its own) can be told missing."""
    described = {t["topic"]: t["error_code"] for t in await admin.describe_topics(names)}
    missing = sorted(name for name, code in described.items() if code == UnknownTopicOrPartitionError.errno)
    if missing:
        raise TopicCreationError(
            f"topic(s) {', '.join(missing)} do not exist and this Kafka principal may not create them: create "
            "them as deploy/k8s/base/kafka-topics.yaml does (or run `fleetpulse topics create` with a principal "
            "allowed to)"
        )
    log.info(
        "topics left to the cluster: this Kafka principal may neither create nor see them (ACLs)",
        extra={"fields": {"topics": sorted(n for n, code in described.items() if code != 0)}},
    )


def create_configured_topics(kafka: KafkaSettings, streams: StreamSettings) -> list[str]:
    """Blocking :func:`ensure_topics` with ``[streams] partitions`` and ``replication_factor``."""
    return asyncio.run(ensure_topics(kafka, streams.partitions, streams.replication_factor))


async def _wait_until_visible(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float) -> None:
    """Return once the broker describes every topic with a leader for each partition.

    CreateTopics answers when the controller has the topics; the broker that serves
    metadata learns of them a moment later (seconds on a loaded machine), and a producer
    asking in between logs "not found in cluster metadata" errors while it retries.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in described
            if t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
        }
        missing = sorted(set(names) - ready)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics created but not visible after {timeout_s:.0f} s: {', '.join(missing)}")
        await asyncio.sleep(0.2)


async def consumer_lag(kafka: KafkaSettings, group_id: str, topics: list[str] | None = None) -> int:
    """Messages not yet committed by ``group_id`` on the worker's input topics (health, mobile, both
    inventory topics and IT's control topic: a re-enrolment is input like a report).

    A partition the group never committed counts from its beginning offset, so a worker
    that has not started yet shows the full backlog rather than zero. Offsets are asked for these
    topics' partitions only, so a principal allowed to describe just them (KEDA's) needs no more.
    """
    default = Topics(prefix=kafka.topic_prefix)
    names = topics or [default.health, default.mobile, default.inventory, default.mobile_inventory, default.control]
    admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_auth(kafka))
    await admin.start()
    await consumer.start()
    try:
        described = await admin.describe_topics(names)
        tps = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        if not tps:
            return 0
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        lag = 0
        for tp in tps:
            meta = committed.get(tp)
            position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
            lag += max(0, ends[tp] - position)
        return lag
    finally:
        await consumer.stop()
        await admin.close()
