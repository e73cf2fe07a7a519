"""The faust-streaming internals the worker's hot path relies on are still the ones it was written against.

``fleetpulse.streams.faust_internals`` overrides or calls private faust-streaming and
aiokafka code. A release that renames, re-signs or rewrites any of it must fail here,
loudly and by name, before a worker misbehaves: every digest below is of the source of
an internal that the module replaces or depends on. When one fails, read the new source,
adapt faust_internals.py, then update the digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiokafka
import faust
import pytest
from aiokafka.partitioner import DefaultPartitioner
from faust.serializers.registry import Registry
from faust.serializers.schemas import Schema
from faust.stores import rocksdb as rocksdb_store
from faust.tables.base import Collection
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport import conductor as faust_conductor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from mode.utils.queues import FlowControlEvent, FlowControlQueue, ThrowableQueue

from fleetpulse.models.registry import ScorerSet
from fleetpulse.settings import ServerSettings
from fleetpulse.streams import faust_internals
from fleetpulse.streams.app import create_app
from fleetpulse.streams.faust_internals import (
    FAUST_STREAMING_VERSION,
    BatchMemoryStore,
    BatchRocksDBStore,
    DeviceTable,
    DrainingConsumer,
    DrainingTransport,
    FetchWaitConsumerThread,
    require_pinned_faust,
)
from fleetpulse.streams.sinks import NullSink

SOURCE_DIGESTS = {
    # replaced by DrainingConsumer._drain_messages/_deliver: its gap, commit_every and read-offset handling must match
    "faust.transport.consumer.Consumer._drain_messages": (faust_consumer.Consumer._drain_messages, "44a2500309e8"),
    "faust.transport.consumer.Consumer._add_gap": (faust_consumer.Consumer._add_gap, "4df2573ded7c"),
    # replaced by DrainingConsumer.getmany: the same records in the same order, the end offset read once per fetch
    "faust.transport.consumer.Consumer.getmany": (faust_consumer.Consumer.getmany, "4b168d84882a"),
    "faust.transport.consumer.Fetcher._fetcher": (faust_consumer.Fetcher._fetcher, "68f894f0b577"),
    # DrainingConsumer._put_direct does what the conductor's route does for a record of one raw bytes channel
    "faust.transport.conductor.Conductor._compile_message_handler": (
        faust_conductor.Conductor._compile_message_handler,
        "9fbc0538097a",
    ),
    "faust.transport.conductor.Conductor._update_callback_map": (
        faust_conductor.Conductor._update_callback_map,
        "37598771880d",
    ),
    "faust.transport.conductor.Conductor._build_handler": (faust_conductor.Conductor._build_handler, "5c071d127798"),
    "faust.serializers.schemas.Schema.compile": (Schema.compile, "d46eec5ce319"),
    "faust.serializers.registry.Registry.loads_key": (Registry.loads_key, "75262a2361a3"),
    "faust.serializers.registry.Registry.loads_value": (Registry.loads_value, "a9a8d9f63e03"),
    "faust.serializers.registry.Registry._prepare_payload": (Registry._prepare_payload, "0740e90d2a90"),
    "mode.utils.queues.FlowControlQueue.put_nowait_enhanced": (FlowControlQueue.put_nowait_enhanced, "f1839f43dda3"),
    "faust.transport.producer.ProducerBuffer.size": (ProducerBuffer.size.fget, "b543a978fdec"),
    "faust.transport.producer.ProducerBuffer.wait_until_ebb": (ProducerBuffer.wait_until_ebb, "758dd5744044"),
    # DeviceTable builds its store the way Collection does
    "faust.tables.base.Collection._new_store_by_url": (Collection._new_store_by_url, "343a8125107d"),
    # BatchRocksDBStore reads/writes the partition databases as these do
    "faust.stores.rocksdb.Store._set": (rocksdb_store.Store._set, "4227e561e288"),
    "faust.stores.rocksdb.Store._db_for_partition": (rocksdb_store.Store._db_for_partition, "cb7e67d5f9ef"),
    # BatchRocksDBStore sets the write options of every partition database Faust opens, its offsets' included
    "faust.stores.rocksdb.Store._open_for_partition": (rocksdb_store.Store._open_for_partition, "1dc4e0113d67"),
    "faust.stores.rocksdb.Store.set_persisted_offset": (rocksdb_store.Store.set_persisted_offset, "b4c811926678"),
    "faust.stores.rocksdb.Store.stop": (rocksdb_store.Store.stop, "2e98db0eb7c7"),
    "faust.stores.rocksdb.Store.apply_changelog_batch": (rocksdb_store.Store.apply_changelog_batch, "ea3344d369fc"),
    # DeviceTable sets the persisted changelog offset as Faust's changelog callback does
    "faust.tables.base.Collection._on_changelog_sent": (Collection._on_changelog_sent, "60122c86a120"),
    # the commit flushes the producer before committing: what makes batched changelog writes safe
    "faust.transport.consumer.Consumer._commit_offsets": (faust_consumer.Consumer._commit_offsets, "1a6979904118"),
    "faust.transport.drivers.aiokafka.Producer.flush": (aiokafka_driver.Producer.flush, "36d0cb3615f6"),
    # publish partitions keyed records as the producer's _partition with the default partitioner, remembered per key
    "aiokafka.AIOKafkaProducer._partition": (aiokafka.AIOKafkaProducer._partition, "e45fa9c539d4"),
    "aiokafka.partitioner.DefaultPartitioner.__call__": (DefaultPartitioner.__call__, "4911320054e7"),
    # DeviceTable drops decoded values where Faust replaces stored ones: every table's rebalance, every changelog batch
    "faust.tables.manager.TableManager.on_rebalance": (TableManager.on_rebalance, "2d2c23a07bf5"),
    "faust.tables.base.Collection.on_rebalance": (Collection.on_rebalance, "0812ad692171"),
    "faust.tables.base.Collection.apply_changelog_batch": (Collection.apply_changelog_batch, "b980a78d3ae9"),
    # FetchWaitConsumerThread changes the fetch settings of the consumer Faust builds, before it starts
    "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread._create_worker_consumer": (
        aiokafka_driver.AIOKafkaConsumerThread._create_worker_consumer,
        "c2701bfc3e6f",
    ),
    "faust.transport.drivers.aiokafka.Consumer._new_consumer_thread": (
        aiokafka_driver.Consumer._new_consumer_thread,
        "0870ec53dea7",
    ),
}


def digest(function: Any) -> str:
    function = getattr(function, "fun", function)  # a Service.task wraps its coroutine function
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:12]


def test_the_installed_faust_streaming_is_the_pinned_release() -> None:
    assert faust.__version__ == FAUST_STREAMING_VERSION
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert f'"faust-streaming=={FAUST_STREAMING_VERSION}"' in pyproject


def test_the_compiled_conductor_handler_is_unchanged() -> None:
    """The worker's direct put mirrors the compiled handler (Cython: its shipped .pyx source is what is checked)."""
    source = Path(faust_conductor.__file__).parent / "_cython" / "conductor.pyx"
    assert isinstance(faust_internals.ConductorHandler, type)
    assert hashlib.sha256(source.read_bytes()).hexdigest()[:12] == "dde1f9742678", (
        "faust's compiled ConductorHandler changed: re-check DrainingConsumer._put_direct against conductor.pyx"
    )


