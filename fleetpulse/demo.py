"""``fleetpulse demo``: the whole pipeline on one machine, end to end, with real services.

Starts the local Kafka and TSDB, simulates a fleet with known ground-truth failures,
runs it through a real stream worker (subprocess) and the ticket consumer, prints
tickets vs ground truth, serves the fleet-manager page, then stops everything.
Every run gets its own topic prefix and folder under ``.local/demo/`` so runs
never mix; the folder keeps the worker state, the ticket database and the logs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import SecretStr

from fleetpulse import logs
from fleetpulse.cliutil import settings_from
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import Alert, Component
from fleetpulse.settings import ServerSettings

if TYPE_CHECKING:
    from rich.console import Console

    from fleetpulse.agents.kafka_publish import PublishStats
    from fleetpulse.alerts.store.repository import TicketStore
    from fleetpulse.scorecard import ComponentScore
    from fleetpulse.streams.process import WorkerProcess

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "deploy" / "local" / "stack.sh"
DEMO_DIR = REPO / ".local" / "demo"

SCORECARD_COLUMNS = {
    "component": "what is scored: disk, battery, thermal, memory, or device (the whole device's behaviour)",
    "failures": "components that failed inside the simulated window (ground truth)",
    "caught": "failures with an alert raised before the failure",
    "recall": "caught / failures",
    "predictable": "failures the simulator preceded with warning signs in the telemetry; the rest fail without any",
    "caught pred.": "predictable failures with an alert raised before the failure",
    "recall pred.": "caught pred. / predictable: what a model can be expected to find",
    "alerted": "components with at least one alert raised",
    "no failure": "alerted components that did not fail inside the window (at most false alarms: some fail later)",
    "precision": "(alerted - no failure) / alerted",
    "median lead d": "median days from the first alert to the failure, over caught failures",
}
"""The scorecard's columns and what each means, printed under the table."""

DEMO_WORKER_STREAMS: dict[str, object] = {"commit_interval_s": 5.0}
"""The demo replays weeks of a fleet in minutes on one machine: a commit (changelog flush plus
offsets) takes over a second under that backlog, so a one-second commit timer overlapped itself."""


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=False, highlight=False, width=max(120, Console().width))


def _stack(action: str, *services: str) -> None:
    if not STACK.is_file():
        raise typer.BadParameter(f"{STACK} not found: run the demo from a fleetpulse checkout")
    subprocess.run(["bash", str(STACK), action, *services], check=True)


def _worker(settings: ServerSettings, run_dir: Path) -> WorkerProcess:
    """A real ``fleetpulse worker`` process; the user's own FLEETPULSE_* settings pass through,
    and it serves the model registry the demo announced (by default the shipped champion)."""
    from fleetpulse.streams.process import WorkerProcess

    inherited = {
        k: v for k, v in os.environ.items() if k.startswith("FLEETPULSE_") and not k.startswith("FLEETPULSE_KAFKA__")
    }
    registry = {"FLEETPULSE_MODELS__REGISTRY_DIR": str(settings.models.registry_dir.resolve())}
    return WorkerProcess(
        kafka=settings.kafka,
        streams={"web_port": _free_port(), "data_dir": run_dir / "worker", **DEMO_WORKER_STREAMS},
        log_path=run_dir / "worker.log",
        extra_env={**inherited, **registry, "FLEETPULSE_LOG_LEVEL": "WARNING"},
    )


def _served_models(console: Console, settings: ServerSettings) -> None:
    """Which scorers the worker will serve: the shipped trained disk champion unless configured otherwise."""
    from fleetpulse.models.registry import load_scorers
    from fleetpulse.serving import serving_policy

    scorers = load_scorers(settings.models)
    disk = serving_policy(settings, scorers).thresholds(Component.DISK)
    console.print(
        f"models from {settings.models.registry_dir}: champions {', '.join(scorers.describe()['champions'])}; "
        f"disk alert at risk >= {disk.raise_threshold:.3f} ({settings.models.alert_cap} false alarms on drive "
        "models held out of training)"
    )


