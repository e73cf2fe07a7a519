"""Starts the real local services for integration tests through deploy/local/stack.sh.

Tests use their own ports and state folder (``.local/test-stack``) so they never
touch a demo stack running on the default ports. Services are started on first
use and left running for the rest of the session (starting is idempotent and
fast when already up); ``make test``/``.ci/run`` stop them at the end.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NoReturn

import pytest
from pydantic import SecretStr

from fleetpulse.config import KafkaSettings

REPO = Path(__file__).resolve().parents[1]
STACK = REPO / "deploy" / "local" / "stack.sh"
STATE = Path(os.environ.get("FLEETPULSE_TEST_STACK_DIR", REPO / ".local" / "test-stack"))
SHARED_DATA = REPO.parent / "shared" / "data"

_ACL_PORT = int(os.environ.get("FLEETPULSE_TEST_KAFKA_ACL_PORT", "19192"))  # SASL_SSL; its controller on + 1
PORTS = {
    "kafka": int(os.environ.get("FLEETPULSE_TEST_KAFKA_PORT", "19092")),
    "kafka_acl": _ACL_PORT,
    "kafka_acl_mtls": int(os.environ.get("FLEETPULSE_TEST_KAFKA_ACL_MTLS_PORT", str(_ACL_PORT + 2))),
    "tsdb": int(os.environ.get("FLEETPULSE_TEST_VM_PORT", "18428")),
    "influxdb1": int(os.environ.get("FLEETPULSE_TEST_INFLUXDB1_PORT", "18086")),
    "postgres": int(os.environ.get("FLEETPULSE_TEST_PG_PORT", "15433")),
    "keycloak": int(os.environ.get("FLEETPULSE_TEST_KEYCLOAK_PORT", "18180")),
}


def unavailable(what: str) -> NoReturn:
    """Skip a test whose prerequisite is missing; under CI (``CI=true``) fail it instead.

    A developer without Go or ../shared/data still gets a useful run, but CI installs everything,
    so there a missing tool or data set is a broken install, not a reason to go green on skips.
    """
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} (CI=true: a missing prerequisite fails the run)", pytrace=False)
    pytest.skip(what)


class StackError(RuntimeError):
    pass


def stack_env(state: Path = STATE, kafka_port: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLEETPULSE_LOCAL_DIR=str(state),
        FLEETPULSE_KAFKA_PORT=str(kafka_port or PORTS["kafka"]),
        FLEETPULSE_KAFKA_ACL_PORT=str(PORTS["kafka_acl"]),
        FLEETPULSE_KAFKA_ACL_MTLS_PORT=str(PORTS["kafka_acl_mtls"]),
        FLEETPULSE_VM_PORT=str(PORTS["tsdb"]),
        FLEETPULSE_INFLUXDB1_PORT=str(PORTS["influxdb1"]),
        FLEETPULSE_PG_PORT=str(PORTS["postgres"]),
        FLEETPULSE_KEYCLOAK_PORT=str(PORTS["keycloak"]),
        FLEETPULSE_KAFKA_HEAP="512m",
    )
    return env


def run_stack(action: str, service: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(
        ["bash", str(STACK), action, service],
        env=env or stack_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise StackError(f"stack.sh {action} {service} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(app: Any, port: int) -> Iterator[None]:
    """``app`` served by uvicorn on 127.0.0.1:``port`` in a thread, for a browser to reach it."""
    import uvicorn  # the agent-only test runs have no server dependencies

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class DedicatedKafka:
    """A broker of a test's own, for tests that stop or restart the broker."""

    state: Path
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = stack_env(self.state, self.port)
        env["FLEETPULSE_KAFKA_CONTROLLER_PORT"] = str(free_port())
        return env

    def start(self) -> None:
        run_stack("start", "kafka", self._env())

    def stop(self) -> None:
        run_stack("stop", "kafka", self._env())


@dataclass(frozen=True)
class AclKafka:
    """The broker secured as in production (stack.sh ``kafka-acl``): SASL/SCRAM-SHA-512 over TLS on ``bootstrap``,
    mutual TLS (client certificates, principal ``User:CN=<name>``) on ``mtls_bootstrap``, the StandardAuthorizer,
    nothing allowed without an ACL; ``admin`` is its one super user. ``tls`` holds its throwaway certificates:
    ``cluster-ca.crt`` (the broker's CA, which clients trust) and ``users/<name>.crt``/``.key``."""

    bootstrap: str
    mtls_bootstrap: str
    admin_password: str = field(repr=False)
    log: Path
    tls: Path

    @property
    def cluster_ca(self) -> Path:
        return self.tls / "cluster-ca.crt"

    def certificate(self, user: str) -> tuple[Path, Path]:
        """``user``'s client certificate and its private key, as the Strimzi User Operator's Secret holds them."""
        return self.tls / "users" / f"{user}.crt", self.tls / "users" / f"{user}.key"

    def settings(self, user: str, password: str, topic_prefix: str = "") -> KafkaSettings:
        """A SCRAM user's settings, as in production: SASL_SSL, trusting the cluster's CA."""
        return KafkaSettings(
            bootstrap_servers=self.bootstrap,
            topic_prefix=topic_prefix,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user,
            sasl_password=SecretStr(password),
            ssl_cafile=self.cluster_ca,
            request_timeout_ms=10_000,
        )

    def tls_settings(self, user: str, topic_prefix: str = "") -> KafkaSettings:
        """A certificate user's settings, as in production: SSL on the mutual-TLS listener, no password."""
        certfile, keyfile = self.certificate(user)
        return KafkaSettings(
            bootstrap_servers=self.mtls_bootstrap,
            topic_prefix=topic_prefix,
            security_protocol="SSL",
            ssl_cafile=self.cluster_ca,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
            request_timeout_ms=10_000,
        )


def modules_loaded_by(code: str) -> set[str]:
    """Every module a fresh interpreter has loaded after running ``code`` (import-graph tests)."""
    script = f"{code}\nimport json as _json, sys as _sys\nprint(_json.dumps(sorted(_sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def self_signed_tls(folder: Path, name: str = "127.0.0.1") -> tuple[Path, ssl.SSLContext]:
    """A one-day self-signed certificate for ``name`` (an IP address gets it as subjectAltName too)
    and a server context holding it: a TLS peer with a private CA, made by openssl."""
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    san = ["-addext", f"subjectAltName=IP:{name}"] if name.replace(".", "").isdigit() else []
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            *san,
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return cert, context


@contextmanager
def tls_listener(context: ssl.SSLContext) -> Iterator[int]:
    """Accepts on 127.0.0.1 and shakes hands with ``context`` (its verify mode decides whether a client
    certificate is required); yields the port. A refused handshake only ends that connection."""

    def shake_hands(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(5)
            tls.recv(16)

    with listener(shake_hands) as port:
        yield port


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on 127.0.0.1 from a background thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def listener(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """Accepts on 127.0.0.1 and hands each connection to ``handle``, one at a time; yields the port. An OSError
    only ends that connection."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with suppress(OSError), conn:
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()
