"""Thermal and memory rules: features by hand, each rule's cases, and hostile state values."""

from __future__ import annotations

import math
from array import array
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from fleetpulse.compat import UTC
from fleetpulse.contract import Component, HealthReport, MemoryHealth, ThermalHealth
from fleetpulse.models.device_rules import (
    MemoryRuleScorer,
    ThermalEvidence,
    ThermalRuleScorer,
    memory_risk,
    thermal_risk,
)
from fleetpulse.models.features import (
    counter_increase,
    max_daily_increase,
    memory_features,
    recent_and_baseline,
    thermal_features,
)
from fleetpulse.models.state import DailySeries, DeviceState, apply_report_in_place

T0 = datetime(2026, 3, 1, 6, tzinfo=UTC)
NOW = T0 + timedelta(days=60)
RAISE = 0.5  # AlertPolicy's default raise threshold


def replay(thermal: list[ThermalHealth | None], memory: list[MemoryHealth | None] | None = None) -> DeviceState:
    state = DeviceState(device_id="pc-7")
    for day, therm in enumerate(thermal):
        mem = memory[day] if memory else None
        report = HealthReport(
            device_id="pc-7",
            seq=day,
            collected_at=T0 + timedelta(days=day),
            kind="laptop",
            platform="linux",
            thermal=therm,
            memory=mem,
        )
        apply_report_in_place(state, report)
    return state


def thermal_days(
    days: int,
    cpu: float = 65.0,
    fan: float = 3000.0,
    *,
    change_from: int | None = None,
    late_cpu: float | None = None,
    late_fan: float | None = None,
    throttle_per_day: int = 0,
) -> list[ThermalHealth | None]:
    """``days`` of daily readings; from ``change_from`` on, the ``late_*`` values and a
    throttle counter growing by ``throttle_per_day``."""
    out: list[ThermalHealth | None] = []
    for day in range(days):
        late = change_from is not None and day >= change_from
        out.append(
            ThermalHealth(
                cpu_max_c=late_cpu if late and late_cpu is not None else cpu,
                fan_rpm=[late_fan if late and late_fan is not None else fan],
                throttle_events=throttle_per_day * (day - change_from) if late and change_from is not None else 0,
            )
        )
    return out


def one(scorer: ThermalRuleScorer | MemoryRuleScorer, state: DeviceState) -> float:
    scores = scorer.score_batch([state], NOW)
    assert len(scores) == 1
    assert scores[0].component is scorer.component
    return scores[0].risk


def test_counter_increase_treats_drops_as_resets() -> None:
    pts = [(0, 5.0), (1, 7.0), (2, 1.0), (3, 4.0), (4, 4.0), (9, 2.0), (10, 6.0)]
    assert counter_increase(pts, 30) == 2.0 + 3.0 + 4.0  # the drops to 1 and 2 start new baselines
    assert counter_increase(pts, 7) == 4.0  # pairs ending on days 4..10: +0, -2 (reset), +4
    assert max_daily_increase(pts, 30) == 4.0
    assert counter_increase([(3, 9.0)], 7) == 0.0
    assert math.isnan(counter_increase([], 7))


def test_recent_and_baseline_need_enough_days() -> None:
    pts = [(d, 60.0 if d < 20 else 80.0) for d in range(35)]
    assert recent_and_baseline(pts) == (80.0, 60.0)  # baseline: days 0..20 (<= day 34 - 14)
    recent, baseline = recent_and_baseline(pts[-10:])
    assert recent == 80.0
    assert math.isnan(baseline)


def test_thermal_features_by_hand() -> None:
    state = replay(thermal_days(30, change_from=25, late_cpu=97.0, late_fan=1200.0, throttle_per_day=50))
    feats = thermal_features(state)
    assert feats["cpu_max_c_baseline"] == 65.0
    assert feats["cpu_max_c_recent"] == 97.0  # days 23..29: 2 x 65, 5 x 97
    assert feats["cpu_max_c_rise"] == 32.0
    assert feats["hot_days_7d"] == 5.0
    assert feats["throttle_increase_7d"] == 200.0  # 0, 50, 100, 150, 200 on days 25..29
    assert feats["fan_rpm_ratio"] == 0.4