def test_another_faust_streaming_release_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust, "__version__", "0.99.0")
    with pytest.raises(RuntimeError, match=r"built for faust-streaming 0\.15\.3, found 0\.99\.0"):
        require_pinned_faust()


@pytest.mark.parametrize("name", sorted(SOURCE_DIGESTS))
def test_patched_internal_source_is_unchanged(name: str) -> None:
    function, expected = SOURCE_DIGESTS[name]
    assert digest(function) == expected, (
        f"{name} changed in this faust-streaming release: re-check fleetpulse/streams/faust_internals.py "
        f"against it, then update its digest here"
    )


def test_private_signatures_and_attributes_are_as_used(tmp_path: Path) -> None:
    assert list(inspect.signature(faust_consumer.Consumer._drain_messages).parameters) == ["self", "fetcher"]
    assert list(inspect.signature(faust_consumer.Consumer._add_gap).parameters) == [
        "self",
        "tp",
        "offset_from",
        "offset_to",
    ]
    assert "consumer._drain_messages(self)" in inspect.getsource(faust_consumer.Fetcher._fetcher.fun)
    assert list(inspect.signature(aiokafka.AIOKafkaProducer.send_batch).parameters) == [
        "self",
        "batch",
        "topic",
        "partition",
    ]
    assert list(inspect.signature(aiokafka.AIOKafkaProducer._partition).parameters) == [
        "self",
        "topic",
        "partition",
        "key",
        "value",
        "serialized_key",
        "serialized_value",
    ]
    assert hasattr(aiokafka_driver.Producer, "_ensure_producer")
    producer_init = inspect.getsource(aiokafka.AIOKafkaProducer.__init__)
    assert "self._partitioner = partitioner" in producer_init
    assert "self._metadata = self.client.cluster" in producer_init
    assert "_errors" in vars(ThrowableQueue(maxsize=1, flow_control=FlowControlEvent()))
    assert hasattr(rocksdb_store, "WriteBatch")
    assert inspect.getsource(Recovery).count("table.apply_changelog_batch(") == 2  # standbys and active recovery
    consumer_start = inspect.getsource(aiokafka.AIOKafkaConsumer.start)
    assert "fetch_min_bytes=self._fetch_min_bytes" in consumer_start
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in consumer_start

    app = create_app(
        ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": str(tmp_path)}}),
        scorers=ScorerSet([]),
        sink=NullSink(),
    )
    consumer: Any = app.consumer
    for attribute in ("_read_offset", "_commit_every", "_n_acked", "suspend_flow", "diag", "callback", "_stopped"):
        assert hasattr(consumer, attribute), attribute


