"""Command-line entry points of this component, registered on the ``fleetpulse`` app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetpulse.cliutil import settings_from

dashboards_app = typer.Typer(help="Grafana dashboards: generate JSON, provision Grafana.", no_args_is_help=True)


@dashboards_app.command("build")
def build_command(
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: dashboards/json in the source tree)")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="fail if the files on disk differ from the code")] = False,
) -> None:
    """Write every dashboard as Grafana JSON (the files file-based provisioning mounts)."""
    from fleetpulse.dashboards.build import build_all, default_directories, render, write_all

    directories = [out] if out else default_directories()
    if check:
        dashboards = build_all()
        stale = [
            str(directory / name)
            for directory in directories
            for name, dashboard in dashboards.items()
            if not (directory / name).is_file() or (directory / name).read_text(encoding="utf-8") != render(dashboard)
        ]
        if stale:
            typer.echo(f"out of date: {', '.join(stale)} (run: fleetpulse dashboards build)", err=True)
            raise typer.Exit(1)
        typer.echo(f"up to date: {', '.join(map(str, directories))}")
        return
    for directory in directories:
        for path in write_all(directory):
            typer.echo(str(path))


@dashboards_app.command("push")
def push_command(ctx: typer.Context) -> None:
    """Create/update the InfluxQL data source, the folder and every dashboard in Grafana (idempotent)."""
    from grafana_client.client import GrafanaException

    from fleetpulse.dashboards.build import build_all
    from fleetpulse.dashboards.provision import push

    settings = settings_from(ctx).grafana
    try:
        report = push(settings, build_all(settings.datasource_uid))
    except (GrafanaException, OSError) as exc:
        typer.echo(f"error: Grafana at {settings.url} refused or failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"data source {settings.datasource_uid}: {report.datasource}")
    typer.echo(f"folder {settings.folder_uid}: {report.folder}")
    for uid, url in report.dashboards.items():
        typer.echo(f"dashboard {uid}: {settings.url.rstrip('/')}{url}")


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``fleetpulse``."""
    app.add_typer(dashboards_app, name="dashboards")
