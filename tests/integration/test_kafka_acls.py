"""The production Kafka ACLs (deploy/k8s/base/kafka-users.yaml) on a real broker secured like production.

The broker (stack.sh ``kafka-acl``) speaks TLS only, as production's listeners do: SASL/SCRAM-SHA-512 over
TLS on one listener, mutual TLS (a client certificate, no password) on another, and it authorizes with
KRaft's StandardAuthorizer: nothing is allowed without an ACL. Each ``KafkaUser`` becomes what Strimzi's
User Operator makes of it: a SCRAM user (``authentication: scram-sha-512``), or a certificate user
(``tls``: principal ``User:CN=<name>``, its certificate issued by stack.sh's clients CA), with its ACLs
translated from the manifest; the topics are created as ``kafka-topics.yaml`` declares them. Then the
real services run under their own principals and connect as in production (``ssl_cafile`` = the
cluster's CA; the MDM bridge with its certificate): an agent's delivery, the MDM bridge, IT's
re-enrolment, the stream worker, the ticket consumer (and KEDA's lag query), and the broker's authorizer
log must show no refusal beyond the topic creation the services try and may not do. Last, each principal
tries to write another's topics and is refused, and a client without the bridge's certificate, or one
that does not trust the cluster's CA, is turned away within its timeouts, saying why.

Every resource name gets the test's topic prefix, as the services prefix their topics and groups
(``KafkaSettings.topic_prefix``), so runs never see each other's records or ACLs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import Result
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    NewTopic,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from kafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr
from typer.testing import CliRunner

from fleetpulse import __version__
from fleetpulse.agents.delivery import Delivery
from fleetpulse.agents.identity import RecordSigner
from fleetpulse.agents.spool import Spool
from fleetpulse.alerts.consumer import TicketConsumer, consume_until_idle
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from fleetpulse.cli import app as fleetpulse_cli
from fleetpulse.compat import UTC
from fleetpulse.config import KafkaSettings, kafka_python_security
from fleetpulse.contract import DeviceInventory, Topics, encode
from fleetpulse.contract.auth import key_fingerprint
from fleetpulse.contract.v1 import TicketState
from fleetpulse.logs import RECORD_DUMPING_LOGGERS
from fleetpulse.streams.kafka_admin import KafkaConnectError, TopicCreationError, aiokafka_auth, consumer_lag
from fleetpulse.streams.settings import StreamSettings
from tests.harness import REPO, AclKafka, self_signed_tls
from tests.integration.agent.test_agent_kafka import FAST_DELIVERY
from tests.integration.stream_support import Worker, disk_report, group_id, produce, read_topic, wait_caught_up

pytestmark = pytest.mark.integration

BASE = REPO / "deploy" / "k8s" / "base"
MDM_EXPORT = REPO / "tests" / "fixtures" / "mdm" / "devices.csv"
PC = "pc-acl-1"
PREFIXED = {"topic", "group", "transactionalId"}  # resource types whose names the services prefix
PATTERNS = {"literal": ACLResourcePatternType.LITERAL, "prefix": ACLResourcePatternType.PREFIXED}
RESOURCES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactionalId": ResourceType.TRANSACTIONAL_ID,
    "cluster": ResourceType.CLUSTER,
}
DENIED = re.compile(
    r"Principal = User:(?P<user>\S+) is Denied [Oo]peration = (?P<op>\w+) from host = \S+ on resource = "
    r"(?P<type>\w+):(?P<pattern>\w+):(?P<name>\S+) for request = (?P<request>\w+)"
)
FAILED_LOGIN = re.compile(  # the broker's refused handshakes and logins (stack.sh: Selector at INFO)
    r"Failed authentication with \S+ \(channelId=(?P<listener>[\d.]+:\d+)-\S+\) \((?P<reason>[^)]*)\)"
)
AUTHENTICATION = {"scram-sha-512", "tls"}  # what kafka-users.yaml uses; tls-external certificates are not ours


def kafka_users() -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all((BASE / "kafka-users.yaml").read_text(encoding="utf-8"))
    return {d["metadata"]["name"]: d["spec"] for d in docs if d and d["kind"] == "KafkaUser"}


def uses_certificate(spec: dict[str, Any]) -> bool:
    kind = spec["authentication"]["type"]
    assert kind in AUTHENTICATION, kind
    return bool(kind == "tls")


def principal(user: str, spec: dict[str, Any]) -> str:
    """The principal Strimzi's User Operator grants a KafkaUser's ACLs to: a SCRAM user's name, or for a ``tls``
    user the subject of the certificate it issues (``CN=<name>``), which Kafka's default mapping takes whole."""
    return f"CN={user}" if uses_certificate(spec) else user


