"""Kubernetes manifests: built with kustomize, built-in kinds validated against the Kubernetes
OpenAPI schemas shipped by ``kubernetes-validate`` (strict: unknown fields fail), and the
operator custom resources (Strimzi, KEDA, CloudNativePG — no schema available offline)
checked structurally against the retention policy and the application's real settings.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fleetpulse.alerts.store import store_url
from fleetpulse.compat import tomllib
from fleetpulse.config import SECRETS_DIR_ENV, load_settings
from fleetpulse.contract import Topics
from fleetpulse.settings import ServerSettings
from tests.unit.deploy.tools import (
    DEPLOY,
    MOUNTED_SECRET,
    assert_sso_secrets_are_the_mounted_files,
    kustomize,
    retention_policy,
)

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"
CRD_KINDS = {
    "Kafka",
    "KafkaNodePool",
    "KafkaTopic",
    "KafkaUser",
    "ScaledObject",
    "TriggerAuthentication",
    "Cluster",
    "PrometheusRule",  # checked in test_prometheus_rules.py
    "ServiceMonitor",
}
DAY_MS = 86_400_000


@cache
def build(target: str) -> tuple[dict[str, Any], ...]:
    proc = subprocess.run(
        [kustomize(), "build", str(K8S / target)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return tuple(d for d in yaml.safe_load_all(proc.stdout) if d)


def objects(kind: str, target: str = "overlays/production") -> list[dict[str, Any]]:
    return [d for d in build(target) if d["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in objects(kind) if d["metadata"]["name"] == name]
    return found


def _template(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    template: dict[str, Any] = spec["template"]
    return template


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in build("overlays/production"):
        if doc["kind"] in ("Deployment", "StatefulSet", "Job", "CronJob"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", _template(doc)["spec"]


@pytest.mark.parametrize("target", ["base", "overlays/production"])
def test_builtin_kinds_validate_against_kubernetes_schemas(target: str) -> None:
    docs = build(target)
    kinds = {d["kind"] for d in docs}
    assert kinds - CRD_KINDS >= {
        "Namespace",
        "Deployment",
        "StatefulSet",
        "Service",
        "Ingress",
        "NetworkPolicy",
        "ConfigMap",
    }
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    assert kinds & CRD_KINDS == CRD_KINDS, "every custom resource kind is checked structurally below"


def test_validator_rejects_unknown_fields() -> None:
    """Guards the guard: a misspelt container field must fail strict validation."""
    broken = copy.deepcopy(one("Deployment", "fleetpulse-worker"))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_namespace_enforces_restricted_pod_security() -> None:
    (ns,) = objects("Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {d["metadata"].get("namespace") for d in build("overlays/production") if d["kind"] != "Namespace"} == {
        "fleetpulse"
    }


def test_every_pod_meets_the_restricted_profile() -> None:
    for name, spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "memory" in container["resources"]["limits"], name
            assert container["resources"]["requests"], name


def _secret_names(node: Any) -> Iterator[str]:
    """Every Secret a manifest points at: secretKeyRef, secret volumes, KEDA secretTargetRef, TLS blocks."""
    if isinstance(node, dict):
        if isinstance(node.get("secretKeyRef"), dict):
            yield node["secretKeyRef"]["name"]
        if isinstance(node.get("secretName"), str):
            yield node["secretName"]
        if isinstance(node.get("secret"), dict) and isinstance(node["secret"].get("name"), str):
            yield node["secret"]["name"]  # a projected volume's source
        for ref in node.get("secretTargetRef", []):
            yield ref["name"]
        for value in node.values():
            yield from _secret_names(value)
    elif isinstance(node, list):
        for item in node:
            yield from _secret_names(item)


def test_secrets_are_referenced_never_inlined() -> None:
    docs = build("overlays/production")
    assert not [d for d in docs if d["kind"] == "Secret"]
    referenced = set(_secret_names(list(docs)))
    assert {"fleetpulse-worker", "fleetpulse-pg-app", "fleetpulse-keda", "fleetpulse-agent-credentials"} <= referenced
    documented = (DEPLOY / "production.md").read_text(encoding="utf-8")
    for name in referenced:
        assert f"`{name}`" in documented, f"secret {name} is not documented in deploy/production.md"
    for name, spec in pod_specs():
        for container in spec["containers"]:
            for env in container.get("env", []):
                if re.search(r"PASSWORD|TOKEN", env["name"]) and "value" in env:
                    if env["name"].endswith("__FILE") and env["value"].startswith("/run/secrets/"):
                        continue  # a path to a mounted secret
                    pytest.fail(f"{name}: {env['name']} has an inline value")
    (grafana,) = [spec for name, spec in pod_specs() if name == "Deployment/grafana"]
    names = {env["name"] for env in grafana["containers"][0]["env"]}
    assert "GF_SECURITY_ADMIN_PASSWORD" not in names, "the admin password arrives as a file"


def test_kafka_is_kraft_with_tls_scram_and_mtls() -> None:
    kafka = one("Kafka", "fleetpulse")
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    listeners = {entry["name"]: entry for entry in kafka["spec"]["kafka"]["listeners"]}
    assert all(entry["tls"] is True for entry in listeners.values())
    assert listeners["tls"]["authentication"]["type"] == "scram-sha-512"
    assert listeners["external"]["authentication"]["type"] == "scram-sha-512"
    assert listeners["mtls"]["authentication"]["type"] == "tls"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    assert kafka["spec"]["kafka"]["config"]["auto.create.topics.enable"] is False
    (pool,) = objects("KafkaNodePool")
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["spec"]["storage"]["volumes"][0]["size"] == "200Gi", "production overlay patch applied"


def test_topics_follow_the_retention_policy() -> None:
    policy = retention_policy()["kafka"]
    topics = {t["spec"]["topicName"]: t for t in objects("KafkaTopic")}
    assert set(topics) == set(policy["topics"]) == set(Topics().all())
    for name, rule in policy["topics"].items():
        topic = topics[name]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "fleetpulse"
        assert topic["spec"]["partitions"] == policy["partitions"]
        config = topic["spec"]["config"]
        assert config["cleanup.policy"] == rule["cleanup_policy"]
        if rule["retention_days"] is None:
            assert "retention.ms" not in config
        else:
            assert config["retention.ms"] == rule["retention_days"] * DAY_MS, name
        assert config.get("retention.bytes") == (
            rule["max_gib_per_partition"] * 2**30 if "max_gib_per_partition" in rule else None
        ), name
        if "compact" in rule["cleanup_policy"]:  # tombstones (retirements) stay a day for consumers to see
            assert config["delete.retention.ms"] == DAY_MS, name
    assert "max_gib_per_partition" in policy["topics"][Topics().health], "the topic any PC can fill is bounded in size"


def test_retention_policy_values_are_well_formed() -> None:
    """retention_days is null exactly for topics kept for good (plain compaction)."""
    for name, rule in retention_policy()["kafka"]["topics"].items():
        assert rule["cleanup_policy"] in ("delete", "compact", "compact,delete"), name
        assert (rule["retention_days"] is None) == (rule["cleanup_policy"] == "compact"), name
        assert isinstance(rule.get("max_gib_per_partition", 1), int), name


def test_topics_outside_clients_write_are_bounded() -> None:
    """Agents and the MDM bridge write from outside the cluster with credentials that can leak: what they can
    write (refused records included) must age out and stay within a size bound, or a flood at their quota fills
    the brokers' disks for good. This covers the MDM bridge's compacted inventory topic."""
    users = {u["metadata"]["name"]: u["spec"] for u in objects("KafkaUser")}
    policy = retention_policy()["kafka"]["topics"]
    written = {name for name in policy if _writers(users, name) & {"fleetpulse-agent", "fleetpulse-mdm"}}
    assert written == {Topics().health, Topics().mobile, Topics().mobile_inventory}
    for name in sorted(written):
        assert policy[name]["retention_days"] is not None, f"{name}: kept for good"
        assert "max_gib_per_partition" in policy[name], f"{name}: unbounded in size"
    # the bridge republishes every phone of each export it ingests: its facts outlive many missed exports
    assert policy[Topics().mobile_inventory]["cleanup_policy"] == "compact,delete"
    assert policy[Topics().mobile_inventory]["retention_days"] >= 14


def test_documented_retention_matches_policy() -> None:
    doc = (DEPLOY / "production.md").read_text(encoding="utf-8")
    for name, rule in retention_policy()["kafka"]["topics"].items():
        (line,) = [row for row in doc.splitlines() if row.startswith(f"| Kafka `{name}`")]
        expected = "compacted" if rule["retention_days"] is None else f"| {rule['retention_days']} days"
        assert expected in line, line
        if "compact" in rule["cleanup_policy"]:
            assert "compacted" in line, line
        if "max_gib_per_partition" in rule:
            assert f"at most {rule['max_gib_per_partition']} GiB per partition" in line, line
    assert f"| {retention_policy()['influxdb']['retention_days']} days |" in doc


def _writers(users: dict[str, Any], topic: str) -> set[str]:
    """Users allowed to write ``topic`` (by its name or a prefix of it) and not denied it by name."""
    allowed = {
        name
        for name, spec in users.items()
        for acl in spec["authorization"]["acls"]
        if "Write" in acl["operations"]
        and acl.get("type", "allow") == "allow"
        and topic.startswith(acl["resource"].get("name", "\0"))
        and (acl["resource"].get("patternType") == "prefix" or acl["resource"].get("name") == topic)
    }
    denied = {
        name
        for name, spec in users.items()
        for acl in spec["authorization"]["acls"]
        if acl.get("type") == "deny" and acl["resource"].get("name") == topic and "Write" in acl["operations"]
    }
    return allowed - denied


def test_kafka_users_are_least_privilege() -> None:
    users = {u["metadata"]["name"]: u["spec"] for u in objects("KafkaUser")}
    assert set(users) == {
        "fleetpulse-worker",
        "fleetpulse-tickets",
        "fleetpulse-agent",
        "fleetpulse-mdm",
        "fleetpulse-keda",
        "fleetpulse-it",
        "fleetpulse-register",
    }
    assert users["fleetpulse-mdm"]["authentication"]["type"] == "tls"
    # IT's register decides site scope, repair-or-replace and which devices may report: one writer, IT's own
    assert _writers(users, Topics().inventory) == {"fleetpulse-register"}
    register_acls = users["fleetpulse-register"]["authorization"]["acls"]
    assert [(a["resource"]["name"], sorted(a["operations"])) for a in register_acls] == [
        (Topics().inventory, ["Describe", "Write"])
    ]
    agent_acls = users["fleetpulse-agent"]["authorization"]["acls"]
    assert [(a["resource"]["name"], sorted(a["operations"])) for a in agent_acls] == [
        (Topics().health, ["Describe", "Write"])
    ]
    # only IT's principal writes the control topic (re-enrolment); the worker reads it but may not write it
    assert _writers(users, Topics().control) == {"fleetpulse-it"}
    # only the workers record the registry generations they served: the registry's writers cannot lower the floor
    assert _writers(users, Topics().serving) == {"fleetpulse-worker"}
    # the MDM bridge writes its own topics, never IT's register: a leaked certificate cannot rewrite a PC's facts
    # (the consumers join its inventory for its own mdm- devices only: tests/unit/test_mdm_inventory_topic.py)
    assert "fleetpulse-mdm" not in _writers(users, Topics().inventory)
    assert _writers(users, Topics().mobile_inventory) == {"fleetpulse-mdm"}
    mdm_acls = users["fleetpulse-mdm"]["authorization"]["acls"]
    assert {a["resource"]["name"] for a in mdm_acls} == {Topics().mobile, Topics().mobile_inventory}
    keda_ops = {op for a in users["fleetpulse-keda"]["authorization"]["acls"] for op in a["operations"]}
    assert keda_ops == {"Describe"}


def _topics_with(users: dict[str, Any], user: str, operation: str) -> set[str]:
    return {
        a["resource"]["name"]
        for a in users[user]["authorization"]["acls"]
        if a["resource"]["type"] == "topic" and a.get("type", "allow") == "allow" and operation in a["operations"]
    }


def test_kafka_users_grant_what_each_service_does() -> None:
    """What the code does on Kafka, user by user (tests/integration/test_kafka_acls.py runs the services under these
    ACLs on a real broker): the topics each reads and writes, its consumer group as the code names it (topic prefix +
    id), Faust's own topics, no topic creation of the pipeline's topics (kafka-topics.yaml makes them)."""
    users = {u["metadata"]["name"]: u["spec"] for u in objects("KafkaUser")}
    settings = _k8s_settings()
    t = Topics(prefix=settings.kafka.topic_prefix)
    worker_group = f"{settings.kafka.topic_prefix}{settings.streams.app_id}"  # = Faust's app id
    tickets_group = f"{settings.kafka.topic_prefix}{settings.alerts.consumer.group_id}"
    # the ticket consumer subscribes to alerts, both inventories, scores (risk history) and the feature log, and
    # produces ticket outcomes (labels, via the outbox) and the dead letters of records it cannot store
    assert _topics_with(users, "fleetpulse-tickets", "Read") == {
        t.alerts,
        t.inventory,
        t.mobile_inventory,
        t.scores,
        t.features,
    }
    assert _topics_with(users, "fleetpulse-tickets", "Write") == {t.labels, t.dead_letter}
    assert _writers(users, t.dead_letter) == {"fleetpulse-worker", "fleetpulse-tickets"}
    assert _writers(users, t.labels) == {"fleetpulse-tickets"}, "training labels come from ticket outcomes only"
    # the worker: its input topics and the serving floor in; scores, alerts, feature log, dead letters, serving out;
    # Faust's changelog and leader topics (app id + "-") are its own, created by Faust
    assert _topics_with(users, "fleetpulse-worker", "Read") == {
        t.health,
        t.mobile,
        t.inventory,
        t.mobile_inventory,
        t.control,
        t.serving,
        f"{worker_group}-",
    }
    assert _topics_with(users, "fleetpulse-worker", "Write") == {
        t.scores,
        t.alerts,
        t.features,
        t.dead_letter,
        t.serving,
        f"{worker_group}-",
    }
    assert _topics_with(users, "fleetpulse-worker", "Create") == {f"{worker_group}-"}
    denied = {
        a["resource"]["name"]
        for a in users["fleetpulse-worker"]["authorization"]["acls"]
        if a.get("type") == "deny" and a["operations"] == ["Write"] and a["resource"].get("patternType") == "literal"
    }
    assert denied == {t.inventory, t.labels, t.control, t.mobile_inventory}, "guards on the topics others write"
    for topic in (t.inventory, t.labels, t.control, t.mobile_inventory):
        assert "fleetpulse-worker" not in _writers(users, topic), topic
    groups = {
        name: {a["resource"]["name"] for a in spec["authorization"]["acls"] if a["resource"]["type"] == "group"}
        for name, spec in users.items()
    }
    assert groups == {
        "fleetpulse-worker": {worker_group},
        "fleetpulse-tickets": {tickets_group},
        "fleetpulse-keda": {worker_group},
        "fleetpulse-agent": set(),
        "fleetpulse-mdm": set(),
        "fleetpulse-it": set(),
        "fleetpulse-register": set(),
    }
    # KEDA describes the topics its triggers name, nothing else
    triggers = {
        trigger["metadata"]["topic"] for trigger in one("ScaledObject", "fleetpulse-worker")["spec"]["triggers"]
    }
    assert _topics_with(users, "fleetpulse-keda", "Describe") == triggers
    # Nothing uses transactions, and Kafka >= 3.0 lets a principal with Write on a topic start an idempotent producer
    kinds = {a["resource"]["type"] for spec in users.values() for a in spec["authorization"]["acls"]}
    assert kinds == {"topic", "group"}, "no transactionalId or cluster rights"
    for name, spec in users.items():
        for acl in spec["authorization"]["acls"]:
            created = [
                topic
                for topic in t.all()
                if "Create" in acl["operations"] and topic.startswith(acl["resource"]["name"])
            ]
            assert not created, f"{name} may create {created}: kafka-topics.yaml makes the pipeline's topics"


def test_outside_clients_have_a_produce_quota() -> None:
    """Agents and the MDM bridge connect from outside the cluster: each user's produce quota (per broker) bounds
    what a leaked credential can write, with the topics' size bounds (test_topics_outside_clients_write_are_bounded)."""
    users = {u["metadata"]["name"]: u["spec"] for u in objects("KafkaUser")}
    rates = {
        name: users[name].get("quotas", {}).get("producerByteRate") for name in ("fleetpulse-agent", "fleetpulse-mdm")
    }
    assert all(isinstance(rate, int) and rate > 0 for rate in rates.values()), rates
    # one export of 25,000 phones, ~0.7 KB of records each, published in well under two minutes on one broker
    assert 25_000 * 700 / rates["fleetpulse-mdm"] < 120
    assert rates["fleetpulse-mdm"] <= rates["fleetpulse-agent"], "one bridge, not tens of thousands of PCs"
    doc = (DEPLOY / "production.md").read_text(encoding="utf-8")
    assert f"{rates['fleetpulse-mdm'] // 1024} KiB/s per broker" in doc, "production.md states the bridge's quota"


