"""What any Faust processor with per-device table state pays per event, before it does any work.

The throughput target compares the worker with a raw aiokafka loop. This measures the
third point in between, on the same records: a Faust app configured like the worker
(RocksDB table, 12 partitions, ``take_events`` batches, the worker's commit, buffer,
producer and garbage-collector settings) whose agent only decodes each record as the ceiling does and writes
its bytes to the table (one changelog message per event, as the worker's state write).
No scoring, no output topics. The worker cannot be faster than this floor; the gap
between floor and ceiling is the framework's share, the gap between worker and floor ours.

Run by ``stream_throughput.py`` (side by side with the ceiling and the worker); on its own:
``python benchmarks/faust_floor.py child <json>`` is the app process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import weakref
from pathlib import Path
from typing import Any

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.streams.settings import StreamSettings


def measure(kafka: KafkaSettings, topics: Topics, total: int, timeout_s: float = 3600.0) -> tuple[float, float]:
    """(events/s, events per CPU second) of the floor app over ``total`` records, first record to last."""
    out = Path(tempfile.mkdtemp(prefix="fleetpulse-floor-"))
    spec = {
        "bootstrap": kafka.bootstrap_servers,
        "prefix": topics.prefix,
        "total": total,
        "result": str(out / "result.json"),
        "datadir": str(out / "data"),
    }
    child = subprocess.Popen(
        [sys.executable, __file__, "child", json.dumps(spec)],
        stdout=subprocess.DEVNULL,
        stderr=(out / "floor.log").open("wb"),
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


def _child(spec: dict[str, Any]) -> None:
    import faust
    from faust.streams import _current_event

    from fleetpulse.contract import DeviceInventory, decode, decode_report
    from fleetpulse.streams.app import tune_gc

    settings = StreamSettings()
    topics = Topics(prefix=spec["prefix"])
    app = faust.App(
        f"floor-{uuid.uuid4().hex[:8]}",
        broker=[f"kafka://{server}" for server in spec["bootstrap"].split(",")],
        store="rocksdb://",
        datadir=spec["datadir"],
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        broker_commit_interval=settings.commit_interval_s,
        producer_linger=settings.producer_linger_s,
        producer_max_batch_size=settings.producer_batch_bytes,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=settings.buffer_maxsize,
        producer_acks=-1,
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
    )
    table = app.Table("floor", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes)
    source = app.topic(topics.health, topics.mobile, topics.inventory, partitions=settings.partitions)
    seen = {"n": 0, "wall": 0.0, "cpu": 0.0}

    @app.agent(source, concurrency=1)  # type: ignore[misc]
    async def floor(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            if not seen["n"]:
                seen["wall"], seen["cpu"] = time.perf_counter(), time.process_time()
            for event in events:
                if event.message.topic == topics.inventory:
                    decode(event.value, DeviceInventory)
                else:
                    decode_report(event.value)
                _current_event.set(weakref.ref(event))  # as the worker does: selects the table partition
                table[event.key] = event.value
            seen["n"] += len(events)
            if seen["n"] >= spec["total"]:
                wall, cpu = time.perf_counter() - seen["wall"], time.process_time() - seen["cpu"]
                result = {"eps": seen["n"] / wall, "eps_per_cpu_s": seen["n"] / cpu, "records": seen["n"]}
                await asyncio.to_thread(Path(spec["result"]).write_text, json.dumps(result))

    tune_gc(
        settings.gc_young_threshold
    )  # the worker's collector settings: the floor must not be lower for lack of them
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "child":
        sys.exit(__doc__)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    _child(json.loads(sys.argv[2]))