def test_a_fading_fan_is_critical_with_plain_words() -> None:
    state = replay(thermal_days(30, change_from=24, late_cpu=98.0, late_fan=1000.0, throttle_per_day=40))
    scores = ThermalRuleScorer().score_batch([state], NOW)
    assert scores[0].risk >= 0.9
    texts = [f.text for f in scores[0].factors]
    assert "daily peak temperature +33 °C against the device's own earlier weeks" in texts
    assert "fan reaches only 33% of its earlier top speed" in texts


def test_temperature_rise_with_throttling_is_a_ticket_without_fan_data() -> None:
    readings = [
        ThermalHealth(cpu_max_c=62.0 if day < 24 else 80.0, throttle_events=0 if day < 26 else 5 * day)
        for day in range(30)
    ]
    assert one(ThermalRuleScorer(), replay(list(readings))) == 0.7


def test_a_laptop_that_always_runs_hot_gets_no_ticket() -> None:
    """Hot and throttling every day since the start, but no worse than its own past."""
    state = replay(thermal_days(30, cpu=97.0, fan=4500.0, change_from=0, throttle_per_day=30))
    assert 0 < one(ThermalRuleScorer(), state) < RAISE


def test_one_sign_alone_is_watched_not_ticketed() -> None:
    warmer = replay(thermal_days(30, change_from=24, late_cpu=78.0))  # +13 °C, fan and throttling fine
    assert one(ThermalRuleScorer(), warmer) < RAISE
    slower = replay(thermal_days(30, change_from=24, late_fan=1500.0))  # fan at 50 %, temperatures fine
    assert one(ThermalRuleScorer(), slower) < RAISE


def test_a_fan_resting_at_idle_is_no_baseline() -> None:
    """Zero-rpm modes: an earlier peak below MIN_FAN_RPM is not a top speed to compare with."""
    state = replay(thermal_days(30, fan=300.0, change_from=24, late_cpu=80.0, late_fan=0.0))
    feats = thermal_features(state)
    assert feats["fan_rpm_baseline"] == 300.0
    assert one(ThermalRuleScorer(), state) < RAISE


def test_healthy_and_silent_devices() -> None:
    assert one(ThermalRuleScorer(), replay(thermal_days(30))) < 0.1
    assert ThermalRuleScorer().score_batch([replay([None] * 10)], NOW) == []
    assert MemoryRuleScorer().score_batch([replay([None] * 10)], NOW) == []
    assert ThermalRuleScorer().score_batch([DeviceState(device_id="inventory-only")], NOW) == []


def memory_days(ce: list[int], ue: list[int] | None = None) -> DeviceState:
    ue = ue or [0] * len(ce)
    mem: list[MemoryHealth | None] = [
        MemoryHealth(correctable_errors=c, uncorrectable_errors=u) for c, u in zip(ce, ue, strict=True)
    ]
    return replay([None] * len(ce), mem)


def test_memory_rules() -> None:
    scorer = MemoryRuleScorer()
    assert one(scorer, memory_days([4] * 20)) == 0.02  # old corrected errors, not growing
    assert one(scorer, memory_days([4] * 18 + [7, 7])) == 0.3  # one burst: watched
    assert one(scorer, memory_days([4] * 18 + [16, 16])) == 0.7  # 12 in a day: mcelog's storm
    assert one(scorer, memory_days([4] * 14 + [5, 5, 6, 6, 7, 7])) == 0.7  # recurring on 3 days
    assert one(scorer, memory_days([4] * 20, [0] * 19 + [1])) == 0.9
    assert one(scorer, memory_days([4] * 10 + [1] * 10, [1] * 5 + [0] * 15)) == 0.02  # reboot reset, UE long ago
    assert one(scorer, memory_days([4] * 20, [1] * 20)) == 0.3  # an old UE still in the event log: watched
    assert one(scorer, memory_days([4] * 20, [0] * 10 + [1] * 10)) == 0.3  # a UE 10 days ago, none since


