"""``python -m fleetpulse``: the same as the ``fleetpulse`` command (used to spawn workers)."""

from fleetpulse.cli import run

run()
