"""IT's device actions: ``fleetpulse devices re-enrol`` after a reinstall.

A reinstalled PC creates a new report key; the worker refuses its enrolment because the device is
pinned to the old key (that refusal is what stops another PC from taking the device over). IT
confirms the reinstall and publishes a :class:`~fleetpulse.contract.DeviceControl` record on the
control topic, which only IT's Kafka principal may write (deploy/k8s/base/kafka-users.yaml,
deploy/compose/kafka/init.sh). The worker then forgets the pinned key and accepts the device's
next enrolment, or only the key whose fingerprint IT gives.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Annotated

import typer
from pydantic import ValidationError

from fleetpulse.cliutil import settings_from
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings
from fleetpulse.contract import DeviceControl, Topics, encode, report_key

devices_app = typer.Typer(help="Device enrolment: IT's actions on the control topic.", no_args_is_help=True)


class ControlPublishError(RuntimeError):
    pass


def publish_control(kafka: KafkaSettings, control: DeviceControl, timeout_s: float = 30.0) -> None:
    """Send ``control`` and wait until every in-sync replica has it."""
    from kafka.errors import KafkaError

    from fleetpulse.agents.kafka_publish import make_producer
    from fleetpulse.streams.kafka_admin import tls_refusal

    refusal = tls_refusal(kafka)  # one handshake: kafka-python would spend its bootstrap timeout before failing
    if refusal is not None:
        raise ControlPublishError(refusal)
    try:
        producer = make_producer(kafka)
        try:
            future = producer.send(
                Topics(prefix=kafka.topic_prefix).control, key=report_key(control.device_id), value=encode(control)
            )
            future.get(timeout=timeout_s)
        finally:
            producer.close(timeout=5)
    except KafkaError as exc:  # kafka-python says "Unable to bootstrap" where TLS turned it away: find out
        raise ControlPublishError(tls_refusal(kafka) or f"{type(exc).__name__}: {exc}") from None


@devices_app.command("re-enrol")
def re_enrol(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(help="the device's pseudonymous id")],
    fingerprint: Annotated[
        str | None,
        typer.Option(help="accept only this key: `key_fingerprint` from `fleetpulse-agent identity` on the device"),
    ] = None,
    issued_by: Annotated[str | None, typer.Option(help="who authorised it (default: the current user)")] = None,
) -> None:
    """Let a reinstalled device enrol its new key; its old key stops authenticating at once.

    Without --fingerprint the device's next enrolment wins: run the agent on the device right after.
    """
    settings = settings_from(ctx)
    try:
        control = DeviceControl(
            device_id=device_id,
            action="re_enrol",
            fingerprint=fingerprint.lower() if fingerprint else None,
            issued_by=(issued_by or getpass.getuser())[:128],
            issued_at=datetime.now(UTC),
        )
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        typer.echo(f"error: {fields}", err=True)
        raise typer.Exit(2) from None
    try:
        publish_control(settings.kafka, control)
    except ControlPublishError as exc:
        typer.echo(f"error: re-enrolment of {device_id} not published: {exc}", err=True)
        raise typer.Exit(1) from None
    pinned = f"only the key {control.fingerprint[:16]}…" if control.fingerprint else "its next enrolment"
    typer.echo(f"re-enrolment of {device_id} published: the worker forgets its key and accepts {pinned}")
