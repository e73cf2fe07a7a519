"""No configured secret ever shows up in CLI output, logs or stored errors.

Distinctive secrets are planted in every secret field of every settings class (server
``ServerSettings`` with every connector kind and the MDM section, agent ``AgentSettings``);
then the real ``fleetpulse`` and ``fleetpulse-agent`` CLIs run as subprocesses on broken
variants of those configurations (missing field, misspelt key, bad value, insecure URL,
broken environment JSON), and ITSM targets answer 401 echoing the credentials they received.
Every byte of output, log and stored outbox error is scanned for the secrets and their
encodings (base64 of ``user:password`` as in a Basic header, URL- and JSON-escaped forms).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import os
import secrets as random_secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import TypeAdapter

from fleetpulse.alerts.connectors import ConnectorConfig, build
from fleetpulse.alerts.outbox import deliver_due
from fleetpulse.alerts.settings import OutboxSettings
from fleetpulse.alerts.store.repository import TicketStore
from tests.alerts_support import NOW, make_alert, service
from tests.harness import free_port
from tests.integration.test_connectors import RecordingHttp, RecordingSmtp

pytestmark = pytest.mark.integration

# the installed console scripts (they import the code on PYTHONPATH), else the same entry points via -m
SERVER_CLI = [shutil.which("fleetpulse") or ""] if shutil.which("fleetpulse") else [sys.executable, "-m", "fleetpulse"]
AGENT_CLI = (
    [shutil.which("fleetpulse-agent") or ""]
    if shutil.which("fleetpulse-agent")
    else [sys.executable, "-m", "fleetpulse.agents.cli"]
)


def _planted(name: str) -> str:
    return f"PLANTED{name.replace('_', '').upper()}{random_secrets.token_hex(6)}"


def _webhook_secret() -> str:
    """A valid ``whsec_`` secret whose text is distinctive too."""
    return "whsec_" + base64.b64encode(b"planted-webhook-" + random_secrets.token_bytes(16)).decode()


@dataclass
class Planted:
    values: dict[str, str]  # what -> secret
    usernames: tuple[str, ...] = ("svc-planted", "op-planted", "relay-planted", "grafana-planted", "influx-planted")

    def forms(self) -> dict[str, str]:
        """Every spelling of every secret that would give it away."""
        found: dict[str, str] = {}
        for what, secret in self.values.items():
            found[f"{what} (raw)"] = secret
            found[f"{what} (its random tail: a truncated echo)"] = secret[-12:]
            found[f"{what} (url-encoded)"] = quote(secret, safe="")
            found[f"{what} (base64)"] = base64.b64encode(secret.encode()).decode().rstrip("=")
            for user in self.usernames:
                found[f"{what} (basic auth of {user})"] = base64.b64encode(f"{user}:{secret}".encode()).decode()
        return found

    def leaks(self, text: str) -> list[str]:
        return [what for what, form in self.forms().items() if form in text]


def _toml(data: Mapping[str, Any], table: str = "") -> str:
    """Just enough TOML for settings: scalars, string lists, tables and arrays of tables."""
    scalars, tables = [], []
    for key, value in data.items():
        path = f"{table}.{key}" if table else key
        if isinstance(value, Mapping):
            tables.append(f"\n[{path}]\n" + _toml(value, path))
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            tables.extend(f"\n[[{path}]]\n" + _toml(item, path) for item in value)
        else:
            scalars.append(f"{key} = {json.dumps(value)}")
    return "\n".join(scalars) + "".join(tables) + "\n"


def server_config(planted: Planted, http_url: str, smtp_port: int, store_url: str) -> dict[str, Any]:
    s = planted.values
    return {
        "log_level": "INFO",
        "kafka": {"sasl_username": "kafka-user", "sasl_password": s["kafka_sasl"], "ssl_key_password": s["kafka_key"]},
        "streams": {"tsdb": {"kind": "influxdb2", "url": http_url, "token": s["tsdb_token"], "allow_insecure": True}},
        "grafana": {
            "token": s["grafana_token"],
            "allow_insecure": True,
            "influx": {"username": "influx-planted", "password": s["grafana_influx"], "allow_insecure": True},
            "rollup": {"influx": {"token": s["rollup_token"], "allow_insecure": True}},
        },
        "mdm": {"secret": s["mdm_secret"]},
        "alerts": {
            "store_url": store_url,
            "connectors": [
                {"kind": "webhook", "name": "hook", "url": f"{http_url}/hook", "secret": s["webhook"]},
                {
                    "kind": "servicenow",
                    "name": "snow",
                    "instance_url": http_url,
                    "username": "svc-planted",
                    "password": s["servicenow"],
                    "allow_insecure": True,
                },
                {
                    "kind": "topdesk",
                    "name": "td",
                    "url": http_url,
                    "username": "op-planted",
                    "app_password": s["topdesk"],
                    "allow_insecure": True,
                },
                {
                    "kind": "smtp",
                    "name": "mail",
                    "port": smtp_port,
                    "tls": "none",
                    "allow_insecure": True,
                    "username": "relay-planted",
                    "password": s["smtp"],
                    "recipients": ["it@example.org"],
                },
            ],
        },
    }


def agent_config(planted: Planted) -> dict[str, Any]:
    s = planted.values
    return {
        "kafka": {"sasl_username": "agent", "sasl_password": s["agent_sasl"], "ssl_key_password": s["agent_key"]},
        "identity": {"secret": s["agent_identity"], "device_id": "pc-planted"},
    }


@pytest.fixture
def planted() -> Planted:
    names = [
        "kafka_sasl",
        "kafka_key",
        "tsdb_token",
        "grafana_token",
        "grafana_influx",
        "rollup_token",
        "mdm_secret",
        "servicenow",
        "topdesk",
        "smtp",
        "agent_sasl",
        "agent_key",
        "agent_identity",
        "store",
    ]
    values = {name: _planted(name) for name in names}
    values["webhook"] = _webhook_secret()
    return Planted(values)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETPULSE_") and k != "CREDENTIALS_DIRECTORY"}
    env["PYTHONPATH"] = os.environ.get("PYTHONPATH", "")
    env["HOME"] = str(tmp_path)
    return env


def run_cli(cli: list[str], args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli, *args], capture_output=True, text=True, env=dict(env), timeout=120, check=False)


def _mutate(config: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy with ``path`` (dotted; ``connectors.1`` indexes the list) set, or deleted when ``value`` is ``...``."""
    out = copy.deepcopy(config)
    *parents, leaf = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return out


