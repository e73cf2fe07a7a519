"""The agent loop: collect on schedule into the spool; a second thread drains the spool to Kafka.

Collection never waits for the network and delivery never waits for collectors, so a broker
outage changes nothing on the device except the spool growing (bounded). Each thread has its
own SQLite connection to the spool; SQLite serialises the writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from pydantic import ValidationError

from fleetpulse import __version__
from fleetpulse.agents.collectors.base import Collector, CollectorContext, Section
from fleetpulse.agents.delivery import Backoff, Delivery
from fleetpulse.agents.heap import release_free_memory
from fleetpulse.agents.identity import Identity, RecordSigner, current_platform, load_or_create_device_key
from fleetpulse.agents.inventory import collect_inventory
from fleetpulse.agents.settings import AgentSettings
from fleetpulse.agents.spool import Spool
from fleetpulse.contract import CollectorError, DeviceKind, HealthReport, Platform, Priority, encode, report_key

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
    )
    return [config.build_throttled(ctx) for config in settings.collectors]


def _error(collector: str, message: str) -> CollectorError:
    return CollectorError(collector=collector[:128], error=message[:2048])


class CollectorRunner:
    """Runs each collector in its own daemon thread with a deadline; a hung collector is skipped, not waited on."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors
        self._stuck: dict[str, threading.Thread] = {}

    def collect(self) -> Section:
        merged: Section = {"disks": [], "collector_errors": []}
        for collector in self.collectors:
            section, error = self._run_one(collector)
            if error is not None:
                merged["collector_errors"].append(_error(collector.name, error))
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
        return HealthReport(**base, **section)
    except ValidationError as exc:
        errors = [*section.get("collector_errors", []), _error("report", f"sections rejected: {exc}")]
        return HealthReport(**base, collector_errors=errors[:MAX_COLLECTOR_ERRORS])


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
        self.spool_path = settings.spool_dir / SPOOL_FILE
        self.spool = Spool(self.spool_path, settings.spool_max_bytes)
        self.signer = RecordSigner(identity.device_id, load_or_create_device_key(settings.spool_dir), __version__)
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._collection_done = threading.Event()

    # ----------------------------------------------------------------- collection

    def collect_into_spool(self) -> HealthReport:
        collected_at = datetime.now(UTC)
        section = self.runner.collect()
        report = self.spool.append_report(
            lambda seq: build_report(seq, self.identity.device_id, self.kind, self.platform, collected_at, section)
        )
        log.debug(
            "report spooled",
            extra={
                "fields": {
                    "seq": report.seq,
                    "priority": report.priority.value,
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
        spool = Spool(self.spool_path, self.settings.spool_max_bytes)
        delivery = Delivery(
            self.settings.kafka,
            self.settings.delivery,
            client_id=f"fleetpulse-agent-{self.identity.device_id[:16]}",
            signer=self.signer,
        )
        backoff = Backoff(self.settings.delivery.backoff_initial_s, self.settings.delivery.backoff_max_s)
        try:
            while not self.stop_event.is_set():
                self._wake.clear()
                if spool.count():
                    result = delivery.drain(spool)
                    if result.error is None:
                        if backoff.failures:
                            log.info("delivery recovered", extra={"fields": {"delivered": result.delivered}})
                        backoff.succeeded()
                        log.debug("spool drained", extra={"fields": {"delivered": result.delivered}})
                    else:
                        delay = backoff.failed(time.monotonic())
                        log.warning(
                            "delivery failed; records stay spooled",
                            extra={
                                "fields": {
                                    "error": result.error[:500],
                                    "delivered": result.delivered,
                                    "spooled": spool.count(),
                                    "retry_in_s": round(delay, 1),
                                }
                            },
                        )
                        self.stop_event.wait(delay)
                        continue
                self._wake.wait(self.settings.interval_s)
            self._collection_done.wait(timeout=60)  # the last report may still be being spooled
            if backoff.failures == 0:  # best effort on shutdown; during an outage don't wait on the broker
                delivery.drain(spool, budget_s=5.0)
        finally:
            delivery.close()
            spool.close()

    # ----------------------------------------------------------------- main loop

    def run(self, max_reports: int | None = None) -> None:
        """Collect every ``interval_s`` until :meth:`stop` (or ``max_reports`` reports) while delivering."""
        sender = threading.Thread(target=self._deliver_forever, name="delivery", daemon=True)
        sender.start()
        interval = self.settings.interval_s
        next_collect = time.monotonic()
        next_inventory = next_collect
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
                    if max_reports is not None and produced >= max_reports:
                        break
                self.stop_event.wait(max(0.0, next_collect - time.monotonic()))
        finally:
            self.stop_event.set()
            self._collection_done.set()
            self._wake.set()
            sender.join(timeout=self.settings.delivery.flush_timeout_s + 10)
            self.runner.close()
            self.spool.close()

    def _guarded(self, step: Callable[[], object], what: str) -> bool:
        try:
            step()
        except Exception:
            log.exception("agent step failed", extra={"fields": {"step": what}})
            return False
        return True

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()
