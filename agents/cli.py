"""The ``fleetpulse-agent`` command."""

from __future__ import annotations

import typer

app = typer.Typer(help="fleetpulse endpoint agent", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the agent version."""
    from fleetpulse import __version__

    typer.echo(__version__)