def test_memory_factors_in_plain_words() -> None:
    (score,) = MemoryRuleScorer().score_batch([memory_days([4] * 18 + [30, 30], [0] * 19 + [2])], NOW)
    texts = [f.text for f in score.factors]
    assert texts[0] == "2 new uncorrectable memory errors in 7 days"
    assert "up to 26 new corrected memory errors in one day" in texts
    assert memory_features(memory_days([4] * 18 + [30, 30]))["mem_correctable_increase_7d"] == 26.0


def test_risk_tables() -> None:
    assert thermal_risk(ThermalEvidence(rise=False, fan_slow=False, throttling=True, hot=True)) < RAISE
    assert thermal_risk(ThermalEvidence(rise=True, fan_slow=True, throttling=False, hot=False)) == 0.7
    assert thermal_risk(ThermalEvidence(rise=False, fan_slow=True, throttling=False, hot=True)) == 0.9
    nan = float("nan")
    assert memory_risk(dict.fromkeys(memory_features(DeviceState(device_id="x")), nan)) == 0.02


hostile = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=-1e300, max_value=1e300),
    st.sampled_from([0.0, -1.0, 2.0**48, 1e308, float("nan"), float("inf"), -float("inf")]),
)
COLUMNS = ("cpu_max_c", "throttle_events", "fan_rpm_max", "mem_correctable", "mem_uncorrectable", "thermal_excursions")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 80), min_size=1, max_size=40, unique=True).flatmap(
        lambda days: st.tuples(
            st.just(sorted(days)),
            st.dictionaries(
                st.sampled_from(COLUMNS), st.lists(hostile, min_size=len(days), max_size=len(days)), max_size=6
            ),
        )
    )
)
def test_hostile_state_values_never_crash(series: tuple[list[int], dict[str, list[float | None]]]) -> None:
    """States in memory may hold infinities or absurd counters (decoding refuses them, the scorers do not
    rely on it): no crash, risks stay in [0, 1], every factor has text and the score survives the wire codec."""
    days, columns = series
    nan = float("nan")
    state = DeviceState(
        device_id="pc-h",
        last_seq=len(days),
        last_collected_at=T0,
        device=DailySeries.model_construct(
            days=array("i", [730_000 + d for d in days]),
            columns={name: array("d", [nan if v is None else v for v in col]) for name, col in columns.items()},
        ),
    )
    for scorer in (ThermalRuleScorer(), MemoryRuleScorer()):
        for score in scorer.score_batch([state], NOW):
            assert 0.0 <= score.risk <= 1.0
            assert all(f.text for f in score.factors)
            type(score).model_validate_json(score.model_dump_json())


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-40.0, 150.0) | st.none(),
            st.lists(st.floats(0.0, 30_000.0), max_size=3),
            st.integers(0, 2**48) | st.none(),
            st.integers(0, 2**48) | st.none(),
            st.integers(0, 2**48) | st.none(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_extreme_valid_reports_score_within_bounds(
    rows: list[tuple[float | None, list[float], int | None, int | None, int | None]],
) -> None:
    thermal: list[ThermalHealth | None] = [
        ThermalHealth(cpu_max_c=c, fan_rpm=f, throttle_events=t) for c, f, t, _, _ in rows
    ]
    memory: list[MemoryHealth | None] = [
        MemoryHealth(correctable_errors=ce, uncorrectable_errors=ue) for _, _, _, ce, ue in rows
    ]
    state = replay(thermal, memory)
    for scorer in (ThermalRuleScorer(), MemoryRuleScorer()):
        for score in scorer.score_batch([state], NOW):
            assert 0.0 <= score.risk <= 1.0
            assert score.component in (Component.THERMAL, Component.MEMORY)
