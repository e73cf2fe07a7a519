"""The Faust app: thin transport around :class:`~fleetpulse.streams.processing.Processor`.

One agent (concurrency 1) reads the report topics (with the agents' key enrolments), the
compacted inventory topics (IT's register and the MDM bridge's) and IT's control topic together, so every change to a device's table value is serialised through one loop.
Records arrive as raw bytes (``value_serializer="raw"``): malformed input reaches our
dead-letter path instead of crashing Faust's deserializer.

Faust's per-record paths are replaced by batch ones (``faust_internals.py``): the fetcher
hands a whole fetch to the agent's channel, the agent reads the channel in bulk, and
state is written per partition as one RocksDB write batch plus one changelog batch. Decoded
device records stay in memory between batches (``state_cache.py``), served while the table
still holds the bytes they were stored with.

Delivery guarantee (at-least-once with idempotent effects), per batch:

1. read each device's value from the table, run the pure processor;
2. send dead letters, scores and alerts, and WAIT until Kafka acknowledged them;
3. write the batch's points to the TSDB (one request);
4. only then write the new table values (local store + changelog batch per partition);
5. ack the events; Faust flushes the producer (changelog) before it commits their offsets.

A crash before 4 replays the batch from the old state: the same alerts come out
again with the same deterministic ``alert_id`` (the ticket consumer deduplicates on
it) and TSDB points are rewritten identically. A crash after 4 but before the offset
commit replays events that the state already holds: they are dead-lettered as
``duplicate`` and their effects were already durable (step 2 happened before 4).
Such a duplicate also re-sends the device's current value to the changelog, which
heals the one window where a RocksDB store got a write whose changelog message was
lost with the process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections import Counter, deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import faust

from fleetpulse.alerts.policy import AlertPolicy
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import RiskScore, Topics, encode
from fleetpulse.models.index import is_packaged, signing_key
from fleetpulse.models.registry import ScorerSet, load_scorers
from fleetpulse.models.state import DeviceState
from fleetpulse.serving import serving_policy
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.faust_internals import (
    DeviceTable,
    RestartTolerantAssignor,
    ack_events,
    event_batches,
    install_transport,
    publish,
)
from fleetpulse.streams.kafka_admin import ssl_context
from fleetpulse.streams.metrics import PipelineMetrics
from fleetpulse.streams.points import drift_point, pipeline_point, serving_point
from fleetpulse.streams.processing import EPOCH, DeviceRecord, Processor, RawRecord
from fleetpulse.streams.recovery import SeekFirstTableManager
from fleetpulse.streams.reload import RegistryWatch, accept
from fleetpulse.streams.retention import Retention, dated, retention, thinned
from fleetpulse.streams.serving_floor import RegistryFloor, read_floor, registry_id
from fleetpulse.streams.settings import StreamSettings
from fleetpulse.streams.sinks import Sink, build_sink
from fleetpulse.streams.state_cache import DecodedCache

log = logging.getLogger(__name__)

TABLE_NAME = "devices"


def group_id(settings: ServerSettings) -> str:
    """The consumer group (= Faust app id): topic prefix + app id, so test runs never share offsets."""
    return f"{settings.kafka.topic_prefix}{settings.streams.app_id}"


def instance_id(streams: StreamSettings) -> str:
    """Static membership id: stable across restarts of the same worker, unique per worker on a host."""
    return streams.instance_id or f"{socket.gethostname()}-{streams.web_port}"


def faust_credentials(kafka: KafkaSettings) -> Any:
    context = ssl_context(kafka)
    if kafka.sasl_mechanism:
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


class Pipeline:
    """The agent body and its collaborators (processor, sink, metrics), bound to one Faust app."""

    def __init__(
        self,
        app: faust.App,
        table: DeviceTable,
        topics: Topics,
        processor: Processor,
        sink: Sink,
        metrics: PipelineMetrics,
        worker: str,
    ) -> None:
        self.app = app
        self.table = table
        self.topics = topics
        self.processor = processor
        self.sink = sink
        self.metrics = metrics
        metrics.track_sink(sink)
        self.decoded: DecodedCache[DeviceRecord] = DecodedCache(processor.settings.state_cache_bytes)
        table.decoded = self.decoded  # the table drops entries of partitions Faust moves or restores
        metrics.track_state_cache(self.decoded)
        self.worker = worker
        self.positions: dict[Any, int] = {}
        self.commit_seen: dict[Any, tuple[int | None, float]] = {}  # tp -> (committed offset, since)
        # Kept encoded: thousands of live model objects would be rescanned by every full garbage
        # collection (measured ~30 % of CPU); bytes are invisible to the collector.
        self.recent: deque[bytes] = deque(maxlen=processor.settings.baseline_sample)
        self.recent_scores: deque[bytes] = deque(maxlen=4 * processor.settings.baseline_sample)
        self.registry_floor: RegistryFloor | None = None  # set for a signed registry (serving_floor.py)
        # a batch reads states, awaits its effects, then writes them: the retention rule must not write in between
        self.state_lock = asyncio.Lock()

    def _lookup(self, events: Sequence[Any]) -> Any:
        """The batch's table reads: a record comes from the decoded-state cache while the table still holds
        the bytes it was stored with. It leaves the cache: the processor changes records in place (also a
        record it then dead-letters as ``processing_error``), so only the records this batch stores go back."""

        def lookup(index: int, device_id: str) -> DeviceRecord | None:
            partition, key = events[index].message.partition, device_id.encode()
            raw = self.table.read(partition, key)
            if raw is None:
                return None
            try:
                return self.decoded.lookup(partition, key, raw, DeviceRecord.from_bytes)
            except ValueError:
                # an incompatible stored value (e.g. after a state schema change) must not wedge the device
                log.warning("unreadable device state reset", extra={"fields": {"device_id": device_id}})
                self.metrics.outcomes.labels("state_reset").inc()
                return None

        return lookup

    def _validated(self, events: Sequence[Any]) -> Any:
        """The native fast path's table reads: a value only while it is the one this worker last wrote or
        decoded (the decoded-state cache holds it), so the fast path never reads a value no Python
        validation has passed (after a restart, a recovery or a rebalance, the first read decodes it)."""

        def validated(index: int, device_id: str) -> bytes | None:
            partition, key = events[index].message.partition, device_id.encode()
            raw = self.table.read(partition, key)
            return raw if raw is not None and self.decoded.holds(partition, key, raw) else None

        return validated

    def _partition_counts(self, raws: Sequence[RawRecord]) -> dict[str, int]:
        """Each source topic's partition count as the cluster reports it (the configured count until it has)."""
        consumer = self.app.consumer
        configured = self.processor.settings.partitions
        return {topic: consumer.topic_partitions(topic) or configured for topic in {raw.topic for raw in raws}}

    def _owned(self, events: Sequence[Any]) -> list[Any]:
        """Events of partitions this worker still owns.

        A batch can hold events buffered before a rebalance; writing state for a
        partition that now belongs to another worker would put an old value into its changelog
        after the new owner's writes. Their offsets are not committed by us (Faust discards
        commits of revoked partitions), so the new owner processes them.
        """
        assigned = self.app.consumer.assignment()
        owned = [e for e in events if e.message.tp in assigned]
        if len(owned) < len(events):
            self.metrics.outcomes.labels("revoked_skipped").inc(len(events) - len(owned))
        return owned

    async def handle(self, events: Sequence[Any]) -> None:
        async with self.state_lock:
            await self._handle(events)

    async def _handle(self, events: Sequence[Any]) -> None:
        events = self._owned(events)
        if not events:
            return
        started = time.perf_counter()
        raws = [
            RawRecord(
                e.message.topic,
                e.message.partition,
                e.message.offset,
                e.message.key,
                e.message.value,
                e.message.headers,
            )
            for e in events
        ]
        now = datetime.now(UTC)
        result = self.processor.process_batch(
            raws, self._lookup(events), now, self._partition_counts(raws), self._validated(events)
        )
        scored = time.perf_counter()

        encoded_scores = [encode(score) for score in result.scores]
        pending = [
            *await publish(
                self.app,
                self.topics.dead_letter,
                [(dl.key.encode() if dl.key else None, encode(dl)) for dl in result.dead_letters],
            ),
            *await publish(
                self.app,
                self.topics.scores,
                [(score.device_id.encode(), value) for score, value in zip(result.scores, encoded_scores, strict=True)],
            ),
            *await publish(self.app, self.topics.alerts, [(a.device_id.encode(), encode(a)) for a in result.alerts]),
            *await publish(
                self.app, self.topics.features, [(f.log_key().encode(), encode(f)) for f in result.features]
            ),
        ]
        if pending:
            await asyncio.gather(*pending)  # effects durable before the state that records them
        emitted = datetime.now(UTC)
        for report in result.reports:
            self.metrics.event_latency.observe(max(0.0, (emitted - report.collected_at).total_seconds()))
        self.metrics.record_fast_path(len(result.collected_us))
        emitted_us = (emitted - EPOCH) // timedelta(microseconds=1)
        for collected_us in result.collected_us:
            self.metrics.event_latency.observe(max(0.0, (emitted_us - collected_us) / 1e6))

        self.sink.add(result.points)
        if result.lines:
            self.sink.add_lines(result.lines)
        await self.sink.flush()  # written and dropped points are counted by the sink (metrics.track_sink)

        assigned = self.app.consumer.assignment()  # again: the awaits above may have spanned a rebalance
        writes: dict[int, list[tuple[bytes, bytes]]] = {}
        stored: list[tuple[Any, bytes, bytes, DeviceRecord | None]] = []
        for device_id, record in result.records.items():
            message = events[result.last_record_of[device_id]].message
            if message.tp not in assigned:
                continue
            value = record.to_bytes()  # may thin the record in place: the object is then the stored one
            key = device_id.encode()
            writes.setdefault(message.partition, []).append((key, value))
            stored.append((message.tp, key, value, record))
            self.recent.append(value)
        for device_id, value in result.encoded.items():
            message = events[result.last_record_of[device_id]].message
            if device_id in result.records or message.tp not in assigned:
                continue  # the Python path took the device over later in the batch: its record is stored
            key = device_id.encode()
            writes.setdefault(message.partition, []).append((key, value))
            stored.append((message.tp, key, value, None))
            self.recent.append(value)
        for device_id in result.rewrite - result.records.keys() - result.encoded.keys():
            message = events[result.last_record_of[device_id]].message
            if message.tp not in assigned:
                continue
            current = self.table.read(message.partition, device_id.encode())
            if current is not None:
                writes.setdefault(message.partition, []).append((device_id.encode(), current))
        for partition, items in writes.items():
            await self.table.write_batch(partition, items)  # one RocksDB write batch + one changelog batch
        assigned = self.app.consumer.assignment()  # a partition revoked while writing keeps no entries
        for tp, key, value, kept in stored:
            if tp in assigned:
                self.decoded.put(tp.partition, key, value, kept)

        self.recent_scores.extend(encoded_scores)
        for raw in raws:
            self.positions[(raw.topic, raw.partition)] = raw.offset + 1
        self.metrics.record_batch(
            Counter(r.topic for r in raws),
            result.counts,
            len(result.scores),
            len(result.alerts),
            scored - started,
            time.perf_counter() - started,
        )
        self.metrics.record_scorer_errors(result.scorer_errors)

    async def apply_retention(self, now: datetime, slice_size: int = 500) -> Counter[str]:
        """Thin or erase the silent devices of this worker's partitions (:mod:`fleetpulse.streams.retention`).

        A slice of devices at a time, each under the state lock and re-read there, so a batch between two
        slices is never undone; erased devices become changelog tombstones, which standbys and a recovery from
        the changelog apply like any write."""
        started = time.perf_counter()
        keep_for = self.processor.settings.state_retention
        done: Counter[str] = Counter()
        topics = self.topics
        source = {topics.health, topics.mobile, topics.inventory, topics.mobile_inventory, topics.control}
        slices = [
            (partition, keys[start : start + slice_size])
            for partition in sorted({tp.partition for tp in self.app.consumer.assignment() if tp.topic in source})
            for keys in [self.table.keys_of(partition)]
            for start in range(0, len(keys), slice_size)
        ]
        for partition, keys in slices:
            async with self.state_lock:
                if self.app.rebalancing or self.app.in_recovery:
                    done["deferred"] += len(keys)  # Faust rewrites the stores from the changelog: the next check
                    continue
                if partition not in {tp.partition for tp in self.app.consumer.assignment() if tp.topic in source}:
                    continue  # moved in a rebalance: its new owner applies the rule
                await self._retain(partition, keys, now, keep_for, done)
            await asyncio.sleep(0)  # let batches in between slices
        for action in (Retention.THIN, Retention.ERASE, Retention.DATE):
            if done[action.value]:
                self.metrics.retention.labels(action.value).inc(done[action.value])
        fields = {**done, "seconds": round(time.perf_counter() - started, 3)}
        log.info("state retention applied", extra={"fields": fields})
        return done

    async def _retain(
        self, partition: int, keys: Sequence[bytes], now: datetime, keep_for: timedelta, done: Counter[str]
    ) -> None:
        writes: list[tuple[bytes, bytes | None]] = []
        for key in keys:
            raw = self.table.read(partition, key)
            if raw is None:
                continue
            try:
                record = self.decoded.peek(partition, key, raw) or DeviceRecord.from_bytes(raw)
            except ValueError:
                # kept: a value this version cannot read may be a newer version's (a rollback must not erase it)
                done["unreadable"] += 1
                continue
            action = retention(record, now, keep_for)
            done[action.value] += 1
            if action is Retention.THIN:
                writes.append((key, thinned(record).to_bytes()))
            elif action is Retention.DATE:
                writes.append((key, dated(record, now).to_bytes()))
            elif action is Retention.ERASE:
                writes.append((key, None))
        if writes:
            await self.table.write_acknowledged(partition, writes)
            for key, _ in writes:
                self.decoded.discard(partition, key)

    async def reload_models(self, settings: ServerSettings, watch: RegistryWatch) -> bool:
        """Serve the registry's models if its index changed and verifies (see :mod:`fleetpulse.streams.reload`)."""
        if not watch.changed():
            return False
        try:
            loaded = await asyncio.to_thread(load_scorers, settings.models)
        except Exception:  # unforeseen (verification failures are refusals): the timer must not end the worker
            retrying = watch.retry()
            log.exception(
                "loading the changed registry failed: serving the models loaded before",
                extra={"fields": {"retrying": retrying}},
            )
            self.metrics.model_reloads.labels("refused").inc()
            return False
        watch.settled()
        floor = self.registry_floor.floor if self.registry_floor is not None else 0
        if not accept(self.processor.scorers, loaded, floor):
            self.metrics.model_reloads.labels("refused").inc()
            return False
        self.use_models(loaded, serving_policy(settings, loaded))
        self.metrics.model_reloads.labels("served").inc()
        log.info("serving reloaded models", extra={"fields": serving_summary(self.processor)})
        await self.record_served()
        return True

    async def record_served(self) -> None:
        """Raise the registry floor on the serving topic to the index now served (signed registries only)."""
        if self.registry_floor is None:
            return
        record = self.registry_floor.record(self.processor.scorers, self.worker, datetime.now(UTC))
        if record is not None:
            await asyncio.gather(*await publish(self.app, self.topics.serving, [record]))

    def use_models(self, scorers: ScorerSet, policy: AlertPolicy) -> None:
        """Swap the scorers and their alert policy between two batches (``handle`` never awaits while scoring)."""
        self.processor.scorers = scorers
        self.processor.policy = policy
        self.metrics.set_models(scorers.served())
        self.refit_baselines()

    def _recent_states(self) -> list[DeviceState]:
        return [DeviceRecord.from_bytes(raw).state for raw in self.recent]

    def refit_baselines(self) -> None:
        """Cohort baselines of the anomaly scorer from the states this worker saw last (its partitions only)."""
        if self.recent:
            self.processor.scorers.fit_baselines(self._recent_states())
            log.info("anomaly baselines refitted", extra={"fields": {"states": len(self.recent)}})

    async def report_drift(self) -> None:
        """PSI of recent features and scores against each trained model's reference profile."""
        from fleetpulse.models.drift import check_drift

        scores = [RiskScore.model_validate_json(raw) for raw in self.recent_scores]
        results = check_drift(self.processor.scorers, self._recent_states(), scores)
        now = datetime.now(UTC)
        self.sink.add(drift_point(r.scorer, r.name, r.cohort, r.psi, now) for r in results)
        await self.sink.flush()
        drifted = [f"{r.scorer}/{r.cohort}/{r.name}" for r in results if r.level == "drift"]
        log.info("drift checked", extra={"fields": {"results": len(results), "drifted": drifted[:20]}})

    def consumer_lag(self) -> int:
        """Messages behind the partition ends, over this worker's assigned input partitions."""
        inputs = {
            self.topics.health,
            self.topics.mobile,
            self.topics.inventory,
            self.topics.mobile_inventory,
            self.topics.control,
        }
        lag = 0
        consumer = self.app.consumer
        for tp in consumer.assignment():
            if tp.topic not in inputs:
                continue
            high = consumer.highwater(tp)
            if high is None:
                continue
            lag += max(0, high - self.positions.get((tp.topic, tp.partition), high))
        return lag

    async def report_stats(self) -> None:
        lag = self.consumer_lag()
        self.metrics.set_lag(lag)
        ages = {} if self.app.rebalancing else self.uncommitted_ages()
        self.metrics.commit_age.set(max(ages.values(), default=0.0))
        stats = self.metrics.snapshot()
        now = datetime.now(UTC)
        self.sink.add([pipeline_point(self.worker, now, stats)])
        self.sink.add([serving_point(self.worker, served, now) for served in self.processor.scorers.served()])
        await self.sink.flush()
        log.info("pipeline stats", extra={"fields": {"worker": self.worker, **stats}})

    def uncommitted_ages(self) -> dict[str, float]:
        """Seconds each input partition with processed but uncommitted records has kept the same committed offset.

        Processing can look healthy (no lag, no errors) while commits have stopped: a
        restart would then replay everything since the last commit. The committed offsets
        are Faust's own bookkeeping (``Consumer._committed_offset``; no public accessor).
        The clock of a partition starts when it is first seen behind, so ages grow by
        the interval between calls (``/health`` and the stats timer).
        """
        consumer = self.app.consumer
        committed_offsets = getattr(consumer, "_committed_offset", {})
        now = time.monotonic()
        ages = {}
        for tp in consumer.assignment():
            processed = self.positions.get((tp.topic, tp.partition))
            committed = committed_offsets.get(tp)
            if processed is None or (committed is not None and committed >= processed):
                self.commit_seen.pop(tp, None)
                continue
            seen = self.commit_seen.get(tp)
            if seen is None or seen[0] != committed:
                seen = self.commit_seen[tp] = (committed, now)
            ages[f"{tp.topic}/{tp.partition}"] = now - seen[1]
        return ages

    def stalled_partitions(self) -> list[str]:
        """Input partitions whose committed offset has not moved for ``commit_stall_s`` (``/health`` answers 503)."""
        limit = self.processor.settings.commit_stall_s
        return [name for name, age in self.uncommitted_ages().items() if age >= limit]

    def health(self) -> dict[str, Any]:
        last = self.metrics.last_batch_at
        stalled = [] if self.app.rebalancing else self.stalled_partitions()
        return {
            "status": "stalled" if stalled else "ok",
            "uncommitted_partitions": stalled,
            "worker": self.worker,
            "rebalancing": bool(self.app.rebalancing),
            "assigned_partitions": len(self.app.consumer.assignment()) if self.app.consumer else 0,
            "consumer_lag": self.consumer_lag(),
            "events_total": self.metrics.totals["events"],
            "last_batch_age_s": None if last is None else round(time.monotonic() - last, 3),
        }