def test_the_app_runs_on_the_batch_transport_table_and_store(tmp_path: Path) -> None:
    for store, store_class in (("memory", BatchMemoryStore), ("rocksdb", BatchRocksDBStore)):
        settings = ServerSettings.model_validate({"streams": {"store": store, "data_dir": str(tmp_path / store)}})
        app = create_app(settings, scorers=ScorerSet([]), sink=NullSink())
        table: Any = app.fleetpulse.table  # type: ignore[attr-defined]
        assert isinstance(app.transport, DrainingTransport)
        assert isinstance(app.consumer, DrainingConsumer)
        assert isinstance(table, DeviceTable)
        assert isinstance(table.data, store_class)
        assert app.tables[table.name] is table


def test_the_worker_consumer_lets_the_broker_gather_a_fetch(tmp_path: Path) -> None:
    streams = {"store": "memory", "data_dir": str(tmp_path), "fetch_min_bytes": 12_345, "fetch_max_wait_s": 0.25}
    app = create_app(ServerSettings.model_validate({"streams": streams}), scorers=ScorerSet([]), sink=NullSink())
    thread = app.consumer._new_consumer_thread()
    assert isinstance(thread, FetchWaitConsumerThread)

    async def built() -> Any:
        consumer = thread._create_worker_consumer(app.transport)
        await consumer.stop()
        return consumer

    consumer = asyncio.run(built())
    assert (consumer._fetch_min_bytes, consumer._fetch_max_wait_ms) == (12_345, 250)


