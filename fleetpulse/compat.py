"""What fleetpulse needs from Python 3.11's standard library, also on 3.10.

The agent and the server run on CPython 3.10 to 3.13. Modules take ``UTC``, ``StrEnum``,
``tomllib``, ``fromisoformat``, ``SpooledTemporaryFile`` and ``csv_writer`` from here.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from enum import Enum

UTC = timezone.utc

if sys.version_info >= (3, 11):
    from csv import writer as csv_writer
    from enum import StrEnum
    from tempfile import SpooledTemporaryFile

    import tomllib

    fromisoformat = datetime.fromisoformat
else:  # pragma: no cover - exercised by the test runs on CPython 3.10
    import csv
    import io
    import tempfile
    from collections.abc import Iterable
    from typing import Any

    import tomli as tomllib

    class StrEnum(str, Enum):
        """Members are their values as strings, as in 3.11's ``enum.StrEnum``."""

        def __str__(self) -> str:
            return str(self.value)

    def fromisoformat(text: str) -> datetime:
        """3.10's ``datetime.fromisoformat`` refuses the UTC designator Z, which pydantic writes."""
        return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)

    class SpooledTemporaryFile(tempfile.SpooledTemporaryFile):
        """Says whether it reads, writes and seeks, as 3.11's does: ``io.TextIOWrapper`` asks."""

        def readable(self) -> bool:
            return bool(self._file.readable())

        def writable(self) -> bool:
            return bool(self._file.writable())

        def seekable(self) -> bool:
            return bool(self._file.seekable())

    class _NulWriter:
        """3.10's csv writer refuses a NUL in a field (``need to escape``), 3.11's writes it as any
        other character: a row holding one is written with a stand-in no field holds, swapped back."""

        def __init__(self, out: Any) -> None:
            self._out = out
            self._writer = csv.writer(out)

        def writerow(self, row: Iterable[Any]) -> Any:
            # as the csv module makes text of a field (None is empty, a number its repr)
            fields = [
                "" if f is None else f if isinstance(f, str) else repr(f) if isinstance(f, float) else str(f)
                for f in row
            ]
            if not any("\x00" in f for f in fields):
                return self._writer.writerow(fields)
            used = set().union(*fields)
            stand_in = next(c for c in map(chr, range(0xE000, 0x110000)) if c not in used)
            line = io.StringIO()
            csv.writer(line).writerow([f.replace("\x00", stand_in) for f in fields])
            return self._out.write(line.getvalue().replace(stand_in, "\x00"))

    def csv_writer(out: Any) -> _NulWriter:
        return _NulWriter(out)


__all__ = ["UTC", "SpooledTemporaryFile", "StrEnum", "csv_writer", "fromisoformat", "tomllib"]
