"""The worker's hot path on faust-streaming's extension points, pinned to one faust-streaming version.

Faust spends most of a table-state job's time on its own per-record machinery: the
fetcher awaits every record through ``wait_first`` (two tasks and an ``asyncio.wait``
each), stream iteration and ``take_events`` hand events over one by one, and every
table write is one RocksDB put plus one message through the producer buffer. The
worker keeps Faust's consumer group, tables, changelog, recovery and commit protocol,
and replaces only those per-record paths, each through a subclass Faust lets an app
plug in:

* :class:`DrainingConsumer` (via :class:`DrainingTransport`, set as ``app.transport``):
  reads each partition's end offset once per fetch instead of once per record, and
  hands a whole fetched batch over inside ONE task that the flow-stop event can interrupt,
  instead of one task pair per record, and puts a record meant for one raw bytes channel
  straight into that channel's queue, as the conductor's compiled handler would; its
  :class:`FetchWaitConsumerThread` lets the broker gather records before it answers a fetch;
* :func:`event_batches`: reads the agent's channel queue in bulk; the caller acks the
  batch in a plain loop after handling it;
* :class:`RestartTolerantAssignor` (``PartitionAssignor=`` setting): a static member that
  comes back on another web address takes its cached assignment instead of failing Faust's
  address assertion;
* :class:`DeviceTable` with :class:`BatchRocksDBStore` / :class:`BatchMemoryStore`: reads
  and writes by explicit partition, one RocksDB write batch and one changelog batch per
  partition per call.

These overrides reach private names (the assignor's compressed client metadata, ``Consumer._drain_messages`` and its read-offset and
gap bookkeeping, the conductor's per-partition handlers and their lock, the producer buffer's pending queue, the store's partition databases, the producer's aiokafka client, partitioner
and cluster metadata, the aiokafka consumer's fetch settings, the queue's error deque). They live in this one module, which refuses any other
faust-streaming version than :data:`FAUST_STREAMING_VERSION` (also pinned in
pyproject.toml); ``tests/unit/test_faust_internals.py`` fails loudly when an internal
they rely on changes its signature or disappears.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, cast
from urllib.parse import urlsplit

import faust
import rocksdict
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import DefaultPartitioner
from faust.assignor import PartitionAssignor
from faust.assignor.client_assignment import ClientMetadata
from faust.serializers import codecs
from faust.serializers.registry import Registry
from faust.serializers.schemas import Schema
from faust.stores import memory as memory_store
from faust.stores import rocksdb as rocksdb_store
from faust.transport._cython.conductor import ConductorHandler
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, EventT

from fleetpulse.streams.partitioning import default_partition
from fleetpulse.streams.settings import StreamSettings
from fleetpulse.streams.state_cache import DecodedCache

FAUST_STREAMING_VERSION = "0.15.3"
"""The only faust-streaming release whose internals this module was written and tested against."""

log = logging.getLogger(__name__)

YIELD_EVERY = 100
"""Records handed over between yields to the event loop (as Faust's own drain loop)."""


def require_pinned_faust() -> None:
    """Refuse to run on another faust-streaming release: the overrides below would silently misbehave."""
    if faust.__version__ != FAUST_STREAMING_VERSION:
        raise RuntimeError(
            f"fleetpulse's stream worker is built for faust-streaming {FAUST_STREAMING_VERSION}, "
            f"found {faust.__version__}: re-check fleetpulse/streams/faust_internals.py against its source"
        )


class DrainingConsumer(aiokafka_driver.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer whose fetcher hands each fetched batch over in one interruptible task.

    Faust's ``_drain_messages`` wraps EVERY record in ``wait_first(callback, suspend_flow.wait())``
    so that a rebalance can interrupt a delivery blocked on a full stream buffer. Waiting on the
    whole batch keeps that property (the flow-stop event cancels the delivery where it blocks;
    a record is marked read only after its delivery completed) at one task pair per fetch.
    Offset-gap bookkeeping and ``commit_every`` behave as in Faust.
    """

    def _new_consumer_thread(self) -> FetchWaitConsumerThread:
        return FetchWaitConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                records = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany can return at once in a loop: let the event loop run
                if not self.should_stop:
                    # the fetch itself runs outside the interruptible part, as in Faust: it waits while the
                    # flow is stopped, and a fetch cancelled half-way would lose records the client returned
                    first = await anext(records, None)
                    if first is not None:
                        await self.wait_first(self._deliver(first, records), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        """Faust's ``Consumer.getmany``, reading each partition's end offset once per fetch, not per record.

        Faust reads the partition's high watermark and hands it to the monitor (consumer lag) before
        every record it yields, which cost more than building the record's message; once per
        partition and fetch tells the monitor the same. Round robin over partitions, the flow and
        generation checks and the seek when the flow is stopped are Faust's.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return
        to_message = self._to_message
        tracked: set[TP] = set()
        for tp, record in self.scheduler.iterate(records):
            if not self.flow_active:
                break
            if self.app.consumer_generation_id != generation_id:
                self.log.dev("Generation id changed from %r. Cancelling getmany.", generation_id)
                break
            if active_partitions is None or tp in active_partitions or tp in self._buffered_partitions:
                if tp not in tracked:
                    tracked.add(tp)
                    self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                yield tp, to_message(tp, record)

    async def _deliver(self, first: tuple[TP, Any], rest: AsyncIterator[tuple[TP, Any]]) -> None:
        """Every record of one fetch to the conductor, in order; gaps and ``commit_every`` as Faust does."""
        await self._deliver_one(*first)
        since_yield = 1
        async for tp, message in rest:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await asyncio.sleep(0)
                since_yield = 0
            await self._deliver_one(tp, message)

    async def _deliver_one(self, tp: TP, message: Any) -> None:
        offset = message.offset
        read = self._read_offset[tp]
        if read is not None and offset < read:
            self.log.dev("DROPPED MESSAGE ROFF %r", offset)
            return
        if read and offset - read > 1 and self.app.topics.acks_enabled_for(message.topic):
            await self._add_gap(tp, read + 1, offset)
        if self._commit_every is not None and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await asyncio.shield(self.commit())  # a flow stop must not cancel a commit half-way
        if not self._put_direct(tp, message):
            await self.callback(message)
        self._read_offset[tp] = offset

    def _put_direct(self, tp: TP, message: Any) -> bool:
        """Put ``message`` into its one channel's queue as the conductor's handler would, without awaiting.

        Faust's per-record route (the conductor's ``on_message`` under its lock, the compiled
        ``ConductorHandler``, the flow-control and producer-buffer waits, the topic's decode
        closure) is most of the fetcher's per-record cost; for a record it would deliver to one raw
        bytes channel at once, the outcome is this put. Returns False, leaving the record to
        Faust's route, wherever that route could wait or do more: routes being rebuilt
        (rebalance), flow stopped, producer buffer over its limit, a full queue, several
        channels, or a channel that decodes.
        """
        conductor: Any = self.app.topics
        if self.callback is not conductor.on_message or conductor._tp_to_callback_lock.locked():
            return False
        handler = conductor._tp_to_callback.get(tp)
        route = self._routes.get(tp)
        if route is None or route.handler is not handler:
            route = self._routes[tp] = DirectRoute.of(self.app, handler)
        if route.queue is None or len(route.channels) != 1 or route.channel not in route.channels or not route.open():
            return False
        queue = route.queue
        if queue.full():
            return False
        message.refcount += 1  # as the handler's message.incref(1): the event acks it once
        queue.put_nowait_enhanced(
            route.event(self.app, message.key, message.value, message.headers, message),
            on_pressure_high=route.on_pressure_high,
            on_pressure_drop=route.on_pressure_drop,
        )
        return True

    @functools.cached_property
    def _routes(self) -> dict[TP, DirectRoute]:
        return {}


def delivers_raw(app: Any, channel: Any) -> bool:
    """Whether Faust's decode of ``channel`` hands a record's key and value over unchanged (raw codec, no model).

    A topic without serializers of its own decodes with the app's (``key_serializer=`` and
    ``value_serializer=`` settings), as Faust's serializer registry does.
    """
    schema = getattr(channel, "schema", None)
    registry = app.serializers
    return (
        type(schema) is Schema
        and type(registry) is Registry
        and (schema.key_serializer or registry.key_serializer) == "raw"
        and (schema.value_serializer or registry.value_serializer) == "raw"
        and schema.key_type in (None, bytes)
        and schema.value_type in (None, bytes)
        and type(codecs.get_codec("raw")) is codecs.raw
    )


class DirectRoute:
    """What :meth:`DrainingConsumer._put_direct` needs of one partition's conductor handler, looked up once.

    ``queue`` is None when the handler's records cannot bypass it: not the compiled
    ``ConductorHandler``, no channel or several, a channel that decodes, or a threaded producer.
    """

    def __init__(self, handler: Any, channel: Any, event: Any, open_: Callable[[], bool]) -> None:
        self.handler, self.channel, self.event, self.open = handler, channel, event, open_
        self.channels = getattr(handler, "channels", ())  # live: the conductor adds and removes channels in place
        self.queue = None if channel is None else channel.queue
        self.on_pressure_high = getattr(handler, "on_pressure_high", None)
        self.on_pressure_drop = getattr(handler, "on_pressure_drop", None)

    @classmethod
    def of(cls, app: Any, handler: Any) -> DirectRoute:
        channels = getattr(handler, "channels", None) if isinstance(handler, ConductorHandler) else None
        if (
            not channels
            or len(channels) != 1
            or not delivers_raw(app, next(iter(channels)))
            or app.conf.producer_threaded
        ):
            return cls(handler, None, None, lambda: False)
        (channel,) = channels
        flow_active = app.flow_control.is_active
        buffer = app.producer.buffer
        pending, limit = buffer.pending, buffer.max_messages  # ProducerBuffer.size without its settings lookup

        def open_() -> bool:  # what the handler's acquire_flow_control and wait_until_producer_ebb would pass at once
            return bool(flow_active()) and pending.qsize() <= limit

        return cls(handler, channel, app.conf.Event, open_)


class FetchWaitConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread, whose aiokafka consumer lets the broker gather records before it answers a fetch.

    Faust asks for at least 1 byte per fetch, so the broker answers as soon as one record arrives: at a
    trickle of reports the consumer thread sends fetch after fetch, each carrying a few records, and at
    one report per device-minute for 20,000 devices that took about half of the worker's CPU
    (``benchmarks/stream_fleet.py``). With a minimum size and a bounded wait, one fetch carries a batch's
    worth; while the worker drains a backlog, fetches fill at once and nothing changes.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its fetcher, which has not happened yet
        consumer._fetch_min_bytes = transport.fetch_min_bytes
        consumer._fetch_max_wait_ms = transport.fetch_max_wait_ms
        return consumer


class DrainingTransport(aiokafka_driver.Transport):  # type: ignore[misc]
    """Faust's aiokafka transport with :class:`DrainingConsumer` (``app.transport = DrainingTransport(...)``)."""

    Consumer = DrainingConsumer
    fetch_min_bytes: int
    fetch_max_wait_ms: int
    """The worker's fetch settings, set by :func:`install_transport`."""


def install_transport(app: faust.App, streams: StreamSettings) -> None:
    """Give ``app`` the draining transport; must run before anything touches ``app.transport`` (topics, tables)."""
    require_pinned_faust()
    transport = DrainingTransport(app.conf.broker_consumer, app)
    transport.fetch_min_bytes = streams.fetch_min_bytes
    transport.fetch_max_wait_ms = max(1, round(streams.fetch_max_wait_s * 1000))
    app.transport = transport


async def event_batches(stream: Any, max_events: int, within_s: float) -> AsyncIterator[list[Any]]:
    """Batches of up to ``max_events`` events from the agent's channel, waiting at most ``within_s`` to fill one.

    Each event is tracked for acking as stream iteration tracks it; events delivered before
    a rebalance (flow stopped, or an older consumer generation) are acked without being
    yielded, as Faust skips them. The caller acks a yielded batch with :func:`ack_events`
    once it is handled: until then its offsets stay uncommitted.
    """
    app = stream.app
    queue = stream.channel.queue
    errors = queue._errors
    consumer = app.consumer
    track = consumer.track_message
    acks_enabled_for = app.topics.acks_enabled_for
    flow_active = app.flow_control.is_active
    stopping = False
    while not stream.should_stop:
        if errors:
            raise errors.popleft()
        batch: list[Any] = []
        try:
            event = queue.get_nowait() if not queue.empty() else await queue.get()
        except StopAsyncIteration:  # Faust ends the channel this way when the agent stops
            return
        deadline = time.monotonic() + within_s
        while True:
            message = event.message
            if not flow_active() or message.generation_id != app.consumer_generation_id:
                ack_events([event])
            else:
                if not message.tracked and acks_enabled_for(message.topic):
                    message.tracked = True
                    track(message)
                batch.append(event)
            if len(batch) >= max_events:
                break
            if not queue.empty():
                event = queue.get_nowait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(queue.get(), remaining)
            except asyncio.TimeoutError:  # the built-in TimeoutError only from Python 3.11 on
                break
            except StopAsyncIteration:
                stopping = True
                break
        if batch:
            yield batch
        if stopping:
            return


def ack_events(events: Sequence[Any]) -> None:
    """Mark handled events safe to commit (Faust commits an offset once all events before it are acked)."""
    for event in events:
        message = event.message
        if event.ack():
            event.app.sensors.on_message_out(message.tp, message.offset, message)


def unlogged_writes() -> rocksdict.WriteOptions:
    """RocksDB write options without the write-ahead log (see :meth:`BatchRocksDBStore._open_for_partition`)."""
    options = rocksdict.WriteOptions()
    options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub says method
    return options


class BatchRocksDBStore(rocksdb_store.Store):  # type: ignore[misc]
    """Faust's RocksDB store, read and written by explicit partition; writes as one RocksDB write batch.

    Faust's key -> partition index (a locked LRU cache, updated on every read and write) is
    left out: it only speeds up reads that name no partition, which the worker never makes
    (such a read still finds the key by looking in every partition's database).
    """

    def _open_for_partition(self, partition: int) -> Any:
        """Faust's partition database; every write to it skips RocksDB's write-ahead log unless the table asks for one.

        The changelog topic is the table's durable copy, so the log only shortens a restart after a crash, and
        it costs: 37 against 21 CPU µs per 9 KB value written (``benchmarks/state_store.py``). Without it a crash
        loses the writes since the last memtable flush, and loses them as a prefix: the store's persisted
        changelog offset, written to the same database after its data, is never ahead of the data that
        survived, so recovery replays exactly the lost writes from the changelog. Every write, Faust's offset
        included, goes through the database's default write options, so none of them is logged alone.
        """
        db = super()._open_for_partition(partition)
        if self.use_rocksdict and not cast("DeviceTable", self.table).write_ahead_log:
            db.set_write_options(unlogged_writes())
        return db

    async def stop(self) -> None:
        """Flush every partition database before Faust lets go of them: unlogged writes are otherwise kept only
        by the databases' own close, and a restart would replay them from the changelog."""
        if self.use_rocksdict:
            for db in self._dbs.values():
                db.flush()
        await super().stop()

    def read(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(partition).get(key)
        return value

    def keys_of(self, partition: int, partitions: int) -> list[bytes]:
        """The table's keys in ``partition`` (its own database, so ``partitions`` is not needed), without the
        changelog offset Faust keeps beside them."""
        return [key for key in self._db_for_partition(partition).keys() if key != self.offset_key]  # noqa: SIM118  # rocksdict: keys() lists keys

    def write_batch(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Put each item, or delete its key where the value is None, as one RocksDB write batch."""
        if not self.use_rocksdict:
            raise RuntimeError("the batch store writes through rocksdict (python-rocksdb is not supported)")
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db_for_partition(partition).write(batch)


class BatchMemoryStore(memory_store.Store[Any, Any]):  # type: ignore[misc]
    """Faust's in-memory store with the same batch interface (tests and single-node demos)."""

    def read(self, partition: int, key: bytes) -> bytes | None:
        value: bytes | None = self.data.get(key)
        return value

    def keys_of(self, partition: int, partitions: int) -> list[bytes]:
        """The keys of ``partition`` out of ``partitions``: one dict holds them all, each where its key hashes."""
        every = tuple(range(partitions))
        return [key for key in self.data if default_partition(key, every) == partition]

    def write_batch(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        for key, value in items:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value


BATCH_STORES: dict[str, type[Any]] = {"rocksdb": BatchRocksDBStore, "memory": BatchMemoryStore}


class DeviceTable(faust.Table[bytes, bytes]):  # type: ignore[misc]
    """A bytes -> bytes Faust table written in batches: one store write and one changelog batch per partition.

    Recovery, standbys, rebalancing and offset commits are Faust's own; only the per-key
    paths are replaced. Changelog records go straight into the producer's accumulator as
    one batch per partition; Faust's commit flushes the producer before it commits input
    offsets, so the changelog is durable before the records that caused it are committed.

    ``decoded`` (set by the app) holds decoded values of the active partitions; the table drops
    a partition's entries wherever Faust changes what this worker holds for it: a rebalance
    that revokes or newly assigns it, and every changelog batch applied to it (recovery, standby).
    """

    decoded: DecodedCache[Any] | None = None
    write_ahead_log: bool
    """Whether the RocksDB store logs its writes (``[streams] state_write_ahead_log``, set by ``device_table``)."""

    async def on_rebalance(
        self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP], generation_id: int = 0
    ) -> None:
        if self.decoded is not None:
            self.decoded.drop_partitions(tp.partition for tp in revoked | newly_assigned)
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)

    def apply_changelog_batch(self, batch: Iterable[EventT[Any]]) -> None:
        events = list(batch)
        if self.decoded is not None:
            self.decoded.drop_partitions({event.message.partition for event in events})
        super().apply_changelog_batch(events)

    def _new_store_by_url(self, url: Any) -> Any:  # a str or Faust's yarl.URL
        scheme = urlsplit(str(url)).scheme
        if scheme not in BATCH_STORES:
            raise ValueError(f"table store {scheme!r} has no batch store (one of {sorted(BATCH_STORES)})")
        return BATCH_STORES[scheme](
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )

    def read(self, partition: int, key: bytes) -> bytes | None:
        """The stored value of ``key`` in ``partition`` (one RocksDB read), or None."""
        return self._batch_store().read(partition, key)

    def keys_of(self, partition: int) -> list[bytes]:
        """The keys this worker's store holds in ``partition``."""
        return self._batch_store().keys_of(partition, self.partitions or self.app.conf.topic_partitions)

    def _batch_store(self) -> BatchRocksDBStore | BatchMemoryStore:
        return cast(BatchRocksDBStore | BatchMemoryStore, self.data)

    async def write_batch(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Store ``items`` in ``partition`` and queue them to the changelog as one batch (None: delete the key,
        a tombstone in the changelog).

        Returns once the batch is in the producer's accumulator (not yet acknowledged):
        the store's persisted changelog offset advances when Kafka acknowledges it.
        """
        if not items:
            return
        self._batch_store().write_batch(partition, items)
        topic = self.changelog_topic.get_topic_name()
        for sent, count in await send_batches(self.app, topic, partition, items):
            sent.add_done_callback(self._persisted(TP(topic, partition), count))

    async def write_acknowledged(self, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> None:
        """Like :meth:`write_batch`, but the store changes only once Kafka has acknowledged the changelog batch.

        For writes no input record caused (the retention pass): a batch's writes are replayed from its
        uncommitted input if their changelog is lost, these would not be, and a store changed without its
        changelog would disagree with every standby and recovery for good. Raises if the changelog refuses
        them; the store is then unchanged."""
        if not items:
            return
        topic = self.changelog_topic.get_topic_name()
        sent = await send_batches(self.app, topic, partition, items)
        await asyncio.gather(*(future for future, _ in sent))
        self._batch_store().write_batch(partition, items)
        for future, count in sent:
            self._persisted(TP(topic, partition), count)(future)

    def _persisted(self, tp: TP, count: int) -> Callable[[asyncio.Future[Any]], None]:
        def on_sent(sent: asyncio.Future[Any]) -> None:
            if sent.cancelled() or sent.exception() is not None or sent.result() is None:
                return  # not acknowledged: recovery re-reads the changelog from the last acknowledged offset
            self.data.set_persisted_offset(tp, sent.result().offset + count - 1)

        return on_sent


async def send_batches(
    app: Any, topic: str, partition: int, items: Sequence[tuple[bytes | None, bytes | None]]
) -> list[tuple[asyncio.Future[Any], int]]:
    """Queue ``items`` to one partition as producer batches (one unless they exceed the batch size).

    Returns each batch's delivery future with its record count. Faust's commit flushes the
    producer before committing input offsets, so these are durable before their inputs commit.
    """
    producer = app.producer._ensure_producer()
    sent: list[tuple[asyncio.Future[Any], int]] = []
    builder, count = producer.create_batch(), 0
    for key, value in items:
        if builder.append(key=key, value=value, timestamp=None) is None:
            sent.append((await producer.send_batch(builder, topic, partition=partition), count))
            builder, count = producer.create_batch(), 0
            if builder.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes exceeds the producer's batch size")
        count += 1
    if count:
        sent.append((await producer.send_batch(builder, topic, partition=partition), count))
    return sent


async def publish(app: Any, topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> list[Any]:
    """Queue ``records`` to ``topic`` partitioned by key as Kafka's default partitioner does, one batch per
    partition; returns the delivery futures (await them to know the records are acknowledged)."""
    if not records:
        return []
    producer = app.producer._ensure_producer()
    await producer.client._wait_on_metadata(topic)
    by_key = isinstance(producer._partitioner, DefaultPartitioner)
    all_partitions = tuple(producer._metadata.partitions_for_topic(topic))
    by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
    for key, value in records:
        if by_key and key is not None:
            partition = default_partition(key, all_partitions)
        else:
            partition = producer._partition(topic, None, key, value, key, value)
        by_partition.setdefault(partition, []).append((key, value))
    futures: list[Any] = []
    for partition, items in by_partition.items():
        futures.extend(sent for sent, _ in await send_batches(app, topic, partition, items))
    return futures


class RestartTolerantAssignor(PartitionAssignor):
    """Faust's assignor that accepts its own cached assignment after a restart on a new address.

    The worker joins its consumer group as a static member (``consumer_group_instance_id``). When a
    worker restarts within the session timeout, Kafka hands the returning member the assignment the
    leader computed for its previous incarnation, without a rebalance. Faust stores the member's web
    URL in that assignment and ends ``PartitionAssignor.on_assignment`` with
    ``assert metadata.url == str(self._url)``: a worker that came back with another ``web_port`` or
    ``web_host`` (same ``instance_id``) fails the assertion inside aiokafka's coordinator task, which
    then stops for good. The process stays alive, owns no partition and never becomes ready.

    The URL in an assignment only serves Faust's routing of table-key web requests between workers,
    which this worker does not use. The returning member therefore takes its assignment with its own
    URL; the leader learns the new address at the next rebalance.
    """

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        metadata = cast(ClientMetadata, ClientMetadata.loads(self._decompress(assignment.user_data)))
        own_url = str(self._url)
        if metadata.url != own_url:
            log.warning(
                "assignment carries this worker's previous web address; taking it as this worker's",
                extra={"fields": {"assigned_url": metadata.url, "own_url": own_url}},
            )
            metadata.url = own_url
            assignment = ConsumerProtocolMemberAssignment(
                assignment.version, assignment.assignment, self._compress(metadata.dumps())
            )
        super().on_assignment(assignment)
