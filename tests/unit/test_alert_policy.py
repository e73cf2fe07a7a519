"""The alert rule: K-in-a-row raise, hysteresis clear, cooldown, replay safety and deterministic ids."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from fleetpulse.alerts.policy import AlertPolicy, PolicyState, Thresholds, step
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.compat import UTC
from fleetpulse.contract.v1 import Alert, AlertState, Component, Factor, RiskScore, ScorerRole

T0 = datetime(2026, 11, 1, tzinfo=UTC)
POLICY = AlertPolicy(
    raise_threshold=0.5, clear_threshold=0.3, consecutive=3, clear_consecutive=2, cooldown=timedelta(days=1)
)


def score(i: int, risk: float, **overrides: object) -> RiskScore:
    fields: dict[str, object] = {
        "device_id": "pc-0001",
        "component": Component.DISK,
        "component_id": "abc123",
        "risk": risk,
        "days_to_failure": 12.0,
        "days_to_failure_low": 5.0,
        "days_to_failure_high": 30.0,
        "model_name": "disk-gbm",
        "model_version": "2026.11.1",
        "report_seq": i,
        "collected_at": T0 + timedelta(hours=i),
        "scored_at": T0 + timedelta(hours=i, seconds=5),
        "factors": [Factor(feature="reallocated_sectors", value=40, contribution=0.3, text="40 reallocated sectors")],
    }
    fields.update(overrides)
    return RiskScore.model_validate(fields)


def run(
    risks: list[float], policy: AlertPolicy = POLICY, state: PolicyState | None = None
) -> tuple[PolicyState, list[Alert]]:
    alerts = []
    current = state or PolicyState()
    for i, risk in enumerate(risks):
        current, alert = step(policy, current, score(i, risk))
        if alert is not None:
            alerts.append(alert)
    return current, alerts


def test_raises_only_after_k_consecutive_scores_above_threshold() -> None:
    _, alerts = run([0.9, 0.9, 0.1, 0.9, 0.9])
    assert alerts == []
    state, alerts = run([0.9, 0.9, 0.1, 0.9, 0.9, 0.5])
    assert [a.state for a in alerts] == [AlertState.RAISED]
    assert state.raised
    assert state.raise_seq == 1


def test_raise_carries_the_score_facts_and_event_time() -> None:
    _, alerts = run([0.6, 0.7, 0.8])
    alert = alerts[0]
    assert alert.device_id == "pc-0001"
    assert alert.component is Component.DISK
    assert alert.component_id == "abc123"
    assert alert.risk == 0.8
    assert (alert.days_to_failure, alert.days_to_failure_low, alert.days_to_failure_high) == (12.0, 5.0, 30.0)
    assert (alert.model_name, alert.model_version) == ("disk-gbm", "2026.11.1")
    assert alert.factors[0].feature == "reallocated_sectors"
    assert alert.at == T0 + timedelta(hours=2)
    assert alert.report_seq == 2
    assert alert.alert_id == "pc-0001:disk:abc123:1:20261101T020000Z"


def test_hysteresis_keeps_alert_raised_between_thresholds() -> None:
    state, alerts = run([0.9, 0.9, 0.9, 0.4, 0.35, 0.45, 0.4, 0.2])
    assert [a.state for a in alerts] == [AlertState.RAISED]
    assert state.raised


def test_clears_after_clear_consecutive_scores_below_clear_threshold() -> None:
    state, alerts = run([0.9, 0.9, 0.9, 0.2, 0.4, 0.2, 0.1])
    assert [a.state for a in alerts] == [AlertState.RAISED, AlertState.CLEARED]
    raised, cleared = alerts
    assert cleared.alert_id == f"{raised.alert_id}:cleared"
    assert cleared.risk == 0.1
    assert cleared.at == T0 + timedelta(hours=6)
    assert not state.raised
    assert state.cleared_at == cleared.at


def test_cooldown_blocks_re_raise_until_it_expires_in_event_time() -> None:
    # raise at h2, clear at h4; cooldown 1 day -> no re-raise before h28 even though risk is high
    risks = [0.9, 0.9, 0.9, 0.1, 0.1] + [0.9] * 30
    _, alerts = run(risks)
    assert [a.state for a in alerts] == [AlertState.RAISED, AlertState.CLEARED, AlertState.RAISED]
    assert alerts[2].at == T0 + timedelta(hours=4) + timedelta(days=1)
    assert alerts[2].alert_id.split(":")[3] == "2"
    assert alerts[2].alert_id != alerts[0].alert_id


def test_challenger_scores_never_raise() -> None:
    state = None
    for i in range(5):
        state, alert = step(POLICY, state, score(i, 0.99, role=ScorerRole.CHALLENGER))
        assert alert is None
    assert state == PolicyState()


def test_duplicate_and_out_of_order_scores_change_nothing() -> None:
    state, _ = run([0.9, 0.9])
    again, alert = step(POLICY, state, score(1, 0.9))
    assert (again, alert) == (state, None)
    older, alert = step(POLICY, state, score(0, 0.9))
    assert (older, alert) == (state, None)


def test_long_component_id_still_gives_a_valid_alert_id() -> None:
    long_id = "x" * 128
    state = None
    alert = None
    for i in range(3):
        state, alert = step(POLICY, state, score(i, 0.9, device_id="d" * 64, component_id=long_id))
    assert alert is not None
    assert len(alert.alert_id) <= 128


def test_state_round_trips_through_json() -> None:
    state, _ = run([0.9, 0.9, 0.9, 0.1, 0.1])
    assert PolicyState.model_validate_json(state.model_dump_json()) == state


@pytest.mark.parametrize(
    "bad",
    [
        {"raise_threshold": 0.3, "clear_threshold": 0.3},
        {"raise_threshold": 0.3, "clear_threshold": 0.5},
        {"raise_threshold": 1.5},
        {"raise_threshold": float("nan")},
        {"consecutive": 0},
        {"clear_consecutive": -1},
        {"cooldown": timedelta(seconds=-1)},
        {"unknown": 1},
    ],
)
def test_invalid_policies_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AlertPolicy.model_validate(bad)


def test_policy_is_part_of_alert_settings() -> None:
    settings = AlertSettings.model_validate({"policy": {"raise_threshold": 0.7, "cooldown": "PT12H"}})
    assert settings.policy.raise_threshold == 0.7
    assert settings.policy.cooldown == timedelta(hours=12)
    assert AlertSettings().policy == AlertPolicy()


DISK_LOW = Thresholds(raise_threshold=0.05, clear_threshold=0.02)


def test_component_thresholds_apply_only_to_their_component() -> None:
    policy = POLICY.model_copy(update={"components": {Component.DISK: DISK_LOW}})
    _, alerts = run([0.06, 0.07, 0.06], policy)
    assert [a.state for a in alerts] == [AlertState.RAISED]
    # 0.1 is above the disk clear threshold: the alert stays raised; below 0.02 twice clears it
    _, alerts = run([0.06, 0.07, 0.06, 0.1, 0.01, 0.01], policy)
    assert [a.state for a in alerts] == [AlertState.RAISED, AlertState.CLEARED]
    battery = PolicyState()
    for i, risk in enumerate([0.06, 0.07, 0.06, 0.4]):
        battery, alert = step(policy, battery, score(i, risk, component=Component.BATTERY))
        assert alert is None


def test_defaults_fill_only_unconfigured_components() -> None:
    configured = AlertPolicy.model_validate({"components": {"disk": {"raise_threshold": 0.2, "clear_threshold": 0.1}}})
    model_default = Thresholds(raise_threshold=0.04, clear_threshold=0.02)
    merged = configured.with_defaults({Component.DISK: model_default, Component.BATTERY: model_default})
    assert merged.thresholds(Component.DISK) == Thresholds(raise_threshold=0.2, clear_threshold=0.1)
    assert merged.thresholds(Component.BATTERY) == model_default
    assert merged.thresholds(Component.DEVICE) == Thresholds(raise_threshold=0.5, clear_threshold=0.3)
    assert configured.thresholds(Component.BATTERY).raise_threshold == 0.5


@pytest.mark.parametrize(
    "bad",
    [
        {"disk": {"raise_threshold": 0.05, "clear_threshold": 0.05}},
        {"disk": {"raise_threshold": 0.0, "clear_threshold": 0.0}},
        {"disk": {"raise_threshold": 0.05}},
        {"printer": {"raise_threshold": 0.05, "clear_threshold": 0.01}},
    ],
)
def test_invalid_component_thresholds_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AlertPolicy.model_validate({"components": bad})


def test_component_thresholds_come_from_alert_settings() -> None:
    settings = AlertSettings.model_validate(
        {"policy": {"components": {"disk": {"raise_threshold": 0.045, "clear_threshold": 0.02}}}}
    )
    assert settings.policy.thresholds(Component.DISK) == Thresholds(raise_threshold=0.045, clear_threshold=0.02)


risk_seqs = st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), max_size=60)
policies = st.builds(
    AlertPolicy,
    raise_threshold=st.sampled_from([0.5, 0.6, 0.9]),
    clear_threshold=st.sampled_from([0.0, 0.2, 0.4]),
    consecutive=st.integers(1, 4),
    clear_consecutive=st.integers(1, 4),
    cooldown=st.sampled_from([timedelta(0), timedelta(hours=3), timedelta(days=2)]),
)


@given(policies, risk_seqs)
def test_alerts_alternate_and_replays_are_identical(policy: AlertPolicy, risks: list[float]) -> None:
    state, alerts = run(risks, policy)
    states = [a.state for a in alerts]
    # raise, clear, raise, ... never two of a kind in a row; the state says which came last
    assert all(s is (AlertState.RAISED if i % 2 == 0 else AlertState.CLEARED) for i, s in enumerate(states))
    assert state.raised == (len(alerts) % 2 == 1)
    assert len({a.alert_id for a in alerts}) == len(alerts)
    # determinism: a replay from scratch gives exactly the same alerts
    assert run(risks, policy)[1] == alerts
    # replaying every score again onto the final state does nothing
    replay_state = state
    for i, risk in enumerate(risks):
        replay_state, alert = step(policy, replay_state, score(i, risk))
        assert alert is None
    assert replay_state == state


@given(policies, risk_seqs)
def test_raise_needs_k_high_scores_and_respects_cooldown(policy: AlertPolicy, risks: list[float]) -> None:
    _, alerts = run(risks, policy)
    last_clear: datetime | None = None
    for alert in alerts:
        i = alert.report_seq
        if alert.state is AlertState.RAISED:
            window = risks[i - policy.consecutive + 1 : i + 1]
            assert len(window) == policy.consecutive
            assert all(r >= policy.raise_threshold for r in window)
            assert last_clear is None or alert.at >= last_clear + policy.cooldown
        else:
            window = risks[i - policy.clear_consecutive + 1 : i + 1]
            assert len(window) == policy.clear_consecutive
            assert all(r < policy.clear_threshold for r in window)
            last_clear = alert.at


def test_an_explained_score_never_raises_but_an_open_alert_still_clears() -> None:
    state = PolicyState()
    for i in range(5):
        state, alert = step(POLICY, state, score(i, 0.9), explained=True)
        assert alert is None
    assert not state.raised

    raised, _ = run([0.9, 0.9, 0.9])
    assert raised.raised
    state, alert = step(POLICY, raised, score(10, 0.1), explained=True)
    assert alert is None  # clear_consecutive (2) still applies
    _, alert = step(POLICY, state, score(11, 0.1), explained=True)
    assert alert is not None
    assert alert.state is AlertState.CLEARED
