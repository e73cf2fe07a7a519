"""The compose stack: schema-valid, lint-clean, secure by default, and consistent with the policy and the code.

Docker cannot run here, so the file is validated, not started: the Compose
Specification schema (shipped in the dclint npm package), dclint's rules, and
structural checks against deploy/retention.yaml and the real settings classes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from fleetpulse.alerts.store import store_url
from fleetpulse.compat import tomllib
from fleetpulse.config import load_settings
from fleetpulse.contract import Topics
from fleetpulse.dashboards.settings import GrafanaSettings
from fleetpulse.settings import ServerSettings
from tests.unit.deploy.tools import (
    DEPLOY,
    MOUNTED_SECRET,
    assert_sso_secrets_are_the_mounted_files,
    dclint,
    dclint_schema,
    retention_policy,
    tool,
)

COMPOSE_DIR = DEPLOY / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("migrate", "worker", "tickets", "rollup", "api")
STORE_URL = f"postgresql://fleetpulse:{MOUNTED_SECRET}@postgres:5432/fleetpulse"
"""What make-secrets.sh writes to secrets/store_url, with the stand-in password."""
# Key and service order is cosmetic; the file is ordered by data flow for readers.
ORDER_RULES = ["service-keys-order", "services-alphabetical-order", "top-level-properties-order"]


def _schema() -> dict[str, Any]:
    """The schema declares draft-07 (under a URL jsonschema does not know), so the validator is named."""
    schema: dict[str, Any] = json.loads(dclint_schema().read_text(encoding="utf-8"))
    assert "draft-07" in schema["$schema"]
    return schema


def test_compose_matches_compose_specification_schema() -> None:
    jsonschema.Draft7Validator(_schema()).validate(COMPOSE)


def test_schema_rejects_a_broken_file() -> None:
    """Guards the guard: a typo'd service key must fail the same schema."""
    broken = {"services": {"x": {"image": "a:1", "restart_policy": "always"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(_schema()).validate(broken)


def test_dclint_finds_no_problem() -> None:
    proc = subprocess.run(
        [dclint(), "compose.yaml", "--max-warnings", "0", "--disable-rule", *ORDER_RULES],
        cwd=COMPOSE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_full_stack_is_there() -> None:
    assert {"kafka", "kafka-init", "influxdb", "postgres", "grafana", *APP_SERVICES} <= set(SERVICES)
    assert "controller" in SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"], "KRaft, no ZooKeeper"
    assert SERVICES["influxdb"]["image"].startswith("influxdb:2")


def test_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        assert re.search(r":[\w.-]+$", image) or image.startswith("${FLEETPULSE_IMAGE"), name
        assert not image.endswith(":latest"), name


def test_application_containers_are_locked_down() -> None:
    for name in APP_SERVICES:
        service = SERVICES[name]
        assert service["read_only"] is True, name
        assert service["user"] == "10001:10001", name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_only_intended_ports_are_published() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert published == {
        "kafka": ["0.0.0.0:9094:9094"],
        "grafana": ["127.0.0.1:3000:3000"],
        "api": ["127.0.0.1:8080:8080"],
    }
    listeners = SERVICES["kafka"]["environment"]["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]
    assert "EXTERNAL:SASL_SSL" in listeners


def test_secrets_are_files_never_inline() -> None:
    defined = COMPOSE["secrets"]
    assert all(set(v) == {"file"} and v["file"].startswith("./secrets/") for v in defined.values())
    for name, service in SERVICES.items():
        for secret in service.get("secrets", []):
            source = secret["source"] if isinstance(secret, dict) else secret
            assert source in defined, f"{name} uses undefined secret {source}"
        env = service.get("environment", {})
        for key, value in env.items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key) and not key.endswith(("_FILE", "__FILE", "USER")):
                assert "/run/secrets" in str(value), f"{name}.{key}: a secret in the environment, not a file"
            assert not re.search(r"://[^/@\s]*:[^/@\s]*@", str(value)), f"{name}.{key}: a URL with a password"
    store_users = {name for name, service in SERVICES.items() if "store_url" in _secret_sources(service)}
    assert store_users == {"migrate", "tickets", "api"}, "the ticket store's password only where the store is used"
    assert (COMPOSE_DIR / ".gitignore").read_text(encoding="utf-8").split() == [".env", "secrets/"]


def _secret_sources(service: dict[str, Any]) -> set[str]:
    return {secret["source"] if isinstance(secret, dict) else secret for secret in service.get("secrets", [])}


def _init_topics() -> dict[str, tuple[str, str]]:
    """Per topic: its retention argument and its size bound in GiB per partition ('' when unbounded)."""
    script = (COMPOSE_DIR / "kafka" / "init.sh").read_text(encoding="utf-8")
    return {
        name: (policy, gib) for name, policy, gib in re.findall(r"^topic (\S+) (\S+)(?: (\d+))?$", script, re.MULTILINE)
    }


def test_kafka_init_applies_the_retention_policy() -> None:
    policy = retention_policy()["kafka"]["topics"]
    topics = _init_topics()
    assert set(topics) == set(policy) == set(Topics().all())
    for name, rule in policy.items():
        expected = {
            "compact": "compact",
            "compact,delete": f"compact+{rule['retention_days']}",
            "delete": str(rule["retention_days"]),
        }[rule["cleanup_policy"]]
        assert topics[name] == (expected, str(rule.get("max_gib_per_partition", ""))), name
    assert SERVICES["kafka-init"]["environment"]["FLEETPULSE_PARTITIONS"] == str(
        retention_policy()["kafka"]["partitions"]
    )


def test_the_shared_agent_user_has_a_produce_quota() -> None:
    """Every PC authenticates as one user: without a quota one PC's flood takes the broker's whole bandwidth."""
    script = (COMPOSE_DIR / "kafka" / "init.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    assert re.search(r"--entity-name fleetpulse-agent\s+--add-config \"producer_byte_rate=\d+\"", script)


def _produce_quotas(script: str) -> dict[str, int]:
    return {
        user: int(rate)
        for user, rate in re.findall(r"--entity-name (\S+)\s+--add-config \"producer_byte_rate=(\d+)\"", script)
    }


def test_every_kafka_user_has_a_produce_quota() -> None:
    """A user without a quota can fill the brokers' disks at full speed: every user init.sh configures gets one.
    The MDM bridge has no user in compose (it writes from the trusted internal network); should it get one, this
    holds it to a quota as test_k8s.py does its KafkaUser."""
    script = (COMPOSE_DIR / "kafka" / "init.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    users = set(re.findall(r"--entity-type users --entity-name (\S+)", script))
    assert "fleetpulse-agent" in users
    quotas = _produce_quotas(script)
    assert set(quotas) == users, f"users without producer_byte_rate: {users - set(quotas)}"
    assert all(rate > 0 for rate in quotas.values())


def test_agents_may_write_the_health_topic_only() -> None:
    """Agents share one credential: any topic they may write, any PC may forge. Reports, enrolments and
    the agent's inventory travel on the health topic, each MACed with the device's own key."""
    script = (COMPOSE_DIR / "kafka" / "init.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    granted = re.findall(r"--add --allow-principal User:fleetpulse-agent\s+(.*?)>/dev/null", script)
    assert granted == ["--operation Write --operation Describe --topic fleetpulse.health.v1 "]
    revoked = re.search(r"for t in (.*?); do\s+\S+ --bootstrap-server \S+ --remove", script)
    assert revoked is not None
    assert set(revoked.group(1).split()) == {Topics().mobile, Topics().inventory}


def test_influxdb_bucket_retention_matches_policy() -> None:
    env = SERVICES["influxdb"]["environment"]
    assert env["DOCKER_INFLUXDB_INIT_RETENTION"] == f"{retention_policy()['influxdb']['retention_days']}d"
    assert env["DOCKER_INFLUXDB_INIT_BUCKET"] == retention_policy()["influxdb"]["bucket"]


def test_server_toml_is_valid_for_the_real_settings() -> None:
    data = tomllib.loads((COMPOSE_DIR / "server.toml").read_text(encoding="utf-8"))
    settings = ServerSettings.model_validate(data)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.streams.partitions == retention_policy()["kafka"]["partitions"]
    # one PC may neither invent devices nor give a new one made-up history (the code defaults allow both for demos)
    assert settings.streams.unknown_devices == "reject"
    assert settings.streams.max_first_report_age == timedelta(days=14)


def test_the_worker_keeps_silent_devices_as_long_as_the_policy_says() -> None:
    """No layout sets it: the settings' default is the policy."""
    days = retention_policy()["worker"]["device_state_silent_days"]
    assert ServerSettings().streams.state_retention == timedelta(days=days)
    layouts = [
        p
        for p in DEPLOY.rglob("*")
        if p.suffix in (".toml", ".yaml", ".env") and p.name != "retention.yaml" and "keycloak-dist" not in p.parts
    ]
    assert [p for p in layouts if "state_retention" in p.read_text(encoding="utf-8")] == []


def test_grafana_mounts_the_generated_dashboards_and_provisioning() -> None:
    volumes = SERVICES["grafana"]["volumes"]
    assert "../../dashboards/json:/var/lib/grafana/dashboards/fleetpulse:ro" in volumes
    assert "../grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    for mount in volumes:
        source = mount.split(":")[0]
        if source.startswith("."):
            assert (COMPOSE_DIR / source).exists(), source


def test_grafana_provisioning_files() -> None:
    prov = DEPLOY / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "fleetpulse.yaml").read_text(encoding="utf-8"))["datasources"][0]
    defaults = GrafanaSettings()
    assert (ds["uid"], ds["name"], ds["type"]) == (defaults.datasource_uid, defaults.datasource_name, "influxdb")
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["secureJsonData"]["basicAuthPassword"].startswith("$__file{/run/secrets/")
    provider = yaml.safe_load((prov / "dashboards" / "fleetpulse.yaml").read_text(encoding="utf-8"))["providers"][0]
    assert provider["folderUid"] == defaults.folder_uid
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/fleetpulse"


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = tool("shellcheck")
    scripts = [
        COMPOSE_DIR / "kafka" / "init.sh",
        COMPOSE_DIR / "influxdb" / "10-fleetpulse.sh",
        COMPOSE_DIR / "make-secrets.sh",
    ]
    proc = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_get_valid_settings(service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The compose environment (with .env values stood in) loads into the real settings."""
    env = SERVICES[service]["environment"]
    assert env["FLEETPULSE_CONFIG"] == "/etc/fleetpulse/server.toml"
    for name, value in env.items():
        if name.startswith("FLEETPULSE_") and name not in ("FLEETPULSE_CONFIG", "FLEETPULSE_SECRETS_DIR"):
            monkeypatch.setenv(name, re.sub(r"\$\{\w+(:[?-][^}]*)?\}", "dummy", str(value)))
    mounted = tmp_path / "secrets"  # the secret files compose mounts in FLEETPULSE_SECRETS_DIR, as dummies
    mounted.mkdir()
    for secret in SERVICES[service].get("secrets", []):
        target = Path(secret["target"])
        assert target.parent == Path(env["FLEETPULSE_SECRETS_DIR"])
        value = STORE_URL if secret["source"] == "store_url" else MOUNTED_SECRET
        (mounted / target.name).write_text(f"{value}\n", encoding="utf-8")
    settings = load_settings(ServerSettings, COMPOSE_DIR / "server.toml", [mounted])
    if service in ("migrate", "tickets", "api"):
        url = store_url(settings.alerts.store_url)
        assert (url.drivername, url.host, url.password) == ("postgresql+psycopg", "postgres", MOUNTED_SECRET)
    else:
        assert settings.alerts.store_url.startswith("sqlite:"), "no database password where the store is not used"
    assert settings.streams.tsdb.kind == "influxdb2"
    assert settings.grafana.rollup.influx.url == "http://influxdb:8086"
    # the InfluxDB token (all-access) only where InfluxDB is used: never in the API the reverse proxy exposes
    writes = settings.streams.tsdb.token.get_secret_value()
    reads = settings.grafana.rollup.influx.token
    assert writes == (MOUNTED_SECRET if service == "worker" else "")
    assert (reads.get_secret_value() if reads else None) == (MOUNTED_SECRET if service == "rollup" else None)
    assert {c["target"] for c in SERVICES[service]["configs"]} == {"/etc/fleetpulse/server.toml"}
    if service == "api":  # single sign-on's client secret and the cookie key arrive as files
        assert_sso_secrets_are_the_mounted_files(settings)


def test_the_api_trusts_forwarded_addresses_from_its_network_gateway_only() -> None:
    """The audit trail and login throttle see the person's address, not the reverse proxy's."""
    settings = load_settings(ServerSettings, COMPOSE_DIR / "server.toml")
    assert SERVICES["api"]["networks"] == ["frontend"]
    (ipam,) = COMPOSE["networks"]["frontend"]["ipam"]["config"]
    assert [str(net) for net in settings.alerts.api.limits.trusted_proxies] == [f"{ipam['gateway']}/32"]


def test_exposed_services_cannot_reach_kafkas_unauthenticated_listener_or_influxdb() -> None:
    """Kafka's internal listener trusts its clients as super users: a compromised API or Grafana on its
    network could re-enrol any device's key on the control topic, so neither shares it."""

    def networks(name: str) -> set[str]:
        return set(SERVICES[name].get("networks", []))

    assert networks("kafka") == {"backend"}
    exposed = [name for name, service in SERVICES.items() if service.get("ports") and name != "kafka"]
    assert sorted(exposed) == ["api", "grafana"]
    for name in exposed:
        assert not networks(name) & networks("kafka"), name
    assert not networks("api") & networks("influxdb")
    assert all(networks(name) for name in SERVICES), "every service names its networks"


def test_every_service_bounds_its_logs() -> None:
    for name, service in SERVICES.items():
        assert service["logging"]["driver"] == "json-file", name
        assert service["logging"]["options"]["max-size"] == "10m", name


def test_make_secrets_creates_every_referenced_secret_once(tmp_path: Path) -> None:
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE_DIR, work, ignore=shutil.ignore_patterns("secrets", ".env"))
    env = {**os.environ, "KAFKA_PUBLIC_HOST": "kafka.test.example", "OIDC_CLIENT_SECRET": "from-the-provider"}
    subprocess.run(["bash", "make-secrets.sh"], cwd=work, env=env, check=True, capture_output=True, timeout=120)
    secrets = work / "secrets"
    for name, spec in COMPOSE["secrets"].items():
        path = work / spec["file"]
        assert path.is_file(), name
        assert path.stat().st_size > 0, name
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, f"{name}: containers run as non-root"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    dotenv = (work / ".env").read_text(encoding="utf-8")
    password = (secrets / "postgres_password").read_text()
    assert password not in dotenv, "no secret in .env"
    assert (secrets / "store_url").read_text() == f"postgresql://fleetpulse:{password}@postgres:5432/fleetpulse"
    before = {p.name: p.read_bytes() for p in secrets.iterdir()}
    subprocess.run(["bash", "make-secrets.sh"], cwd=work, env=env, check=True, capture_output=True, timeout=120)
    assert {p.name: p.read_bytes() for p in secrets.iterdir()} == before, "re-running never rotates secrets"
    assert (secrets / "oidc_client_secret").read_text(encoding="utf-8") == "from-the-provider"
    assert len((secrets / "session_secret_key").read_text(encoding="utf-8")) >= 48


def test_make_secrets_refuses_to_finish_without_the_sso_client_secret(tmp_path: Path) -> None:
    """The provider issues it: no placeholder is made, and the operator is told what to do."""
    work = tmp_path / "compose"
    shutil.copytree(COMPOSE_DIR, work, ignore=shutil.ignore_patterns("secrets", ".env"))
    env = {k: v for k, v in os.environ.items() if k != "OIDC_CLIENT_SECRET"} | {"KAFKA_PUBLIC_HOST": "kafka.test"}
    proc = subprocess.run(["bash", "make-secrets.sh"], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "OIDC_CLIENT_SECRET=... ./make-secrets.sh" in proc.stderr
    assert not (work / "secrets" / "oidc_client_secret").exists()
    assert (work / "secrets" / "session_secret_key").is_file(), "the other secrets are made all the same"
