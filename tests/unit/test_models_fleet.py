"""Fleet retraining: stacked features, labels as known at the cut-off, paired device scores, the
promotion gate (one vote per device, no single device deciding it; refused, overridden with an audited
reason) and the worker's hot reload of the index."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fleetpulse.alerts.fleetlog import Outcome
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.cli import app as cli_app
from fleetpulse.contract import Component, ScorerRole
from fleetpulse.models.evaluation import DriveScores, detection_at_far, paired_difference
from fleetpulse.models.features import DISK_FEATURES
from fleetpulse.models.fleet import (
    STACK_FEATURES,
    DeviceScores,
    FleetDiskScorer,
    FleetExperiment,
    FleetRows,
    adopt_champion,
    alarm_weights,
    component_scores,
    device_scores,
    group_size,
    leave_group_out,
    leave_one_out,
    make_champion,
    promotion_check,
    promotion_verdict,
    publish_fleet_model,
    report_markdown,
    row_devices,
    row_labels,
    served_risk,
    stability,
    stack_features,
    train_fleet_challenger,
)
from fleetpulse.models.index import ArtifactError, artifact_dir, read_registry
from fleetpulse.models.registry import load_artifact, register_artifact
from fleetpulse.models.rules import RISK_CRITICAL
from fleetpulse.models.settings import SHIPPED_REGISTRY

D0 = date(2025, 1, 1)


@dataclass
class Row:
    device_id: str
    component: str
    component_id: str
    day: date
    features: dict[str, Any]


def test_stack_features_are_finite_and_named() -> None:
    features = np.full((2, len(DISK_FEATURES)), np.nan)
    features[1, DISK_FEATURES.index("media_errors")] = 12
    features[1, DISK_FEATURES.index("media_errors_delta_7d")] = 5
    stacked = stack_features(features, np.array([0.0, 1.0]))
    assert stacked.shape == (2, len(STACK_FEATURES))
    assert np.isfinite(stacked).all()
    assert stacked[1, STACK_FEATURES.index("sign_media_errors")] == 1.0
    assert stacked[1, STACK_FEATURES.index("media_errors_delta_7d_log")] == pytest.approx(np.log1p(5))


def test_rows_keep_the_days_last_log_and_labels_are_as_known_at_the_cutoff() -> None:
    rows = FleetRows.from_log(
        [
            Row("pc-1", "disk", "a", D0, {"media_errors": 1}),
            Row("pc-1", "disk", "a", D0, {"media_errors": 2, "bogus": "x"}),  # the day's last row wins
            Row("pc-1", "disk", "a", D0 + timedelta(days=40), {"media_errors": 9}),
            Row("pc-2", "disk", "b", D0, {"media_errors": float("inf")}),
        ]
    )
    assert len(rows.day) == 3
    assert rows.features[0, DISK_FEATURES.index("media_errors")] == 2.0
    assert np.isnan(rows.features[1, DISK_FEATURES.index("media_errors")])  # pc-2's non-finite value: unknown
    failure = [Outcome("pc-1", "disk", "a", D0 + timedelta(days=50), "failure")]
    later = row_labels(rows, failure, known_at=D0 + timedelta(days=100))
    assert later.tolist() == [0.0, 0.0, 1.0]  # 50 days ahead: healthy in the window; 10 days ahead: positive
    earlier = row_labels(rows, failure, known_at=D0 + timedelta(days=45))
    assert earlier[0] == 0.0
    assert np.isnan(earlier[2])


def test_component_scores_pair_the_same_components() -> None:
    score = np.array([0.1, 0.9, 0.2, 0.3, 0.05])
    y = np.array([0.0, 1.0, 0.0, 0.0, np.nan])
    owner = np.array([0, 0, 1, 1, 2])
    drives = component_scores(score, y, owner, np.ones(5, bool))
    assert drives.positive.tolist() == [0.9]  # its best score in the window before failure
    assert drives.negative.tolist() == [0.3]  # component 2 has no labelled row: left out


def test_device_scores_give_each_device_one_vote() -> None:
    """Labels are per disk, the vote per device: a device with a failed disk counts once, scored by that disk's
    rows before the failure (an alarm on its healthy sibling detects nothing); a healthy device by its
    riskiest disk (one wrong ticket is a false alarm)."""
    rows = FleetRows.from_log(
        [
            Row("pc-1", "disk", "a", D0, {}),
            Row("pc-1", "disk", "b", D0, {}),
            Row("pc-2", "disk", "c", D0, {}),
            Row("pc-2", "disk", "d", D0, {}),
            Row("pc-3", "disk", "e", D0, {}),
        ]
    )
    device, names = row_devices(rows)
    assert names == ("pc-1", "pc-2", "pc-3")
    score = np.array([0.3, 0.9, 0.2, 0.7, 0.5])
    y = np.array([1.0, 0.0, 0.0, 0.0, np.nan])
    devices = device_scores(score, y, device, names, np.ones(5, bool))
    assert devices.failed == ("pc-1",)
    assert devices.scores.positive.tolist() == [0.3]  # not its healthy sibling's 0.9
    assert devices.healthy == ("pc-2",)  # pc-3 has no labelled row: left out
    assert devices.scores.negative.tolist() == [0.7]


def test_alarm_weights_split_ties_as_detection_at_far_does() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        healthy = rng.integers(0, 5, 300).astype(float)  # heavy ties
        failed = rng.integers(0, 6, 20).astype(float)
        for far in (0.001, 0.01, 0.3):
            assert alarm_weights(failed, healthy, far).mean() == pytest.approx(
                detection_at_far(DriveScores(failed, healthy), far)
            )
            assert alarm_weights(healthy, healthy, far).sum() == pytest.approx(far * len(healthy))


def test_leave_one_out_matches_recomputing_without_each_device() -> None:
    rng = np.random.default_rng(5)
    for _ in range(10):
        model = DriveScores(rng.integers(0, 6, 15).astype(float), rng.integers(0, 5, 120).astype(float))
        baseline = DriveScores(rng.integers(0, 6, 15).astype(float), rng.integers(0, 5, 120).astype(float))
        for far in (0.001, 0.01, 0.1):
            for difference, failed, i in leave_one_out(model, baseline, far):
                pos = np.delete(np.arange(15), [i] if failed else [])
                neg = np.delete(np.arange(120), [] if failed else [i])
                expected = detection_at_far(DriveScores(model.positive[pos], model.negative[neg]), far)
                expected -= detection_at_far(DriveScores(baseline.positive[pos], baseline.negative[neg]), far)
                assert difference == pytest.approx(expected)


def test_leave_group_out_matches_recomputing_without_every_group() -> None:
    """The worst group of k healthy devices, found per reachable cut, is the worst of all C(n, k) groups."""
    rng = np.random.default_rng(11)

    def without(model: DriveScores, baseline: DriveScores, far: float, group: Any) -> float:
        keep = np.delete(np.arange(len(model.negative)), list(group))
        left = detection_at_far(DriveScores(model.positive, model.negative[keep]), far)
        return left - detection_at_far(DriveScores(baseline.positive, baseline.negative[keep]), far)

    for trial in range(120):
        n, top = int(rng.integers(3, 12)), int(rng.integers(1, 5))
        if trial % 4 == 0:  # no ties
            model = DriveScores(rng.normal(size=4), rng.normal(size=n))
            baseline = DriveScores(rng.normal(size=4), rng.normal(size=n))
        else:  # heavy ties, as risks with many clean or overridden drives
            model = DriveScores(rng.integers(0, top + 2, 4).astype(float), rng.integers(0, top + 1, n).astype(float))
            baseline = DriveScores(rng.integers(0, top + 2, 4).astype(float), rng.integers(0, top + 1, n).astype(float))
        for far in (0.001, 0.1, 0.25, 0.5):
            for k in range(1, min(4, n)):
                difference, group = leave_group_out(model, baseline, far, k)
                assert len(set(group.tolist())) == k
                assert without(model, baseline, far, group) == pytest.approx(difference)
                worst = min(without(model, baseline, far, g) for g in itertools.combinations(range(n), k))
                assert difference == pytest.approx(worst)


def _colluding(far: float, healthy: int, colluders: int) -> tuple[DeviceScores, DeviceScores]:
    """Two scorers equal on every honest device; ``colluders`` healthy devices the champion ranks above every
    failure and the challenger below every device."""
    rng = np.random.default_rng(7)
    scores, failed = rng.normal(0, 1, healthy), rng.normal(2.8, 0.6, 60)
    champion, challenger = scores.copy(), scores.copy()
    champion[:colluders], challenger[:colluders] = 50.0, -50.0
    names = (tuple(f"pc-f{i}" for i in range(60)), tuple(f"pc-h{i}" for i in range(healthy)))
    return DeviceScores(DriveScores(failed, challenger), *names), DeviceScores(DriveScores(failed, champion), *names)


@pytest.mark.parametrize(("far", "healthy"), [(0.001, 3000), (0.01, 400)])
def test_attack_colluders_no_more_than_the_group_cannot_force_the_gate(far: float, healthy: int) -> None:
    """More colluders than the budget (3 and 4 devices here) blind the champion: with 10 the challenger won by
    +47 and +93 pp, and no single device left out changed that. Up to :func:`group_size` of them, the group
    left out holds them all, and without them the two scorers are equal."""
    for colluders in (10, 15, 20):
        challenger, champion = _colluding(far, healthy, colluders)
        full = paired_difference(challenger.scores, champion.scores, functools.partial(lambda f, _: f, far))
        check = stability(challenger, champion, far, resamples=300)
        assert full.low > 0.0
        assert check["difference_low"] > 0.0  # one device left out: still a win
        assert not check["holds"]
        assert not check["group"]["holds"]
        assert check["group"]["difference"] == 0.0
        assert {f"pc-h{i}" for i in range(colluders)} <= set(check["group"]["devices"])
    assert group_size(far, healthy) == 20


def test_attack_ten_colluding_pcs_cannot_force_the_gate_at_a_tight_cap(champion: Any) -> None:
    """Ten registered PCs report absurd, steady sector counts; their tickets close no fault found, so they are
    healthy devices the champion ranks first. At 0.1 % of 350 healthy held-out devices (a budget of 0.35)
    they took the champion's detection to 0 and the challenger, which ranks them low, passed the gate by
    +100 pp with every single device left out, though both detect every honest failure. Without the
    20 healthy devices whose absence lowers the difference most, nothing is left of the win."""
    colluders = [
        Row(f"pc-evil-{j}", "disk", f"evil-{j}", D0 + timedelta(days=d), {"smart_5": 2.0**40, "smart_197": 2.0**40})
        for j in range(10)
        for d in range(240)
    ]
    gate, through = "cap 0.1%", D0 + timedelta(days=239)
    experiment = train_fleet_challenger(
        champion, *_fleet_log(champion, colluders), through, holdout_days=90, gate_cap=gate
    )
    report = experiment.report
    point = report["comparison"][gate]
    assert point["champion_detection"] == 0.0
    assert point["difference_low"] > 0.9
    assert report["stability"]["difference_low"] > 0.9  # one device left out does not stop it
    assert not report["wins"]
    group = report["stability"]["group"]
    assert group["size"] == 20
    assert {f"pc-evil-{j}" for j in range(10)} <= set(group["devices"])
    assert group["difference"] == 0.0
    assert not group["holds"]
    wins, evidence = promotion_verdict(experiment.challenger, report["champion"])
    assert not wins
    assert "the win rests on 20 healthy devices, as few as could collude" in evidence
    assert "the 350 healthy held-out devices allow 0.35 false alarms" in evidence
    page = report_markdown(report)
    assert "the challenger does not win" in page
    assert "Without the 20 healthy devices whose absence lowers the difference most (pc-evil-0" in page
    assert "gate at a looser cap or wait for more outcomes" in page


@pytest.mark.parametrize(("far", "failed", "healthy"), [(0.01, 60, 5000), (0.001, 150, 20000)])
def test_a_better_challenger_wins_the_group_check_at_realistic_sizes(far: float, failed: int, healthy: int) -> None:
    """A challenger that ranks failing devices higher (+0.8 sd), with its healthy scores close to the champion's
    but not equal (correlation 0.95), still wins with ten colluders in the fleet."""
    rng = np.random.default_rng(3)

    def pair(mean: float, count: int) -> tuple[np.ndarray, np.ndarray]:
        champion, challenger = np.sqrt(0.95) * rng.normal(mean, 1, count) + np.sqrt(0.05) * rng.normal(0, 1, (2, count))
        return champion, challenger

    champion_failed, challenger_failed = pair(1.5, failed)
    champion_healthy, challenger_healthy = pair(0.0, healthy)
    champion_healthy[:10], challenger_healthy[:10] = 50.0, -50.0
    names = (tuple(f"pc-f{i}" for i in range(failed)), tuple(f"pc-h{i}" for i in range(healthy)))
    challenger = DeviceScores(DriveScores(challenger_failed + 0.8, challenger_healthy), *names)
    champion = DeviceScores(DriveScores(champion_failed, champion_healthy), *names)
    full = paired_difference(challenger.scores, champion.scores, functools.partial(lambda f, _: f, far), resamples=300)
    check = stability(challenger, champion, far, resamples=300)
    assert full.low > 0.0
    assert check["group"]["size"] == max(20, int(far * healthy))
    assert check["group"]["difference_low"] > 0.0
    assert check["holds"]


def test_a_win_one_failed_device_decides_is_refused() -> None:
    """The challenger catches 4 failed devices of 20 the champion misses: the paired interval is above zero,
    but with any one of the four left out it is not. One device must not decide the gate."""
    healthy = np.linspace(0.0, 0.5, 200)
    failed = tuple(f"pc-f{i}" for i in range(20))
    devices = tuple(f"pc-h{i}" for i in range(200))
    champion = DeviceScores(DriveScores(np.r_[np.full(16, 0.9), np.full(4, 0.1)], healthy), failed, devices)
    challenger = DeviceScores(DriveScores(np.full(20, 0.9), healthy), failed, devices)
    full = paired_difference(challenger.scores, champion.scores, functools.partial(lambda far, _: far, 0.01))
    assert full.low > 0.0
    check = stability(challenger, champion, 0.01)
    assert not check["holds"]
    assert check["device"] in failed[16:]
    assert check["difference_low"] <= 0.0


@pytest.fixture(scope="module")
def champion() -> Any:
    registry = read_registry(SHIPPED_REGISTRY)
    return load_artifact(registry, SHIPPED_REGISTRY, registry.champions["disk"])


def fleet_challenger(champion: Any, registry_dir: Path, wins: bool, seed: int = 0) -> str:
    """A real fleet artifact (fitted on synthetic rows) with a stated evaluation, registered as challenger."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    layer = LogisticRegression().fit(rng.normal(size=(40, len(STACK_FEATURES))), np.arange(40) % 2)
    point = {
        "false_alarm_rate": 0.01,
        "champion_detection": 0.2,
        "challenger_detection": 0.6 if wins else 0.25,
        "difference": 0.4 if wins else 0.05,
        "difference_low": 0.1 if wins else -0.1,
        "difference_high": 0.7 if wins else 0.2,
    }
    report = {
        "champion": f"{champion.name}:{champion.version}",
        "cutoff": "2025-10-01",
        "labelled_through": "2025-12-30",
        "unit": "device",
        "gate": "cap 1%",
        "comparison": {"cap 1%": point},
        "stability": {
            "device": "pc-7",
            "failed": False,
            "why": "its removal lowers the difference most",
            "difference": point["difference"] - 0.01,
            "difference_low": point["difference_low"] - 0.01,
            "difference_high": point["difference_high"],
            "devices_checked": 1,
            "group": {
                "size": 20,
                "healthy_devices": 400,
                "budget": 4.0,
                "devices": [f"pc-h{i}" for i in range(20)],
                "champion_false_alarms": 3,
                "difference": point["difference"] - 0.02,
                "difference_low": point["difference_low"] - 0.02,
                "difference_high": point["difference_high"],
                "holds": wins,
            },
            "holds": wins,
        },
        "wins": wins,
    }
    challenger = FleetDiskScorer(
        name="disk-fleet",
        version="unsaved",
        models=dict(champion.models),
        reference=champion.reference,
        fleet=layer,
        learned_signs=("media_errors",),
        base=report["champion"],
        operating_points={"30": {"cap 1%": {"threshold": 0.05}, "cap 0.1%": {"threshold": 0.2}}},
    )
    champion_id = adopt_champion(registry_dir, SHIPPED_REGISTRY, None)
    directory = publish_fleet_model(
        FleetExperiment(challenger, report), artifact_dir(registry_dir, champion_id), registry_dir, 0
    )
    register_artifact(registry_dir, "disk", directory.name, ScorerRole.CHALLENGER)
    return directory.name