def acl_bindings(user: str, spec: dict[str, Any], prefix: str) -> list[ACL]:
    """Strimzi's ``simple`` authorization of one KafkaUser as Kafka ACL bindings (what its User Operator creates)."""
    assert spec["authorization"]["type"] == "simple"
    bindings = []
    for rule in spec["authorization"]["acls"]:
        assert set(rule) <= {"resource", "operations", "type", "host"}, rule
        resource = rule["resource"]
        kind = resource["type"]
        name = "kafka-cluster" if kind == "cluster" else prefix + resource["name"] if kind in PREFIXED else None
        assert name is not None, rule
        pattern = PATTERNS[resource.get("patternType", "literal")]
        allow = {"allow": ACLPermissionType.ALLOW, "deny": ACLPermissionType.DENY}[rule.get("type", "allow")]
        for operation in rule["operations"]:  # "IdempotentWrite" -> IDEMPOTENT_WRITE
            op = ACLOperation[re.sub(r"(?<!^)(?=[A-Z])", "_", operation).upper()]
            bindings.append(
                ACL(
                    f"User:{principal(user, spec)}",
                    rule.get("host", "*"),
                    op,
                    allow,
                    ResourcePattern(RESOURCES[kind], name, pattern),
                )
            )
    return bindings


def topic_definitions(prefix: str) -> list[NewTopic]:
    """kafka-topics.yaml's topics (partitions from retention.yaml) on one broker: one replica, so no min ISR of 2."""
    partitions = yaml.safe_load((REPO / "deploy" / "retention.yaml").read_text(encoding="utf-8"))["kafka"]["partitions"]
    docs = yaml.safe_load_all((BASE / "kafka-topics.yaml").read_text(encoding="utf-8"))
    return [
        NewTopic(
            prefix + d["spec"]["topicName"],
            partitions,
            1,
            topic_configs={k: str(v) for k, v in d["spec"]["config"].items() if k != "min.insync.replicas"},
        )
        for d in docs
        if d and d["kind"] == "KafkaTopic"
    ]