def serving_summary(processor: Processor) -> dict[str, Any]:
    """What this worker scores with and alerts on, for its start-up log line."""
    policy = processor.policy
    return {
        **processor.scorers.describe(),
        "thresholds": {
            "default": [policy.raise_threshold, policy.clear_threshold],
            **{c.value: [t.raise_threshold, t.clear_threshold] for c, t in policy.components.items()},
        },
    }


def faust_config(settings: ServerSettings) -> dict[str, Any]:
    """The worker's Faust settings, in one place: the throughput benchmark's Faust floor
    (``benchmarks/faust_floor.py``) runs with exactly these."""
    s, kafka = settings.streams, settings.kafka
    return {
        "broker": [f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
        "broker_credentials": faust_credentials(kafka),
        "store": "rocksdb://" if s.store == "rocksdb" else "memory://",
        "datadir": str(s.data_dir),
        "topic_partitions": s.partitions,
        "topic_replication_factor": s.replication_factor,
        "topic_allow_declare": True,
        "broker_session_timeout": s.session_timeout_s,
        "broker_heartbeat_interval": s.heartbeat_interval_s,
        "broker_rebalance_timeout": s.rebalance_timeout_s,
        "broker_commit_interval": s.commit_interval_s,
        "producer_linger": s.producer_linger_s,
        "producer_max_batch_size": s.producer_batch_bytes,
        "consumer_group_instance_id": instance_id(s),
        "consumer_auto_offset_reset": "earliest",
        "stream_buffer_maxsize": s.buffer_maxsize,
        "producer_acks": -1,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "web_enabled": True,  # our /metrics and /health; Faust's own pages are off: its table pages
        "web_tables_enabled": False,  # answer device records, enrolled report keys included
        "web_router_enabled": False,
        "web_graph_enabled": False,
        "web_stats_enabled": False,
        "web_bind": s.web_host,
        "web_host": s.web_host,
        "web_port": s.web_port,
        "web_in_thread": False,
        "TableManager": SeekFirstTableManager,  # seeks input partitions before records flow (recovery.py)
        "PartitionAssignor": RestartTolerantAssignor,  # a restart on a new web address (faust_internals.py)
    }


def device_table(app: faust.App, name: str, streams: StreamSettings) -> DeviceTable:
    """The app's bytes -> bytes device table, written in batches (registered with the app like ``app.Table``)."""
    table = DeviceTable(
        app,
        name=name,
        default=None,
        beacon=app.tables.beacon,
        partitions=streams.partitions,
        key_type=bytes,
        value_type=bytes,
    )
    table.write_ahead_log = streams.state_write_ahead_log
    app.tables.add(table)
    return table


def create_app(
    settings: ServerSettings,
    *,
    scorers: ScorerSet | None = None,
    policy: AlertPolicy | None = None,
    sink: Sink | None = None,
    registry_floor: RegistryFloor | None = None,
) -> faust.App:
    """Build the worker's Faust app; nothing connects until the app starts.

    ``scorers``/``policy``/``sink`` default to what the settings configure; tests and
    benchmarks pass their own. ``registry_floor``: the signed registry's floor read from the
    serving topic (:func:`run_worker` reads it); an older index is not served. The pipeline is
    reachable as ``app.fleetpulse``.
    """
    s, kafka = settings.streams, settings.kafka
    topics = Topics(prefix=kafka.topic_prefix)
    worker = instance_id(s)
    app = faust.App(group_id(settings), **faust_config(settings))
    install_transport(app, s)
    metrics = PipelineMetrics()
    table = device_table(app, TABLE_NAME, s)
    # scorers passed in by tests and benchmarks stay as given; the registry's are watched from before loading
    watch = RegistryWatch(settings.models.registry_dir) if scorers is None and s.registry_poll_s > 0 else None
    scorers = scorers if scorers is not None else load_scorers(settings.models)
    if registry_floor is not None:
        scorers = registry_floor.hold(scorers)
    processor = Processor(s, topics, scorers, policy if policy is not None else serving_policy(settings, scorers))
    pipeline = Pipeline(app, table, topics, processor, sink or build_sink(s.tsdb), metrics, worker)
    pipeline.registry_floor = registry_floor
    metrics.set_models(scorers.served())
    app.fleetpulse = pipeline  # type: ignore[attr-defined]
    source = app.topic(
        topics.health,
        topics.mobile,
        topics.inventory,
        topics.mobile_inventory,
        topics.control,
        partitions=s.partitions,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(source, concurrency=1, name="fleetpulse.process")  # type: ignore[misc,untyped-decorator]
    async def process(stream: Any) -> None:
        async for events in event_batches(stream, s.batch_max, s.batch_within_s):
            await pipeline.handle(events)
            ack_events(events)

    @app.task  # type: ignore[misc,untyped-decorator]
    async def announce() -> None:
        log.info("serving", extra={"fields": serving_summary(processor)})
        await pipeline.record_served()

    @app.timer(interval=s.stats_interval_s)  # type: ignore[misc,untyped-decorator]
    async def stats() -> None:
        await pipeline.report_stats()

    if s.baseline_refit_s > 0:

        @app.timer(interval=s.baseline_refit_s)  # type: ignore[misc,untyped-decorator]
        async def refit() -> None:
            pipeline.refit_baselines()

    if watch is not None:
        registry = watch

        @app.timer(interval=s.registry_poll_s)  # type: ignore[misc,untyped-decorator]
        async def reload_models() -> None:
            await pipeline.reload_models(settings, registry)

    if s.retention_check_s > 0:

        @app.timer(interval=s.retention_check_s)  # type: ignore[misc,untyped-decorator]
        async def retain() -> None:
            try:
                await pipeline.apply_retention(datetime.now(UTC))
            except Exception:  # a periodic job must not end the worker: the next check tries again
                log.exception("applying state retention failed: nothing of the failed slice was changed")
                pipeline.metrics.retention.labels("failed").inc()

    if s.drift_interval_s > 0:

        @app.timer(interval=s.drift_interval_s)  # type: ignore[misc,untyped-decorator]
        async def drift() -> None:
            await pipeline.report_drift()

    @app.page("/metrics")  # type: ignore[misc,untyped-decorator]
    async def metrics_page(web: Any, request: Any) -> Any:
        return web.bytes(metrics.exposition(), content_type="text/plain")

    @app.page("/health")  # type: ignore[misc,untyped-decorator]
    async def health_page(web: Any, request: Any) -> Any:
        health = pipeline.health()
        return web.json(health, status=200 if health["status"] == "ok" else 503)

    @app.service  # type: ignore[misc,untyped-decorator]
    class SinkCloser(faust.Service):  # type: ignore[misc,untyped-decorator]
        async def on_stop(self) -> None:
            await pipeline.sink.close()

    return app


def logging_config(level: str) -> dict[str, Any]:
    """Faust's worker configures logging itself; hand it our JSON formatter so logs stay structured."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "fleetpulse.logs.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
    }


def tune_gc(streams: StreamSettings) -> None:
    """Keep the cyclic garbage collector off the hot path.

    Start-up objects (modules, Faust, the models) are moved out of the collector's reach,
    and young collections run less often: every decoded device state is a burst of
    short-lived objects, and with CPython's defaults the collector took ~40 % of the pure
    processor's CPU (``benchmarks/stream_profile.py``; the worker exports its pauses as
    ``fleetpulse_stream_gc_pause_seconds``). Middle collections, which rescan everything that
    outlived a young one (the decoded-state cache among it), run every ``gc_middle_threshold``
    young ones (CPython's default 10).
    """
    gc.collect()
    gc.freeze()
    _, _, old = gc.get_threshold()
    gc.set_threshold(streams.gc_young_threshold, streams.gc_middle_threshold, old)


def registry_floor(settings: ServerSettings) -> RegistryFloor | None:
    """The signed registry's floor from the serving topic (blocking); None for an unsigned or packaged one."""
    key = signing_key(settings.models)
    if key is None or is_packaged(settings.models.registry_dir):
        return None
    floor = RegistryFloor(registry_id(key), settings.models.registry_dir)
    topics = Topics(prefix=settings.kafka.topic_prefix)
    floor.floor = asyncio.run(read_floor(settings.kafka, topics, floor.registry))
    log.info("registry floor read", extra={"fields": {"registry": floor.registry, "generation": floor.floor}})
    return floor


def run_worker(settings: ServerSettings) -> None:
    """Create missing topics, then run the worker until SIGTERM/SIGINT (blocking)."""
    from fleetpulse.streams.kafka_admin import create_configured_topics

    create_configured_topics(settings.kafka, settings.streams)
    app = create_app(settings, registry_floor=registry_floor(settings))
    tune_gc(settings.streams)
    app.fleetpulse.metrics.watch_gc()  # type: ignore[attr-defined]
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level),
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()
