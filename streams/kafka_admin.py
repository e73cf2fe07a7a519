"""Topic creation, connection settings and consumer lag, shared by the worker, the demo and benchmarks.

Topics are created explicitly (never auto-created) so the partition count is a decision:
all input topics and the state table's changelog must have the same count, because a
device's reports, its inventory and its state must land on the same partition. Every
component that creates topics (worker, ticket consumer, ``fleetpulse simulate``,
``fleetpulse ingest-mdm``) goes through :func:`create_configured_topics`, so the count and
the replication factor come from ``[streams]`` whichever starts first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.helpers import create_ssl_context

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.streams.settings import StreamSettings

COMPACTED = {"cleanup.policy": "compact"}
COMPACTED_30_DAYS = {"cleanup.policy": "compact,delete", "retention.ms": str(30 * 24 * 3600 * 1000)}
VISIBLE_TIMEOUT_S = 30.0


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    if kafka.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    password = kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None
    context: ssl.SSLContext = create_ssl_context(
        cafile=kafka.ssl_cafile, certfile=kafka.ssl_certfile, keyfile=kafka.ssl_keyfile, password=password
    )
    return context


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


def topic_configs(topics: Topics) -> dict[str, dict[str, str]]:
    """IT's register (latest record per device) and serving (each generation served) are compacted, kept for
    good; the MDM bridge's inventory is compacted and kept 30 days (each export republishes every phone, so
    only ids no export names age out: deploy/retention.yaml); the rest are time-retained streams."""
    compacted = {topics.inventory, topics.serving}
    configs = {name: (COMPACTED if name in compacted else {}) for name in topics.all()}
    configs[topics.mobile_inventory] = COMPACTED_30_DAYS
    return configs


async def ensure_topics(kafka: KafkaSettings, partitions: int, replication_factor: int) -> list[str]:
    """Create every fleetpulse topic that does not exist yet; returns the names created.

    Existing topics are left alone (their partition count is not changed: that would
    move devices to other partitions and split their state). Raises
    :class:`TopicCreationError` when the broker refuses the partitions or replication asked for.
    """
    topics = Topics(prefix=kafka.topic_prefix)
    admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, partitions, replication_factor, topic_configs=config)
            for name, config in topic_configs(topics).items()
            if name not in existing
        ]
        if not wanted:
            return []
        with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently: same outcome
            response = await admin.create_topics(wanted)
            _raise_for_refused(response.topic_errors)
        await _wait_until_visible(admin, [t.name for t in wanted], VISIBLE_TIMEOUT_S)
        return [t.name for t in wanted]
    finally:
        await admin.close()


class TopicCreationError(RuntimeError):
    """The broker refused to create a topic as configured (e.g. more replicas than brokers)."""


def _raise_for_refused(topic_errors: list[tuple[Any, ...]]) -> None:
    """CreateTopics reports refusals per topic in its answer instead of raising. Left unchecked,
    the wait below would make the broker auto-create them with its own defaults."""
    refused = [t for t in topic_errors if t[1] not in (0, TopicAlreadyExistsError.errno)]
    if refused:
        details = "; ".join(f"{t[0]}: {t[2] if len(t) > 2 and t[2] else f'error {t[1]}'}" for t in refused)
        raise TopicCreationError(f"the broker refused to create {len(refused)} topic(s): {details}")


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
    that has not started yet shows the full backlog rather than zero.
    """
    default = Topics(prefix=kafka.topic_prefix)
    names = topics or [default.health, default.mobile, default.inventory, default.mobile_inventory, default.control]
    admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
    consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_auth(kafka))
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group_id)
        described = await admin.describe_topics(names)
        tps = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        if not tps:
            return 0
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
