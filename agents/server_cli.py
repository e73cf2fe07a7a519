"""Command-line entry points of this component, registered on the ``fleetpulse`` app."""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fleetpulse.compat import UTC, fromisoformat

if TYPE_CHECKING:
    from kafka import KafkaProducer

log = logging.getLogger(__name__)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``1d`` -> timedelta (the simulator's report interval)."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: expected a positive number with unit s, m, h or d (e.g. 1d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])


def _quiet_kafka_client() -> None:
    """kafka-python logs every connection at INFO; bulk tools only need its warnings."""
    logging.getLogger("kafka").setLevel(logging.WARNING)


def _parse_start(text: str | None, days: int = 0) -> datetime:
    """Explicit ISO start, else midnight UTC ``days`` ago: the window ends today, so the data lands
    inside the TSDB's retention and no report is dated in the future."""
    if text is None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        return today - timedelta(days=days)
    try:
        value = fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected an ISO date, e.g. 2025-01-01") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def simulate(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=1, max=1_000_000, help="fleet size")] = 1000,
    days: Annotated[int, typer.Option(min=1, max=3650, help="simulated days")] = 90,
    seed: Annotated[int, typer.Option(help="same seed, same fleet, same bytes")] = 1,
    interval: Annotated[str, typer.Option(help="report interval: 1d, 6h, 15m, 60s")] = "1d",
    start: Annotated[
        str | None, typer.Option(help="first simulated day (ISO, UTC); default: DAYS before today. Fix it to reproduce")
    ] = None,
    failure_scale: Annotated[
        float, typer.Option(min=0.01, max=100.0, help="multiply failure hazards (small demo fleets)")
    ] = 1.0,
    ground_truth: Annotated[Path | None, typer.Option(help="write the known failures to this JSON file")] = None,
    to_kafka: Annotated[bool, typer.Option("--to-kafka/--dry-run", help="publish, or only generate and count")] = True,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Generate a seeded fleet with known failures and publish it to Kafka."""
    import json
    import time
    from collections import Counter

    from fleetpulse.agents.kafka_publish import publish_fleet, report_topic
    from fleetpulse.agents.simulator import FleetSimulator
    from fleetpulse.cliutil import settings_from
    from fleetpulse.contract import Topics

    settings = settings_from(ctx)
    _quiet_kafka_client()
    first_day = _parse_start(start, days)
    sim = FleetSimulator(devices, seed, first_day, days, parse_duration(interval), failure_scale=failure_scale)
    truth = sim.ground_truth()
    if ground_truth is not None:
        ground_truth.parent.mkdir(parents=True, exist_ok=True)
        ground_truth.write_text(json.dumps([g.model_dump(mode="json") for g in truth], indent=1) + "\n")
    kinds = Counter(inv.kind.value for inv in sim.inventory())
    typer.echo(
        f"fleet: {devices} devices {dict(sorted(kinds.items()))}, {days} days from {first_day.date()}, seed {seed}"
    )
    typer.echo(f"ground truth: {len(truth)} failures {dict(Counter(g.component.value for g in truth))}")
    if to_kafka:
        stats = publish_fleet(sim, settings.kafka, settings.streams, progress=progress)
        typer.echo(
            f"published {stats.inventory} inventory, {stats.health} health, {stats.mobile} mobile records "
            f"({stats.bytes / 1e6:.1f} MB) in {stats.seconds:.1f} s = {stats.per_second:,.0f} records/s"
        )
        if stats.errors:
            typer.echo(f"error: {len(stats.errors)} sends failed, first: {stats.errors[0]}", err=True)
            raise typer.Exit(1)
        return
    started = time.perf_counter()
    health = mobile = 0
    topics = Topics()
    for report in sim.reports():
        if report_topic(topics, report) == topics.mobile:
            mobile += 1
        else:
            health += 1
    seconds = time.perf_counter() - started
    typer.echo(
        f"dry run: generated {health} health and {mobile} mobile reports in {seconds:.1f} s "
        f"= {(health + mobile) / max(seconds, 1e-9):,.0f} reports/s (nothing published)"
    )


mdm_app = typer.Typer(help="Mobile devices from the MDM (Intune / Microsoft Graph exports)", no_args_is_help=True)


@mdm_app.command("ingest")
def mdm_ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, help="export files")],
    fmt: Annotated[str, typer.Option("--format", help="graph-json or csv")] = "graph-json",
    as_of: Annotated[
        str | None, typer.Option(help="time of the export (ISO) for rows without a sync time; default now")
    ] = None,
    dead_letter: Annotated[
        Path | None, typer.Option(help="append rejected rows as JSON lines (default: settings mdm.dead_letter_path)")
    ] = None,
    to_kafka: Annotated[bool, typer.Option("--to-kafka/--dry-run", help="publish, or only map and count")] = True,
) -> None:
    """Map MDM exports to health reports (pseudonymised, idempotent seq) and publish them.

    Files are streamed (memory stays bounded whatever their size); reports are published in batches.
    Exit status: 0 all rows mapped, 3 some rows or files rejected (each named with its location; the
    rest was published), 1 publishing failed.
    """
    from fleetpulse.agents.kafka_publish import PublishStats, make_producer, publish_records
    from fleetpulse.agents.mdm import InputFormat, SeqStore, run_ingest
    from fleetpulse.cliutil import settings_from
    from fleetpulse.contract import DeviceInventory, HealthReport, Topics
    from fleetpulse.streams.kafka_admin import create_configured_topics

    if fmt not in ("graph-json", "csv"):
        raise typer.BadParameter("--format must be graph-json or csv")
    input_format: InputFormat = "csv" if fmt == "csv" else "graph-json"
    settings = settings_from(ctx)
    if settings.mdm.secret is None or not settings.mdm.secret.get_secret_value():
        typer.echo("error: no pseudonymisation secret: set [mdm] secret or FLEETPULSE_MDM__SECRET", err=True)
        raise typer.Exit(2)
    secret = settings.mdm.secret.get_secret_value().encode()
    _quiet_kafka_client()
    when = _parse_start(as_of) if as_of else datetime.now(UTC)
    stats = PublishStats()
    topics = Topics(prefix=settings.kafka.topic_prefix)
    producers: list[KafkaProducer] = []

    def publish(inventory: list[DeviceInventory], reports: list[HealthReport]) -> None:
        if not producers:
            create_configured_topics(settings.kafka, settings.streams)
            producers.append(make_producer(settings.kafka))
        publish_records(producers[0], topics, inventory, reports, stats, mdm=True)

    dead_path = dead_letter or settings.mdm.dead_letter_path
    with contextlib.ExitStack() as stack:
        dead_file = None
        if dead_path is not None:
            dead_path.parent.mkdir(parents=True, exist_ok=True)
            dead_file = stack.enter_context(dead_path.open("a", encoding="utf-8"))
        try:
            with SeqStore(settings.mdm.state_path) as store:
                summary = run_ingest(paths, input_format, secret, store, when, publish if to_kafka else None, dead_file)
        finally:
            for producer in producers:
                producer.flush()
                producer.close()
    for warning in summary.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for problem in summary.first_problems:
        typer.echo(f"rejected {problem.ref}: {problem.reason}", err=True)
    if summary.rejected > len(summary.first_problems):
        typer.echo(f"... and {summary.rejected - len(summary.first_problems)} more rejected rows", err=True)
    typer.echo(
        f"rows: {summary.rows}, reports: {summary.reports}, rejected: {summary.rejected}, "
        f"skipped: {summary.skipped} (PCs, duplicates)"
    )
    log.info(
        "mdm ingest",
        extra={
            "files": len(paths),
            "rows": summary.rows,
            "reports": summary.reports,
            "rejected": summary.rejected,
            "skipped": summary.skipped,
        },
    )
    if producers:
        typer.echo(f"published {stats.health} health, {stats.mobile} mobile, {stats.inventory} inventory records")
        if stats.errors:
            typer.echo(f"error: {len(stats.errors)} sends failed, first: {stats.errors[0]}", err=True)
            raise typer.Exit(1)
    if summary.rejected:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``fleetpulse``."""
    app.command("simulate")(simulate)
    app.add_typer(mdm_app, name="mdm")
