"""Command-line entry points of this component, registered on the ``fleetpulse`` app.

``fleetpulse tickets consume|list|transition|export|deliver|hash-secret``, ``fleetpulse api``,
``fleetpulse db upgrade``, ``fleetpulse audit verify|export|prune``, ``fleetpulse forecast``. Heavy imports stay inside the commands.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fleetpulse.cliutil import settings_from
from fleetpulse.compat import UTC

if TYPE_CHECKING:
    from fleetpulse.alerts.consumer import ConsumerStats
    from fleetpulse.alerts.settings import AlertSettings


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``fleetpulse``."""
    from fleetpulse.alerts import audit_cli, forecast_cli

    audit_cli.register(app)
    forecast_cli.register(app)
    tickets = typer.Typer(help="Replacement and repair tickets.", no_args_is_help=True)
    db = typer.Typer(help="Ticket store schema.", no_args_is_help=True)
    app.add_typer(tickets, name="tickets")
    app.add_typer(db, name="db")

    @db.command("upgrade")
    def db_upgrade(ctx: typer.Context, revision: str = "head") -> None:
        """Apply the alembic migrations to the configured store (``alerts.store_url``)."""
        from fleetpulse.alerts.store import make_engine, upgrade

        settings = settings_from(ctx)
        engine = make_engine(settings.alerts.store_url)
        upgrade(engine, revision)
        engine.dispose()
        typer.echo(f"ticket store at {engine.url.render_as_string(hide_password=True)} is at {revision}")

    @tickets.command("consume")
    def consume(
        ctx: typer.Context,
        until_idle: Annotated[
            float | None, typer.Option(help="stop after this many idle seconds once caught up (default: run forever)")
        ] = None,
    ) -> None:
        """Turn alerts from Kafka into tickets, keep inventory and history, deliver the outbox."""
        from fleetpulse.alerts.consumer import ConsumerStats, consume_until_idle, run_consumer

        settings = settings_from(ctx)
        stats = ConsumerStats()
        with contextlib.ExitStack() as stack:
            if settings.alerts.consumer.metrics_port is not None:
                _serve_store_metrics(stack, settings.alerts, stats)
            if until_idle is not None:
                consume_until_idle(
                    settings.alerts,
                    settings.kafka,
                    settings.streams,
                    idle_seconds=until_idle,
                    max_seconds=86_400,
                    stats=stats,
                )
            else:
                stop = threading.Event()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, lambda *_: stop.set())
                run_consumer(settings.alerts, settings.kafka, settings.streams, stop, stats=stats)
        typer.echo(
            f"records={stats.records} results={stats.results} dead_letters={stats.dead_letters} "
            f"delivered={stats.delivered} delivery_failures={stats.delivery_failures}"
        )

    @tickets.command("deliver")
    def deliver(ctx: typer.Context) -> None:
        """Deliver the due outbox rows once (connectors and labels topic) and print the result."""
        from fleetpulse.alerts.connectors import build
        from fleetpulse.alerts.labels import LabelPublisher
        from fleetpulse.alerts.outbox import deliver_due
        from fleetpulse.alerts.store.repository import TicketStore

        settings = settings_from(ctx)
        store = TicketStore.open(settings.alerts.store_url)
        labels = LabelPublisher(settings.kafka)
        try:
            connectors = {c.name: build(c) for c in settings.alerts.connectors}
            report = deliver_due(store, connectors, labels, settings.alerts.outbox, datetime.now(UTC))
        finally:
            labels.close()
            store.close()
        typer.echo(
            f"delivered={report.delivered} failed={report.failed} skipped={report.skipped} "
            f"needs_attention={report.needs_attention}"
        )
        for error in report.errors:
            typer.echo(f"  {error}", err=True)

    @tickets.command("list")
    def list_tickets(
        ctx: typer.Context,
        state: Annotated[list[str] | None, typer.Option(help="open/approved/ordered/done/dismissed")] = None,
        site: str | None = None,
        department: str | None = None,
        component: str | None = None,
        model: str | None = None,
        limit: int = 50,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """The queue, most urgent first."""
        from rich.console import Console
        from rich.table import Table

        store, flt = _store_and_filter(ctx, state, site, department, component, model)
        tickets = store.list_tickets(flt, limit=limit)
        store.close()
        if as_json:
            for ticket in tickets:
                typer.echo(ticket.model_dump_json())
            return
        table = Table("id", "urgency", "device", "component", "risk", "days", "state", "site", "action")
        for t in tickets:
            days = "" if t.days_to_failure is None else f"{t.days_to_failure:.0f}"
            table.add_row(
                str(t.id),
                t.urgency,
                t.device_id,
                t.component.value,
                f"{t.risk:.0%}",
                days,
                t.state.value,
                t.site or "",
                t.recommended_action[:60],
            )
        Console().print(table)

    @tickets.command("transition")
    def transition(
        ctx: typer.Context,
        ticket_ids: Annotated[list[int], typer.Argument(help="ticket ids")],
        to: Annotated[str, typer.Option(help="approved/ordered/done/dismissed")],
        actor: Annotated[str, typer.Option(help="who does this (recorded in the audit trail)")],
        note: str = "",
        outcome: Annotated[str | None, typer.Option(help="confirmed_fault/no_fault_found/false_alarm")] = None,
    ) -> None:
        """Move tickets through their lifecycle (all or none)."""
        from fleetpulse.alerts.store.repository import TicketStore
        from fleetpulse.alerts.tickets import TicketService, TransitionError
        from fleetpulse.contract.v1 import TicketState

        settings = settings_from(ctx)
        store = TicketStore.open(settings.alerts.store_url)
        try:
            target = TicketState(to)
            done = TicketService(store, settings.alerts).transition(
                ticket_ids,
                target,
                actor,
                datetime.now(UTC),
                note,
                outcome,  # type: ignore[arg-type]
            )
        except (TransitionError, ValueError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            store.close()
        for ticket in done:
            typer.echo(f"ticket {ticket.id}: {ticket.state.value}")

    @tickets.command("export")
    def export(
        ctx: typer.Context,
        output: Annotated[Path | None, typer.Option("--output", "-o", help="file (default: stdout)")] = None,
        state: Annotated[list[str] | None, typer.Option()] = None,
        site: str | None = None,
        department: str | None = None,
        component: str | None = None,
        model: str | None = None,
    ) -> None:
        """The filtered queue as CSV (same columns as the page's export), written as it is read."""
        from fleetpulse.alerts.api.app import write_tickets_csv

        store, flt = _store_and_filter(ctx, state, site, department, component, model)
        try:
            with (
                contextlib.nullcontext(sys.stdout)
                if output is None
                else output.open("w", encoding="utf-8", newline="") as out,
                store.stream_tickets(flt) as tickets,
            ):
                write_tickets_csv(tickets, out)
        finally:
            store.close()
        if output is not None:
            typer.echo(f"wrote {output}")

    @tickets.command("hash-secret")
    def hash_secret_cmd(
        secret: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    ) -> None:
        """Hash a password for ``[[alerts.api.users]] password_hash`` (never store the password itself)."""
        from fleetpulse.alerts.api.auth import hash_secret

        typer.echo(hash_secret(secret))

    @app.command("api")
    def api(
        ctx: typer.Context,
        host: Annotated[str | None, typer.Option(help="default: alerts.api.host")] = None,
        port: Annotated[int | None, typer.Option(help="default: alerts.api.port")] = None,
    ) -> None:
        """Serve the ticket API and the fleet-manager page (uvicorn)."""
        import uvicorn

        from fleetpulse.alerts.api import create_app

        settings = settings_from(ctx)
        api = settings.alerts.api
        if not api.users and not api.tokens and api.oidc is None:
            typer.echo("warning: no single sign-on, users or tokens configured; nobody can log in", err=True)
        from fleetpulse.serving import serving_policy

        web = create_app(settings.alerts)
        web.state.serving_policy = serving_policy(settings)  # the device page draws the thresholds served
        uvicorn.run(
            web,
            host=host or settings.alerts.api.host,
            port=port or settings.alerts.api.port,
            log_config=None,
            proxy_headers=False,
        )


def _store_and_filter(
    ctx: typer.Context,
    state: list[str] | None,
    site: str | None,
    department: str | None,
    component: str | None,
    model: str | None,
) -> tuple[Any, Any]:
    from fleetpulse.alerts.store.repository import TicketFilter, TicketStore
    from fleetpulse.contract.v1 import Component, TicketState

    settings = settings_from(ctx)
    try:
        flt = TicketFilter(
            states=tuple(TicketState(s) for s in state or ()),
            site=site,
            department=department,
            component=Component(component) if component else None,
            device_model=model,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return TicketStore.open(settings.alerts.store_url), flt


def _serve_store_metrics(stack: contextlib.ExitStack, settings: AlertSettings, stats: ConsumerStats) -> None:
    """Serve the outbox and coverage gauges and the consumer's counters on ``[alerts.consumer]
    metrics_host:metrics_port`` until ``stack`` closes."""
    from prometheus_client import start_http_server

    from fleetpulse.alerts.metrics import store_registry
    from fleetpulse.alerts.store.repository import TicketStore

    port = settings.consumer.metrics_port
    assert port is not None  # the caller checked
    store = stack.enter_context(contextlib.closing(TicketStore.open(settings.store_url)))
    server, thread = start_http_server(
        port,
        settings.consumer.metrics_host,
        registry=store_registry(store, settings.consumer.silent_after, stats=stats),
    )
    stack.callback(thread.join, 5)
    stack.callback(server.shutdown)
