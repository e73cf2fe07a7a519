"""``fleetpulse dashboards push`` against a local HTTP server that records the Grafana API calls."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetpulse.cli import app, run
from fleetpulse.dashboards.provision import datasource_payload
from fleetpulse.dashboards.settings import GrafanaSettings, InfluxSourceSettings

# push builds the dashboards with grafana-foundation-sdk, which is published for Python 3.11+ only
needs_sdk = pytest.mark.skipif(
    importlib.util.find_spec("grafana_foundation_sdk") is None, reason="grafana-foundation-sdk is not installed"
)


class FakeGrafana(ThreadingHTTPServer):
    """Just enough of Grafana's HTTP API (datasources, folders, dashboards) with in-memory state."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[tuple[str, str, dict[str, Any] | None, str]] = []
        self.datasources: dict[str, dict[str, Any]] = {}
        self.folders: dict[str, dict[str, Any]] = {}
        self.dashboards: dict[str, dict[str, Any]] = {}
        self.fail_dashboards = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        srv = self.server
        srv.calls.append((method, self.path, body, self.headers.get("Authorization", "")))
        path = self.path.split("?")[0]
        if method == "GET" and path.startswith("/api/datasources/uid/"):
            uid = path.rsplit("/", 1)[1]
            if uid in srv.datasources:
                return self._reply(200, srv.datasources[uid])
            return self._reply(404, {"message": "Data source not found"})
        if method == "POST" and path == "/api/datasources":
            assert body is not None
            srv.datasources[body["uid"]] = body
            return self._reply(200, {"id": 1, "message": "Datasource added", "datasource": body})
        if method == "PUT" and path.startswith("/api/datasources/uid/"):
            assert body is not None
            srv.datasources[path.rsplit("/", 1)[1]] = body
            return self._reply(200, {"message": "Datasource updated"})
        if method == "GET" and path.startswith("/api/folders/"):
            uid = path.rsplit("/", 1)[1]
            if uid in srv.folders:
                return self._reply(200, srv.folders[uid])
            return self._reply(404, {"message": "folder not found"})
        if method == "POST" and path == "/api/folders":
            assert body is not None
            srv.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "id": len(srv.folders) + 1}
            return self._reply(200, srv.folders[body["uid"]])
        if method == "POST" and path == "/api/dashboards/db":
            assert body is not None
            if srv.fail_dashboards:
                return self._reply(500, {"message": "database is locked"})
            dash = body["dashboard"]
            if body.get("folderUid") not in srv.folders:
                return self._reply(400, {"message": "folder not found"})
            if dash["uid"] in srv.dashboards and not body.get("overwrite"):
                return self._reply(412, {"message": "version-mismatch"})
            version = srv.dashboards.get(dash["uid"], {}).get("version", 0) + 1
            srv.dashboards[dash["uid"]] = {"dashboard": dash, "folderUid": body["folderUid"], "version": version}
            return self._reply(
                200, {"uid": dash["uid"], "url": f"/d/{dash['uid']}", "version": version, "status": "success"}
            )
        return self._reply(404, {"message": f"unexpected {method} {path}"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _push(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> str:
    # the fake Grafana and the data source speak plain http: credentials in clear need the opt-in
    monkeypatch.setenv("FLEETPULSE_GRAFANA__ALLOW_INSECURE", "true")
    monkeypatch.setenv("FLEETPULSE_GRAFANA__INFLUX__ALLOW_INSECURE", "true")
    monkeypatch.setenv("FLEETPULSE_GRAFANA__URL", grafana.url)
    monkeypatch.setenv("FLEETPULSE_GRAFANA__TOKEN", "glsa_test")
    monkeypatch.setenv("FLEETPULSE_GRAFANA__INFLUX__URL", "http://influxdb:8086")
    monkeypatch.setenv("FLEETPULSE_GRAFANA__INFLUX__TOKEN", "influx-read-token")
    result = CliRunner().invoke(app, ["dashboards", "push"])
    assert result.exit_code == 0, result.output
    return result.output


@needs_sdk
def test_push_twice_is_idempotent(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _push(grafana, monkeypatch)
    assert "data source fleetpulse-influxdb: created" in first
    assert "folder fleetpulse: created" in first
    state_after_first = (
        dict(grafana.datasources),
        dict(grafana.folders),
        {k: v["dashboard"] for k, v in grafana.dashboards.items()},
    )
    calls_first = len(grafana.calls)

    second = _push(grafana, monkeypatch)
    assert "data source fleetpulse-influxdb: updated" in second
    assert "folder fleetpulse: unchanged" in second
    assert (
        dict(grafana.datasources),
        dict(grafana.folders),
        {k: v["dashboard"] for k, v in grafana.dashboards.items()},
    ) == state_after_first

    methods = [(m, p.split("?")[0]) for m, p, _, _ in grafana.calls]
    assert methods.count(("POST", "/api/folders")) == 1, "folder created once, then reused"
    assert methods.count(("POST", "/api/datasources")) == 1
    assert methods.count(("PUT", "/api/datasources/uid/fleetpulse-influxdb")) == 1
    saves = [body for m, p, body, _ in grafana.calls if (m, p) == ("POST", "/api/dashboards/db")]
    assert len(saves) == 8
    assert calls_first == 8  # get+create data source, get+create folder, 4 dashboards
    assert len(grafana.calls) == 15  # second run: get+update data source, get folder, 4 dashboards
    assert all(b is not None and b["overwrite"] is True and b["folderUid"] == "fleetpulse" for b in saves)
    assert all(b is not None and b["dashboard"]["id"] is None for b in saves)
    assert sorted(grafana.dashboards) == [
        "fleetpulse-device",
        "fleetpulse-fleet-health",
        "fleetpulse-model-quality",
        "fleetpulse-pipeline",
    ]
    assert {v["version"] for v in grafana.dashboards.values()} == {2}
    assert all(auth == "Bearer glsa_test" for _, _, _, auth in grafana.calls)


@needs_sdk
def test_pushed_datasource_carries_influx_token_as_header(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    _push(grafana, monkeypatch)
    ds = grafana.datasources["fleetpulse-influxdb"]
    assert ds["type"] == "influxdb"
    assert ds["url"] == "http://influxdb:8086"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "fleetpulse"
    assert ds["jsonData"]["httpHeaderName1"] == "Authorization"
    assert ds["secureJsonData"] == {"httpHeaderValue1": "Token influx-read-token"}


@needs_sdk
def test_push_reports_grafana_errors_clearly(grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETPULSE_GRAFANA__URL", grafana.url + "/nothing-here")
    result = CliRunner().invoke(app, ["dashboards", "push"])
    assert result.exit_code == 1
    assert "refused or failed" in result.output


def test_influxdb1_basic_auth_payload() -> None:
    settings = GrafanaSettings(
        influx=InfluxSourceSettings(username="grafana", password="s3cret", allow_insecure=True)  # type: ignore[arg-type]
    )
    payload = datasource_payload(settings)
    assert payload["basicAuth"] is True
    assert payload["basicAuthUser"] == "grafana"
    assert payload["secureJsonData"] == {"basicAuthPassword": "s3cret"}
    assert "httpHeaderName1" not in payload["jsonData"]


def test_token_and_basic_auth_are_exclusive() -> None:
    with pytest.raises(ValueError, match="not both"):
        InfluxSourceSettings(token="t", username="u")


@needs_sdk
def test_push_reports_server_errors_and_unreachable_grafana(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETPULSE_GRAFANA__TIMEOUT_S", "2")
    grafana.folders["fleetpulse"] = {"uid": "fleetpulse", "title": "fleetpulse"}
    grafana.fail_dashboards = True
    monkeypatch.setenv("FLEETPULSE_GRAFANA__URL", grafana.url)
    result = CliRunner().invoke(app, ["dashboards", "push"])
    assert result.exit_code == 1
    assert "refused or failed" in result.output
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("FLEETPULSE_GRAFANA__URL", f"http://127.0.0.1:{closed_port}")
    result = CliRunner().invoke(app, ["dashboards", "push"])
    assert result.exit_code == 1
    assert "refused or failed" in result.output


@pytest.mark.parametrize("command", ["build", "push"])
def test_without_the_sdk_build_and_push_say_why_in_one_line(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As on Python 3.10, where grafana-foundation-sdk does not install: an error line, not a traceback."""
    monkeypatch.setitem(sys.modules, "grafana_foundation_sdk", None)
    monkeypatch.setattr(sys, "argv", ["fleetpulse", "dashboards", command])
    with pytest.raises(SystemExit) as ended:
        run()
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: building dashboards needs grafana-foundation-sdk, which needs Python 3.11 or newer")
    assert "Traceback" not in err
