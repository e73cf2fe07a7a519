"""Properties of the disk champion shipped with the package, tested as the worker serves it.

The shipped artifact is loaded exactly as the worker loads it (``load_scorers`` with the
default settings) and scored through the served path (``predict`` of the loaded scorer,
``score_batch`` on device states, the default alert policy), never a model fitted here.
"""

from __future__ import annotations

import functools
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetpulse.alerts.policy import AlertPolicy, PolicyState, step
from fleetpulse.compat import UTC
from fleetpulse.contract import Component, DiskHealth, DiskKind, HealthReport, ScorerRole
from fleetpulse.models.artifact import TrainedDiskScorer
from fleetpulse.models.features import DISK_FEATURES, GROWTH_COUNTERS
from fleetpulse.models.index import read_registry
from fleetpulse.models.registry import load_scorers
from fleetpulse.models.settings import SHIPPED_REGISTRY, ModelSettings
from fleetpulse.models.state import DeviceState, apply_report
from fleetpulse.settings import ServerSettings
from fleetpulse.streams.app import serving_policy

ERROR_COUNTERS = ("smart_5", "smart_187", "smart_188", "smart_197", "smart_198", "media_errors")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def served() -> TrainedDiskScorer:
    """The disk champion the worker serves with default settings."""
    scorers = load_scorers(ModelSettings())
    disk = [s for s in scorers.champions if s.component is Component.DISK]
    assert len(disk) == 1
    assert isinstance(disk[0], TrainedDiskScorer), "the default registry serves the shipped trained champion"
    return disk[0]


@functools.cache
def default_policy() -> AlertPolicy:
    """The alert policy the worker derives from the default registry (loaded once: examples share it)."""
    return serving_policy(ServerSettings(), load_scorers(ModelSettings()))


def risk(row: np.ndarray) -> np.ndarray:
    """Served probability per horizon of one feature vector."""
    scorer = served()
    return np.array([scorer.predict(row[None, :], h)[0] for h in sorted(scorer.models)])


counts = st.integers(min_value=0, max_value=100_000)


@st.composite
def drives(draw: st.DrawFn) -> np.ndarray:
    """A drive's feature vector: counters and their growth (unreported = NaN), age, temperature."""
    row = np.full(len(DISK_FEATURES), np.nan)
    for name in GROWTH_COUNTERS:
        if draw(st.booleans()):
            level = draw(counts)
            row[DISK_FEATURES.index(name)] = level
            for window in (1, 7, 30):
                row[DISK_FEATURES.index(f"{name}_delta_{window}d")] = draw(st.integers(0, level))
    row[DISK_FEATURES.index("power_on_hours")] = draw(st.integers(0, 80_000))
    row[DISK_FEATURES.index("temperature_c")] = draw(st.integers(15, 60))
    row[DISK_FEATURES.index("history_days")] = draw(st.integers(1, 400))
    return row


def test_the_default_registry_is_the_packaged_one_and_holds_only_the_champion() -> None:
    registry = read_registry(SHIPPED_REGISTRY)
    champion = registry.champions["disk"]
    assert served().name == "disk-gbm"
    assert champion.endswith(served().version)
    assert not registry.challengers.get("disk")
    assert sorted(p.name for p in SHIPPED_REGISTRY.iterdir() if p.is_dir()) == [champion]


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11),
    reason="the digest is of the code's syntax trees, whose printed form differs between Python versions; "
    "make train and this check run on 3.11",
)
def test_the_shipped_artifact_was_trained_by_the_current_model_code() -> None:
    """A change to the model's code must be followed by ``make train`` (which reships)."""
    from fleetpulse.models.publish import model_code_digest

    meta = json.loads(
        (SHIPPED_REGISTRY / read_registry(SHIPPED_REGISTRY).champions["disk"] / "metadata.json").read_text()
    )
    assert meta["model_code_digest"] == model_code_digest(), "model code changed: run `make train` to reship"


@PROPERTY
@given(drives(), st.sampled_from(ERROR_COUNTERS), st.integers(1, 100_000), st.booleans())
def test_risk_never_falls_when_an_error_counter_or_its_growth_grows(
    row: np.ndarray, counter: str, more: int, growth: bool
) -> None:
    grown = row.copy()
    names = [f"{counter}_delta_{w}d" for w in (1, 7, 30)] if growth else [counter]
    for name in [counter, *names]:
        index = DISK_FEATURES.index(name)
        grown[index] = np.nan_to_num(grown[index], nan=0.0) + more
    assert (risk(grown) >= risk(row)).all()


