"""What any Faust processor with per-device table state pays per event, before it does any work.

The throughput target compares the worker with a raw aiokafka loop. This measures the
points in between, on the same records: a Faust app with the worker's own Faust settings
(``streams.app.faust_config``: RocksDB, 12 partitions, commit, buffer and producer
settings), garbage-collector tuning and log level, whose agent only decodes each record
as the ceiling does and writes its bytes to the table (one changelog message per event,
as the worker's state write). No scoring, no output topics. Two paths:

* ``faust``: stock Faust (``take_events`` batches, ``table[key] = value`` per event);
* ``batch``: the worker's path (``streams.faust_internals``): the draining consumer, the
  bulk channel reader, one RocksDB write batch and one changelog batch per partition.

The worker cannot be faster than the floor of its path; the gap between floor and
ceiling is the framework's share, the gap between worker and floor ours.

Run by ``stream_throughput.py`` (side by side with the ceiling and the worker); on its own:
``python benchmarks/faust_floor.py child <json>`` is the app process.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Literal

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.settings import StreamSettings

Path_ = Literal["faust", "batch"]


def measure(
    kafka: KafkaSettings, topics: Topics, total: int, path: Path_ = "faust", timeout_s: float = 3600.0
) -> tuple[float, float]:
    """(events/s, events per CPU second) of the floor app of ``path`` over ``total`` records, first record to last."""
    out = Path(tempfile.mkdtemp(prefix="fleetpulse-floor-"))
    spec = {
        "path": path,
        "bootstrap": kafka.bootstrap_servers,
        "prefix": topics.prefix,
        "total": total,
        "result": str(out / "result.json"),
        "datadir": str(out / "data"),
    }
    log = (out / "floor.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, __file__, "child", json.dumps(spec)], stdout=subprocess.DEVNULL, stderr=log
    )
    try:
        deadline = time.monotonic() + timeout_s
        result = Path(spec["result"])
        while not result.exists():
            if child.poll() is not None:
                raise RuntimeError(f"floor app exited with {child.returncode}; see {out / 'floor.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"floor app did not process {total} records in {timeout_s:.0f} s")
            time.sleep(0.1)
        data = json.loads(result.read_text())
        return float(data["eps"]), float(data["eps_per_cpu_s"])
    finally:
        child.kill()
        child.wait()
        log.close()


def _write_whole(path: Path, text: str) -> None:
    """Write then rename, so the polling parent never reads a half-written result."""
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def _child(spec: dict[str, Any]) -> None:
    import faust
    from faust.streams import _current_event
    from stream_common import decode_input

    from fleetpulse.streams.app import device_table, faust_config, logging_config, tune_gc
    from fleetpulse.streams.faust_internals import ack_events, event_batches, install_transport

    streams = StreamSettings(data_dir=Path(spec["datadir"]), instance_id="faust-floor")
    settings = ServerSettings(
        kafka=KafkaSettings(bootstrap_servers=spec["bootstrap"], topic_prefix=spec["prefix"]), streams=streams
    )
    topics = Topics(prefix=spec["prefix"])
    app = faust.App(f"floor-{uuid.uuid4().hex[:8]}", **{**faust_config(settings), "web_enabled": False})
    batch_path = spec["path"] == "batch"
    if batch_path:
        install_transport(app, streams)
        table: Any = device_table(app, "floor", streams)
    else:
        table = app.Table("floor", default=None, partitions=streams.partitions, key_type=bytes, value_type=bytes)
    source = app.topic(topics.health, topics.mobile, topics.inventory, partitions=streams.partitions)
    seen = {"n": 0, "wall": 0.0, "cpu": 0.0}

    def started() -> None:
        if not seen["n"]:
            seen["wall"], seen["cpu"] = time.perf_counter(), time.process_time()

    async def counted(events: list[Any]) -> None:
        seen["n"] += len(events)
        if seen["n"] >= spec["total"]:
            wall, cpu = time.perf_counter() - seen["wall"], time.process_time() - seen["cpu"]
            result = {"eps": seen["n"] / wall, "eps_per_cpu_s": seen["n"] / cpu, "records": seen["n"]}
            await asyncio.to_thread(_write_whole, Path(spec["result"]), json.dumps(result))

    async def stock(stream: Any) -> None:
        async for events in stream.take_events(streams.batch_max, within=streams.batch_within_s):
            started()
            for event in events:
                decode_input(topics, event.message.topic, event.value, event.message.headers)
                _current_event.set(weakref.ref(event))  # as Faust's table needs: selects the table partition
                table[event.key] = event.value
            await counted(events)

    async def batched(stream: Any) -> None:
        async for events in event_batches(stream, streams.batch_max, streams.batch_within_s):
            started()
            writes: dict[int, dict[bytes, bytes]] = {}
            for event in events:
                message = event.message
                decode_input(topics, message.topic, message.value, message.headers)
                writes.setdefault(message.partition, {})[message.key] = message.value
            for partition, items in writes.items():
                await table.write_batch(partition, list(items.items()))  # last value per key, as the worker
            ack_events(events)
            await counted(events)

    app.agent(source, concurrency=1, name="floor")(batched if batch_path else stock)
    tune_gc(streams)  # as the worker: the floor must not be lower for lack of it
    # the worker's log level and logging: at WARNING Faust keeps its spinner and logs the root at DEBUG
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config=logging_config(settings.log_level),
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "child":
        sys.exit(__doc__)
    _child(json.loads(sys.argv[2]))