def test_rocksdb_batch_store_writes_one_batch_per_partition_and_reads_by_partition(tmp_path: Path) -> None:
    app = create_app(
        ServerSettings.model_validate({"streams": {"store": "rocksdb", "data_dir": str(tmp_path)}}),
        scorers=ScorerSet([]),
        sink=NullSink(),
    )
    store: Any = app.fleetpulse.table.data  # type: ignore[attr-defined]
    store.write_batch(3, [(b"pc-1", b"one"), (b"pc-2", b"two")])
    store.write_batch(4, [(b"pc-1", b"other partition")])
    assert store.read(3, b"pc-1") == b"one"
    assert store.read(3, b"pc-2") == b"two"
    assert store.read(4, b"pc-1") == b"other partition"
    assert store.read(5, b"pc-1") is None
    store.set_persisted_offset(TP("changelog", 3), 41)
    assert store.persisted_offset(TP("changelog", 3)) == 41


def _wal_bytes(partition_dir: Path) -> int:
    return sum(log.stat().st_size for log in partition_dir.glob("*.log"))


@pytest.mark.parametrize("logged", [False, True])
def test_state_writes_skip_the_write_ahead_log_unless_configured(tmp_path: Path, logged: bool) -> None:
    streams = {"store": "rocksdb", "data_dir": str(tmp_path), "state_write_ahead_log": logged}
    app = create_app(ServerSettings.model_validate({"streams": streams}), scorers=ScorerSet([]), sink=NullSink())
    store: Any = app.fleetpulse.table.data  # type: ignore[attr-defined]
    store.write_batch(3, [(b"pc-1", b"x" * 4096)])
    store.set_persisted_offset(TP("changelog", 3), 41)
    assert (_wal_bytes(store.partition_path(3)) > 4096) is logged


def test_a_stopped_store_keeps_its_unlogged_writes(tmp_path: Path) -> None:
    def app() -> Any:
        settings = ServerSettings.model_validate({"streams": {"store": "rocksdb", "data_dir": str(tmp_path)}})
        return create_app(settings, scorers=ScorerSet([]), sink=NullSink())

    store: Any = app().fleetpulse.table.data
    store.write_batch(3, [(b"pc-1", b"kept")])
    store.set_persisted_offset(TP("changelog", 3), 7)
    kept = store._db_for_partition(3)  # Faust forgets its databases on stop without closing them
    asyncio.run(store.stop())
    del kept
    reopened: Any = app().fleetpulse.table.data
    assert (reopened.read(3, b"pc-1"), reopened.persisted_offset(TP("changelog", 3))) == (b"kept", 7)


CRASH_AFTER_WRITES = """
import os, sys
from faust.types import TP
from fleetpulse.models.registry import ScorerSet
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import create_app
from fleetpulse.streams.sinks import NullSink

streams = {"store": "rocksdb", "data_dir": sys.argv[1]}
app = create_app(ServerSettings.model_validate({"streams": streams}), scorers=ScorerSet([]), sink=NullSink())
store = app.fleetpulse.table.data
for batch in range(200):
    store.write_batch(3, [(f"pc-{batch}-{i}".encode(), bytes(8192)) for i in range(50)])
    store.set_persisted_offset(TP("changelog", 3), 50 * batch + 49)
    if batch == 99:
        store._db_for_partition(3).flush()  # what RocksDB does whenever a memtable fills up
os._exit(9)  # as kill -9: no close, no flush of what followed
"""


def test_a_crash_without_the_log_never_leaves_the_persisted_offset_ahead_of_the_data(tmp_path: Path) -> None:
    """Recovery replays the changelog after the persisted offset: an offset that outlived its data would lose state."""
    import subprocess
    import sys

    crashed = subprocess.run([sys.executable, "-c", CRASH_AFTER_WRITES, str(tmp_path)], check=False, timeout=120)
    assert crashed.returncode == 9
    app = create_app(
        ServerSettings.model_validate({"streams": {"store": "rocksdb", "data_dir": str(tmp_path)}}),
        scorers=ScorerSet([]),
        sink=NullSink(),
    )
    store: Any = app.fleetpulse.table.data  # type: ignore[attr-defined]
    offset = store.persisted_offset(TP("changelog", 3))
    survived = [batch for batch in range(200) if store.read(3, f"pc-{batch}-49".encode()) is not None]
    assert len(survived) >= 100  # flushed before the crash
    assert survived == list(range(len(survived)))  # the lost writes are the newest ones
    assert offset is not None
    assert offset // 50 < len(survived)  # every write the offset covers is still there: replay restores the rest


