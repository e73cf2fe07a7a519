"""Shared fixtures. Integration fixtures start real services; they fail loudly, never mock."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from fleetpulse.config import KafkaSettings
from tests.harness import PORTS, SHARED_DATA, STATE, AclKafka, DedicatedKafka, free_port, run_stack, unavailable

# Wall-clock deadlines make property tests flaky on a loaded 2-core machine; examples stay bounded.
settings.register_profile("fleetpulse", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("fleetpulse")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repository (real third-party data, read in place)."""
    if not SHARED_DATA.is_dir():
        unavailable(f"real data not found at {SHARED_DATA}: place the shared/ folder beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    run_stack("start", "kafka")
    return f"127.0.0.1:{PORTS['kafka']}"


@pytest.fixture(scope="session")
def kafka_acl() -> AclKafka:
    """A second broker secured as in production: SASL/SCRAM-SHA-512 over TLS, mutual TLS for certificate users,
    KRaft's StandardAuthorizer, no ACL no access."""
    run_stack("start", "kafka-acl")
    state = STATE / "kafka-acl"
    password = (state / "admin-password").read_text().strip()  # made by stack.sh, readable by us only
    return AclKafka(
        bootstrap=f"127.0.0.1:{PORTS['kafka_acl']}",
        mtls_bootstrap=f"127.0.0.1:{PORTS['kafka_acl_mtls']}",
        admin_password=password,
        log=state / "kafka.log",
        tls=state / "tls",
    )


@pytest.fixture
def topic_prefix() -> str:
    """A prefix of the test's own, so tests sharing the broker never see each other's records."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, topic_prefix: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, request_timeout_ms=10_000)


@pytest.fixture(scope="session")
def victoria_metrics_url() -> str:
    run_stack("start", "tsdb")
    return f"http://127.0.0.1:{PORTS['tsdb']}"


@pytest.fixture(scope="session")
def influxdb1_url() -> str:
    run_stack("start", "influxdb1")
    return f"http://127.0.0.1:{PORTS['influxdb1']}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    run_stack("start", "postgres")
    password = (STATE / "postgres" / "password").read_text().strip()  # made by stack.sh, readable by us only
    return f"postgresql+psycopg://fleetpulse:{password}@127.0.0.1:{PORTS['postgres']}/fleetpulse"


@pytest.fixture(scope="session")
def keycloak_url() -> str:
    """Keycloak with the realm deploy/local/keycloak/fleetpulse-realm.json (users anna, ben, carla, nobody)."""
    run_stack("start", "keycloak")
    return f"http://127.0.0.1:{PORTS['keycloak']}"


@pytest.fixture
def dedicated_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DedicatedKafka]:
    state = STATE.parent / f"kafka-{uuid.uuid4().hex[:8]}"
    broker = DedicatedKafka(state=state, port=free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(state, ignore_errors=True)
