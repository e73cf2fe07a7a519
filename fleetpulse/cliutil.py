"""What every ``fleetpulse`` sub-command needs: the loaded server settings."""

from __future__ import annotations

from pathlib import Path

import typer

from fleetpulse.config import load_settings
from fleetpulse.settings import ServerSettings


def load_server_settings(config: Path | None) -> ServerSettings:
    try:
        return load_settings(ServerSettings, config)
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def settings_from(ctx: typer.Context) -> ServerSettings:
    """Settings loaded by the root callback (``--config`` / env), shared by all sub-commands."""
    root = ctx.find_root()
    if not isinstance(root.obj, ServerSettings):
        root.obj = load_server_settings(None)
    return root.obj