def test_the_table_drops_decoded_values_of_moved_and_restored_partitions(tmp_path: Path) -> None:
    app = create_app(
        ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": str(tmp_path)}}),
        scorers=ScorerSet([]),
        sink=NullSink(),
    )
    table: Any = app.fleetpulse.table  # type: ignore[attr-defined]
    decoded = table.decoded
    assert decoded is app.fleetpulse.decoded  # type: ignore[attr-defined]
    for partition in range(5):
        decoded.put(partition, b"pc-1", b"stored", f"record {partition}")
    asyncio.run(table.on_rebalance({TP("in", 0), TP("in", 2)}, {TP("in", 1)}, {TP("in", 2)}))
    assert [decoded.take(p, b"pc-1", b"stored") is not None for p in (1, 2)] == [False, False]

    class Message:
        partition, value = 3, b"restored"

    class Event:
        key, value, message = b"pc-1", b"restored", Message()

    table.apply_changelog_batch(iter([Event()]))  # Faust may hand over any iterable: read once
    assert table.data.read(3, b"pc-1") == b"restored"
    assert decoded.take(3, b"pc-1", b"stored") is None
    assert [decoded.take(p, b"pc-1", b"stored") for p in (0, 4)] == ["record 0", "record 4"]


def test_persisted_offset_is_the_last_record_of_an_acknowledged_batch(tmp_path: Path) -> None:
    app = create_app(
        ServerSettings.model_validate({"streams": {"store": "rocksdb", "data_dir": str(tmp_path)}}),
        scorers=ScorerSet([]),
        sink=NullSink(),
    )
    table: Any = app.fleetpulse.table  # type: ignore[attr-defined]
    tp = TP("changelog", 2)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        acknowledged, failed = loop.create_future(), loop.create_future()
        acknowledged.set_result(aiokafka.structs.RecordMetadata("changelog", 2, tp, 100, -1, -1, None))
        table._persisted(tp, 5)(acknowledged)
        failed.set_exception(aiokafka.errors.KafkaTimeoutError())
        table._persisted(tp, 9)(failed)

    asyncio.run(run())
    assert table.data.persisted_offset(tp) == 104


def test_a_fetch_is_delivered_in_order_with_read_offsets_and_gaps(tmp_path: Path) -> None:
    app = create_app(
        ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": str(tmp_path)}}),
        scorers=ScorerSet([]),
        sink=NullSink(),
    )
    consumer: Any = app.consumer
    tp = TP("in", 0)
    delivered: list[int] = []
    gaps: list[tuple[int, int]] = []

    class Message:
        def __init__(self, offset: int) -> None:
            self.offset, self.topic = offset, "in"

    async def callback(message: Any) -> None:
        delivered.append(message.offset)

    async def add_gap(tp: TP, offset_from: int, offset_to: int) -> None:
        gaps.append((offset_from, offset_to))

    async def fetched() -> AsyncIterator[tuple[TP, Any]]:
        for offset in (6, 9, 4, 10):
            yield tp, Message(offset)

    consumer.callback = callback
    consumer._add_gap = add_gap
    consumer._commit_every = None
    consumer._read_offset[tp] = 4
    app.topics.acks_enabled_for = lambda topic: True  # type: ignore[method-assign]
    asyncio.run(consumer._deliver((tp, Message(5)), fetched()))

    assert delivered == [5, 6, 9, 10]  # 4 was read before: dropped as Faust drops it
    assert gaps == [(7, 9)]
    assert consumer._read_offset[tp] == 10