def test_fleet_artifact_loads_as_served_and_weighs_learned_alarms(champion: Any, tmp_path: Path) -> None:
    artifact = fleet_challenger(champion, tmp_path, wins=True)
    loaded = load_artifact(read_registry(tmp_path), tmp_path, artifact)
    assert isinstance(loaded, FleetDiskScorer)
    assert loaded.learned_signs == ("media_errors",)
    features = np.full((1, len(DISK_FEATURES)), np.nan)
    features[0, DISK_FEATURES.index("media_errors")] = 3
    features[0, DISK_FEATURES.index("spare_margin_pct")] = 50
    assert served_risk(champion, features)[0] >= RISK_CRITICAL  # the shipped model: any media error is critical
    assert served_risk(loaded, features)[0] < RISK_CRITICAL  # the fleet layer weighs it instead
    meta = json.loads((tmp_path / artifact / "metadata.json").read_text())
    assert meta["kind"] == "fleet-stacked"
    assert meta["models"]


def test_promotion_gate_refuses_a_loser_and_audits_an_override(champion: Any, tmp_path: Path) -> None:
    registry = tmp_path / "models"
    artifact = fleet_challenger(champion, registry, wins=False)
    store_url = f"sqlite:///{tmp_path}/tickets.db"
    env = {"FLEETPULSE_ALERTS__STORE_URL": store_url, "FLEETPULSE_MODELS__REGISTRY_DIR": str(registry)}
    runner = CliRunner()
    refused = runner.invoke(cli_app, ["models", "promote", artifact], env=env)
    assert refused.exit_code == 1
    assert "does not win" in refused.output
    no_reason = runner.invoke(cli_app, ["models", "promote", artifact, "--override"], env=env)
    assert no_reason.exit_code == 2
    assert read_registry(registry).champions["disk"] != artifact
    forced = runner.invoke(
        cli_app, ["models", "promote", artifact, "--override", "--reason", "vendor recall notice"], env=env
    )
    assert forced.exit_code == 0, forced.output
    assert read_registry(registry).champions["disk"] == artifact
    store = TicketStore.open(store_url)
    try:
        (record,) = store.audit.records(kind="model.promoted_override")
    finally:
        store.close()
    assert record.payload["reason"] == "vendor recall notice"
    assert record.payload["artifact"] == artifact
    unknown = runner.invoke(cli_app, ["models", "promote", "disk-fleet-000000000000"], env=env)
    assert unknown.exit_code == 1