def _k8s_settings() -> ServerSettings:
    return ServerSettings.model_validate(tomllib.loads((K8S / "base" / "server.toml").read_text(encoding="utf-8")))


def test_server_toml_is_valid_for_the_real_settings() -> None:
    settings = _k8s_settings()
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.streams.partitions == retention_policy()["kafka"]["partitions"]
    assert settings.streams.unknown_devices == "reject"
    assert settings.streams.max_first_report_age == timedelta(days=14)


def test_worker_probes_reach_the_port_the_worker_binds() -> None:
    """The kubelet probes the pod address: a worker bound to loopback (the settings' default) fails its
    probes and is killed every couple of minutes."""
    (container,) = one("Deployment", "fleetpulse-worker")["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["port"] == "metrics"
    assert {"name": "metrics", "containerPort": _k8s_settings().streams.web_port} in container["ports"]
    assert _k8s_settings().streams.web_host == "0.0.0.0"


def test_workers_scale_on_consumer_lag() -> None:
    scaled = one("ScaledObject", "fleetpulse-worker")["spec"]
    assert scaled["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fleetpulse-worker"}
    one("Deployment", "fleetpulse-worker")
    assert "replicas" not in one("Deployment", "fleetpulse-worker")["spec"], "KEDA owns the replica count"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"] <= retention_policy()["kafka"]["partitions"]
    settings = _k8s_settings()
    topics = Topics(prefix=settings.kafka.topic_prefix)
    assert {t["metadata"]["topic"] for t in scaled["triggers"]} == {topics.health, topics.mobile}
    for trigger in scaled["triggers"]:
        meta = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert meta["consumerGroup"] == settings.streams.app_id, "Faust's consumer group is its app id"
        assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
        assert (meta["sasl"], meta["tls"]) == ("scram_sha512", "enable")
        assert one("TriggerAuthentication", trigger["authenticationRef"]["name"])


def test_influxdb_bucket_retention_matches_policy() -> None:
    env = {e["name"]: e for e in one("StatefulSet", "influxdb")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DOCKER_INFLUXDB_INIT_RETENTION"]["value"] == f"{retention_policy()['influxdb']['retention_days']}d"
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"]["value"] == retention_policy()["influxdb"]["bucket"]


def test_postgres_cluster() -> None:
    cluster = one("Cluster", "fleetpulse-pg")["spec"]
    assert cluster["instances"] >= 2
    assert cluster["enableSuperuserAccess"] is False
    assert cluster["bootstrap"]["initdb"] == {"database": "fleetpulse", "owner": "fleetpulse"}


def test_grafana_configmaps_carry_the_generated_dashboards() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="the dashboards' SDK is published for Python 3.11+ only")
    from fleetpulse.dashboards.build import build_all, render

    (dashboards,) = [c for c in objects("ConfigMap") if c["metadata"]["name"].startswith("grafana-dashboards-")]
    assert dashboards["data"] == {name: render(d) for name, d in build_all().items()}
    for copy_name, canonical in (
        ("datasources.yaml", DEPLOY / "grafana/provisioning/datasources/fleetpulse.yaml"),
        ("dashboards.yaml", DEPLOY / "grafana/provisioning/dashboards/fleetpulse.yaml"),
    ):
        assert (K8S / "base/grafana/provisioning" / copy_name).read_bytes() == canonical.read_bytes()
    assert (K8S / "base/influxdb/10-fleetpulse.sh").read_bytes() == (
        DEPLOY / "compose/influxdb/10-fleetpulse.sh"
    ).read_bytes()


def test_network_policies_default_deny_with_explicit_allowances() -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in objects("NetworkPolicy")}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    allowed = {
        p["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for p in policies.values()
        if p.get("ingress")
    }
    assert {"fleetpulse-api", "grafana", "influxdb", "fleetpulse-worker", "fleetpulse-tickets"} <= allowed
    influx_peers = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for rule in policies["influxdb-from-writers-and-grafana"]["ingress"]
        for peer in rule["from"]
    }
    assert influx_peers == {"fleetpulse-worker", "grafana", "fleetpulse-rollup"}


