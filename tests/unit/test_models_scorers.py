"""Conformance of every scorer the registry can hand to the stream processor."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fleetpulse.alerts.actions import urgency
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    BatteryHealth,
    Component,
    DiskHealth,
    HealthReport,
    MemoryHealth,
    RiskScore,
    ScorerRole,
    StabilityHealth,
    ThermalHealth,
)
from fleetpulse.models.base import Scorer
from fleetpulse.models.battery_interval import interval
from fleetpulse.models.registry import ScorerSet, load_scorers, rule_scorers
from fleetpulse.models.settings import ModelSettings
from fleetpulse.models.state import DeviceState, apply_report

T0 = datetime(2026, 5, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=200)


def fleet() -> list[DeviceState]:
    healthy, failing, fresh = None, None, DeviceState(device_id="inventory-only")
    for day in range(120):
        at = T0 + timedelta(days=day)
        healthy = apply_report(
            healthy,
            HealthReport(
                device_id="pc-ok",
                seq=day,
                collected_at=at,
                kind="laptop",
                platform="linux",
                disks=[
                    DiskHealth(
                        name="nvme0",
                        serial_hash="n0",
                        kind="nvme",
                        media_errors=0,
                        available_spare_pct=100,
                        available_spare_threshold_pct=10,
                        critical_warning=0,
                    )
                ],
                battery=BatteryHealth(design_capacity=50, full_charge_capacity=48 - 0.001 * day),
                stability=StabilityHealth(crashes=0, boot_duration_s=20.0),
                thermal=ThermalHealth(cpu_max_c=62.0 + day % 5, fan_rpm=[2900.0 + 10 * (day % 7)], throttle_events=0),
                memory=MemoryHealth(correctable_errors=2, uncorrectable_errors=0),
            ),
        )
        failing = apply_report(
            failing,
            HealthReport(
                device_id="pc-bad",
                seq=day,
                collected_at=at,
                kind="desktop",
                platform="windows",
                disks=[
                    DiskHealth(
                        name="sda",
                        serial_hash="s1",
                        reallocated_sectors=day // 10,
                        current_pending_sectors=day // 30,
                        smart_passed=True,
                    ),
                    DiskHealth(name="sdb", serial_hash="s2", smart_passed=False),
                ],
                battery=BatteryHealth(design_capacity=50, full_charge_capacity=45 - 0.1 * day),
                stability=StabilityHealth(crashes=3 if day > 110 else 0, boot_duration_s=20.0 + day),
                thermal=ThermalHealth(
                    cpu_max_c=min(110.0, 60.0 + 2.0 * max(0, day - 95)),
                    fan_rpm=[max(200.0, 3000.0 - 100.0 * max(0, day - 95))],
                    throttle_events=10 * max(0, day - 105),
                ),
                memory=MemoryHealth(correctable_errors=5 * max(0, day - 100), uncorrectable_errors=int(day > 115)),
            ),
        )
    assert healthy is not None
    assert failing is not None
    return [healthy, failing, fresh]


def all_scorers() -> list[Scorer]:
    found = rule_scorers()
    loaded = load_scorers(ModelSettings())
    return [*found.champions, *found.challengers, *loaded.champions, *loaded.challengers]


def check_conformance(scorer: Scorer) -> None:
    """What the stream processor relies on, for any scorer."""
    assert isinstance(scorer, Scorer)
    assert scorer.name
    assert scorer.version
    assert isinstance(scorer.component, Component)
    states = fleet()
    scores = scorer.score_batch(states, NOW)
    assert scores, "every scorer scores something in this fleet"
    assert scorer.score_batch([], NOW) == []
    by_device = {s.device_id: s for s in states}
    for score in scores:
        assert isinstance(score, RiskScore)
        assert score.component is scorer.component
        state = by_device[score.device_id]
        assert score.collected_at == state.last_collected_at
        assert score.report_seq == state.last_seq
        assert score.scored_at == NOW
        assert (score.model_name, score.model_version) == (scorer.name, scorer.version)
        assert 0.0 <= score.risk <= 1.0
        assert all(f.text for f in score.factors)
        RiskScore.model_validate_json(score.model_dump_json())
    assert "inventory-only" not in {s.device_id for s in scores}
    risk = {(s.device_id, s.component_id): s.risk for s in scores}
    bad = max(v for (d, _), v in risk.items() if d == "pc-bad")
    good = max(v for (d, _), v in risk.items() if d == "pc-ok")
    assert bad > good


@pytest.mark.parametrize("scorer", all_scorers(), ids=lambda s: f"{s.name}:{s.version}")
def test_scorer_conformance(scorer: Scorer) -> None:
    check_conformance(scorer)


def test_scorer_set_labels_roles() -> None:
    rules = rule_scorers()
    both = ScorerSet(champions=rules.champions[:1], challengers=rules.champions[1:])
    roles = {(s.component, s.role) for s in both.score(fleet(), NOW)}
    assert roles == {
        (Component.DISK, ScorerRole.CHAMPION),
        (Component.BATTERY, ScorerRole.CHALLENGER),
        (Component.THERMAL, ScorerRole.CHALLENGER),
        (Component.MEMORY, ScorerRole.CHALLENGER),
        (Component.DEVICE, ScorerRole.CHALLENGER),
    }


def test_disk_rule_explains_flags_in_plain_words() -> None:
    scores = {s.component_id: s for s in rule_scorers().score(fleet(), NOW) if s.component is Component.DISK}
    assert scores["s2"].risk >= 0.9
    assert "SMART health check FAILED" in scores["s2"].factors[0].text
    assert any("reallocated sectors" in f.text for f in scores["s1"].factors)
    assert scores["n0"].risk < 0.1


def test_battery_rule_estimates_days_to_the_next_threshold() -> None:
    scores = {s.device_id: s for s in rule_scorers().score(fleet(), NOW) if s.component is Component.BATTERY}
    bad = scores["pc-bad"]
    # 45 - 0.1*day of 50: 0.662 at day 119, already below 80 %, fading 0.2 points a day toward 60 %
    assert bad.days_to_failure == pytest.approx(31.0, abs=1.5)
    assert bad.risk > 0.5
    ok = scores["pc-ok"]
    assert ok.days_to_failure is not None
    assert ok.days_to_failure > 1000


def _battery_days(ratios: list[float]) -> DeviceState:
    """One daily battery reading per ratio of design capacity."""
    state = None
    for day, ratio in enumerate(ratios):
        state = apply_report(
            state,
            HealthReport(
                device_id="pc-b",
                seq=day,
                collected_at=T0 + timedelta(days=day),
                kind="laptop",
                platform="windows",
                battery=BatteryHealth(design_capacity=50_000.0, full_charge_capacity=50_000.0 * ratio),
            ),
        )
    assert state is not None
    return state


def test_battery_wear_out_is_projected_only_from_a_month_of_readings() -> None:
    """A week "fading" half a point a day reaches 60 % in a week on paper; that is no
    ticket. A month of a clear fade toward 60 % within the ordering lead time is one."""
    (scorer,) = [s for s in rule_scorers().champions if s.component is Component.BATTERY]
    week = _battery_days([0.665 - 0.005 * d for d in range(7)])
    month = _battery_days([0.665 - 0.001 * d for d in range(40)])
    (week_score,) = scorer.score_batch([week], T0 + timedelta(days=7))
    (month_score,) = scorer.score_batch([month], T0 + timedelta(days=40))
    assert 0.0 < week_score.risk < 0.5  # service due (below 80 %), no projection yet
    assert week_score.days_to_failure is None  # already below 80 %; no days-to-60 % on paper
    assert not any(f.feature == "days_to_60pct" for f in week_score.factors)
    assert month_score.risk >= 0.5
    assert any(f.feature == "days_to_60pct" for f in month_score.factors)


def test_battery_score_carries_the_calibrated_interval_to_the_next_threshold() -> None:
    """Days to 80 % come with the calibrated range; below 80 % the days and range are to 60 %
    (zero days would read as failed today and make the ticket critical); below 60 % the
    battery has failed: 0 days, no range."""
    (scorer,) = [s for s in rule_scorers().champions if s.component is Component.BATTERY]
    fading = _battery_days([0.88 - 0.001 * d for d in range(40)])
    below = _battery_days([0.75 - 0.001 * d for d in range(40)])
    worn = _battery_days([0.59 - 0.001 * d for d in range(40)])
    (fading_score, below_score, worn_score) = scorer.score_batch([fading, below, worn], T0 + timedelta(days=40))
    assert fading_score.days_to_failure == pytest.approx(41.0)
    low, high = interval(41.0)
    assert (fading_score.days_to_failure_low, fading_score.days_to_failure_high) == pytest.approx((low, high))
    assert low < 41.0 < high
    assert below_score.days_to_failure == pytest.approx(111.0)  # 0.711 at day 39, 0.1 points a day
    assert (below_score.days_to_failure_low, below_score.days_to_failure_high) == pytest.approx(interval(111.0))
    assert urgency(below_score.risk, below_score.days_to_failure, below_score.days_to_failure_low) != "critical"
    assert worn_score.days_to_failure == 0.0
    assert worn_score.days_to_failure_low is None


def test_thermal_and_memory_rules_flag_only_the_failing_pc() -> None:
    scores = {(s.component, s.device_id): s for s in rule_scorers().score(fleet(), NOW)}
    assert scores[(Component.THERMAL, "pc-bad")].risk >= 0.9
    assert scores[(Component.MEMORY, "pc-bad")].risk >= 0.9
    assert scores[(Component.THERMAL, "pc-ok")].risk < 0.1
    assert scores[(Component.MEMORY, "pc-ok")].risk < 0.1
    assert any("earlier top speed" in f.text for f in scores[(Component.THERMAL, "pc-bad")].factors)
    assert "uncorrectable memory errors" in scores[(Component.MEMORY, "pc-bad")].factors[0].text
