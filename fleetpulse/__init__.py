"""fleetpulse: predict PC and mobile-device hardware failure from streamed telemetry.

The component packages (agents, streams, models, alerts, dashboards) live in the
repository's top-level folders of the same names; ``fleetpulse/`` holds what they
share: the wire contract, settings, logging and the command line.
"""

__version__ = "0.1.0"
