"""``fleetpulse audit verify|export|prune``: the audit trail for operators and auditors."""

from __future__ import annotations

import sys
from datetime import datetime
from enum import Enum
from typing import Annotated

import typer

from fleetpulse.cliutil import settings_from
from fleetpulse.compat import UTC


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    csv = "csv"


def _utc(value: datetime | None) -> datetime | None:
    """Command-line times without a zone are UTC (the trail's clock)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _anchor(value: str | None) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, sep, digest = value.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise typer.BadParameter("expected SEQ:SHA256 as printed by `fleetpulse audit verify`")
    return int(seq), digest.lower()


def register(app: typer.Typer) -> None:
    audit = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
    app.add_typer(audit, name="audit")

    @audit.command("verify")
    def verify(
        ctx: typer.Context,
        anchor: Annotated[
            str | None, typer.Option(help="SEQ:SHA256 of a head kept outside the database; must still match")
        ] = None,
    ) -> None:
        """Walk the whole hash chain; exit 1 naming the first record that was altered, removed or inserted."""
        from fleetpulse.alerts.store.repository import TicketStore

        expected = _anchor(anchor)
        store = TicketStore.open(settings_from(ctx).alerts.store_url)
        try:
            result = store.audit.verify(anchor=expected)
        finally:
            store.close()
        if not result.ok:
            typer.echo(f"audit trail BROKEN at record {result.broken_seq}: {result.reason}", err=True)
            raise typer.Exit(1)
        typer.echo(f"audit trail intact: {result.checked} records from {result.first_seq or '-'}")
        typer.echo(f"head {result.head_seq}:{result.head_hash}")

    @audit.command("export")
    def export(
        ctx: typer.Context,
        since: Annotated[datetime | None, typer.Option(help="from this UTC time (inclusive)")] = None,
        until: Annotated[datetime | None, typer.Option(help="up to this UTC time (exclusive)")] = None,
        fmt: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.jsonl,
    ) -> None:
        """Write the records in chain order to stdout (JSON lines or CSV) for an auditor."""
        from fleetpulse.alerts.store.repository import TicketStore

        store = TicketStore.open(settings_from(ctx).alerts.store_url)
        try:
            count = store.audit.export(sys.stdout, fmt.value, _utc(since), _utc(until))  # type: ignore[arg-type]
        finally:
            store.close()
        typer.echo(f"{count} records exported", err=True)

    @audit.command("prune")
    def prune(ctx: typer.Context) -> None:
        """Remove records older than ``[alerts.consumer] audit_retention``, leaving a chained checkpoint."""
        from fleetpulse.alerts.store.repository import TicketStore

        settings = settings_from(ctx)
        store = TicketStore.open(settings.alerts.store_url)
        try:
            removed = store.audit.prune(datetime.now(UTC) - settings.alerts.consumer.audit_retention)
        finally:
            store.close()
        typer.echo(f"{removed} audit records older than the retention removed")