@PROPERTY
@given(drives(), st.integers(1, 10**6))
def test_risk_never_falls_when_the_nvme_critical_warning_is_raised(row: np.ndarray, more: int) -> None:
    warned = row.copy()
    index = DISK_FEATURES.index("critical_warning")
    warned[index] = np.nan_to_num(warned[index], nan=0.0) + more
    assert (risk(warned) > risk(row)).all()


@PROPERTY
@given(drives(), st.integers(1, 80_000))
def test_age_is_ignored_or_monotone(row: np.ndarray, hours: int) -> None:
    older = row.copy()
    older[DISK_FEATURES.index("power_on_hours")] += hours
    assert (risk(older) >= risk(row)).all()


def report(day: int, **values: int) -> HealthReport:
    return HealthReport(
        device_id="pc-1",
        seq=day,
        collected_at=T0 + timedelta(days=day),
        kind="desktop",
        platform="windows",
        disks=[DiskHealth(name="sda", serial_hash="s1", kind=DiskKind.HDD, power_on_hours=20_000, **values)],
    )


@PROPERTY
@given(st.sampled_from(["reallocated_sectors", "current_pending_sectors"]), st.integers(1_000, 10**7))
def test_a_first_report_with_a_thousand_bad_sectors_is_ticketed_under_the_default_policy(
    field: str, sectors: int
) -> None:
    scorer = served()
    policy = default_policy()
    threshold = policy.thresholds(Component.DISK).raise_threshold
    suggested = scorer.alert_thresholds(ModelSettings().alert_cap)
    assert suggested is not None
    assert threshold == suggested[0]
    state: DeviceState | None = None
    policy_state: PolicyState | None = None
    alerts = []
    for day in range(policy.consecutive):
        state = apply_report(state, report(day, **{field: sectors}))
        (score,) = scorer.score_batch([state], T0 + timedelta(days=day, hours=1))
        if day == 0:
            assert score.risk >= threshold, f"first report with {sectors} {field}: {score.risk} < {threshold}"
        assert score.role is ScorerRole.CHAMPION
        policy_state, alert = step(policy, policy_state, score)
        alerts += [alert] if alert is not None else []
    assert len(alerts) == 1


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(ERROR_COUNTERS[:5]), st.integers(1, 10), min_size=1),
    st.sampled_from(ERROR_COUNTERS[:5]),
    st.integers(1, 10),
)
def test_small_unchanging_counters_rank_below_counters_that_grew_in_the_last_30_days(
    levels: dict[str, int], grown: str, growth: int
) -> None:
    """Two drives with the same counts today: one had them all month, the other's grew."""
    steady = np.full(len(DISK_FEATURES), np.nan)
    for name in ERROR_COUNTERS[:5]:
        steady[DISK_FEATURES.index(name)] = levels.get(name, 0)
        for window in (1, 7, 30):
            steady[DISK_FEATURES.index(f"{name}_delta_{window}d")] = 0.0
    steady[DISK_FEATURES.index("power_on_hours")] = 20_000
    growing = steady.copy()
    growing[DISK_FEATURES.index(grown)] += growth
    growing[DISK_FEATURES.index(f"{grown}_delta_30d")] = growth
    rising = growing.copy()
    rising[DISK_FEATURES.index(grown)] = steady[DISK_FEATURES.index(grown)]  # same count today, grew from less
    assert (risk(steady) < risk(growing)).all()
    assert (risk(steady) < risk(rising)).all()


@pytest.mark.slow
def test_make_train_reproduces_the_shipped_artifact(shared_data: Path, tmp_path: Path) -> None:
    """Retrain from the real data with the shipped seed (as ``make train``): the same version digest."""
    from fleetpulse.models.data import cached_replay
    from fleetpulse.models.pipeline import EXPERIMENTS, run_experiment
    from fleetpulse.models.publish import publish_disk_model

    scorer = served()
    meta = json.loads((SHIPPED_REGISTRY / f"{scorer.name}-{scorer.version}" / "metadata.json").read_text())
    repo = Path(__file__).resolve().parents[2]
    instants = cached_replay("survival", shared_data, repo / ".local" / "cache")
    result = run_experiment(instants, EXPERIMENTS["survival"], int(meta["seed"]))
    directory = publish_disk_model(result, instants, tmp_path, int(meta["seed"]), meta["data"])
    assert directory.name == f"{scorer.name}-{scorer.version}"
