"""What every ``fleetpulse`` sub-command needs: the loaded server settings."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from fleetpulse.config import describe_config_error, load_settings, secrets_dirs_from_env
from fleetpulse.settings import ServerSettings


def load_server_settings(config: Path | None) -> ServerSettings:
    """Settings from ``config``, the environment and secret files; a bad configuration exits 2 naming no value."""
    try:
        return load_settings(ServerSettings, config, secrets_dirs_from_env(os.environ))
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: invalid configuration: {describe_config_error(exc)}", err=True)
        raise typer.Exit(2) from None


def settings_from(ctx: typer.Context) -> ServerSettings:
    """Settings loaded by the root callback (``--config`` / env), shared by all sub-commands."""
    root = ctx.find_root()
    if not isinstance(root.obj, ServerSettings):
        root.obj = load_server_settings(None)
    return root.obj
