"""Where a worker's time goes, without Kafka: the pure processor over a simulated fleet, in-process.

Feeds :meth:`Processor.process_batch` the same byte payloads the throughput benchmark
publishes (inventory first, then ``--rounds`` reports per device one minute apart), with
the table as a dict of bytes, exactly as the Faust wrapper stores it (``DeviceRecord``
bytes, packed histories). Prints CPU µs/event per stage (state decode, processing, the models' scoring call,
the alert policy around it, state encode) and, with ``--profile``, the top functions by
cumulative time. Use it to find what to optimise before measuring against Kafka with
``stream_throughput.py``.

Device authentication is measured on its own over the same records: the processor's check
(:func:`~fleetpulse.streams.processing.authentication_failure`, HMAC-SHA256 of the value)
per PC report, side by side with the whole per-event cost, and with Ed25519 verification of
the same payloads (the alternative that keeps no secret on the server).

    python benchmarks/stream_profile.py --devices 5000 --rounds 5 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from stream_common import Fleet

from fleetpulse.compat import UTC
from fleetpulse.contract import Topics
from fleetpulse.contract.auth import MAC_HEADER, header
from fleetpulse.models.registry import ScorerSet, load_scorers, rule_scorers
from fleetpulse.models.state import DeviceState
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import tune_gc
from fleetpulse.streams.processing import DeviceRecord, Processor, RawRecord, authentication_failure

T = TypeVar("T")


def batches(fleet: Fleet, rounds: int, size: int) -> list[list[RawRecord]]:
    records = [
        RawRecord(topic, 0, i, key, value, headers)
        for i, (topic, key, value, headers) in enumerate(fleet.rounds(rounds))
    ]
    return [records[i : i + size] for i in range(0, len(records), size)]


def run(processor: Processor, work: list[list[RawRecord]]) -> dict[str, float]:
    """Process every batch; returns CPU seconds per stage.

    ``models`` is the scorers' vectorised call, ``alert_policy`` the rest of scoring (the
    policy step, score and alert points), ``process`` everything else the processor does
    (decode, authenticate, dedup, fold into state, report points). CPU time, not wall time:
    the machine is shared.
    """
    table: dict[bytes, bytes] = {}
    spent = {"state_decode": 0.0, "process": 0.0, "models": 0.0, "alert_policy": 0.0, "state_encode": 0.0}
    clock = time.process_time

    def lookup(_index: int, device_id: str) -> DeviceRecord | None:
        started = clock()
        raw = table.get(device_id.encode())
        record = None if raw is None else DeviceRecord.from_bytes(raw)
        spent["state_decode"] += clock() - started
        return record

    def timed(stage: str, call: Callable[..., T]) -> Callable[..., T]:
        def wrapper(*args: Any) -> T:
            started = clock()
            try:
                return call(*args)
            finally:
                spent[stage] += clock() - started

        return wrapper

    processor.scorers.score = timed("models", processor.scorers.score)  # type: ignore[method-assign]
    processor._score = timed("alert_policy", processor._score)  # type: ignore[method-assign]
    for batch in work:
        started = clock()
        result = processor.process_batch(batch, lookup, datetime.now(UTC))
        spent["process"] += clock() - started
        started = clock()
        for device_id, record in result.records.items():
            table[device_id.encode()] = record.to_bytes()
        spent["state_encode"] += clock() - started
    del processor.scorers.score, processor._score
    spent["alert_policy"] -= spent["models"]
    spent["process"] -= spent["state_decode"] + spent["models"] + spent["alert_policy"]
    return spent


def auth_cost(fleet: Fleet, work: list[list[RawRecord]], repeat: int = 3) -> tuple[int, float, float]:
    """(PC reports, µs per report for the processor's HMAC check, µs per report for Ed25519 verification)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    records = {
        key: DeviceRecord(state=DeviceState(device_id=key.decode()), device_key=k.hex())
        for key, k in fleet.device_keys.items()
    }
    checks = [
        (records[r.key], r.key.decode(), r.value or b"", r.headers)
        for batch in work
        for r in batch
        if r.key is not None and r.key in records and header(r.headers, MAC_HEADER) is not None
    ]
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        failures = sum(authentication_failure(*check) is not None for check in checks)
        best = min(best, time.perf_counter() - started)
    assert failures == 0, "every simulated PC report must authenticate"
    sample = [value for _, _, value, _ in checks[:2000]]
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key()
    signatures = [signer.sign(value) for value in sample]
    started = time.perf_counter()
    for value, signature in zip(sample, signatures, strict=True):
        public.verify(signature, value)
    ed25519 = (time.perf_counter() - started) / max(1, len(sample))
    return len(checks), 1e6 * best / max(1, len(checks)), 1e6 * ed25519


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--rules-only", action="store_true", help="rule scorers instead of the configured models")
    parser.add_argument("--profile", action="store_true", help="print the top functions by cumulative time")
    parser.add_argument("--default-gc", action="store_true", help="CPython's collector settings, not the worker's")
    args = parser.parse_args()

    settings = ServerSettings()
    topics = Topics(prefix="profile.")
    scorers: ScorerSet = rule_scorers() if args.rules_only else load_scorers(settings.models)
    print("scorers:", scorers.describe())
    processor = Processor(settings.streams, topics, scorers, settings.alerts.policy)
    fleet = Fleet.simulate(args.devices, topics)
    work = batches(fleet, args.rounds, args.batch)
    events = sum(len(b) for b in work)
    if not args.default_gc:
        tune_gc(settings.streams)

    profiler = cProfile.Profile() if args.profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    spent = run(processor, work)
    if profiler:
        profiler.disable()
    total = time.process_time() - started
    print(f"{'default' if args.default_gc else 'worker'} gc settings")
    print(f"{events} events in {total:.2f} CPU s: {events / total:,.0f} events/s, {1e6 * total / events:.0f} us/event")
    for stage, seconds in spent.items():
        print(f"  {stage:13s} {seconds:7.2f} s  {1e6 * seconds / events:6.0f} us/event")
    reports, hmac_us, ed25519_us = auth_cost(fleet, work)
    per_event = 1e6 * total / events
    print(
        f"device authentication over {reports} PC reports: HMAC-SHA256 check {hmac_us:.1f} us/report "
        f"({hmac_us / per_event:.1%} of {per_event:.0f} us/event); Ed25519 verify would be {ed25519_us:.1f} us/report "
        f"({ed25519_us / hmac_us:.0f}x)"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
