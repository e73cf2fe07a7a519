"""What any Faust processor with per-device table state pays per event, before it does any work.

The throughput target compares the worker with a raw aiokafka loop. This measures the
third point in between, on the same records: a Faust app with the worker's own Faust
settings (``streams.app.faust_config``: RocksDB, 12 partitions, commit, buffer and producer
settings), its ``take_events`` batches and garbage-collector tuning, whose agent only
decodes each record as the ceiling does and writes
its bytes to the table (one changelog message per event, as the worker's state write).
No scoring, no output topics. The worker cannot be faster than this floor; the gap
between floor and ceiling is the framework's share, the gap between worker and floor ours.

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
from typing import Any

from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Topics
from fleetpulse.settings import ServerSettings
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

    from fleetpulse.streams.app import faust_config, tune_gc

    streams = StreamSettings(data_dir=Path(spec["datadir"]), instance_id="faust-floor")
    settings = ServerSettings(
        kafka=KafkaSettings(bootstrap_servers=spec["bootstrap"], topic_prefix=spec["prefix"]), streams=streams
    )
    topics = Topics(prefix=spec["prefix"])
    app = faust.App(f"floor-{uuid.uuid4().hex[:8]}", **{**faust_config(settings), "web_enabled": False})
    table = app.Table("floor", default=None, partitions=streams.partitions, key_type=bytes, value_type=bytes)
    source = app.topic(topics.health, topics.mobile, topics.inventory, partitions=streams.partitions)
    seen = {"n": 0, "wall": 0.0, "cpu": 0.0}

    @app.agent(source, concurrency=1)  # type: ignore[misc]
    async def floor(stream: Any) -> None:
        async for events in stream.take_events(streams.batch_max, within=streams.batch_within_s):
            if not seen["n"]:
                seen["wall"], seen["cpu"] = time.perf_counter(), time.process_time()
            for event in events:
                decode_input(topics, event.message.topic, event.value, event.message.headers)
                _current_event.set(weakref.ref(event))  # as the worker does: selects the table partition
                table[event.key] = event.value
            seen["n"] += len(events)
            if seen["n"] >= spec["total"]:
                wall, cpu = time.perf_counter() - seen["wall"], time.process_time() - seen["cpu"]
                result = {"eps": seen["n"] / wall, "eps_per_cpu_s": seen["n"] / cpu, "records": seen["n"]}
                await asyncio.to_thread(_write_whole, Path(spec["result"]), json.dumps(result))

    tune_gc(streams.gc_young_threshold)  # as the worker: the floor must not be lower for lack of it
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "child":
        sys.exit(__doc__)
    _child(json.loads(sys.argv[2]))
