"""The registry floor: no worker serves a signed index older than one any worker has served.

A running worker refuses an index older than the one it serves (:func:`fleetpulse.streams.reload.accept`),
but a restarted one remembers nothing: whoever can write the registry folder and kept an old signed
copy of its index could put it back and have a demoted model served again at the next restart. So
each worker records the generations it serves on the compacted serving topic, which only the
workers' principal may write, and a starting worker reads the highest one for its registry and holds
the registry to it. A registry is identified by the key that signs its index; an unsigned registry
has no floor (whoever can write it can write any generation). A registry rebuilt from scratch
starts at generation 1 again: sign it with a new key, which gives it a new identity.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import ContractError, ServedRegistry, Topics, decode, encode
from fleetpulse.models.registry import ScorerSet, rule_scorers
from fleetpulse.streams.kafka_admin import aiokafka_auth
from fleetpulse.streams.reload import index_fingerprint

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 60.0


def registry_id(signing_key: bytes) -> str:
    """The registry's identity on the serving topic: a fingerprint, never the key."""
    return hashlib.sha256(b"fleetpulse-registry:" + signing_key).hexdigest()[:16]


@dataclass
class RegistryFloor:
    """The highest index generation served for one signed registry, as this worker knows it."""

    registry: str
    directory: Path
    floor: int = 0

    def record(self, scorers: ScorerSet, worker: str, now: datetime) -> tuple[bytes, bytes] | None:
        """The serving-topic record of ``scorers``' index when it raises the floor (then raised), else None."""
        digest = index_fingerprint(self.directory)
        if scorers.generation <= self.floor or digest is None or digest.startswith("unreadable"):
            return None
        served = ServedRegistry(
            registry=self.registry,
            generation=scorers.generation,
            index_sha256=digest,
            worker=worker[:128],
            served_at=now,
        )
        self.floor = scorers.generation
        return served.log_key().encode(), encode(served)

    def hold(self, scorers: ScorerSet) -> ScorerSet:
        """``scorers``, unless their index is older than the floor: then the rule scorers, the refusal recorded."""
        if scorers.generation >= self.floor:
            return scorers
        reason = (
            f"registry index generation {scorers.generation} is older than generation {self.floor}, which a "
            "worker served: an old signed copy was put back; serving the rules until a newer index is signed"
        )
        log.error("registry index below the served floor", extra={"fields": {"registry": self.registry}})
        held = rule_scorers()
        held.generation = scorers.generation
        held.refused.append(f"{self.directory}: {reason}")
        return held


def floor_of(values: Iterable[bytes | None], registry: str) -> int:
    """The highest generation ``values`` (serving-topic records) give for ``registry``; 0 if none.

    Only workers may write the topic; a record that does not decode is skipped with a warning.
    """
    floor = 0
    for value in values:
        if value is None:
            continue
        try:
            served = decode(value, ServedRegistry)
        except ContractError as exc:
            log.warning("unreadable serving record skipped", extra={"fields": {"reason": exc.reason[:200]}})
            continue
        if served.registry == registry:
            floor = max(floor, served.generation)
    return floor


async def read_floor(kafka: KafkaSettings, topics: Topics, registry: str, timeout_s: float = READ_TIMEOUT_S) -> int:
    """The floor recorded on the serving topic for ``registry``, read to its end (the topic is small)."""
    admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
    await admin.start()
    try:
        described = await admin.describe_topics([topics.serving])
    finally:
        await admin.close()
    assigned = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    if not assigned:
        raise RuntimeError(f"topic {topics.serving} has no partitions: create the topics first")
    consumer = AIOKafkaConsumer(**aiokafka_auth(kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        values: list[bytes | None] = []
        deadline = time.monotonic() + timeout_s
        while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topics.serving} took over {timeout_s:.0f} s")
            batches = await consumer.getmany(*assigned, timeout_ms=500)
            values += [message.value for messages in batches.values() for message in messages]
        return floor_of(values, registry)
    finally:
        await consumer.stop()