def _wait_for_group_coordinator(kafka: KafkaSettings, group: str, timeout_s: float = 120.0) -> None:
    """A fresh broker creates its offsets topic on the first coordinator lookup and answers "not
    available" until it has; asked here first, the worker finds its coordinator at once instead of
    logging GroupCoordinatorNotAvailableError while it joins."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from fleetpulse.streams.kafka_admin import aiokafka_auth

    async def lookup() -> None:
        admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
        await admin.start()
        try:
            await admin.list_consumer_group_offsets(group)
        finally:
            await admin.close()

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(lookup())
            return
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_for_worker(settings: ServerSettings, worker: WorkerProcess, reports: int, timeout_s: float) -> None:
    """Block until the worker has committed every input record, with a progress bar that counts
    reports as the summary does (the inventory records in the backlog are not reports)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from fleetpulse.streams.app import group_id
    from fleetpulse.streams.process import wait_caught_up

    with Progress(
        TextColumn("processing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("reports"),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task("worker", total=reports)

        def progress(lag: int) -> None:
            if not worker.running():
                raise RuntimeError(f"worker exited; see {worker.log_path}")
            bar.update(task, completed=min(reports, max(0, reports - lag)))

        wait_caught_up(settings.kafka, group_id(settings), timeout=timeout_s, on_lag=progress)


def _read_alerts(kafka: KafkaSettings) -> list[Alert]:
    """Every alert on the run's alerts topic, read from the beginning to the current end."""
    from kafka import KafkaConsumer, TopicPartition

    from fleetpulse.config import kafka_python_security
    from fleetpulse.contract import ContractError, Topics, decode

    topic = Topics(prefix=kafka.topic_prefix).alerts
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, **kafka_python_security(kafka)
    )
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        alerts: list[Alert] = []
        while any(consumer.position(tp) < ends[tp] for tp in parts):
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    try:
                        alerts.append(decode(record.value, Alert))
                    except ContractError:
                        continue
        return alerts
    finally:
        consumer.close()


def _print_scorecard(
    console: Console, rows: list[ComponentScore], stats: PublishStats, elapsed_s: float, tickets: int
) -> None:
    from rich.table import Table

    table = Table(title="Tickets raised vs ground truth (simulated fleet)")
    for col in SCORECARD_COLUMNS:
        table.add_column(col, justify="right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.0f}%"

    for row in rows:
        table.add_row(
            row.component.value,
            str(row.failures),
            str(row.caught),
            pct(row.recall),
            str(row.predictable_failures),
            str(row.caught_predictable),
            pct(row.recall_predictable),
            str(row.alerted_components),
            str(row.false_alarms),
            pct(row.precision),
            "-" if row.median_lead_days is None else f"{row.median_lead_days:.1f}",
        )
    console.print(table)
    for column, meaning in SCORECARD_COLUMNS.items():
        console.print(f"  [bold]{column}[/bold]: {meaning}")
    console.print(
        f"{stats.reports:,} reports from {stats.inventory:,} devices published and processed in {elapsed_s:.1f}s "
        f"({stats.reports / max(elapsed_s, 1e-9):,.0f} reports/s end to end); {tickets} open tickets."
    )


def demo(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(min=10, help="simulated devices")] = 1000,
    days: Annotated[int, typer.Option(min=7, help="simulated days of daily reports")] = 90,
    seed: Annotated[int, typer.Option(help="simulator seed (same seed, same fleet)")] = 7,
    failure_scale: Annotated[
        float, typer.Option(help="multiply failure hazards so a small fleet has enough failures to judge")
    ] = 8.0,
    serve: Annotated[
        float, typer.Option(help="seconds to serve the fleet-manager page at the end (0: skip; -1: until Ctrl-C)")
    ] = -1,
    port: Annotated[int, typer.Option(help="port of the fleet-manager page")] = 8080,
    keep_stack: Annotated[bool, typer.Option(help="leave Kafka and the TSDB running afterwards")] = False,
    keep_runs: Annotated[
        int, typer.Option(min=1, help="run folders kept under .local/demo (this one included); older ones are removed")
    ] = 5,
) -> None:
    """Run a simulated fleet through the real pipeline and compare tickets with ground truth."""
    # the demo talks through its own console: keep library chatter (alembic's plugin set-up
    # at import, kafka clients' retries) out, and do it before the imports below log anything
    logs.configure("WARNING")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # kafka-python's assignor/event-loop warnings
    from fleetpulse.agents.kafka_publish import publish_fleet
    from fleetpulse.agents.simulator import FleetSimulator
    from fleetpulse.alerts.api.auth import hash_secret
    from fleetpulse.alerts.consumer import consume_until_idle
    from fleetpulse.alerts.settings import ApiSettings, ApiUser, SessionSettings
    from fleetpulse.alerts.store.repository import TicketStore
    from fleetpulse.scorecard import Failure, first_raises, score
    from fleetpulse.streams.app import group_id
    from fleetpulse.streams.kafka_admin import create_configured_topics

    console = _console()
    base = settings_from(ctx)
    run = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    run_dir = (DEMO_DIR / f"run-{run}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    kept, removed = _prune_runs(DEMO_DIR, keep_runs)
    password = secrets.token_urlsafe(12)
    settings = base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"topic_prefix": f"demo-{run}."}),
            "alerts": base.alerts.model_copy(
                update={
                    "store_url": f"sqlite:///{run_dir / 'tickets.db'}",
                    "api": ApiSettings(
                        host="127.0.0.1",
                        port=port,
                        users=[ApiUser(name="manager", role="fleet_manager", password_hash=hash_secret(password))],
                        # plain http on 127.0.0.1; one process, so a key of its own lives as long as the page
                        session=SessionSettings(cookie_secure=False, secret_key=SecretStr(secrets.token_urlsafe(48))),
                    ),
                }
            ),
        }
    )
    console.rule(f"fleetpulse demo — {devices:,} devices x {days} days, seed {seed}; files in {run_dir}")
    console.print(
        f"run folders in {DEMO_DIR}: {', '.join(p.name for p in kept)}"
        + (f" ({len(removed)} older removed; --keep-runs {keep_runs})" if removed else "")
    )
    _served_models(console, settings)
    _stack("start", "kafka", "tsdb")
    try:
        create_configured_topics(settings.kafka, settings.streams)
        sim = FleetSimulator(
            devices=devices,
            seed=seed,
            start=datetime.now(UTC).replace(microsecond=0) - timedelta(days=days),
            days=days,
            failure_scale=failure_scale,
        )
        truth = sim.ground_truth()
        console.print(f"ground truth: {len(truth)} component failures in the window")
        _wait_for_group_coordinator(settings.kafka, group_id(settings))
        worker = _worker(settings, run_dir).start()
        try:
            started = time.monotonic()
            stats = publish_fleet(sim, settings.kafka, settings.streams, progress=True)
            if stats.errors:
                console.print(f"[red]{len(stats.errors)} publish errors[/red], first: {stats.errors[0]}")
            _wait_for_worker(settings, worker, stats.reports, timeout_s=1800)
            elapsed = time.monotonic() - started
        finally:
            worker.stop(timeout=60)
        consumed = consume_until_idle(settings.alerts, settings.kafka, settings.streams, idle_seconds=3.0)
        console.print(f"ticket consumer: {consumed}")
        alerts = _read_alerts(settings.kafka)
        failures = [Failure(t.device_id, t.component, t.fails_at, t.predictable) for t in truth]
        store = TicketStore.open(settings.alerts.store_url)
        try:
            tickets = len(store.open_tickets())
            _print_scorecard(console, score(failures, first_raises(alerts)), stats, elapsed, tickets)
            if serve != 0:
                _serve_page(console, settings, store, password, serve)
        finally:
            store.close()
    finally:
        if not keep_stack:
            _stack("stop", "kafka", "tsdb")
    console.rule("demo finished")


