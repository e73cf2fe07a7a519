"""Pure parsers of platform tool outputs into contract records: no I/O, no subprocesses.

Every parser either returns a record (or ``None`` when the input holds nothing to report) or
raises :class:`ParseError`; any other exception is a bug, which the recorded-output tests catch.
"""

from fleetpulse.agents.parsers.common import ParseError

__all__ = ["ParseError"]
