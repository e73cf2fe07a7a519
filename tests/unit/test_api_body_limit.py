"""The gate in front of the API: credentials before any body byte is read, bodies bounded (413).

Calls the ASGI app directly with a ``receive`` that counts what the app pulls, so each test
shows how much of a hostile body the server reads. The real server under the 52 MB attack is
in tests/integration/test_api_memory_dos.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.alerts.tickets import TicketService
from tests.alerts_support import NOW, make_alert
from tests.unit.test_tickets_api import PASSWORD, api_settings

LIMIT = 64 * 1024
CHUNK = 16 * 1024
BULK = "/api/v1/tickets/bulk-transition"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    data = api_settings(f"sqlite:///{tmp_path}/t.db").model_dump()
    data["api"]["limits"]["max_body_bytes"] = LIMIT
    settings = AlertSettings.model_validate(data)
    store = TicketStore.open(settings.store_url)
    TicketService(store, settings).apply_alert(make_alert("pc-1"), NOW)
    yield create_app(settings, store)
    store.close()


class Upload:
    """An endless (or ``total``-byte) body offered in chunks; records how many bytes the app took."""

    def __init__(self, total: int | None = None, body: bytes | None = None) -> None:
        self.body = body
        self.total = total
        self.taken = 0

    async def receive(self) -> MutableMapping[str, Any]:
        if self.body is not None:
            chunk, self.body = self.body, None
            self.taken += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": False}
        left = CHUNK if self.total is None else min(CHUNK, self.total - self.taken)
        self.taken += left
        more = self.total is None or self.taken < self.total
        return {"type": "http.request", "body": b" " * left, "more_body": more}


def call(
    app: FastAPI, upload: Upload, headers: dict[str, str], path: str = BULK
) -> tuple[int, dict[str, str], dict[str, Any]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("10.1.2.3", 40000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    async def run() -> None:
        await app(scope, upload.receive, send)

    anyio.run(run)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], response_headers, json.loads(body)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


JSON = {"Content-Type": "application/json"}
CHUNKED = {**JSON, "Transfer-Encoding": "chunked"}
HUGE = {**JSON, "Content-Length": str(52 * 1024 * 1024)}


@pytest.mark.parametrize("framing", [CHUNKED, HUGE], ids=["chunked", "content-length"])
@pytest.mark.parametrize("authorization", [None, basic("fm", "wrong"), basic("nobody", "x"), "Bearer forged"])
def test_without_valid_credentials_no_body_byte_is_read(
    app: FastAPI, framing: dict[str, str], authorization: str | None
) -> None:
    upload = Upload()
    headers = framing | ({"Authorization": authorization} if authorization else {})
    code, response_headers, _ = call(app, upload, headers)
    assert code == 401
    assert upload.taken == 0
    assert response_headers["connection"] == "close"  # the unread upload is dropped with the connection


def test_an_announced_oversized_body_is_refused_unread(app: FastAPI) -> None:
    upload = Upload()
    code, headers, body = call(app, upload, HUGE | {"Authorization": basic("fm", PASSWORD)})
    assert (code, upload.taken) == (413, 0)
    assert body == {"detail": f"request body larger than {LIMIT} bytes"}
    assert headers["connection"] == "close"


@pytest.mark.parametrize("path", [BULK, "/api/v1/outbox/retry", "/api/v1/me", "/no/such/route"])
def test_a_streamed_body_is_cut_off_at_the_limit(app: FastAPI, path: str) -> None:
    """Chunked, without a length: counted as it arrives, refused one chunk past the limit, wherever it goes."""
    upload = Upload()
    code, _, _ = call(app, upload, CHUNKED | {"Authorization": basic("root", PASSWORD)}, path)
    if path in (BULK, "/api/v1/outbox/retry"):  # routes that read bodies stop reading at the limit
        assert code == 413
        assert LIMIT < upload.taken <= LIMIT + CHUNK
    else:  # routes without a body never read it
        assert code in (404, 405)
        assert upload.taken == 0


def test_a_lying_content_length_is_cut_off_too(app: FastAPI) -> None:
    upload = Upload(total=10 * LIMIT)
    code, _, _ = call(app, upload, JSON | {"Content-Length": "100", "Authorization": basic("fm", PASSWORD)})
    assert code == 413  # the server itself never delivers more than announced; counted here all the same
    assert upload.taken <= LIMIT + CHUNK


def test_the_largest_valid_bulk_transition_fits_the_default_limit(tmp_path: Path) -> None:
    settings = api_settings(f"sqlite:///{tmp_path}/t.db")
    body = json.dumps({"ticket_ids": [2**31 - 1] * 500, "to": "approved", "note": "\u20ac" * 1000}, indent=2)
    assert len(body.encode()) < settings.api.limits.max_body_bytes / 50
    store = TicketStore.open(settings.store_url)
    with TestClient(create_app(settings, store)) as client:
        response = client.post(BULK, content=body, headers=JSON, auth=("fm", PASSWORD))
        assert response.status_code == 409  # parsed and validated; the tickets do not exist
    store.close()


def test_health_check_needs_no_credentials_but_is_bounded(app: FastAPI) -> None:
    upload = Upload()
    code, _, _ = call(app, upload, HUGE, "/healthz")
    assert (code, upload.taken) == (413, 0)


@pytest.mark.parametrize("length", ["9" * 5000, "\u00b2", "-1", "1e9", "0x10"])
def test_a_malformed_content_length_is_refused_unread(app: FastAPI, length: str) -> None:
    upload = Upload()
    code, _, _ = call(app, upload, JSON | {"Content-Length": length, "Authorization": basic("fm", PASSWORD)})
    assert (code, upload.taken) == (400, 0)
