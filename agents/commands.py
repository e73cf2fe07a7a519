"""The typer app behind ``fleetpulse-agent`` (see :mod:`fleetpulse.agents.cli` for the entry point).

Configuration: ``--config PATH`` or ``$FLEETPULSE_AGENT_CONFIG`` (TOML), overridden by
``FLEETPULSE_AGENT_*`` environment variables. Heavy modules are imported inside commands.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from fleetpulse import logs
from fleetpulse.agents.cli import config_path, run_service
from fleetpulse.agents.settings import AgentSettings, load_agent_settings
from fleetpulse.config import describe_config_error

app = typer.Typer(help="fleetpulse endpoint agent", no_args_is_help=True, pretty_exceptions_enable=False)
config_app = typer.Typer(help="inspect the configuration", no_args_is_help=True)
app.add_typer(config_app, name="config")


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="agent TOML file (default: $FLEETPULSE_AGENT_CONFIG)"),
    ] = None,
) -> None:
    ctx.obj = config_path(config)


def _settings(ctx: typer.Context) -> AgentSettings:
    from fleetpulse.agents.trust import running_privileged

    path = ctx.find_root().obj
    try:
        settings = load_agent_settings(path, strict=running_privileged())
    except (FileNotFoundError, ValueError) as exc:
        typer.echo(f"error: invalid configuration: {describe_config_error(exc)}", err=True)
        raise typer.Exit(2) from None
    logs.configure(settings.log_level)
    return settings


@app.command()
def version() -> None:
    """Print the agent version."""
    from fleetpulse import __version__

    typer.echo(__version__)


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective configuration as JSON, secrets masked."""
    from fleetpulse.config import masked_dump

    typer.echo(json.dumps(masked_dump(_settings(ctx)), indent=2))


@app.command()
def identity(ctx: typer.Context) -> None:
    """Print this machine's entry for IT's asset register (device id next to hostname and serial).

    Run by IT on the machine; the entry is printed, never sent. It includes the fingerprint of the
    device's report key (created here if missing) for ``fleetpulse devices re-enrol --fingerprint``.
    """
    from fleetpulse.agents.identity import IdentityError, build_identity, load_or_create_device_key, mapping_entry
    from fleetpulse.agents.trust import running_privileged
    from fleetpulse.contract.auth import key_fingerprint

    settings = _settings(ctx)
    entry = mapping_entry(build_identity(settings.identity), settings.identity)
    try:
        key = load_or_create_device_key(settings.spool_dir, strict=running_privileged())
        entry["key_fingerprint"] = key_fingerprint(key)
    except (OSError, IdentityError) as exc:
        typer.echo(f"error: device key: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(entry))


@app.command()
def check(ctx: typer.Context) -> None:
    """Check this machine's way to Kafka, as the service would deliver: the TLS files, one TLS handshake, then
    the device's enrolment delivered (the login and Write on the health topic; the stream worker takes it as
    the repeat each session starts with). One line; exit 1 with the reason when something refuses it."""
    import logging

    from fleetpulse import __version__
    from fleetpulse.agents.delivery import Delivery
    from fleetpulse.agents.identity import IdentityError, RecordSigner, build_identity, load_or_create_device_key
    from fleetpulse.agents.trust import running_privileged
    from fleetpulse.contract import Topics

    settings = _settings(ctx)
    kafka = settings.kafka
    ident = build_identity(settings.identity)
    delivery = Delivery(kafka, settings.delivery, client_id=f"fleetpulse-agent-{ident.device_id[:16]}")
    if (refusal := delivery.tls_refusal()) is not None:  # at once: the client would wait out its bootstrap
        typer.echo(f"error: {refusal}", err=True)
        raise typer.Exit(1)
    try:
        key = load_or_create_device_key(settings.spool_dir, strict=running_privileged())
    except (OSError, IdentityError) as exc:
        typer.echo(f"error: device key: {exc}", err=True)
        raise typer.Exit(1) from None
    signer = RecordSigner(ident.device_id, key, __version__)
    logging.getLogger("kafka").propagate = False  # its retries are the service's log; the check prints one line
    result = delivery.check(signer)
    if result.error is not None:
        reason = f"{result.rejected} ({result.error})" if result.rejected else result.error
        typer.echo(f"error: {kafka.bootstrap_servers}: {reason}", err=True)
        raise typer.Exit(1)
    topic = Topics(prefix=kafka.topic_prefix).health
    encrypted = kafka.security_protocol in ("SSL", "SASL_SSL")
    plain = "" if encrypted else f" (not encrypted: kafka.security_protocol is {kafka.security_protocol})"
    typer.echo(f"ok: {kafka.bootstrap_servers} acknowledged the enrolment of {ident.device_id} on {topic}{plain}")


@app.command()
def once(ctx: typer.Context) -> None:
    """Collect one report now (SMART included) and print it as JSON; nothing is sent or spooled."""
    from datetime import datetime

    from fleetpulse.agents.identity import build_identity, current_platform
    from fleetpulse.agents.runner import CollectorRunner, build_collectors, build_report, detect_kind
    from fleetpulse.compat import UTC

    settings = _settings(ctx)
    ident = build_identity(settings.identity)
    with tempfile.TemporaryDirectory(prefix="fleetpulse-once-") as state:
        runner = CollectorRunner(build_collectors(settings, ident, Path(state)))
        collected_at = datetime.now(UTC)
        section = runner.collect()
    report = build_report(0, ident.device_id, detect_kind(settings), current_platform(), collected_at, section)
    typer.echo(report.model_dump_json(indent=2, exclude_none=True))


@app.command("smart-snapshot")
def smart_snapshot(
    out: Annotated[Path, typer.Option(help="the folder the agent reads (its smart_snapshot_dir)")] = Path(
        "/run/fleetpulse-smart"
    ),
    smartctl: Annotated[
        str, typer.Option(help="absolute path, or a bare name looked up in the system's tool folders")
    ] = "smartctl",
    timeout_s: Annotated[float, typer.Option(min=1.0, max=600.0, help="per smartctl run: half of it")] = 120.0,
    max_disks: Annotated[int, typer.Option(min=1, max=32)] = 16,
) -> None:
    """Run smartctl for every disk and write the snapshot the agent reads: what fleetpulse-smart.service runs.

    This process, not the agent, holds the capabilities smartctl needs (CAP_SYS_RAWIO, CAP_SYS_ADMIN); it
    reads no configuration and no secret and needs no network.
    """
    from fleetpulse.agents.collectors.smart_snapshot import SnapshotError, take_snapshot
    from fleetpulse.agents.trust import UntrustedPathError

    logs.configure("INFO")
    try:
        snapshot = take_snapshot(smartctl, out, timeout_s, max_disks)
    except (OSError, SnapshotError, UntrustedPathError) as exc:
        typer.echo(f"error: SMART snapshot in {out}: {exc}", err=True)
        raise typer.Exit(1) from None
    summary = {
        "taken_at": snapshot.taken_at.isoformat(),
        "disks": [d.name for d in snapshot.disks],
        "failed": [d.name for d in snapshot.disks if d.error is not None],
        "errors": snapshot.errors,
    }
    typer.echo(json.dumps(summary))


@app.command()
def run(
    ctx: typer.Context,
    max_reports: Annotated[int | None, typer.Option(help="stop after this many reports (tests, benchmarks)")] = None,
) -> None:
    """Run the agent: collect every interval, spool on disk, deliver to Kafka."""
    code = run_service(ctx.find_root().obj, max_reports)
    if code:
        raise typer.Exit(code)