def test_ingresses_terminate_tls() -> None:
    for ingress in objects("Ingress"):
        hosts = {h for rule in ingress["spec"]["rules"] for h in [rule["host"]]}
        tls_hosts = {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
        assert hosts <= tls_hosts, ingress["metadata"]["name"]


def test_yaml_lints_clean() -> None:
    files = sorted(str(p) for p in DEPLOY.rglob("*.yaml") if "/lib/" not in str(p))
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", str(DEPLOY / ".yamllint.yaml"), *files],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's plain environment (no Secret reaches it: see the credentials test below)."""
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _mounted_secret_files(pod: dict[str, Any], container: dict[str, Any], mount_path: str) -> dict[str, str]:
    """File name -> ``Secret/key`` of the projected secret volume the container mounts at ``mount_path``."""
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == mount_path]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    return {
        item["path"]: f"{source['secret']['name']}/{item['key']}"
        for source in volume["projected"]["sources"]
        for item in source["secret"]["items"]
    }


FLEETPULSE_WORKLOADS = ["fleetpulse-worker", "fleetpulse-tickets", "fleetpulse-api", "fleetpulse-db-upgrade"]
MOUNTED_FILE_VALUES = {  # what the Secrets hold where a plain string would not do, with MOUNTED_SECRET inside
    "fleetpulse-pg-app/uri": f"postgresql://fleetpulse:{MOUNTED_SECRET}@fleetpulse-pg-rw.fleetpulse:5432/fleetpulse",
    "fleetpulse-api-users/users.json": json.dumps(
        [{"name": "it-lead", "role": "admin", "password_hash": f"$argon2id${MOUNTED_SECRET}", "sites": ["*"]}]
    ),
}