def kafka_env(kafka: KafkaSettings) -> dict[str, str]:
    """``kafka`` as the ``FLEETPULSE_KAFKA__*`` variables a deployment sets: the fields it gives, nothing more."""
    env = {}
    for name in sorted(kafka.model_fields_set):
        value = getattr(kafka, name)
        if value is not None:
            env[f"FLEETPULSE_KAFKA__{name.upper()}"] = (
                value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            )
    return env


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """The in-process CLI's Kafka settings are exactly ``env``: none left over from the previous service's."""
    for name in [name for name in os.environ if name.startswith("FLEETPULSE_KAFKA__")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@dataclass
class Cluster:
    broker: AclKafka
    prefix: str
    passwords: dict[str, str] = field(repr=False)
    users: dict[str, dict[str, Any]] = field(repr=False)

    def as_user(self, user: str) -> KafkaSettings:
        """``user``'s settings as its deployment has them: its certificate on the mutual-TLS listener for a
        ``tls`` user, its SCRAM password over TLS for the others."""
        if uses_certificate(self.users[user]):
            return self.broker.tls_settings(user, self.prefix)
        return self.broker.settings(user, self.passwords[user], self.prefix)

    def principal(self, user: str) -> str:
        return principal(user, self.users[user])

    def user_of(self, principal_name: str) -> str:
        """The KafkaUser behind a principal the broker logs (``CN=fleetpulse-mdm`` -> ``fleetpulse-mdm``)."""
        return {self.principal(user): user for user in self.users}.get(principal_name, principal_name)

    @property
    def admin(self) -> KafkaSettings:
        return self.broker.settings("admin", self.broker.admin_password, self.prefix)

    @property
    def topics(self) -> Topics:
        return Topics(prefix=self.prefix)

    def env(self, user: str) -> dict[str, str]:
        """A server process's Kafka settings for ``user``, as a deployment gives them (``FLEETPULSE_KAFKA__*``)."""
        return kafka_env(self.as_user(user))

    def granted(self, user: str, topic: str) -> bool:
        """Whether any allow rule of ``user`` names ``topic`` (literally or by prefix)."""
        for rule in self.users[user]["authorization"]["acls"]:
            resource = rule["resource"]
            if rule.get("type", "allow") != "allow" or resource["type"] != "topic":
                continue
            name = self.prefix + resource["name"]
            if topic == name or (resource.get("patternType") == "prefix" and topic.startswith(name)):
                return True
        return False


def set_up(broker: AclKafka, prefix: str, passwords: dict[str, str], without: frozenset[str] = frozenset()) -> Cluster:
    """As Strimzi's operators would: the users (SCRAM credentials; certificates stack.sh has issued from the
    clients CA), their ACLs and the topics (but ``without``) under ``prefix``."""
    users = kafka_users()
    for user in (user for user, spec in users.items() if uses_certificate(spec)):
        assert all(path.is_file() for path in broker.certificate(user)), (
            f"no client certificate for the tls user {user}: add it to acl_tls_users in deploy/local/stack.sh"
        )
    bindings = [b for user, spec in users.items() for b in acl_bindings(user, spec, prefix)]
    admin = KafkaAdminClient(
        bootstrap_servers=broker.bootstrap,
        request_timeout_ms=30_000,
        **kafka_python_security(broker.settings("admin", broker.admin_password)),
    )
    try:
        errors = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(u, ScramMechanism.SCRAM_SHA_512, passwords[u], 4096) for u in passwords]
        )
        assert not any(errors.values()), errors
        result = admin.create_acls(bindings)
        assert not result["failed"], result["failed"]
        admin.create_topics([t for t in topic_definitions(prefix) if t.name.removeprefix(prefix) not in without])
        _wait_for_acls(admin, prefix, len(bindings))
    finally:
        admin.close()
    cluster = Cluster(broker, prefix, passwords, users)
    _wait_for_logins(cluster)
    return cluster


@pytest.fixture(scope="module")
def cluster(kafka_acl: AclKafka) -> Cluster:
    passwords = {user: secrets.token_urlsafe(18) for user, spec in kafka_users().items() if not uses_certificate(spec)}
    return set_up(kafka_acl, f"t{uuid.uuid4().hex[:10]}.", passwords)


