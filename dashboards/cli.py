"""Command-line entry points of this component, registered on the ``fleetpulse`` app."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from fleetpulse.cliutil import settings_from
from fleetpulse.errors import OperatorError

dashboards_app = typer.Typer(help="Grafana dashboards: generate JSON, provision Grafana.", no_args_is_help=True)


def _require_sdk() -> None:
    """The dashboards' code is written with grafana-foundation-sdk, published for Python 3.11+ only."""
    if importlib.util.find_spec("grafana_foundation_sdk") is None:
        raise OperatorError(
            "building dashboards needs grafana-foundation-sdk, which needs Python 3.11 or newer; "
            "Grafana can provision the generated files in dashboards/json instead"
        )


@dashboards_app.command("build")
def build_command(
    out: Annotated[
        Path | None, typer.Option(help="output folder (default: dashboards/json in the source tree)")
    ] = None,
    check: Annotated[bool, typer.Option("--check", help="fail if the files on disk differ from the code")] = False,
) -> None:
    """Write every dashboard as Grafana JSON (the files file-based provisioning mounts)."""
    _require_sdk()
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
    _require_sdk()
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


@dashboards_app.command("rollup")
def rollup_command(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="one rollup, then exit (for a CronJob)")] = False,
) -> None:
    """Write the fleet rollup the fleet-health panels read: now, then every grafana.rollup.every_s seconds."""
    import time
    from datetime import datetime

    import httpx
    from sqlalchemy.exc import SQLAlchemyError

    from fleetpulse.alerts.store.repository import TicketStore
    from fleetpulse.compat import UTC
    from fleetpulse.dashboards.rollup import InfluxV1Api, run_rollup, silent_device_points, ticket_points

    settings = settings_from(ctx)
    rollup = settings.grafana.rollup
    threshold = settings.alerts.policy.raise_threshold
    api = InfluxV1Api(rollup.influx)
    try:
        while True:
            at = datetime.now(UTC)
            try:
                points = run_rollup(api, at, threshold)
                typer.echo(f"fleet rollup: {len(points)} points")
            except (httpx.HTTPError, RuntimeError) as exc:
                typer.echo(f"error: fleet rollup failed: {exc}", err=True)
                if once:
                    raise typer.Exit(1) from None
            if rollup.tickets:
                try:
                    store = TicketStore.open(settings.alerts.store_url, migrate=False)
                    try:
                        tickets = ticket_points(store.ticket_counts(), at)
                        silent = store.silent_devices(at - settings.alerts.consumer.silent_after)
                        tickets += silent_device_points(silent, at)
                    finally:
                        store.close()
                    api.write([p.to_line_protocol() for p in tickets])
                    typer.echo(f"ticket snapshot: {len(tickets)} points ({len(silent)} silent devices)")
                except (httpx.HTTPError, SQLAlchemyError) as exc:
                    typer.echo(f"error: ticket snapshot failed: {exc}", err=True)
                    if once:
                        raise typer.Exit(1) from None
            if once:
                return
            time.sleep(rollup.every_s)
    finally:
        api.close()


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``fleetpulse``."""
    app.add_typer(dashboards_app, name="dashboards")