@pytest.mark.parametrize("workload", [*FLEETPULSE_WORKLOADS, "fleetpulse-rollup"])
def test_fleetpulse_containers_get_valid_settings(
    workload: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every FLEETPULSE_* variable and mounted secret file is a real settings path with an acceptable value."""
    (doc,) = [
        d
        for d in build("overlays/production")
        if d["kind"] in ("Deployment", "Job", "CronJob") and d["metadata"]["name"] == workload
    ]
    pod = _template(doc)["spec"]
    (container,) = pod["containers"]
    env = _container_env(container)
    assert env["FLEETPULSE_CONFIG"] == "/etc/fleetpulse/server.toml"
    for name, value in env.items():
        if name.startswith("FLEETPULSE_") and name not in ("FLEETPULSE_CONFIG", SECRETS_DIR_ENV):
            monkeypatch.setenv(name, value)
    secrets_dirs = []
    files: dict[str, str] = {}
    if SECRETS_DIR_ENV in env:  # the mounted files stand in as dummies, like secretKeyRef values
        files = _mounted_secret_files(pod, container, env[SECRETS_DIR_ENV])
        for file_name, source in files.items():
            (tmp_path / file_name).write_text(f"{MOUNTED_FILE_VALUES.get(source, MOUNTED_SECRET)}\n", encoding="utf-8")
        secrets_dirs.append(tmp_path)
    settings = load_settings(ServerSettings, K8S / "base" / "server.toml", secrets_dirs)
    if workload in ("fleetpulse-tickets", "fleetpulse-api", "fleetpulse-db-upgrade"):
        # the operator's own URI, password and all, as a file: the driver is psycopg 3's
        assert files["FLEETPULSE_ALERTS__STORE_URL"] == "fleetpulse-pg-app/uri"
        url = store_url(settings.alerts.store_url)
        assert (url.drivername, url.host, url.database) == (
            "postgresql+psycopg",
            "fleetpulse-pg-rw.fleetpulse",
            "fleetpulse",
        )
        assert url.password == MOUNTED_SECRET
    if "FLEETPULSE_KAFKA__SASL_USERNAME" in env:
        assert settings.kafka.sasl_username == env["FLEETPULSE_KAFKA__SASL_USERNAME"]
        assert settings.kafka.sasl_password is not None
        assert settings.kafka.sasl_password.get_secret_value() == MOUNTED_SECRET
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/etc/fleetpulse" in mounts
    if workload == "fleetpulse-worker":
        assert settings.streams.tsdb.kind == "influxdb2"
        assert settings.streams.tsdb.token.get_secret_value() == MOUNTED_SECRET
    if workload == "fleetpulse-rollup":
        assert settings.grafana.rollup.influx.token is not None
        assert settings.grafana.rollup.influx.token.get_secret_value() == MOUNTED_SECRET
        assert settings.grafana.rollup.influx.url == "http://influxdb:8086"
    if workload == "fleetpulse-api":  # single sign-on's client secret and the cookie key arrive as files
        assert_sso_secrets_are_the_mounted_files(settings)
        assert [user.name for user in settings.alerts.api.users] == ["it-lead"]  # local logins too
    if "FLEETPULSE_KAFKA__SASL_USERNAME" in env:  # Kafka clients also need the cluster CA
        assert settings.kafka.ssl_cafile is not None
        assert str(settings.kafka.ssl_cafile.parent) in mounts


@pytest.mark.parametrize("workload", [*FLEETPULSE_WORKLOADS, "fleetpulse-rollup"])
def test_service_credentials_are_mounted_files_not_environment(workload: str) -> None:
    """Kafka passwords, InfluxDB tokens, the database URI and the local logins reach the app as files:
    not in /proc/<pid>/environ, crash dumps or the environment a child process inherits."""
    (doc,) = [
        d
        for d in build("overlays/production")
        if d["kind"] in ("Deployment", "Job", "CronJob") and d["metadata"]["name"] == workload
    ]
    pod = _template(doc)["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert [name for name, e in env.items() if "valueFrom" in e] == []
    assert [name for name, e in env.items() if "$(" in e.get("value", "")] == []  # nothing composed from a Secret
    files = _mounted_secret_files(pod, container, env[SECRETS_DIR_ENV]["value"])
    assert all(name.startswith("FLEETPULSE_") for name in files)
    assert pod["securityContext"]["fsGroup"] == 10001  # mode 0440 + fsGroup: readable by the app user only


def test_yamllint_config_still_catches_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\nenabled: yes\n", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "yamllint", "-c", str(DEPLOY / ".yamllint.yaml"), str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "duplication of key" in proc.stdout
    assert "truthy" in proc.stdout


def test_rollup_runs_every_five_minutes_without_overlap() -> None:
    cron = one("CronJob", "fleetpulse-rollup")["spec"]
    assert cron["schedule"] == "*/5 * * * *"
    assert cron["concurrencyPolicy"] == "Forbid"
    assert cron["jobTemplate"]["spec"]["activeDeadlineSeconds"] < 300
    (container,) = _template(one("CronJob", "fleetpulse-rollup"))["spec"]["containers"]
    assert container["args"] == ["dashboards", "rollup", "--once"]


def test_topics_the_services_create_themselves_follow_the_retention_policy() -> None:
    """Outside Kubernetes (the demo, a single host) the first service to start creates the topics: each must keep
    what the policy says there too, in time and size, whichever service created it."""
    from fleetpulse.contract import Topics
    from fleetpulse.streams.kafka_admin import topic_configs

    policy = retention_policy()["kafka"]["topics"]
    configs = topic_configs(Topics())
    assert set(configs) == set(policy) == set(Topics().all())
    topics = {t["spec"]["topicName"]: t["spec"]["config"] for t in objects("KafkaTopic")}
    for name, config in configs.items():
        rule = policy[name]
        assert config["cleanup.policy"] == rule["cleanup_policy"], name
        days = rule["retention_days"]
        assert config.get("retention.ms") == (None if days is None else str(days * DAY_MS)), name
        gib = rule.get("max_gib_per_partition")
        assert config.get("retention.bytes") == (None if gib is None else str(gib * 2**30)), name
        manifest = {k: str(v) for k, v in topics[name].items() if k != "min.insync.replicas"}
        assert config == manifest, f"{name}: as the Kubernetes manifest sets it"
