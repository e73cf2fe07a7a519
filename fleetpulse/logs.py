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
    """Counts refusals and logs one warning per ``every_s`` with how many came since the last one: a flood of
    refused requests (what an attacker sends) must not flood the log with a line each."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger, self._message, self._every_s, self._clock = logger, message, every_s, clock
        self._lock = threading.Lock()
        self._unlogged = 0
        self._logged_at = -math.inf

    def refused(self, fields: dict[str, Any]) -> None:
        """Count one refusal; warn, with ``fields`` and ``refused_since_last_warning``, once per interval."""
        with self._lock:
            self._unlogged += 1
            now = self._clock()
            if now - self._logged_at < self._every_s:
                return
            refused, self._unlogged, self._logged_at = self._unlogged, 0, now
        self._logger.warning(self._message, extra={"fields": {"refused_since_last_warning": refused, **fields}})
