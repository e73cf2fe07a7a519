"""The ``fleetpulse`` entry point: a cluster the operator must fix is one ``error:`` line, exit 1, whichever command."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fleetpulse.cli import run
from fleetpulse.streams.kafka_admin import KafkaConnectError, TopicCreationError
from tests.harness import free_port

MDM_EXPORT = Path(__file__).resolve().parents[1] / "fixtures" / "mdm" / "devices.csv"
MISSING = "topic(s) fleetpulse.scores.v1 do not exist and this Kafka principal may not create them"
UNTRUSTED = (
    "cannot connect to Kafka at kafka:9093 (SASL_SSL): the broker's TLS certificate is not trusted (self-signed "
    "certificate in certificate chain): set kafka.ssl_cafile to the cluster's CA certificate"
)


class _NoLabels:
    def __init__(self, *_: object) -> None: ...

    def close(self) -> None: ...


@pytest.mark.parametrize(
    ("error", "message"), [(TopicCreationError, MISSING), (KafkaConnectError, UNTRUSTED)], ids=["missing", "tls"]
)
@pytest.mark.parametrize(
    "argv",
    [
        ["worker", "--store", "memory"],
        ["tickets", "consume", "--until-idle", "1"],
        ["mdm", "ingest", str(MDM_EXPORT), "--format", "csv"],
        ["simulate", "--devices", "5", "--days", "2"],
    ],
    ids=["worker", "ticket-consumer", "mdm-bridge", "simulate"],
)
def test_a_missing_topic_or_a_refused_connection_stops_any_service_with_one_line_not_a_traceback(
    error: type[Exception],
    message: str,
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Under production ACLs no service may create the pipeline's topics: the first one missing must reach the
    operator as the sentence that names it, from the worker and the ticket consumer as from the MDM bridge. So
    must the reason Kafka turns the service away at start (an untrusted broker certificate, a refused client one)."""

    def refused(*_: object) -> None:
        raise error(message)

    monkeypatch.setattr("fleetpulse.streams.kafka_admin.create_configured_topics", refused)
    monkeypatch.setattr("fleetpulse.alerts.consumer.LabelPublisher", _NoLabels)  # no broker in unit tests
    monkeypatch.setenv("FLEETPULSE_ALERTS__STORE_URL", f"sqlite:///{tmp_path}/tickets.db")
    monkeypatch.setenv("FLEETPULSE_STREAMS__DATA_DIR", str(tmp_path / "worker"))
    monkeypatch.setenv("FLEETPULSE_MDM__SECRET", "cli-secret")
    monkeypatch.setenv("FLEETPULSE_MDM__STATE_PATH", str(tmp_path / "state.sqlite"))
    monkeypatch.setattr(sys, "argv", ["fleetpulse", *argv])
    with pytest.raises(SystemExit) as ended:
        run()
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert f"error: {message}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv", [["db", "upgrade"], ["tickets", "list"], ["audit", "verify"]])
@pytest.mark.parametrize("store", ["postgres-down", "sqlite-unopenable"])
def test_a_ticket_store_that_cannot_be_used_is_one_line_without_its_password(
    argv: list[str], store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that is down, refuses the login or cannot be opened is the operator's to fix: one sentence
    naming the setting and the driver's reason, not a traceback carrying SQL and its parameters."""
    url = {
        "postgres-down": f"postgresql+psycopg://fleetpulse:S3cret-pw@127.0.0.1:{free_port()}/tickets",
        "sqlite-unopenable": f"sqlite:///{tmp_path}",  # a directory
    }[store]
    monkeypatch.setenv("FLEETPULSE_ALERTS__STORE_URL", url)
    monkeypatch.setattr(sys, "argv", ["fleetpulse", *argv])
    with pytest.raises(SystemExit) as ended:
        run()
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert "error: the ticket store ([alerts] store_url) cannot be used: " in err
    assert {"postgres-down": "Connection refused", "sqlite-unopenable": "unable to open database file"}[store] in err
    assert "Traceback" not in err
    assert "S3cret-pw" not in err