@pytest.mark.parametrize("situation", ["flowing", "generation changes", "flow stopped", "one partition inactive"])
def test_a_fetch_yields_what_faust_yields_reading_each_end_offset_once(tmp_path: Path, situation: str) -> None:
    def fetch(consumer_class: Any) -> tuple[list[tuple[TP, int]], list[tuple[TP, int]], int]:
        app = create_app(
            ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": str(tmp_path)}}),
            scorers=ScorerSet([]),
            sink=NullSink(),
        )
        consumer: Any = app.consumer
        tps = [TP("a", 0), TP("a", 1), TP("b", 0)]
        records = {tp: [SimpleNamespace(offset=offset) for offset in range(3)] for tp in tps}
        active = set(tps) - {TP("a", 1)} if situation == "one partition inactive" else None
        tracked: list[tuple[TP, int]] = []
        seeks = 0

        async def wait_next_records(timeout: float) -> tuple[Any, Any]:
            return records, active

        async def perform_seek() -> None:
            nonlocal seeks
            seeks += 1

        consumer._wait_next_records = wait_next_records
        consumer.perform_seek = perform_seek
        consumer._to_message = lambda tp, record: (tp, record.offset)
        consumer.highwater = lambda tp: 100 + tp.partition
        app.monitor.track_tp_end_offset = lambda tp, offset: tracked.append((tp, offset))
        if situation == "flow stopped":
            consumer.flow_active = False

        async def drain() -> list[tuple[TP, int]]:
            out = []
            async for _tp, message in consumer_class.getmany(consumer, 1.0):
                out.append(message)
                if situation == "generation changes" and len(out) == 4:
                    app.consumer_generation_id += 1
            return out

        return asyncio.run(drain()), tracked, seeks

    faust_yields, faust_tracked, faust_seeks = fetch(faust_consumer.Consumer)
    own_yields, own_tracked, own_seeks = fetch(DrainingConsumer)
    assert own_yields == faust_yields
    assert own_seeks == faust_seeks
    assert sorted(set(faust_tracked)) == sorted(own_tracked)  # each partition once, with the same end offset
    if situation == "flowing":
        assert len(own_yields) == 9
        assert len(faust_tracked) == 9
        assert len(own_tracked) == 3


def test_memory_batch_store_reads_what_it_wrote() -> None:
    store = BatchMemoryStore.__new__(BatchMemoryStore)
    store.data = {}
    store.write_batch(0, [(b"a", b"1"), (b"b", b"2")])
    assert store.read(7, b"a") == b"1"
    assert store.read(0, b"c") is None
    assert faust_internals.BATCH_STORES["memory"] is BatchMemoryStore


def raw_message(tp: TP, offset: int) -> Any:
    return aiokafka_driver.ConsumerMessage(
        tp.topic,
        tp.partition,
        offset,
        1.5,
        0,
        [("h", b"v")],
        b"pc-%d" % offset,
        b"report %d" % offset,
        None,
        4,
        8,
        tp,
        generation_id=0,
    )


async def fetched_from(records: list[tuple[TP, Any]]) -> AsyncIterator[tuple[TP, Any]]:
    for record in records:
        yield record


def subscribed_app(tmp_path: Path, *channels: Any) -> tuple[Any, TP]:
    """An app whose conductor routes partition ``in/0`` to ``channels`` (as after a subscription), flow running."""
    app = create_app(
        ServerSettings.model_validate({"streams": {"store": "memory", "data_dir": str(tmp_path)}}),
        scorers=ScorerSet([]),
        sink=NullSink(),
    )
    tp = TP("in", 0)
    for channel in channels:
        app.topics._tp_index[tp].add(channel(app))
    app.topics._update_callback_map()
    app.flow_control.resume()
    app.consumer._read_offset[tp] = None
    return app, tp