def test_attack_files_edited_after_the_gate_are_never_signed_into_the_index(champion: Any, tmp_path: Path) -> None:
    """Someone who can write the registry folder but has no signing key edits the challenger's stored alert
    threshold to 1.0 (disk alerts off) between the gate's check and the promotion: the promotion is refused."""
    artifact = fleet_challenger(champion, tmp_path, wins=True)
    wins, _, digests = promotion_check(tmp_path, artifact, None)
    assert wins
    meta_file = tmp_path / artifact / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["operating_points"]["30"]["cap 1%"]["threshold"] = 1.0
    meta_file.write_text(json.dumps(meta))
    before = read_registry(tmp_path).champions["disk"]
    with pytest.raises(ArtifactError):
        make_champion(tmp_path, artifact, None, digests)
    assert read_registry(tmp_path).champions["disk"] == before


def test_attack_a_fleet_artifact_whose_layer_is_no_model_is_refused(champion: Any, tmp_path: Path) -> None:
    """A fleet artifact written without recorded predictions, its fitted layer swapped for an array: it was
    registered and served, and failed every scoring call of its worker."""
    from fleetpulse.models.artifact import load_artifact as load_files
    from fleetpulse.models.artifact import save_artifact
    from fleetpulse.models.index import artifact_digests

    artifact = fleet_challenger(champion, tmp_path / "trained", wins=True)
    payload, meta = load_files(tmp_path / "trained" / artifact, artifact_digests(tmp_path / "trained" / artifact))
    del meta["predictions"]
    save_artifact(tmp_path / "swapped", {**payload, "fleet": np.zeros(len(STACK_FEATURES))}, meta)
    with pytest.raises(ArtifactError, match="the fleet layer is a ndarray, not the fitted layer"):
        register_artifact(tmp_path, "disk", "swapped", ScorerRole.CHALLENGER)


