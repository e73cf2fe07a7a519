"""The ``fleetpulse-agent`` command: run, once, identity, smart-snapshot, config show, version.

``run`` is what systemd or the Windows service starts, and that process then stays resident on
every PC for months, so its command line (``[--config PATH] run [--max-reports N]``) is parsed
here without typer/click, which would stay loaded for nothing (~1.5 MB). Every other command line,
including ``--help`` and anything this parser does not recognise, goes to the typer app in
:mod:`fleetpulse.agents.commands`, which also has ``run`` and gives the same result.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

CONFIG_ENV = "FLEETPULSE_AGENT_CONFIG"


def config_path(option: Path | None) -> Path | None:
    """``--config`` wins over ``$FLEETPULSE_AGENT_CONFIG``; neither: defaults and environment only."""
    return option or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)


def parse_service_args(args: list[str]) -> tuple[Path | None, int | None] | None:
    """``(config, max_reports)`` for a well-formed ``run`` command line, else None (typer handles it)."""
    config: Path | None = None
    i = 0
    while i < len(args) and args[i] != "run":
        if args[i] in ("--config", "-c") and i + 1 < len(args):
            config, i = Path(args[i + 1]), i + 2
        elif args[i].startswith("--config="):
            config, i = Path(args[i].partition("=")[2]), i + 1
        else:
            return None
    if i == len(args):
        return None
    rest = args[i + 1 :]
    max_reports: int | None = None
    while rest:
        if rest[0] == "--max-reports" and len(rest) > 1:
            value, rest = rest[1], rest[2:]
        elif rest[0].startswith("--max-reports="):
            value, rest = rest[0].partition("=")[2], rest[1:]
        else:
            return None
        try:
            max_reports = int(value)
        except ValueError:
            return None
    return config, max_reports


def run_service(config: Path | None, max_reports: int | None) -> int:
    """Run the agent until SIGTERM/SIGINT (or ``max_reports``); returns the exit status."""
    import logging
    import signal
    import sqlite3

    from fleetpulse import logs
    from fleetpulse.agents.heap import freeze_startup_objects, single_malloc_arena
    from fleetpulse.agents.identity import IdentityError, build_identity, load_or_create_device_key
    from fleetpulse.agents.runner import Agent, build_collectors
    from fleetpulse.agents.settings import load_agent_settings
    from fleetpulse.config import describe_config_error

    single_malloc_arena()
    try:
        # strict whether or not it holds privileges (the Linux service holds none): its config decides where
        # the fleet's data goes, and its secrets authenticate the device, so no other user may change or read them
        settings = load_agent_settings(config, strict=True)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: invalid configuration: {describe_config_error(exc)}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    ident = build_identity(settings.identity)
    state_dir = settings.spool_dir / "state"
    try:
        # first: it makes the folder, and refuses one (or a key) another user planted before anything is written there
        load_or_create_device_key(settings.spool_dir, strict=True)
        agent = Agent(settings, ident, build_collectors(settings, ident, state_dir))
    except IdentityError as exc:
        print(f"error: device key: {exc}", file=sys.stderr)
        return 1
    except (OSError, sqlite3.Error) as exc:
        print(f"error: cannot open the spool in {settings.spool_dir}: {exc}", file=sys.stderr)
        return 1

    def _stop(signum: int, _frame: Any) -> None:
        logging.getLogger(__name__).info("stopping", extra={"fields": {"signal": signum}})
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    logging.getLogger(__name__).info(
        "agent started",
        extra={
            "fields": {
                "device_id": ident.device_id,
                "bootstrap": settings.kafka.bootstrap_servers,
                "security_protocol": settings.kafka.security_protocol,
                "interval_s": settings.interval_s,
                "spool": str(agent.spool_path),
                "next_seq": agent.spool.next_seq,
            }
        },
    )
    freeze_startup_objects()
    return agent.run(max_reports=max_reports)


def main() -> None:
    """Console entry point (``fleetpulse-agent``, ``python -m fleetpulse.agents.cli``)."""
    service = parse_service_args(sys.argv[1:])
    if service is not None:
        sys.exit(run_service(config_path(service[0]), service[1]))
    from fleetpulse.agents.commands import app

    app()


def __getattr__(name: str) -> Any:
    """``fleetpulse.agents.cli:app``: what console scripts installed before ``main`` existed still load."""
    if name == "app":
        from fleetpulse.agents.commands import app

        return app
    raise AttributeError(name)


if __name__ == "__main__":
    main()
