"""Command-line entry points of this component, registered on the ``fleetpulse`` app."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Literal

import typer

from fleetpulse.cliutil import settings_from

topics_app = typer.Typer(help="Kafka topics of the pipeline.", no_args_is_help=True)


@topics_app.command("create")
def topics_create(
    ctx: typer.Context,
    partitions: Annotated[int | None, typer.Option(help="default: [streams] partitions")] = None,
) -> None:
    """Create every fleetpulse topic that is missing (inventory compacted). Existing topics are kept."""
    from fleetpulse.streams.kafka_admin import ensure_topics

    settings = settings_from(ctx)
    count = partitions or settings.streams.partitions
    created = asyncio.run(ensure_topics(settings.kafka, count, settings.streams.replication_factor))
    typer.echo(f"created {len(created)} topic(s) with {count} partitions: {', '.join(created) or '-'}")


def worker(
    ctx: typer.Context,
    web_port: Annotated[int | None, typer.Option(help="metrics/health HTTP port (default: [streams] web_port)")] = None,
    instance_id: Annotated[str | None, typer.Option(help="static group membership id")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="RocksDB table directory")] = None,
    store: Annotated[str | None, typer.Option(help="rocksdb or memory")] = None,
) -> None:
    """Run a stream worker: validate, keep device state, score, alert, write the TSDB.

    Creates missing topics first. Metrics on http://<web_host>:<web_port>/metrics, health on /health.
    Start more workers (each with its own --web-port and --data-dir) to scale out.
    """
    from fleetpulse.streams.app import run_worker

    settings = settings_from(ctx)
    overrides: dict[str, object] = {}
    if web_port is not None:
        overrides["web_port"] = web_port
    if instance_id is not None:
        overrides["instance_id"] = instance_id
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if store is not None:
        if store not in ("rocksdb", "memory"):
            raise typer.BadParameter("store must be rocksdb or memory")
        chosen: Literal["rocksdb", "memory"] = "rocksdb" if store == "rocksdb" else "memory"
        overrides["store"] = chosen
    streams = settings.streams.model_copy(update=overrides)
    run_worker(settings.model_copy(update={"streams": streams}))


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``fleetpulse``."""
    from fleetpulse.streams.devices import devices_app

    app.command("worker")(worker)
    app.add_typer(topics_app, name="topics")
    app.add_typer(devices_app, name="devices")