def test_a_win_against_an_earlier_champion_is_no_win_against_the_current_one(champion: Any, tmp_path: Path) -> None:
    first = fleet_challenger(champion, tmp_path, wins=True)
    second = fleet_challenger(champion, tmp_path, wins=True, seed=1)  # both measured against the shipped champion
    wins, _, digests = promotion_check(tmp_path, first, None)
    make_champion(tmp_path, first, None, digests)
    wins, evidence, _ = promotion_check(tmp_path, second, None)
    assert not wins
    assert "retrain" in evidence


def test_worker_serves_a_promoted_champion_without_restart_and_keeps_verified_models_on_tampering(
    champion: Any, tmp_path: Path
) -> None:
    from fleetpulse.settings import ServerSettings
    from fleetpulse.streams.app import create_app
    from fleetpulse.streams.reload import RegistryWatch

    registry = tmp_path / "models"
    artifact = fleet_challenger(champion, registry, wins=True)
    settings = ServerSettings.model_validate(
        {"models": {"registry_dir": str(registry)}, "streams": {"tsdb": {"kind": "none"}}}
    )
    worker = create_app(settings).fleetpulse  # type: ignore[attr-defined]
    watch = RegistryWatch(registry)
    assert asyncio.run(worker.reload_models(settings, watch)) is False  # nothing changed
    runner = CliRunner()
    env = {
        "FLEETPULSE_ALERTS__STORE_URL": f"sqlite:///{tmp_path}/t.db",
        "FLEETPULSE_MODELS__REGISTRY_DIR": str(registry),
    }
    assert runner.invoke(cli_app, ["models", "promote", artifact], env=env).exit_code == 0
    assert asyncio.run(worker.reload_models(settings, watch)) is True
    disk = next(s for s in worker.processor.scorers.champions if s.component is Component.DISK)
    assert isinstance(disk, FleetDiskScorer)
    assert worker.processor.policy.thresholds(Component.DISK).raise_threshold == 0.05  # its stored operating point
    assert (
        f'model_name="disk-fleet",model_version="{disk.version}",role="champion"'
        in worker.metrics.exposition().decode()
    )
    # attack: swap the champion's model file behind the index; the worker keeps serving what it verified
    (registry / artifact / "model.skops").write_bytes(b"not a model")
    index = registry / "registry.json"
    index.write_text(index.read_text() + "\n")
    assert asyncio.run(worker.reload_models(settings, watch)) is False
    assert next(s for s in worker.processor.scorers.champions if s.component is Component.DISK) is disk


