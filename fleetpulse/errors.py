"""Errors the ``fleetpulse`` command line reports as one line, whichever command meets them."""

from __future__ import annotations


class OperatorError(RuntimeError):
    """Something the operator fixes outside fleetpulse (the cluster's topics, its ACLs).

    The entry point prints it as ``error: …`` and exits 1: a traceback would bury the one sentence
    that says what to fix, and every service (worker, ticket consumer, MDM bridge) meets it at start.
    """
