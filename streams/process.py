"""Run ``fleetpulse worker`` as a child process: for the demo, fault tests and benchmarks.

Configuration goes through ``FLEETPULSE_*`` environment variables exactly like a
deployment, so the child is the real worker and nothing is mocked. Only this
process's own child is ever signalled.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from pydantic import SecretStr

from fleetpulse.config import KafkaSettings
from fleetpulse.streams.kafka_admin import consumer_lag


def _env_value(value: object) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def settings_env(kafka: KafkaSettings, streams: Mapping[str, object]) -> dict[str, str]:
    """``FLEETPULSE_*`` variables for ``kafka`` (every setting given, security included: the child reaches the
    same cluster as its parent) plus ``[streams]`` overrides (nested keys with ``__``)."""
    given = kafka.model_dump(exclude_defaults=True)
    given.update(bootstrap_servers=kafka.bootstrap_servers, request_timeout_ms=kafka.request_timeout_ms)
    env = {f"FLEETPULSE_KAFKA__{key.upper()}": _env_value(value) for key, value in given.items()}
    env.update({f"FLEETPULSE_STREAMS__{key.upper()}": str(value) for key, value in streams.items()})
    return env


@dataclass
class WorkerProcess:
    """One worker child process; ``streams`` overrides ``[streams]`` settings (e.g. ``web_port``, ``store``)."""

    kafka: KafkaSettings
    streams: dict[str, object]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def web_port(self) -> int:
        return int(str(self.streams.get("web_port", 6066)))

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_")}
        env.update(settings_env(self.kafka, self.streams))
        env.update(self.extra_env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from fleetpulse.cli import app; app()", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def _get(self, path: str, timeout: float = 2.0) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.web_port}{path}", timeout=timeout) as resp:
            return bytes(resp.read())

    def health(self) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._get("/health")))
        except OSError:
            return None

    def metrics(self) -> str:
        """The Prometheus page; a worker busy with a backlog can take seconds to answer it."""
        return self._get("/metrics", timeout=30.0).decode()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        """Until the worker has partitions and finished recovery; raises if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"worker exited; see {self.log_path}")
            health = self.health()
            if health and health["assigned_partitions"] > 0 and not health["rebalancing"]:
                return health
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready in {timeout}s; see {self.log_path}")

    def wait_events(self, at_least: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.health()
            if health and health["events_total"] >= at_least:
                return
            time.sleep(0.1)
        raise TimeoutError(f"worker did not process {at_least} events in {timeout}s; see {self.log_path}")

    def kill9(self) -> None:
        """Crash without any shutdown work (offsets, changelog and RocksDB as they happen to be)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_caught_up(
    kafka: KafkaSettings,
    group_id: str,
    timeout: float = 300.0,
    poll_s: float = 1.0,
    on_lag: Callable[[int], None] | None = None,
) -> float:
    """Seconds until ``group_id`` committed everything on the input topics (zero lag twice in a row).

    ``on_lag`` sees every measured lag (progress display; it may raise to give up, e.g. when the
    worker died). Retriable Kafka errors (a group coordinator still being elected on a fresh
    broker) count as "not caught up yet".
    """
    started = time.monotonic()
    zero_in_a_row = 0
    while time.monotonic() - started < timeout:
        try:
            lag = asyncio.run(consumer_lag(kafka, group_id))
        except KafkaError as exc:
            if not exc.retriable:
                raise
            time.sleep(poll_s)
            continue
        if on_lag is not None:
            on_lag(lag)
        zero_in_a_row = zero_in_a_row + 1 if lag == 0 else 0
        if zero_in_a_row >= 2:
            return time.monotonic() - started
        time.sleep(poll_s)
    raise TimeoutError(f"group {group_id} still lagging after {timeout}s")