def _fleet_log(champion: Any, attacker: list[Row]) -> tuple[FleetRows, list[Outcome]]:
    """400 honest disks on 400 devices over 240 days, 60 failing with growing sectors (10 of them declaring
    SMART failure in their last 10 days); plus ``attacker``'s rows."""
    rng = np.random.default_rng(1)
    base = dict(zip(DISK_FEATURES, champion.reference.tolist(), strict=True))
    base.update(smart_failed=0.0, critical_warning=0.0, media_errors=0.0, spare_margin_pct=50.0, history_days=100.0)
    rows, outcomes = [], []
    for c in range(400):
        fail_day = D0 + timedelta(days=int(rng.integers(40, 240))) if c < 60 else None
        for d in range(0, 240, 3):
            day = D0 + timedelta(days=d)
            if fail_day and day > fail_day:
                break
            features = dict(base)
            if fail_day and (left := (fail_day - day).days) <= 30:
                grow = 30 - left
                features.update(smart_5=8.0 * grow, smart_5_delta_7d=20.0, smart_5_delta_30d=8.0 * grow)
                features.update(smart_5_growth_days_30d=float(grow), smart_197=2.0 * grow)
                features["smart_failed"] = 1.0 if c % 6 == 0 and left <= 10 else 0.0
            rows.append(Row(f"pc-{c}", "disk", f"s{c}", day, features))
        if fail_day:
            outcomes.append(Outcome(f"pc-{c}", "disk", f"s{c}", fail_day, "failure"))
    return FleetRows.from_log(
        [*rows, *(Row(r.device_id, r.component, r.component_id, r.day, base | r.features) for r in attacker)]
    ), outcomes