# (description, dotted path, new value or ... to delete, planted secret used as the value)
SERVER_BREAKAGES = [
    ("servicenow connector without username", "alerts.connectors.1.username", ..., None),
    ("topdesk connector without url", "alerts.connectors.2.url", ..., None),
    ("misspelt kafka key sasl_pasword", "kafka.sasl_pasword", "kafka_sasl", "kafka_sasl"),
    ("misspelt smtp key pasword", "alerts.connectors.3.pasword", "smtp", "smtp"),
    ("secret where a number belongs", "kafka.request_timeout_ms", "kafka_sasl", "kafka_sasl"),
    ("secret in a patterned field", "alerts.connectors.1.table", "servicenow", "servicenow"),
    ("webhook secret not whsec_", "alerts.connectors.0.secret", "servicenow", "servicenow"),
    ("mdm secret as a table", "mdm.secret", {"value": "mdm_secret"}, None),
    ("servicenow over http without allow_insecure", "alerts.connectors.1.allow_insecure", False, None),
    ("smtp login without TLS", "alerts.connectors.3.allow_insecure", False, None),
    ("grafana token and username together", "grafana.username", "grafana_token", "grafana_token"),
    ("unknown top-level section holding a secret", "vault", {"token": "tsdb_token"}, None),
]


def _resolve(value: Any, planted: Planted) -> Any:
    if isinstance(value, str) and value in planted.values:
        return planted.values[value]
    if isinstance(value, dict):
        return {k: _resolve(v, planted) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("case", "path", "value", "_secret"), SERVER_BREAKAGES, ids=[b[0] for b in SERVER_BREAKAGES])
def test_server_config_errors_never_print_a_secret(
    case: str, path: str, value: Any, _secret: str | None, planted: Planted, tmp_path: Path
) -> None:
    config = server_config(planted, "http://127.0.0.1:9", 25, f"sqlite:///{tmp_path}/t.db")
    broken = _mutate(config, path, _resolve(value, planted))
    toml_path = tmp_path / "server.toml"
    toml_path.write_text(_toml(broken), encoding="utf-8")
    proc = run_cli(SERVER_CLI, ["--config", str(toml_path), "config", "show"], _clean_env(tmp_path))
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    assert "invalid configuration" in proc.stderr
    assert not planted.leaks(proc.stdout + proc.stderr), (case, proc.stderr)
    if path != "vault":
        assert path.split(".")[-1] in proc.stderr, f"{case}: the error should name the field: {proc.stderr}"