RUN_NAME = re.compile(r"run-\d{8}T\d{6}")


def _prune_runs(demo_dir: Path, keep: int) -> tuple[list[Path], list[Path]]:
    """Keep the newest ``keep`` run folders (names sort by time), remove older ones; (kept, removed).

    Only folders named like a run are touched, so nothing else a user put there is removed.
    """
    runs = sorted(p for p in demo_dir.glob("run-*") if p.is_dir() and RUN_NAME.fullmatch(p.name))
    removed = runs[: max(0, len(runs) - keep)]
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return runs[len(removed) :], removed


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_page(console: Console, settings: ServerSettings, store: TicketStore, password: str, seconds: float) -> None:
    import uvicorn

    from fleetpulse.alerts.api.app import create_app

    api = settings.alerts.api
    from fleetpulse.serving import serving_policy

    web = create_app(settings.alerts, store=store)
    web.state.serving_policy = serving_policy(settings)  # the device page draws the thresholds the worker served
    server = uvicorn.Server(uvicorn.Config(web, host=api.host, port=api.port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{api.host}:{api.port}/"
    console.print(
        f"fleet-manager page: [bold]{url}[/bold] — log in on its form as [bold]manager[/bold] with password "
        f"[bold]{password}[/bold] (a local account made for this run only; production logs in through single sign-on)"
    )
    try:
        if seconds < 0:
            console.print("press Ctrl-C to stop the demo")
            while thread.is_alive():
                thread.join(0.5)
        else:
            thread.join(seconds)
    except KeyboardInterrupt:
        pass
    finally:
        server.should_exit = True
        thread.join(10)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
