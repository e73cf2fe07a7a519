"""Property: whatever order and duplication alerts arrive in, the ticket invariants hold (SQLite store)."""

from __future__ import annotations

import tempfile
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.contract.v1 import Alert, AlertState, Component, TicketState
from tests.alerts_support import NOW, T0, make_alert, service

events = st.lists(
    st.tuples(
        st.sampled_from(["pc-1", "pc-2"]),
        st.sampled_from([Component.DISK, Component.BATTERY]),
        st.integers(1, 3),  # raise number: the same number twice is a replay
        st.booleans(),  # raised or cleared
        st.floats(0.0, 1.0),
    ),
    max_size=25,
)


def to_alert(device: str, component: Component, seq: int, raised: bool, risk: float) -> Alert:
    suffix = "" if raised else ":cleared"
    return make_alert(
        device,
        i=seq,
        component=component,
        component_id="",
        alert_id=f"{device}:{component.value}::{seq}{suffix}",
        state=AlertState.RAISED if raised else AlertState.CLEARED,
        risk=risk,
        at=T0 + timedelta(hours=seq, minutes=0 if raised else 30),
    )


@settings(max_examples=30)
@given(events, st.booleans())
def test_one_open_ticket_per_component_under_any_delivery(raw: list[tuple], close_some: bool) -> None:  # type: ignore[type-arg]
    alerts = [to_alert(*e) for e in raw]
    with tempfile.TemporaryDirectory() as tmp:
        store = TicketStore.open(f"sqlite:///{tmp}/t.db")
        svc = service(store)
        results = [svc.apply_alert(a, NOW) for a in alerts]
        if close_some and store.open_tickets():
            svc.transition([store.open_tickets()[0].ticket_id], TicketState.DISMISSED, "anna", NOW)
        before = store.list_tickets(limit=1000)
        # replaying everything changes nothing
        assert all(svc.apply_alert(a, NOW) == "duplicate" for a in alerts)
        assert store.list_tickets(limit=1000) == before
        open_keys = [(t.device_id, t.component) for t in store.open_tickets()]
        store.close()
    assert len(open_keys) == len(set(open_keys))
    seen_ids: set[str] = set()
    for alert, result in zip(alerts, results, strict=True):
        assert (result == "duplicate") == (alert.alert_id in seen_ids)
        seen_ids.add(alert.alert_id)
    raised_keys = {(a.device_id, a.component) for a in alerts if a.state is AlertState.RAISED}
    assert len(before) == len(raised_keys)  # one ticket per component that was ever raised (none reopened here)