def test_server_valid_config_show_masks_every_secret(planted: Planted, tmp_path: Path) -> None:
    toml_path = tmp_path / "server.toml"
    toml_path.write_text(_toml(server_config(planted, "https://itsm.example.org", 25, "sqlite://")), encoding="utf-8")
    env = _clean_env(tmp_path)  # the database password travels inside the store URL
    env["FLEETPULSE_ALERTS__STORE_URL"] = f"postgresql+psycopg://fleetpulse:{planted.values['store']}@pg:5432/fleet"
    proc = run_cli(SERVER_CLI, ["--config", str(toml_path), "config", "show"], env)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["alerts"]["connectors"][1]["username"] == "svc-planted"
    assert not planted.leaks(proc.stdout + proc.stderr)


@pytest.mark.parametrize(
    ("case", "name", "value"),
    [
        ("misspelt env key", "FLEETPULSE_KAFKA__SASL_PASWORD", "kafka_sasl"),
        ("broken JSON list holding a password", "FLEETPULSE_ALERTS__CONNECTORS", "broken-json"),
        ("secret where an integer belongs", "FLEETPULSE_KAFKA__REQUEST_TIMEOUT_MS", "kafka_sasl"),
        ("secret in a literal field", "FLEETPULSE_KAFKA__SECURITY_PROTOCOL", "kafka_sasl"),
    ],
)
def test_server_environment_errors_never_print_a_secret(
    case: str, name: str, value: str, planted: Planted, tmp_path: Path
) -> None:
    env = _clean_env(tmp_path)
    if value == "broken-json":
        env[name] = f'[{{"kind": "servicenow", "name": "snow", "password": "{planted.values["servicenow"]}"'
    else:
        env[name] = planted.values[value]
    proc = run_cli(SERVER_CLI, ["config", "show"], env)
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    assert not planted.leaks(proc.stdout + proc.stderr), (case, proc.stderr)


AGENT_BREAKAGES = [
    ("misspelt kafka key", "kafka.sasl_pasword", "agent_sasl"),
    ("secret where a number belongs", "interval_s", "agent_identity"),
    ("secret in a literal field", "kafka.security_protocol", "agent_sasl"),
    ("misspelt identity key", "identity.secrett", "agent_identity"),
    ("unknown section", "vault", {"token": "agent_key"}),
]


@pytest.mark.parametrize("command", [["config", "show"], ["run", "--max-reports", "1"]], ids=["typer", "service"])
@pytest.mark.parametrize(("case", "path", "value"), AGENT_BREAKAGES, ids=[b[0] for b in AGENT_BREAKAGES])
def test_agent_config_errors_never_print_a_secret(
    case: str, path: str, value: Any, command: list[str], planted: Planted, tmp_path: Path
) -> None:
    """Both agent entry points: the resident ``run`` parser and the typer commands."""
    broken = _mutate(agent_config(planted), path, _resolve(value, planted))
    toml_path = tmp_path / "agent.toml"
    toml_path.write_text(_toml(broken), encoding="utf-8")
    proc = run_cli(AGENT_CLI, ["--config", str(toml_path), *command], _clean_env(tmp_path))
    assert proc.returncode == 2, (case, proc.stdout, proc.stderr)
    assert "invalid configuration" in proc.stderr
    assert not planted.leaks(proc.stdout + proc.stderr), (case, proc.stderr)