def raw_channel(app: Any) -> Any:
    return app.topic("in", key_serializer="raw", value_serializer="raw").clone(is_iterator=True)


def default_channel(app: Any) -> Any:
    """A topic without serializers of its own: it decodes with the app's (the worker's app: raw)."""
    return app.topic("in").clone(is_iterator=True)


def json_channel(app: Any) -> Any:
    return app.topic("in", key_serializer="raw", value_serializer="json").clone(is_iterator=True)


@pytest.mark.parametrize("channel_of", [raw_channel, default_channel])
def test_a_raw_channel_gets_the_events_faust_would_put_without_its_route(tmp_path: Path, channel_of: Any) -> None:
    app, tp = subscribed_app(tmp_path, channel_of)
    consumer: Any = app.consumer
    (channel,) = app.topics._tp_index[tp]
    records = [(tp, raw_message(tp, offset)) for offset in (3, 4, 7)]

    async def run() -> list[Any]:
        await consumer._deliver(records[0], fetched_from(records[1:]))
        return [channel.queue.get_nowait() for _ in range(channel.queue.qsize())]

    events = asyncio.run(run())
    assert consumer._routes[tp].queue is channel.queue  # the direct put served them
    assert [e.message.offset for e in events] == [3, 4, 7]
    for event, (_, message) in zip(events, records, strict=True):
        expected = asyncio.run(channel.decode(message, propagate=True))
        assert (event.key, event.value, event.headers, event.message) == (
            expected.key,
            expected.value,
            expected.headers,
            expected.message,
        )
        assert type(event) is type(expected)
        assert event.message.refcount == 1  # as the handler's incref: one ack acks it
    assert consumer._read_offset[tp] == 7


@pytest.mark.parametrize(
    "situation", ["decoding channel", "two channels", "flow stopped", "routes rebuilt", "full", "producer buffer over"]
)
def test_records_take_fausts_route_where_it_would_wait_or_decode(tmp_path: Path, situation: str) -> None:
    channels = {"decoding channel": [json_channel], "two channels": [raw_channel, raw_channel]}
    app, tp = subscribed_app(tmp_path, *channels.get(situation, [raw_channel]))
    consumer: Any = app.consumer
    queues = [channel.queue for channel in app.topics._tp_index[tp]]
    if situation == "flow stopped":
        app.flow_control.suspend()
    if situation == "full":
        for offset in range(queues[0].maxsize):
            queues[0].put_nowait(offset)
    if situation == "producer buffer over":
        buffer = app.producer.buffer
        for n in range(buffer.max_messages + 1):
            buffer.pending.put_nowait(n)

    async def run() -> bool:
        if situation == "routes rebuilt":
            async with app.topics._tp_to_callback_lock:
                return bool(consumer._put_direct(tp, raw_message(tp, 1)))
        return bool(consumer._put_direct(tp, raw_message(tp, 1)))

    assert asyncio.run(run()) is False
    assert [queue.qsize() for queue in queues] == [queue.maxsize if situation == "full" else 0 for queue in queues]


async def test_a_batch_that_does_not_fill_in_time_is_handed_over() -> None:
    """Under light load the channel goes quiet before a batch is full: what it holds is yielded after ``within_s``."""
    queue = ThrowableQueue(flow_control=FlowControlEvent(initially_suspended=False))
    message = SimpleNamespace(generation_id=0, tracked=True, topic="in")
    for _ in range(2):
        queue.put_nowait(SimpleNamespace(message=message))
    app = SimpleNamespace(
        consumer=SimpleNamespace(track_message=None),
        consumer_generation_id=0,
        topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
        flow_control=SimpleNamespace(is_active=lambda: True),
    )
    stream = SimpleNamespace(app=app, channel=SimpleNamespace(queue=queue), should_stop=False)
    batches = faust_internals.event_batches(stream, max_events=10, within_s=0.05)
    assert len(await asyncio.wait_for(anext(batches), 5)) == 2
