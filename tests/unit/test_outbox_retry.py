"""The outbox on the project's retry policy: finite delays after any number of failures,
permanent failures parked as needing attention instead of retried at full rate."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from fleetpulse.alerts.connectors.base import DeliveryError, Notification, PermanentDeliveryError
from fleetpulse.alerts.outbox import deliver_due, next_attempt, retry_policy
from fleetpulse.alerts.settings import OutboxSettings
from fleetpulse.alerts.store.models import OutboxRow
from fleetpulse.alerts.store.repository import TicketStore
from tests.alerts_support import NOW, make_alert, service


class Failing:
    """A connector whose target keeps failing with ``error``; counts the attempts it saw."""

    def __init__(self, name: str, error: DeliveryError) -> None:
        self.name = name
        self.error = error
        self.calls = 0

    def deliver(self, notification: Notification) -> str | None:
        self.calls += 1
        raise self.error


def _store(tmp_path: Path, devices: int = 1) -> TicketStore:
    store = TicketStore.open(f"sqlite:///{tmp_path}/t.db")
    svc = service(store, connectors=[{"kind": "webhook", "name": "itsm", "url": "https://itsm.example.org/"}])
    for n in range(devices):
        svc.apply_alert(make_alert(f"pc-{n}"), NOW)
    return store


def test_ten_thousand_failures_keep_a_finite_capped_delay(tmp_path: Path) -> None:
    """An ITSM down for good: 10,000 consecutive failures on the outbox's own schedule, every delay
    within the cap (no overflow); then real passes over a stored row already failed 10,000 times."""
    settings = OutboxSettings(backoff_base=timedelta(seconds=5), backoff_max=timedelta(minutes=15))
    now = NOW
    for failures in range(1, 10_001):
        retry_at = next_attempt(settings, failures, now)
        assert timedelta(0) < retry_at - now <= settings.backoff_max
        now = retry_at
    store = _store(tmp_path)
    itsm = Failing("itsm", DeliveryError("ConnectError: connection refused"))
    try:
        with store.session() as session:
            session.execute(update(OutboxRow).values(attempts=10_000))
        for _ in range(100):  # each pass: one attempt, a capped delay, the row kept
            report = deliver_due(store, {"itsm": itsm}, None, settings, now)
            assert report.failed == 1
            (row,) = store.outbox()
            assert settings.backoff_max / 2 <= row.next_attempt_at - now <= settings.backoff_max
            now = row.next_attempt_at
    finally:
        store.close()
    assert row.attempts == 10_100
    assert row.delivered_at is None
    assert not row.needs_attention
    assert itsm.calls == 100


def test_the_delay_stays_finite_far_beyond_any_real_outage() -> None:
    settings = OutboxSettings()
    for failures in (1, 64, 1_024, 10**6, 10**12):
        later = next_attempt(settings, failures, NOW, rand=lambda: 1.0)
        assert later - NOW <= settings.backoff_max
    assert retry_policy(settings).ceiling(1) == settings.backoff_base.total_seconds()


def test_backoff_base_above_max_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="backoff_base must not exceed"):
        OutboxSettings(backoff_base=timedelta(hours=1), backoff_max=timedelta(minutes=1))


def test_a_rejected_login_parks_the_target_as_needing_attention(tmp_path: Path) -> None:
    """401 from the ITSM: one attempt, every row of the target waits ``attention_recheck``, not the backoff."""
    settings = OutboxSettings()
    store = _store(tmp_path, devices=3)
    itsm = Failing("itsm", PermanentDeliveryError("HTTP 401: User Not Authenticated", whole_target=True))
    try:
        report = deliver_due(store, {"itsm": itsm}, None, settings, NOW)
        assert (report.needs_attention, report.failed, report.skipped) == (1, 0, 2)
        rows = store.outbox()
        assert {r.next_attempt_at for r in rows} == {NOW + settings.attention_recheck}
        (failed,) = [r for r in rows if r.attempts]
        assert failed.needs_attention
        assert failed.last_error == "needs attention: HTTP 401: User Not Authenticated"
        # a minute later, an hour later: nothing is retried at the transient rate
        for later in (timedelta(minutes=1), timedelta(hours=1), settings.attention_recheck - timedelta(seconds=1)):
            deliver_due(store, {"itsm": itsm}, None, settings, NOW + later)
        assert itsm.calls == 1
        # the admin fixed the password and asks for a retry (POST /api/v1/outbox/retry)
        assert store.retry_now(NOW + timedelta(hours=2)) == 3
        deliver_due(store, {"itsm": itsm}, None, settings, NOW + timedelta(hours=2))
        assert itsm.calls == 2
    finally:
        store.close()


def test_a_rejected_message_does_not_hold_back_the_others(tmp_path: Path) -> None:
    """400 for one payload (e.g. a field the ITSM refuses): that row needs attention, the rest are still tried."""
    settings = OutboxSettings()
    store = _store(tmp_path, devices=3)
    itsm = Failing("itsm", PermanentDeliveryError("HTTP 400: invalid category", whole_target=False))
    try:
        report = deliver_due(store, {"itsm": itsm}, None, settings, NOW)
        rows = store.outbox()
    finally:
        store.close()
    assert report.needs_attention == 3
    assert itsm.calls == 3
    assert all(r.needs_attention and r.next_attempt_at == NOW + settings.attention_recheck for r in rows)


class ChokesOnOne:
    """A connector with a bug one row triggers (an ITSM answer of an unexpected shape, a header the mail library
    refuses): it raises a plain exception for ``bad_device``'s ticket and delivers the others."""

    def __init__(self, bad_device: str) -> None:
        self.name = "itsm"
        self.bad_device = bad_device
        self.delivered: list[str] = []

    def deliver(self, notification: Notification) -> str | None:
        assert notification.ticket is not None
        if notification.ticket.device_id == self.bad_device:
            raise AttributeError("'NoneType' object has no attribute 'get'")
        self.delivered.append(notification.ticket.device_id)
        return "INC1"


def test_a_row_the_connector_chokes_on_is_parked_and_every_other_row_delivered(tmp_path: Path) -> None:
    """One poisoned row used to raise out of the pass: the consumer exited, and died on the same row after
    every restart, so no ticket reached the ITSM any more."""
    settings = OutboxSettings()
    store = _store(tmp_path, devices=3)
    itsm = ChokesOnOne("pc-0")
    try:
        report = deliver_due(store, {"itsm": itsm}, None, settings, NOW)
        again = deliver_due(store, {"itsm": itsm}, None, settings, NOW + timedelta(minutes=1))
        rows = store.outbox()
    finally:
        store.close()
    assert sorted(itsm.delivered) == ["pc-1", "pc-2"]
    assert (report.delivered, report.needs_attention) == (2, 1)
    assert (again.delivered, again.needs_attention) == (0, 0)  # parked until the recheck, not retried at full rate
    (parked,) = [r for r in rows if r.needs_attention]
    assert "AttributeError" in (parked.last_error or "")
    assert parked.next_attempt_at == NOW + settings.attention_recheck
