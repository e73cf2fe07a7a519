"""Structured JSON logs on stderr with UTC timestamps, from the standard library only.

Stdlib-only so the endpoint agent can use it without pulling server dependencies.
Pass context as ``extra={"fields": {...}}``; it becomes top-level JSON keys.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fleetpulse.compat import UTC

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
RECORD_DUMPING_LOGGERS = ("kafka", "aiokafka")
"""Kafka clients that log every record they send, and the bytes on the wire, at DEBUG: the agent's
enrolment record carries its device key, SASL PLAIN the password. They stay at INFO or above whatever
the configured level, so a DEBUG log holds no secret."""


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        for key, value in vars(record).items():
            if key not in _RESERVED and key != "fields" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", json_output: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_output:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in RECORD_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))


class RefusalWarnings:
    """Counts refusals and logs one line per ``every_s`` with how many came since the last one: a flood of
    refused requests or records (what an attacker sends) must not flood the log with a line each, nor spend
    the CPU of formatting one. What was refused is not lost: each caller keeps its own per-item trace (an
    HTTP answer, a dead letter, a metric); the log only has to say that it happens, and why."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.WARNING,
    ) -> None:
        self._logger, self._message, self._every_s, self._clock = logger, message, every_s, clock
        self._level = level
        self._lock = threading.Lock()
        self._unlogged = 0
        self._logged_at = -math.inf

    def refused(self, fields: dict[str, Any], exc: BaseException | None = None) -> None:
        """Count one refusal; log it, with ``fields``, ``refused_since_last_warning`` and the traceback of
        ``exc`` if given, once per interval."""
        with self._lock:
            self._unlogged += 1
            now = self._clock()
            if now - self._logged_at < self._every_s:
                return
            refused, self._unlogged, self._logged_at = self._unlogged, 0, now
        self._logger.log(
            self._level,
            self._message,
            exc_info=exc,
            extra={"fields": {"refused_since_last_warning": refused, **fields}},
        )
