"""Alerting rules: promtool unit tests for every alert, one source for compose and Kubernetes,
and every metric a rule reads is one the code exports (a renamed metric would silence an alert).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import generate_latest

from fleetpulse.alerts.consumer import ConsumerStats
from fleetpulse.alerts.metrics import store_registry
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.models import OutboxRow
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.compat import UTC
from fleetpulse.streams.metrics import PipelineMetrics
from tests.alerts_support import make_inventory
from tests.unit.deploy.test_k8s import objects
from tests.unit.deploy.tools import DEPLOY, tool

RULES_DIR = DEPLOY / "compose" / "prometheus"
RULES = RULES_DIR / "fleetpulse-alerts.yaml"
RULE_TESTS = RULES_DIR / "fleetpulse-alerts.test.yaml"
RENDER = DEPLOY / "k8s" / "render-prometheus-rule.py"


def promtool() -> str:
    return tool("promtool")


def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return groups


def _alerts() -> list[dict[str, Any]]:
    return [rule for group in _groups() for rule in group["rules"] if "alert" in rule]


def test_rules_are_valid_and_every_alert_passes_its_promtool_tests() -> None:
    check = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_firing_promtool_test() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    firing = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert {rule["alert"] for rule in _alerts()} == firing


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]


def test_kubernetes_prometheus_rule_is_generated_from_the_compose_rules() -> None:
    fresh = subprocess.run([sys.executable, str(RENDER), "--check"], capture_output=True, text=True, check=False)
    assert fresh.returncode == 0, fresh.stderr
    (rule,) = objects("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["namespace"] == "fleetpulse"
    assert rule["spec"]["groups"] == _groups()


def test_rules_select_the_jobs_the_service_monitors_scrape() -> None:
    services = {s["metadata"]["name"]: s for s in objects("Service")}
    monitored = set()
    for monitor in objects("ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        ports = {e["port"] for e in monitor["spec"]["endpoints"]}
        matching = [
            name
            for name, svc in services.items()
            if selector.items() <= svc["metadata"].get("labels", {}).items()
            and ports <= {p["name"] for p in svc["spec"]["ports"]}
        ]
        assert len(matching) == 1, (monitor["metadata"]["name"], matching)
        monitored.add(matching[0])  # the operator's job label is the Service name
    jobs = {job for rule in _alerts() for job in re.findall(r'job="([^"]+)"', rule["expr"])}
    assert jobs == monitored == {"fleetpulse-worker-metrics", "fleetpulse-tickets-metrics"}


class _Sink:
    written = 1
    dropped: Mapping[str, int] = {"invalid": 1}


def _exported_metric_names(tmp_path: Path) -> set[str]:
    worker = PipelineMetrics()
    worker.track_sink(_Sink())
    worker.events.labels("health").inc()
    worker.dead_letters.labels("invalid").inc()
    worker.record_scorer_errors({("disk", "champion", "disk-gbm", "cde13b3ee3e8"): 2})
    store = TicketStore.open(f"sqlite:///{tmp_path / 'tickets.db'}")
    now = datetime.now(UTC)
    with store.session() as session:
        session.add(
            OutboxRow(
                target="webhook",
                dedup_key="k",
                subject="ticket",
                payload={},
                created_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )
    TicketService(store, AlertSettings()).apply_inventory(make_inventory("pc-1"))
    stats = ConsumerStats(records=2, dead_letters=1, dead_letter_kinds={"malformed_json": 1})
    consumer = store_registry(store, timedelta(hours=48), stats=stats)
    text = (generate_latest(worker.registry) + generate_latest(consumer)).decode()
    store.close()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_metric_a_rule_reads_is_exported(tmp_path: Path) -> None:
    exported = _exported_metric_names(tmp_path)
    read = {name for rule in _alerts() for name in re.findall(r"\bfleetpulse_\w+", rule["expr"])}
    assert read, "the rules read no fleetpulse metric"
    assert read - exported == set()


def test_install_script_brings_promtool_and_stops_the_service_it_starts() -> None:
    script = (DEPLOY / "local" / "install-deps.sh").read_text(encoding="utf-8")
    (debs,) = re.findall(r"debs=\(([^)]*)\)", script)
    assert "prometheus" in debs.split()
    assert "[prometheus]=prometheus" in script
