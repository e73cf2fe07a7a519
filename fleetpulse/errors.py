"""Errors the ``fleetpulse`` command line reports as one line, whichever command meets them."""

from __future__ import annotations

import sys


class OperatorError(RuntimeError):
    """Something the operator fixes outside fleetpulse (the cluster's topics, its ACLs).

    The entry point prints it as ``error: …`` and exits 1: a traceback would bury the one sentence
    that says what to fix, and every service (worker, ticket consumer, MDM bridge) meets it at start.
    """


def store_unusable(exc: BaseException) -> str | None:
    """The ``error:`` line for a database the command could not use, or None for any other exception.

    SQLAlchemy's ``OperationalError`` and ``InterfaceError`` (the server is down, refuses the login, the file
    cannot be opened) are the operator's to fix like a missing topic. Their text carries the SQL statement
    and its parameters, so only the driver's first line is kept, scrubbed of anything credential-like.
    """
    from fleetpulse.redact import scrub  # a plain module; sqlalchemy is looked up, never imported here

    errors = sys.modules.get("sqlalchemy.exc")
    if errors is None or not isinstance(exc, (errors.OperationalError, errors.InterfaceError)):
        return None
    cause = exc.orig if exc.orig is not None else exc
    lines = str(cause).strip().splitlines()
    reason = scrub(lines[0] if lines else type(cause).__name__)
    return f"the ticket store ([alerts] store_url) cannot be used: {reason}"