def _wait_for_acls(admin: KafkaAdminClient, prefix: str, count: int) -> None:
    """ACLs reach the authorizer through the metadata log: wait until it describes all of ``prefix``'s."""
    everything = ACLFilter(
        None,
        None,
        ACLOperation.ANY,
        ACLPermissionType.ANY,
        ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    deadline = time.monotonic() + 30
    while True:
        acls, error = admin.describe_acls(everything)
        if sum(acl.resource_pattern.resource_name.startswith(prefix) for acl in acls) >= count:
            return
        assert time.monotonic() < deadline, f"ACLs not in effect after 30 s ({error})"
        time.sleep(0.2)


def _wait_for_logins(cluster: Cluster) -> None:
    """SCRAM credentials reach the broker through its metadata log too: wait until every user logs in (the
    certificate users too: their certificates must pass the mutual-TLS listener)."""
    deadline = time.monotonic() + 30
    for user in cluster.users:
        kafka = cluster.as_user(user)
        while True:
            try:
                KafkaConsumer(bootstrap_servers=kafka.bootstrap_servers, **kafka_python_security(kafka)).close()
                break
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def run_cli(*args: str) -> Result:
    """``fleetpulse <args>`` in-process; the logging it configures for itself is undone after (pytest's capture)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    quiet = {name: logging.getLogger(name).level for name in RECORD_DUMPING_LOGGERS}
    try:
        return CliRunner().invoke(fleetpulse_cli, list(args))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)


def log_since(log: Path, since: int) -> str:
    """The broker's log after byte ``since``."""
    with log.open("rb") as f:
        f.seek(since)
        return f.read().decode("utf-8", "replace")


def denials(log: Path, since: int) -> list[dict[str, str]]:
    """The authorizer's refusals logged after byte ``since`` of the broker's log."""
    return [m.groupdict() for m in DENIED.finditer(log_since(log, since))]


def agent_delivers(kafka: KafkaSettings, spool_path: Path, now: datetime) -> None:
    """The agent's own delivery code: enrolment first, then reports MACed with the device key, from its spool.
    Ten quiet days, then reallocated sectors climbing 2000 -> 4500 within the last hour: a disk alert."""
    history = [(0, now - timedelta(days=10 - d)) for d in range(10)]
    degrading = [(2000 + 500 * i, now - timedelta(minutes=60 - i)) for i in range(6)]
    with Spool(spool_path, 10**8, initial_seq=1) as spool:
        for realloc, at in history + degrading:
            spool.append_report(lambda seq, r=realloc, t=at: disk_report(PC, seq, r, t))
        delivery = Delivery(kafka, FAST_DELIVERY, "acl-test-agent", RecordSigner(PC, os.urandom(32), __version__))
        try:
            result = delivery.drain(spool, budget_s=60)
        finally:
            delivery.close()
        assert result.error is None, result
        assert (result.delivered, spool.count()) == (16, 0)


def test_every_service_runs_under_its_production_acls(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    topics = cluster.topics
    since = cluster.broker.log.stat().st_size
    now = datetime.now(UTC).replace(microsecond=0)
    # IT's asset register: written by IT's asset-management integration under its own principal
    register = DeviceInventory(device_id=PC, kind="desktop", site="Town Hall", updated_at=now - timedelta(days=20))
    produce(cluster.as_user("fleetpulse-register"), [(topics.inventory, PC.encode(), encode(register))])

    agent_delivers(cluster.as_user("fleetpulse-agent"), tmp_path / "spool" / "spool.sqlite3", now)

    # the bridge: its client certificate on the mutual-TLS listener, no password
    mdm_env = cluster.env("fleetpulse-mdm")
    assert mdm_env["FLEETPULSE_KAFKA__SECURITY_PROTOCOL"] == "SSL"
    assert "FLEETPULSE_KAFKA__SSL_CERTFILE" in mdm_env
    assert not any("SASL" in name for name in mdm_env), mdm_env
    use_env(monkeypatch, mdm_env)
    monkeypatch.setenv("FLEETPULSE_MDM__SECRET", "acl-test-secret")
    monkeypatch.setenv("FLEETPULSE_MDM__STATE_PATH", str(tmp_path / "mdm-state.sqlite"))
    bridge = run_cli("mdm", "ingest", str(MDM_EXPORT), "--format", "csv", "--to-kafka")
    assert bridge.exit_code == 3, bridge.output  # two phones published, four rows of the export rejected
    assert "published 0 health, 2 mobile, 2 inventory records" in bridge.output
    assert "authoriz" not in bridge.output.lower(), bridge.output

    use_env(monkeypatch, cluster.env("fleetpulse-it"))
    fingerprint = key_fingerprint(os.urandom(32))
    it = run_cli("devices", "re-enrol", "pc-acl-2", "--fingerprint", fingerprint)
    assert it.exit_code == 0, it.output
    assert "authoriz" not in it.output.lower(), it.output

    worker = Worker(cluster.as_user("fleetpulse-worker"), tmp_path / "w1", store="memory", instance="acl")
    worker.extra_env.update(cluster.env("fleetpulse-worker"))
    worker.start()
    try:
        worker.wait_ready(timeout=120)
        wait_caught_up(cluster.admin)
        # KEDA's scaler reads the same lag on its triggers' topics (worker-scaling.yaml) with Describe only
        keda = cluster.as_user("fleetpulse-keda")
        assert asyncio.run(consumer_lag(keda, group_id(keda), [topics.health, topics.mobile])) == 0
    finally:
        worker.stop()
    worker_log = worker.log_path.read_text(encoding="utf-8", errors="replace")
    assert "authoriz" not in worker_log.lower(), worker_log[-3000:]
    assert "topics left to the cluster" in worker_log  # it tried to create the pipeline's topics: not its job

    scores = read_topic(cluster.admin, topics.scores)
    alerts = [json.loads(m.value) for m in read_topic(cluster.admin, topics.alerts)]
    assert scores, "the worker scored the agent's reports"
    assert [(a["device_id"], a["component"], a["state"]) for a in alerts] == [(PC, "disk", "raised")]
    assert read_topic(cluster.admin, f"{group_id(cluster.admin)}-devices-changelog"), "Faust created its changelog"
    dead = [json.loads(m.value) for m in read_topic(cluster.admin, topics.dead_letter)]
    assert dead == [], dead

    # a record the ticket consumer cannot decode: it must dead-letter it under its own principal
    produce(cluster.admin, [(topics.alerts, PC.encode(), b"\x00not an alert")])
    store_url = f"sqlite:///{tmp_path}/tickets.db"
    settings = AlertSettings(store_url=store_url)
    tickets = cluster.as_user("fleetpulse-tickets")
    stats = consume_until_idle(settings, tickets, StreamSettings(), idle_seconds=2, max_seconds=120)
    assert stats.results.get("opened") == 1, stats
    assert stats.dead_letters == 1, stats
    store = TicketStore.open(store_url)
    try:
        (ticket,) = store.list_tickets()
        assert (ticket.device_id, ticket.component, ticket.site) == (PC, "disk", "Town Hall")
        assert store.history(PC), "risk history from the scores topic"
        # closing the ticket publishes its outcome (a training label) through the outbox
        TicketService(store, settings).transition([ticket.id], TicketState.DISMISSED, "it", datetime.now(UTC))
    finally:
        store.close()
    stats = consume_until_idle(settings, tickets, StreamSettings(), idle_seconds=1, max_seconds=60)
    assert (stats.delivered, stats.delivery_failures) == (1, 0), stats
    labels = [json.loads(m.value) for m in read_topic(cluster.admin, topics.labels)]
    assert [(o["device_id"], o["outcome"]) for o in labels] == [(PC, "false_alarm")]
    dead = [json.loads(m.value) for m in read_topic(cluster.admin, topics.dead_letter)]
    assert [(d["source_topic"], d["error_kind"]) for d in dead] == [(topics.alerts, "malformed_json")]

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "authoriz" not in logged.lower(), logged[-3000:]
    # The broker's authorizer log: the only refusals are the topic creations the services try at start (and
    # the look that tells a missing topic from one they may not see), on topics the principal has no grant for.
    refused = denials(cluster.broker.log, since)
    assert refused, "the authorizer logs its refusals (stack.sh: kafka.authorizer.logger)"
    unexpected = [
        d
        for d in refused
        if not (
            d["type"] == "Topic"
            and (d["op"], d["request"]) in {("CREATE", "CreateTopics"), ("DESCRIBE", "Metadata")}
            and not cluster.granted(cluster.user_of(d["user"]), d["name"])
        )
    ]
    assert unexpected == [], unexpected


ATTACKS = [
    # agents hold one shared credential: posing as IT's register, the MDM bridge or IT's re-enrolment
    ("fleetpulse-agent", "inventory"),
    ("fleetpulse-agent", "mobile"),
    ("fleetpulse-agent", "mobile_inventory"),
    ("fleetpulse-agent", "control"),
    # a leaked bridge certificate rewriting a PC's register facts
    ("fleetpulse-mdm", "inventory"),
    ("fleetpulse-mdm", "health"),
    # the worker reads these, other principals write them
    ("fleetpulse-worker", "inventory"),
    ("fleetpulse-worker", "control"),
    ("fleetpulse-worker", "labels"),
    ("fleetpulse-worker", "mobile_inventory"),
    # the ticket consumer forging alerts
    ("fleetpulse-tickets", "alerts"),
    ("fleetpulse-it", "inventory"),
    # IT's register integration: its own topic only
    ("fleetpulse-register", "health"),
    ("fleetpulse-register", "control"),
    ("fleetpulse-register", "mobile_inventory"),
]


def test_principals_cannot_write_each_others_topics(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each principal is refused the others' topics; and without the right certificates nobody gets in: no client
    certificate, or one not from the clients CA, on the mutual-TLS listener; a client that does not trust the
    cluster's CA (its password never leaves it). Each is turned away within its timeouts, saying why."""
    since = cluster.broker.log.stat().st_size
    for user, topic_attr in ATTACKS:
        topic = getattr(cluster.topics, topic_attr)
        kafka = cluster.as_user(user)
        producer = KafkaProducer(
            bootstrap_servers=kafka.bootstrap_servers, max_block_ms=10_000, **kafka_python_security(kafka)
        )
        try:
            with pytest.raises(TopicAuthorizationFailedError):
                producer.send(topic, key=PC.encode(), value=b"forged").get(timeout=15)
        finally:
            producer.close(timeout=5)
        assert all(m.value != b"forged" for m in read_topic(cluster.admin, topic))
    refused = {(d["user"], d["name"]) for d in denials(cluster.broker.log, since)}
    for user, topic_attr in ATTACKS:
        assert (cluster.principal(user), getattr(cluster.topics, topic_attr)) in refused, (
            f"{user} on {topic_attr}: refused by the broker"
        )

    # posing as the bridge on the mutual-TLS listener: without a certificate, or with one that carries its name but
    # not the clients CA's signature. The broker refuses the handshake; the bridge stops at once and says why, and
    # the agent's delivery (its TLS handshake before the session) reports a refusal no retry fixes, not a transient
    # failure.
    since = cluster.broker.log.stat().st_size
    bridge = cluster.as_user("fleetpulse-mdm")
    rogue_cert, _ = self_signed_tls(tmp_path, "fleetpulse-mdm")
    impostors = {
        "no certificate": bridge.model_copy(update={"ssl_certfile": None, "ssl_keyfile": None}),
        "a self-signed certificate": bridge.model_copy(
            update={"ssl_certfile": rogue_cert, "ssl_keyfile": tmp_path / "fleetpulse-mdm.key"}
        ),
    }
    monkeypatch.setenv("FLEETPULSE_MDM__SECRET", "acl-test-secret")
    monkeypatch.setenv("FLEETPULSE_MDM__STATE_PATH", str(tmp_path / "mdm-state.sqlite"))
    for what, kafka in impostors.items():
        use_env(monkeypatch, kafka_env(kafka))
        started = time.monotonic()
        run = run_cli("mdm", "ingest", str(MDM_EXPORT), "--format", "csv", "--to-kafka")
        assert isinstance(run.exception, KafkaConnectError), (what, run.output)
        assert "the broker refused this client's TLS certificate" in str(run.exception), what
        assert time.monotonic() - started < 30, what
        rejected = delivery_refusal(kafka, tmp_path / f"spool-{len(what)}.sqlite3")
        assert (rejected or "").startswith("the broker refused this client's TLS certificate"), (what, rejected)
    failed = [(m["listener"], m["reason"]) for m in FAILED_LOGIN.finditer(log_since(cluster.broker.log, since))]
    refusals = failed.count((cluster.broker.mtls_bootstrap, "SSL handshake failed"))
    assert refusals >= 2 * len(impostors), failed  # the bridge's start and the agent's delivery, each

    # not trusting the cluster's CA (no ssl_cafile): the handshake fails before the SASL login, and the ticket
    # consumer stops at start, the agent reports the certificate, both within their timeouts
    tickets = cluster.as_user("fleetpulse-tickets").model_copy(update={"ssl_cafile": None})
    started = time.monotonic()
    with pytest.raises(KafkaConnectError, match=r"TLS certificate is not trusted.*set kafka\.ssl_cafile"):
        TicketConsumer(AlertSettings(store_url=f"sqlite:///{tmp_path}/tickets.db"), tickets, StreamSettings())
    assert time.monotonic() - started < 30
    agent = cluster.as_user("fleetpulse-agent").model_copy(update={"ssl_cafile": None})
    untrusting = delivery_refusal(agent, tmp_path / "spool-untrusting.sqlite3") or ""
    assert untrusting.startswith("the broker's TLS certificate is not trusted"), untrusting
    assert "kafka.ssl_cafile" in untrusting

    # the bridge's key encrypted, with ssl_key_password: both client libraries open it and log in as the bridge
    # (each sees exactly the bridge's two topics)
    password = secrets.token_urlsafe(12)
    encrypted_key = tmp_path / "fleetpulse-mdm-encrypted.key"
    subprocess.run(
        ["openssl", "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", str(bridge.ssl_keyfile), "-out", str(encrypted_key),
         "-passout", "stdin"],
        input=password, text=True, capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    encrypted = bridge.model_copy(update={"ssl_keyfile": encrypted_key, "ssl_key_password": SecretStr(password)})
    own = {cluster.topics.mobile, cluster.topics.mobile_inventory}
    admin = KafkaAdminClient(bootstrap_servers=encrypted.bootstrap_servers, **kafka_python_security(encrypted))
    try:
        assert {t for t in admin.list_topics() if t.startswith(cluster.prefix)} == own
    finally:
        admin.close()
    assert {t for t in asyncio.run(aiokafka_topics(encrypted)) if t.startswith(cluster.prefix)} == own


def delivery_refusal(kafka: KafkaSettings, spool_path: Path) -> str | None:
    """The agent's delivery of one report with ``kafka``: why it was refused for good (None: not refused so)."""
    with Spool(spool_path, 10**8, initial_seq=1) as spool:
        spool.append_report(lambda seq: disk_report(PC, seq, 0, datetime.now(UTC)))
        delivery = Delivery(kafka, FAST_DELIVERY, "acl-test-refused", RecordSigner(PC, os.urandom(32), __version__))
        try:
            result = delivery.drain(spool, budget_s=30)
        finally:
            delivery.close()
        assert (result.delivered, spool.count()) == (0, 1), result
        return result.rejected


async def aiokafka_topics(kafka: KafkaSettings) -> list[str]:
    admin = AIOKafkaAdminClient(**aiokafka_auth(kafka))
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_a_service_whose_own_topic_is_missing_stops_and_names_it(cluster: Cluster, tmp_path: Path) -> None:
    """No principal may create the pipeline's topics: the ticket consumer, whose scores topic nobody created,
    must stop at start naming it (not wait forever, nor crash on the topics it may not even see)."""
    incomplete = set_up(
        cluster.broker, f"t{uuid.uuid4().hex[:10]}.", cluster.passwords, frozenset({"fleetpulse.scores.v1"})
    )
    settings = AlertSettings(store_url=f"sqlite:///{tmp_path}/tickets.db")
    with pytest.raises(TopicCreationError, match=rf"{re.escape(incomplete.topics.scores)} do not exist"):
        TicketConsumer(settings, incomplete.as_user("fleetpulse-tickets"), StreamSettings())
