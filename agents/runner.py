"""The agent loop: collect on schedule into the spool; a second thread drains the spool to Kafka.

Between regular reports a cheap event probe runs only the collectors that can see a health event
(:mod:`fleetpulse.agents.events`); an event is reported at once, with event priority.

Collection never waits for the network and delivery never waits for collectors, so a broker
outage changes nothing on the device except the spool growing (bounded). Each thread has its
own SQLite connection to the spool; SQLite serialises the writes.

No thread dies silently: if the delivery thread fails unexpectedly, or the spool turns out to be
corrupt while running, the agent logs why, stops and exits non-zero, and the service manager
restarts it (systemd ``Restart=on-failure``, WinSW ``onfailure``); the next start repairs the
spool (:func:`~fleetpulse.agents.spool.open_spool`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError

from fleetpulse import __version__
from fleetpulse.agents.collectors.base import Collector, CollectorContext, Section, collector_error
from fleetpulse.agents.delivery import Delivery, DeliveryLoop
from fleetpulse.agents.events import EventBaseline, health_events
from fleetpulse.agents.heap import release_free_memory
from fleetpulse.agents.identity import Identity, RecordSigner, current_platform, load_or_create_device_key
from fleetpulse.agents.inventory import collect_inventory
from fleetpulse.agents.settings import AgentSettings
from fleetpulse.agents.spool import Spool, is_corruption, open_spool
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    MAX_MESSAGE_BYTES,
    DeviceKind,
    HealthReport,
    Platform,
    Priority,
    encode,
    report_key,
)
from fleetpulse.retry import RetryPolicy

log = logging.getLogger(__name__)

SPOOL_FILE = "spool.sqlite3"
MAX_COLLECTOR_ERRORS = 64


def detect_kind(settings: AgentSettings) -> DeviceKind:
    if settings.device_kind is not None:
        return settings.device_kind
    try:
        has_battery = psutil.sensors_battery() is not None
    except (OSError, NotImplementedError, AttributeError):
        has_battery = False
    return DeviceKind.LAPTOP if has_battery else DeviceKind.DESKTOP


def build_collectors(settings: AgentSettings, identity: Identity, state_dir: Path) -> list[Collector]:
    ctx = CollectorContext(
        state_dir=state_dir,
        platform=current_platform(),
        hash_serial=identity.hash_serial,
        smart_interval_s=settings.smart_interval_s,
        smart_snapshot_dir=settings.smart_snapshot_dir,
    )
    return [config.build_throttled(ctx) for config in settings.collectors]


class CollectorRunner:
    """Runs each collector in its own daemon thread with a deadline; a hung collector is skipped, not waited on."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors
        self._stuck: dict[str, threading.Thread] = {}

    def collect(self, collectors: Sequence[Collector] | None = None) -> Section:
        """One section from ``collectors`` (default: all of them)."""
        merged: Section = {"disks": [], "collector_errors": []}
        for collector in self.collectors if collectors is None else collectors:
            section, error = self._run_one(collector)
            if error is not None:
                merged["collector_errors"].append(collector_error(collector.name, error))
            for key, value in section.items():
                if key in ("disks", "collector_errors"):
                    merged[key].extend(value)
                else:
                    merged[key] = value
        merged["collector_errors"] = merged["collector_errors"][:MAX_COLLECTOR_ERRORS]
        return merged

    def _run_one(self, collector: Collector) -> tuple[Section, str | None]:
        previous = self._stuck.get(collector.name)
        if previous is not None and previous.is_alive():
            return {}, "previous run still hanging; skipped"
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["section"] = collector.collect()
            except Exception as exc:  # a collector failure is reported in the report, never fatal
                box["error"] = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=target, name=f"collector-{collector.name}", daemon=True)
        thread.start()
        thread.join(collector.timeout_s)
        if thread.is_alive():
            self._stuck[collector.name] = thread
            return {}, f"timed out after {collector.timeout_s:g}s"
        section = box.get("section")
        if "error" in box:
            return {}, str(box["error"])
        if not isinstance(section, dict):
            return {}, f"returned {type(section).__name__}, not a section"
        return section, None

    def close(self) -> None:
        for collector in self.collectors:
            close = getattr(collector, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:
                    log.warning("collector close failed", extra={"fields": {"collector": collector.name}})


def merge_sections(older: Section, newer: Section) -> Section:
    """``newer`` wins, except that a collector that had nothing to say (SMART between its hourly
    reads, a throttled battery) does not erase what an earlier probe saw; errors accumulate, each
    once (a collector failing at every probe is one entry, not fifteen)."""
    merged = {**older}
    for key, value in newer.items():
        if key == "collector_errors":
            merged[key] = list(dict.fromkeys([*older.get(key, []), *value]))[:MAX_COLLECTOR_ERRORS]
        elif key != "disks" or value:
            merged[key] = value
    return merged


def build_report(
    seq: int, device_id: str, kind: DeviceKind, platform: Platform, collected_at: datetime, section: Section
) -> HealthReport:
    """The report; if the sections together break the contract, the report still goes out with the error."""
    base: dict[str, Any] = {
        "device_id": device_id,
        "seq": seq,
        "collected_at": collected_at,
        "kind": kind,
        "platform": platform,
        "agent_version": __version__,
    }
    try:
        report = HealthReport(**base, **section)
    except ValidationError as exc:
        errors = [*section.get("collector_errors", []), collector_error("report", f"sections rejected: {exc}")]
        report = HealthReport(**base, collector_errors=errors[:MAX_COLLECTOR_ERRORS])
    return fit_message_limit(report)


_NOTE_BYTES = 256
"""Room kept for the note that says how many collector errors were cut (about 150 bytes of JSON)."""
_MIN_ERROR_CHARS = 64
"""An error is halved down to about this length before errors are dropped."""


def fit_message_limit(report: HealthReport) -> HealthReport:
    """The report within the server's message limit, which otherwise dead-letters it whole as oversized.

    Only collector errors can push a valid report over it (64 of 2048 characters of 4-byte UTF-8,
    see tests/unit/largest_report.py), so the longest are halved, then dropped, until it fits, and
    a note in the report and the log says how many: the disks and battery always get through.
    """
    size = len(encode(report))
    if size <= MAX_MESSAGE_BYTES:
        return report
    errors = list(report.collector_errors)
    costs = [len(encode(e)) + 1 for e in errors]  # a report's JSON is the sum of its errors', each with a comma
    cut = [False] * len(errors)
    dropped = 0
    while errors and (size + _NOTE_BYTES > MAX_MESSAGE_BYTES or len(errors) >= MAX_COLLECTOR_ERRORS):
        i = costs.index(max(costs))
        text = errors[i].error
        if len(text) > _MIN_ERROR_CHARS and len(errors) < MAX_COLLECTOR_ERRORS:
            errors[i] = errors[i].model_copy(update={"error": text[: len(text) // 2]})
            cut[i] = True
            cost = len(encode(errors[i])) + 1
            size, costs[i] = size + cost - costs[i], cost
        else:
            del errors[i], cut[i]
            size -= costs.pop(i)
            dropped += 1
    shortened = sum(cut)
    log.warning(
        "report over the message limit: collector errors cut",
        extra={"fields": {"seq": report.seq, "shortened": shortened, "dropped": dropped}},
    )
    note = f"{shortened} collector errors shortened, {dropped} dropped: the report exceeded {MAX_MESSAGE_BYTES} bytes"
    return report.model_copy(update={"collector_errors": [*errors, collector_error("report", note)]})


class Agent:
    def __init__(
        self,
        settings: AgentSettings,
        identity: Identity,
        collectors: list[Collector],
        *,
        kind: DeviceKind | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.kind = kind or detect_kind(settings)
        self.platform = current_platform()
        self.runner = CollectorRunner(collectors)
        self._event_collectors = [c for c in collectors if getattr(c, "event_source", False)]
        self._routine_collectors = [c for c in collectors if not getattr(c, "event_source", False)]
        self._since_report: Section = {}
        """What the event collectors saw since the last report; it goes into the next one."""
        self._baseline = EventBaseline()
        self.spool_path = settings.spool_dir / SPOOL_FILE
        self.spool, self.recovery = open_spool(self.spool_path, settings.spool_max_bytes)
        # the server learns of a repaired spool from the next report, like any other failed part
        self._pending_errors = [collector_error("spool", self.recovery.describe())] if self.recovery else []
        self.signer = RecordSigner(identity.device_id, load_or_create_device_key(settings.spool_dir), __version__)
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._collection_done = threading.Event()
        self.failure: str | None = None
        """Why the agent stopped on its own; the service then exits non-zero to be restarted."""

    # ----------------------------------------------------------------- collection

    def probe_events(self) -> list[str]:
        """Run the event collectors; what they saw is kept for the next report, events are returned."""
        self._since_report = merge_sections(self._since_report, self.runner.collect(self._event_collectors))
        return health_events(self._baseline, self._since_report)

    def probe(self) -> HealthReport | None:
        """Between regular reports: a report now if a health event happened, else nothing."""
        events = self.probe_events()
        if not events:
            return None
        log.info("health event: reporting now", extra={"fields": {"events": events[:16]}})
        return self.collect_into_spool(events)

    def collect_into_spool(self, events: list[str] | None = None) -> HealthReport:
        """A report from every collector; ``events``: the probe already ran the event collectors."""
        collected_at = datetime.now(UTC)
        if events is None:
            events = self.probe_events()
        section = merge_sections(self._since_report, self.runner.collect(self._routine_collectors))
        if self._pending_errors:
            errors = [*self._pending_errors, *section.get("collector_errors", [])]
            section = {**section, "collector_errors": errors[:MAX_COLLECTOR_ERRORS]}
        report = self.spool.append_report(
            lambda seq: build_report(seq, self.identity.device_id, self.kind, self.platform, collected_at, section),
            priority=Priority.EVENT if events else None,
        )
        self._pending_errors = []
        self._since_report = {}
        self._baseline.remember(section)
        log.debug(
            "report spooled",
            extra={
                "fields": {
                    "seq": report.seq,
                    "priority": "event" if events else report.priority.value,
                    "errors": len(report.collector_errors),
                    "spooled": self.spool.count(),
                }
            },
        )
        self._wake.set()
        return report

    def spool_inventory(self) -> None:
        """Asset facts, preceded by the key enrolment: re-sent daily, so a worker that lost the key (state
        rebuilt without its changelog) or was told by IT to accept the device's next enrolment has it
        within a day, without waiting for a new delivery session."""
        self.spool.append("enrolment", *self.signer.enrolment(), Priority.EVENT)
        inventory = collect_inventory(self.identity.device_id, self.kind, self.platform)
        self.spool.append("inventory", report_key(inventory.device_id), encode(inventory), Priority.EVENT)
        self._wake.set()

    # ----------------------------------------------------------------- delivery thread

    def _deliver_forever(self) -> None:
        try:
            self._deliver()
        except BaseException as exc:  # the thread must not end unseen: stop the agent so it is restarted
            self._fail("delivery", exc)

    def _deliver(self) -> None:
        spool = Spool(self.spool_path, self.settings.spool_max_bytes)
        delivery = Delivery(
            self.settings.kafka,
            self.settings.delivery,
            client_id=f"fleetpulse-agent-{self.identity.device_id[:16]}",
            signer=self.signer,
        )
        retry = RetryPolicy(self.settings.delivery.backoff_initial_s, self.settings.delivery.backoff_max_s)
        loop = DeliveryLoop(delivery, retry)
        try:
            while not self.stop_event.is_set():
                self._wake.clear()
                delay = loop.step(spool)
                if delay is not None:
                    self.stop_event.wait(delay)
                    continue
                self._wake.wait(self.settings.interval_s)
            self._collection_done.wait(timeout=60)  # the last report may still be being spooled
            if not loop.failing and self.failure is None:  # best effort; during an outage don't wait on the broker
                delivery.drain(spool, budget_s=5.0)
        finally:
            delivery.close()
            spool.close()

    def _fail(self, thread: str, exc: BaseException) -> None:
        self.failure = f"{thread}: {type(exc).__name__}: {exc}"
        log.critical(
            "agent stopping after an unrecoverable error; the service manager restarts it",
            exc_info=exc,
            extra={"fields": {"thread": thread, "error": self.failure[:500], "corrupt_spool": is_corruption(exc)}},
        )
        self.stop()

    # ----------------------------------------------------------------- main loop

    def run(self, max_reports: int | None = None) -> int:
        """Collect every ``interval_s`` until :meth:`stop` (or ``max_reports`` reports) while delivering;
        probe for health events every ``event_probe_interval_s`` in between.

        Returns the exit status: 0 after an orderly stop, 1 when :attr:`failure` stopped the agent.
        """
        sender = threading.Thread(target=self._deliver_forever, name="delivery", daemon=True)
        sender.start()
        interval = self.settings.interval_s
        probe_every = self.settings.event_probe_interval_s or float("inf")
        next_collect = time.monotonic()
        next_inventory = next_collect
        next_probe = next_collect + probe_every
        produced = 0
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_inventory and self.settings.inventory_interval_s > 0:
                    self._guarded(self.spool_inventory, "inventory")
                    next_inventory = now + self.settings.inventory_interval_s
                if now >= next_collect:
                    if self._guarded(self.collect_into_spool, "collect"):
                        produced += 1
                    release_free_memory()
                    next_collect += interval
                    if next_collect <= time.monotonic():  # fell behind (suspend, slow disk): skip, don't burst
                        next_collect = time.monotonic() + interval
                    next_probe = time.monotonic() + probe_every
                    if max_reports is not None and produced >= max_reports:
                        break
                elif now >= next_probe:
                    self._guarded(self.probe, "probe")
                    next_probe = time.monotonic() + probe_every
                self.stop_event.wait(max(0.0, min(next_collect, next_probe) - time.monotonic()))
        finally:
            self.stop_event.set()
            self._collection_done.set()
            self._wake.set()
            sender.join(timeout=self.settings.delivery.flush_timeout_s + 10)
            self.runner.close()
            self.spool.close()
        return 0 if self.failure is None else 1

    def _guarded(self, step: Callable[[], object], what: str) -> bool:
        try:
            step()
        except Exception as exc:
            if is_corruption(exc):  # every later step would fail the same way: restart and repair instead
                self._fail("collection", exc)
            else:
                log.exception("agent step failed", extra={"fields": {"step": what}})
            return False
        return True

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()