def test_attack_one_pc_cannot_teach_the_fleet_model_to_ignore_smart_failure(champion: Any) -> None:
    """A PC reports, with its own genuine key, fresh SMART-failed disks every day that are never ticketed (so
    labelled healthy). Counted per component, its alarms outvoted the fleet's ten real ones: the challenger
    scored a SMART-failed drive 0.000 and passed the gate. Now the device is left out for logging more disks
    than a device tracks, and an alarm needs 20 devices, so the override stays."""
    rotating = [
        Row("pc-evil", "disk", f"evil-{d}-{k}", D0 + timedelta(days=d), {"smart_failed": 1.0})
        for d in range(240)
        for k in range(8)
    ]
    steady = [
        Row("pc-evil", "disk", f"evil-{k}", D0 + timedelta(days=d), {"smart_failed": 1.0})
        for d in range(240)
        for k in range(8)
    ]
    probe = np.full((1, len(DISK_FEATURES)), np.nan)
    probe[0] = champion.reference
    probe[0, DISK_FEATURES.index("smart_failed")] = 1.0
    for attack, left_out in ((rotating, {"pc-evil": 1920}), (steady, {})):
        rows, outcomes = _fleet_log(champion, attack)
        assert rows.left_out == left_out
        experiment = train_fleet_challenger(champion, rows, outcomes, D0 + timedelta(days=239), holdout_days=90)
        assert experiment.challenger.learned_signs == ()
        assert served_risk(experiment.challenger, probe)[0] >= RISK_CRITICAL
        assert experiment.report["left_out_devices"] == len(left_out)