def test_agent_config_show_masks_every_secret(planted: Planted, tmp_path: Path) -> None:
    toml_path = tmp_path / "agent.toml"
    toml_path.write_text(_toml(agent_config(planted)), encoding="utf-8")
    if os.geteuid() == 0:  # run as root, the agent refuses inline secrets in a file others can read
        refused = run_cli(AGENT_CLI, ["--config", str(toml_path), "config", "show"], _clean_env(tmp_path))
        assert refused.returncode != 0
        assert "chmod 600" in refused.stderr
        assert not planted.leaks(refused.stdout + refused.stderr)
    toml_path.chmod(0o600)
    proc = run_cli(AGENT_CLI, ["--config", str(toml_path), "config", "show"], _clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert not planted.leaks(proc.stdout + proc.stderr)


class EchoingItsm(RecordingHttp):
    """An ITSM (or a proxy in front of it) that answers 401 and echoes the request, headers included."""

    def start(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _echo(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length) if length else b""
                auth = self.headers.get("Authorization", "")
                decoded = base64.b64decode(auth.split()[-1]).decode() if auth.startswith("Basic ") else ""
                echo = {
                    "error": {"message": "User Not Authenticated", "detail": f"rejected credentials {decoded}"},
                    "request": {"headers": dict(self.headers.items()), "body": body.decode(errors="replace")},
                }
                payload = (json.dumps(echo) + f"\nAuthorization: {auth}\n" + "x" * 5000).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = _echo

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class EchoingRelay(RecordingSmtp):
    """An SMTP relay that rejects the login with a reply quoting the decoded credentials."""

    def start(self) -> None:
        import socketserver
        import threading

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 relay ESMTP\r\n")
                while line := self.rfile.readline():
                    command = line.decode().strip()
                    if command[:4].upper() == "EHLO":
                        self.wfile.write(b"250-relay\r\n250 AUTH PLAIN\r\n")
                    elif command[:4].upper() == "AUTH":
                        decoded = base64.b64decode(command.split()[2]).decode().replace("\x00", " ")
                        self.wfile.write(f"535 5.7.8 bad credentials:{decoded}\r\n".encode())
                    elif command[:4].upper() == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"502 no\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def echoing() -> Iterator[tuple[EchoingItsm, EchoingRelay]]:
    http, smtp = EchoingItsm(free_port()), EchoingRelay(free_port())
    http.start()
    smtp.start()
    yield http, smtp
    http.stop()
    smtp.stop()


def _store_with_one_row_per_connector(store_url: str, configs: list[dict[str, Any]]) -> None:
    store = TicketStore.open(store_url)
    try:
        svc = service(
            store, connectors=[{"kind": "webhook", "name": c["name"], "url": "http://127.0.0.1:9/"} for c in configs]
        )
        svc.apply_alert(make_alert("pc-1"), NOW)
    finally:
        store.close()


def test_itsm_401_echoing_credentials_is_scrubbed_from_outbox_and_logs(
    echoing: tuple[EchoingItsm, EchoingRelay], planted: Planted, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every connector kind meets a target echoing what it was sent; nothing secret is stored or logged,
    the rows are marked as needing attention (a rejected login is not retried at full rate)."""
    http, smtp = echoing
    store_url = f"sqlite:///{tmp_path}/t.db"
    config = server_config(planted, http.url, smtp.port, store_url)
    connectors_config = config["alerts"]["connectors"]
    _store_with_one_row_per_connector(store_url, connectors_config)
    configs: list[ConnectorConfig] = [TypeAdapter(ConnectorConfig).validate_python(c) for c in connectors_config]
    store = TicketStore.open(store_url)
    try:
        with caplog.at_level(logging.INFO):
            report = deliver_due(store, {c.name: build(c) for c in configs}, None, OutboxSettings(), NOW)
        rows = store.outbox()
    finally:
        store.close()
    assert report.needs_attention == 4, report.errors
    stored = "\n".join(r.last_error or "" for r in rows)
    logged = "\n".join(r.getMessage() + json.dumps(getattr(r, "fields", {})) for r in caplog.records)
    assert "HTTP 401" in stored
    assert "535" in stored
    assert not planted.leaks(stored + "\n".join(report.errors)), stored
    assert not planted.leaks(logged), logged
    assert all(r.needs_attention and len(r.last_error or "") <= 600 for r in rows)
    assert all(r.next_attempt_at >= NOW + OutboxSettings().attention_recheck for r in rows)


def test_itsm_401_through_the_real_cli(
    echoing: tuple[EchoingItsm, EchoingRelay], planted: Planted, tmp_path: Path, kafka_bootstrap: str
) -> None:
    """``fleetpulse tickets deliver`` against echoing targets: its output and the stored errors stay clean."""
    http, smtp = echoing
    store_url = f"sqlite:///{tmp_path}/t.db"
    config = server_config(planted, http.url, smtp.port, store_url)
    config["kafka"]["bootstrap_servers"] = kafka_bootstrap
    _store_with_one_row_per_connector(store_url, config["alerts"]["connectors"])
    toml_path = tmp_path / "server.toml"
    toml_path.write_text(_toml(config), encoding="utf-8")
    proc = run_cli(SERVER_CLI, ["--config", str(toml_path), "tickets", "deliver"], _clean_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "needs_attention=4" in proc.stdout
    store = TicketStore.open(store_url)
    try:
        stored = "\n".join(r.last_error or "" for r in store.outbox())
    finally:
        store.close()
    assert "HTTP 401" in stored
    assert not planted.leaks(proc.stdout + proc.stderr + stored), proc.stdout + proc.stderr + stored
