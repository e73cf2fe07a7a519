"""What the endpoint agent needs from Python 3.11's standard library, also on 3.10.

The agent runs on the PCs' own interpreters, CPython 3.10 to 3.13; the server needs 3.11 or newer.
Modules in the agent's import graph take ``UTC``, ``StrEnum`` and ``tomllib`` from here.
"""

from __future__ import annotations

import sys
from datetime import timezone
from enum import Enum

UTC = timezone.utc

if sys.version_info >= (3, 11):
    from enum import StrEnum

    import tomllib
else:  # pragma: no cover - exercised by the agent's test run on CPython 3.10
    import tomli as tomllib

    class StrEnum(str, Enum):
        """Members are their values as strings, as in 3.11's ``enum.StrEnum``."""

        def __str__(self) -> str:
            return str(self.value)


__all__ = ["UTC", "StrEnum", "tomllib"]
