"""The ``fleetpulse`` command: server-side operations (worker, ticketing, models, dashboards, demo).

Sub-commands are registered by their components; heavy imports happen inside
the commands so ``fleetpulse --help`` stays fast.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fleetpulse import demo, logs
from fleetpulse.agents import server_cli as agents_cli
from fleetpulse.alerts import cli as alerts_cli
from fleetpulse.cliutil import load_server_settings, settings_from
from fleetpulse.config import masked_dump
from fleetpulse.dashboards import cli as dashboards_cli
from fleetpulse.errors import OperatorError, store_unusable
from fleetpulse.models import cli as models_cli
from fleetpulse.streams import cli as streams_cli

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="inspect the configuration", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="server TOML file (default: $FLEETPULSE_CONFIG)"),
    ] = None,
) -> None:
    path = config or (Path(os.environ["FLEETPULSE_CONFIG"]) if os.environ.get("FLEETPULSE_CONFIG") else None)
    settings = load_server_settings(path)
    logs.configure(settings.log_level)
    ctx.obj = settings


for component in (streams_cli, models_cli, alerts_cli, dashboards_cli, agents_cli, demo):
    component.register(app)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration (TOML, environment, secret files) as JSON, secrets masked."""
    typer.echo(json.dumps(masked_dump(settings_from(ctx)), indent=2))


def run() -> None:
    """The console entry point: :data:`app`, with an :class:`OperatorError` or a ticket store it cannot use as
    one ``error:`` line, exit 1 (the traceback is logged at DEBUG)."""
    try:
        app()
    except OperatorError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:
        message = store_unusable(exc)
        if message is None:
            raise
        logging.getLogger(__name__).debug("ticket store error", exc_info=exc)
        typer.echo(f"error: {message}", err=True)
        sys.exit(1)