EIGHT_STEADY_DISKS = [
    Row("pc-evil", "disk", f"evil-{k}", D0 + timedelta(days=d), {"smart_5": 2.0**40, "smart_197": 2.0**40})
    for d in range(240)
    for k in range(8)
]
"""One registered PC (the shared agent credential) reporting an absurd but steady sector count on 8 disks (as
many as a device tracks, so it is not left out); its tickets close no_fault_found, so they are healthy disks."""

STEADY_MEDIA_ERRORS = [
    Row(f"pc-{c}", "disk", f"s{c}", D0 + timedelta(days=d), {"media_errors": 2.0})
    for c in range(60, 100)
    for d in range(0, 240, 3)
]
"""The fleet's own quirk: 40 healthy disks (40 devices) log two media errors that never grow. The champion
reads any media error as critical; the fleet's outcomes teach the challenger that only growing counts fail."""


def test_attack_one_pc_with_eight_steady_disks_cannot_decide_the_gate(champion: Any) -> None:
    """At cap 0.1 % on 348 healthy held-out disks, the PC's 8 disks, counted per disk, took the whole false-alarm
    budget: the champion's detection fell to 0 and a challenger that ranks them low won by +100 pp (interval
    +100 .. +100), although on the honest disks both detect everything. Per device the PC is one vote, its
    share of the champion's false alarms is in the report, and without it the challenger gains nothing."""
    gate, through = "cap 0.1%", D0 + timedelta(days=239)
    clean = train_fleet_challenger(champion, *_fleet_log(champion, []), through, holdout_days=90, gate_cap=gate)
    assert clean.report["comparison"][gate]["difference"] == 0.0
    assert not clean.report["wins"]
    attacked = train_fleet_challenger(
        champion, *_fleet_log(champion, EIGHT_STEADY_DISKS), through, holdout_days=90, gate_cap=gate
    )
    report = attacked.report
    assert not report["wins"]
    assert report["held_out"]["healthy_devices"] == report["held_out"]["healthy_disks"] - 7
    assert report["comparison"][gate]["champion_largest_device_share"] == 1.0
    assert report["stability"]["device"] == "pc-evil"
    assert not report["stability"]["holds"]
    assert report["stability"]["difference"] == 0.0
    wins, evidence = promotion_verdict(attacked.challenger, report["champion"])
    assert not wins
    assert "without device pc-evil" in evidence
    assert "the whole difference rests on this one device" in evidence
    page = report_markdown(report)
    assert "| 0.1 % | 0.0 % | 100.0 % |" in page
    assert "100.0 % / " in page  # the largest one-device share of the champion's false alarms


@pytest.mark.parametrize("gate", ["cap 0.1%", "cap 1%"])
def test_a_challenger_better_on_the_fleets_own_outcomes_still_wins_the_device_gate(champion: Any, gate: str) -> None:
    """The gate still promotes a real improvement, with the attacking PC in the fleet or not."""
    through = D0 + timedelta(days=239)
    for attacker in ([], EIGHT_STEADY_DISKS):
        rows, outcomes = _fleet_log(champion, STEADY_MEDIA_ERRORS + attacker)
        experiment = train_fleet_challenger(champion, rows, outcomes, through, holdout_days=90, gate_cap=gate)
        point = experiment.report["comparison"][gate]
        assert experiment.challenger.learned_signs == ("media_errors",)
        assert point["champion_detection"] < 0.05
        assert point["challenger_detection"] == 1.0
        assert point["difference_low"] > 0.9
        assert experiment.report["stability"]["holds"]
        assert experiment.report["stability"]["difference_low"] > 0.9
        assert promotion_verdict(experiment.challenger, experiment.report["champion"])[0]


def test_a_win_counted_per_disk_is_no_win(champion: Any, tmp_path: Path) -> None:
    """A challenger carrying an evaluation counted per disk (no device unit, no one-device check) is refused:
    one device may have decided it."""
    artifact = fleet_challenger(champion, tmp_path, wins=True)
    loaded = load_artifact(read_registry(tmp_path), tmp_path, artifact)
    assert isinstance(loaded, FleetDiskScorer)
    assert promotion_verdict(loaded, loaded.evaluation["champion"])[0]
    loaded.evaluation = {k: v for k, v in loaded.evaluation.items() if k not in ("unit", "stability")}
    wins, evidence = promotion_verdict(loaded, loaded.evaluation["champion"])
    assert not wins
    assert "per disk" in evidence
    assert "retrain" in evidence


def test_a_win_measured_without_the_group_check_is_no_win(champion: Any, tmp_path: Path) -> None:
    """An evaluation that left out single devices only (no group) is refused: colluders may have forced it."""
    artifact = fleet_challenger(champion, tmp_path, wins=True)
    loaded = load_artifact(read_registry(tmp_path), tmp_path, artifact)
    assert isinstance(loaded, FleetDiskScorer)
    del loaded.evaluation["stability"]["group"]
    wins, evidence = promotion_verdict(loaded, loaded.evaluation["champion"])
    assert not wins
    assert "no group check: retrain" in evidence
