"""The CSV export streams: same bytes as the list-based export it replaced, flat memory for a large
store, no store connection held while the client reads, and a refusal (never a cut) above the limit."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import gc
import io
import socket
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fleetpulse.alerts.api import app as api_app
from fleetpulse.alerts.api import create_app
from fleetpulse.alerts.api.app import CSV_COLUMNS, ExportPlaces, SpooledExport, _csv_cell
from fleetpulse.alerts.settings import AlertSettings, ApiLimits, ApiSettings
from fleetpulse.alerts.store.repository import TicketFilter, TicketStore, TicketView
from fleetpulse.contract.v1 import TicketState
from tests.alerts_support import NOW, bulk_tickets, make_alert, make_inventory, service, store, store_url
from tests.harness import free_port
from tests.unit.test_tickets_api import HASH, PASSWORD, TOKEN, api_settings

__all__ = ["store", "store_url"]  # fixtures: SQLite, and PostgreSQL when integration tests run

SCOPED = {"hall": (["Town Hall"], []), "hall-finance": (["Town Hall", "Library"], ["Finance"])}


def export_settings(store_url: str, **limits: object) -> AlertSettings:
    """``it`` sees every site; ``hall`` one site; ``hall-finance`` two sites' Finance departments."""
    data = api_settings(store_url).model_dump(mode="json")
    data["api"]["users"] += [
        {"name": name, "role": "it_support", "password_hash": HASH, "sites": sites, "departments": departments}
        for name, (sites, departments) in SCOPED.items()
    ]
    data["api"]["limits"] |= limits
    return AlertSettings.model_validate(data)


def list_based_csv(tickets: list[TicketView]) -> str:
    """The export as it was built before streaming (``tickets_csv``), the reference for its bytes."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for ticket in tickets:
        writer.writerow([_csv_cell(getattr(ticket, c)) for c in CSV_COLUMNS])
    return out.getvalue()


def mixed_store(store: TicketStore) -> None:
    """Tickets past several fetch chunks at three sites, a formula and CSV quoting in the device model, and
    one ticket on a device without inventory (every-site callers see it, scoped ones do not)."""
    bulk_tickets(store, 2500, sites=("Town Hall", "Library", "Depot"))
    svc = service(store)
    svc.apply_inventory(make_inventory("pc-f", site="Library", department="Finance", model='=HYPERLINK("x"),\n"y"'))
    svc.apply_alert(make_alert("pc-f", risk=0.99), NOW)
    svc.apply_alert(make_alert("pc-nowhere", risk=0.97, component_id="+sn"), NOW)


@pytest.mark.parametrize(
    ("user", "scope", "params"),
    [
        ("it", TicketFilter(), {}),
        ("it", TicketFilter(site="Library", states=(TicketState.OPEN,)), {"site": "Library", "state": "open"}),
        ("hall", TicketFilter(in_sites=frozenset({"Town Hall"})), {}),
        (
            "hall-finance",
            TicketFilter(in_sites=frozenset({"Town Hall", "Library"}), in_departments=frozenset({"Finance"})),
            {},
        ),
    ],
)
def test_export_is_byte_identical_to_the_list_based_one(
    store: TicketStore, store_url: str, user: str, scope: TicketFilter, params: dict[str, str]
) -> None:
    mixed_store(store)
    with TestClient(create_app(export_settings(store_url), store)) as client:
        response = client.get("/api/v1/tickets.csv", params=params, auth=(user, PASSWORD))
    assert response.status_code == 200, response.text
    expected = list_based_csv(store.list_tickets(scope, limit=1_000_000)).encode()
    assert response.content == expected
    assert expected.count(b"\r\n") > 100  # a real comparison, not two header lines
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="fleetpulse-tickets.csv"'
    assert response.headers["content-length"] == str(len(expected))
    exported = store.audit.records(kind="export.csv")[-1].payload
    assert exported["rows"] == len(list(csv.reader(io.StringIO(expected.decode())))) - 1


def test_export_holds_no_store_connection_while_the_client_reads(
    store: TicketStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed_store(store)
    in_use: list[int] = []

    class Watched(SpooledExport):
        def __next__(self) -> bytes:
            in_use.append(store.engine.pool.checkedout())  # type: ignore[attr-defined]
            return super().__next__()

    monkeypatch.setattr(api_app, "SpooledExport", Watched)
    with TestClient(create_app(export_settings(store_url), store)) as client:
        assert client.get("/api/v1/tickets.csv", auth=("it", PASSWORD)).status_code == 200
    assert in_use
    assert set(in_use) == {0}


def test_export_above_the_limit_is_refused_not_cut(
    store: TicketStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bulk_tickets(store, 5, sites=("Town Hall", "Library"))
    settings = export_settings(store_url, max_export_rows=3)
    with TestClient(create_app(settings, store)) as client:
        refused = client.get("/api/v1/tickets.csv", auth=("it", PASSWORD))
        assert refused.status_code == 422
        assert "more than 3 tickets match" in refused.json()["detail"]
        assert "narrow the filter" in refused.json()["detail"]
        narrowed = client.get("/api/v1/tickets.csv", params={"site": "Library"}, auth=("it", PASSWORD))
        assert narrowed.status_code == 200
        assert len(list(csv.DictReader(io.StringIO(narrowed.text)))) == 2
        assert client.get("/api/v1/tickets.csv", auth=("hall", PASSWORD)).status_code == 200  # 3 in scope: all
        # tickets opened between the count and the export: refused as well, not cut to the limit
        monkeypatch.setattr(store, "count_tickets", lambda flt: 0)
        assert client.get("/api/v1/tickets.csv", auth=("it", PASSWORD)).status_code == 422
    assert [r.payload["rows"] for r in store.audit.records(kind="export.csv")] == [2, 3]


def test_exports_beyond_the_concurrent_limit_are_refused_until_one_is_sent(
    store: TicketStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each export holds a temporary file until sent: once every place is taken by (slow) downloads, other
    readers get 503s."""
    bulk_tickets(store, 5, sites=("Town Hall",))
    sending, release = threading.Event(), threading.Event()

    class SlowClient(SpooledExport):
        def __next__(self) -> bytes:
            sending.set()
            release.wait(30)
            return super().__next__()

    monkeypatch.setattr(api_app, "SpooledExport", SlowClient)
    with TestClient(create_app(export_settings(store_url, max_concurrent_exports=1), store)) as client:
        first: list[int] = []
        downloading = threading.Thread(
            target=lambda: first.append(client.get("/api/v1/tickets.csv", auth=("it", PASSWORD)).status_code)
        )
        downloading.start()
        assert sending.wait(30)
        busy = client.get("/api/v1/tickets.csv", auth=("hall", PASSWORD))
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "10"
        release.set()
        downloading.join(30)
        assert first == [200]
        assert client.get("/api/v1/tickets.csv", auth=("it", PASSWORD)).status_code == 200  # the place is back


@pytest.mark.parametrize("pieces_read", [0, 1])
def test_an_export_dropped_unsent_gives_its_place_and_file_back(pieces_read: int) -> None:
    """A client gone before the first piece (the server never starts sending) must not keep the place,
    neither among everyone's exports nor among its caller's."""
    places = ExportPlaces(most=1, most_per_holder=1)
    spool = tempfile.SpooledTemporaryFile(max_size=16)  # noqa: SIM115 the export closes it
    spool.write(b"x" * (api_app.EXPORT_CHUNK_BYTES + 1))
    spool.seek(0)
    export = SpooledExport(spool, places.take(("local", "it")))
    for _ in range(pieces_read):
        next(export)
    del export
    assert spool.closed
    assert places.holders == 0
    places.take(("local", "it")).release()


def leave_mid_download(app: FastAPI, spec_version: str = "2.4", user: str = "it") -> int:
    """An export through the ASGI app by a client gone after the first piece (a server of ASGI spec
    ``spec_version`` reports it: 2.4 as an OSError from ``send``). Returns the status sent."""
    basic = base64.b64encode(f"{user}:{PASSWORD}".encode())
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": spec_version},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/tickets.csv",
        "raw_path": b"/api/v1/tickets.csv",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", b"Basic " + basic)],
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }

    async def download_then_leave() -> int:
        requests = [{"type": "http.request", "body": b"", "more_body": False}]
        first_piece = asyncio.Event()
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            if requests:
                return requests.pop()
            await first_piece.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif first_piece.is_set():
                raise OSError("connection reset by peer")
            else:
                first_piece.set()

        with contextlib.suppress(Exception):
            await app(scope, receive, send)
        return status[0]

    return asyncio.run(download_then_leave())


@pytest.mark.parametrize("spec_version", ["2.3", "2.4"])
def test_a_client_gone_mid_download_gives_the_export_place_back_at_once(
    store: TicketStore, store_url: str, spec_version: str
) -> None:
    """ASGI 2.4 servers report a gone client as an OSError from ``send``: the place must come back then,
    not whenever the garbage collector gets to the response (disabled here to tell the two apart)."""
    bulk_tickets(store, 1500, sites=("Town Hall",))  # several pieces
    app = create_app(export_settings(store_url, max_concurrent_exports=1), store)
    gc.disable()
    try:
        assert leave_mid_download(app, spec_version) == 200
        with TestClient(app) as client:
            assert client.get("/api/v1/tickets.csv", auth=("it", PASSWORD)).status_code == 200
    finally:
        gc.enable()


# --- one caller's share of the export places -----------------------------------------------------------

BASIC_IT: dict[str, Any] = {"auth": ("it", PASSWORD)}
BEARER_ITSM: dict[str, Any] = {"headers": {"Authorization": f"Bearer {TOKEN}"}}


def stall_first_download(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The first export sent stalls before its first piece until ``release`` is set (a client reading very
    slowly); later exports are sent at once. Returns (``sending``: the stall has begun, ``release``)."""
    sending, release = threading.Event(), threading.Event()
    exports: list[SpooledExport] = []

    class SlowFirstClient(SpooledExport):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            exports.append(self)

        def __next__(self) -> bytes:
            if self is exports[0]:
                sending.set()
                release.wait(30)
            return super().__next__()

    monkeypatch.setattr(api_app, "SpooledExport", SlowFirstClient)
    return sending, release


@pytest.mark.parametrize("attacker", [BASIC_IT, BEARER_ITSM], ids=["basic", "bearer"])
def test_one_caller_downloading_slowly_cannot_take_every_export_place(
    store: TicketStore, store_url: str, monkeypatch: pytest.MonkeyPatch, attacker: dict[str, Any]
) -> None:
    """With one place per caller, a second export by the same login or token gets 429 (taking none of the
    two places) while another reader still exports; before, it took the second place and shut out everyone
    else (503). The place comes back once the slow download ends."""
    bulk_tickets(store, 5, sites=("Town Hall",))
    sending, release = stall_first_download(monkeypatch)
    app = create_app(export_settings(store_url, max_concurrent_exports=2), store)
    with TestClient(app) as client:
        first: list[int] = []
        downloading = threading.Thread(
            target=lambda: first.append(client.get("/api/v1/tickets.csv", **attacker).status_code)
        )
        downloading.start()
        try:
            assert sending.wait(30)
            for _ in range(3):  # a refused export holds no place: the other reader still finds one
                again = client.get("/api/v1/tickets.csv", **attacker)
                assert again.status_code == 429
                assert again.headers["retry-after"] == "10"
                assert again.json()["detail"].startswith("you already have an export in progress")
            other = client.get("/api/v1/tickets.csv", auth=("hall", PASSWORD))
            assert other.status_code == 200
            assert len(list(csv.DictReader(io.StringIO(other.text)))) == 5
        finally:
            release.set()
            downloading.join(30)
        assert first == [200]
        assert app.state.export_places.holders == 0  # no key left behind
        assert client.get("/api/v1/tickets.csv", **attacker).status_code == 200  # its place is back
    assert len(store.audit.records(kind="export.csv")) == 3  # the refused ones exported nothing


@pytest.mark.parametrize("ending", ["client gone", "failed while written"])
def test_a_callers_export_place_comes_back_however_the_export_ends(
    store: TicketStore, store_url: str, monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    """The caller's count is given back wherever the global place is (sent: above; dropped unsent: a test
    above). Two places in all, so only a count kept for the caller would refuse its next export; the
    garbage collector is off, so no path is rescued by it."""
    bulk_tickets(store, 1500, sites=("Town Hall",))  # several pieces
    app = create_app(export_settings(store_url, max_concurrent_exports=2), store)
    gc.disable()
    try:
        if ending == "client gone":
            assert leave_mid_download(app) == 200
        else:

            def disk_full(*_: object) -> int:
                raise OSError(28, "No space left on device")

            monkeypatch.setattr(api_app, "write_tickets_csv", disk_full)
            with TestClient(app, raise_server_exceptions=False) as client:
                assert client.get("/api/v1/tickets.csv", **BASIC_IT).status_code == 500
            monkeypatch.undo()
        assert app.state.export_places.holders == 0
        with TestClient(app) as client:
            assert client.get("/api/v1/tickets.csv", **BASIC_IT).status_code == 200
    finally:
        gc.enable()


def test_a_caller_may_not_have_more_exports_than_the_process() -> None:
    assert ApiLimits(max_concurrent_exports=4, max_concurrent_exports_per_user=4).max_concurrent_exports_per_user == 4
    assert ApiLimits().max_concurrent_exports_per_user == 1
    with pytest.raises(
        ValueError, match=r"max_concurrent_exports_per_user \(3\) must not exceed max_concurrent_exports \(2\)"
    ):
        ApiLimits(max_concurrent_exports_per_user=3)
    with pytest.raises(ValueError, match="max_concurrent_exports_per_user"):
        ApiLimits(max_concurrent_exports=32, max_concurrent_exports_per_user=0)


def test_a_token_cannot_share_a_name_with_a_user_and_spend_that_users_export_place() -> None:
    """The attack: a script's token named ``alice`` exporting made the user ``alice`` get 429 (one identity to the
    per-caller limit and the audit trail). Names are now distinct across users and tokens, ignoring case."""
    user = {"name": "alice", "role": "fleet_manager", "password_hash": HASH}
    token = {"name": "Alice", "role": "it_support", "token_sha256": "0" * 64, "sites": ["*"]}
    with pytest.raises(
        ValueError, match=r"users and tokens need distinct names .*users\[0\] and tokens\[0\]"
    ) as refused:
        ApiSettings.model_validate({"users": [user], "tokens": [token]})
    assert "alice" not in str(refused.value).casefold()  # the entries, never the name
    with pytest.raises(ValueError, match=r"users\[0\] and users\[1\] share one"):
        ApiSettings.model_validate({"users": [user, {**user, "role": "admin"}]})
    assert ApiSettings.model_validate({"users": [user], "tokens": [{**token, "name": "alice-script"}]}).tokens


# --- memory ----------------------------------------------------------------------------------------

LARGE_STORE = 20_000
STREAMED_PEAK_LIMIT = 24 * 1024 * 1024
"""Generous: the spool's 4 MiB in memory (briefly twice when it moves to disk) and one fetch chunk."""


def asgi_get(app: FastAPI, path: str, user: str) -> tuple[int, int]:
    """GET through the ASGI app as a server runs it, the body counted and dropped as it arrives (a test
    client would keep it all, which is the very memory being measured). Returns (status, body bytes)."""
    basic = base64.b64encode(f"{user}:{PASSWORD}".encode()).decode()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), (b"authorization", f"Basic {basic}".encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    answer = {"status": 0, "bytes": 0}
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def run() -> None:
        done = asyncio.Event()

        async def receive() -> dict[str, Any]:
            if requests:
                return requests.pop()
            await done.wait()  # the client stays until the whole body has arrived
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
            elif message["type"] == "http.response.body":
                answer["bytes"] += len(message.get("body", b""))
                if not message.get("more_body", False):
                    done.set()

        await app(scope, receive, send)

    asyncio.run(run())
    return answer["status"], answer["bytes"]


def peak_bytes(run: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_export_of_a_large_store_keeps_memory_flat(tmp_path: Any) -> None:
    """20,000 tickets: the list-based export peaks far above the bound (measured for comparison), the
    streamed one, whole request through the app included, stays under it."""
    url = f"sqlite:///{tmp_path}/tickets.db"
    store = TicketStore.open(url)
    try:
        bulk_tickets(store, LARGE_STORE)
        app = create_app(export_settings(url), store)
        status, size = asgi_get(app, "/api/v1/tickets.csv", "it")  # warm: routes, middleware, auth cache
        assert status == 200
        old = peak_bytes(lambda: list_based_csv(store.list_tickets(TicketFilter(), limit=1_000_000)).encode())
        streamed: list[tuple[int, int]] = []
        new = peak_bytes(lambda: streamed.append(asgi_get(app, "/api/v1/tickets.csv", "it")))
    finally:
        store.close()
    print(
        f"\n{LARGE_STORE} tickets, {size / 1e6:.1f} MB of CSV: peak {old / 1e6:.1f} MB list-based, "
        f"{new / 1e6:.1f} MB streamed"
    )
    assert streamed == [(200, size)]
    assert size > api_app.EXPORT_SPOOL_BYTES  # past the spool's memory part: the file on disk is exercised
    assert old > 2 * STREAMED_PEAK_LIMIT  # the bound means something
    assert new < STREAMED_PEAK_LIMIT


# --- the storm list had the same unbounded read --------------------------------------------------------


def test_scoped_storm_list_reads_groups_not_tickets(
    store: TicketStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service(store)
    for device_id, site, group in (("pc-h", "Town Hall", "g-hall"), ("pc-l", "Library", "g-lib")):
        svc.apply_inventory(make_inventory(device_id, site=site, model=f"model of {group}"))  # one storm each
        svc.apply_alert(make_alert(device_id, storm_group=group), NOW)
    svc.apply_alert(make_alert("pc-nowhere", storm_group="g-nowhere"), NOW)
    monkeypatch.setattr(store, "list_tickets", None)  # the page and the API must not load the tickets
    with TestClient(create_app(export_settings(store_url), store)) as client:
        seen = {u: client.get("/api/v1/storms", auth=(u, PASSWORD)).json() for u in ("it", "hall", "hall-finance")}
    assert {u: sorted(g["group_id"] for g in groups) for u, groups in seen.items()} == {
        "it": ["g-hall", "g-lib", "g-nowhere"],
        "hall": ["g-hall"],
        "hall-finance": ["g-hall", "g-lib"],
    }


def test_an_export_the_garbage_collector_ends_inside_a_take_does_not_hang_the_exports() -> None:
    """The attack: an unsent export caught in a reference cycle is finalized by the cyclic collector, which runs
    on whatever allocation crosses its threshold, here inside another caller's take() with the lock held. The
    finalizer used to wait for that lock in the same thread: that request hung holding it, and every later
    export hung behind it."""
    places = ExportPlaces(4, 1)

    class Cycle:
        pass

    class CollectingHolder(tuple[str, str]):
        def __hash__(self) -> int:
            gc.collect()  # an allocation-triggered collection, at a point inside the critical section
            return tuple.__hash__(self)

    gc.disable()
    try:
        cycle = Cycle()
        cycle.__dict__.update(me=cycle, export=SpooledExport(io.BytesIO(b"x"), places.take(("local", "carol"))))
        del cycle
        assert places.holders == 1
        taken = threading.Event()
        thread = threading.Thread(
            target=lambda: (places.take(CollectingHolder(("local", "dave"))), taken.set()), daemon=True
        )
        thread.start()
        thread.join(60)  # a hang lasts for good; a full collection of a large heap on a loaded machine takes seconds
    finally:
        gc.enable()
    assert taken.is_set(), "the finalizer waited for the lock its own thread held"
    assert places.holders == 1  # carol's place came back; dave holds his
    places.take(("local", "erin")).release()


def test_a_client_that_stops_reading_loses_its_export_place_at_the_deadline(tmp_path: Any) -> None:
    """Attack: request an export over a real HTTP server and never read it. The server waits for the socket
    to drain for as long as the connection stays open, holding the only export place; with the deadline the
    export is cut short of its Content-Length, the connection closed and the place given back."""
    url = f"sqlite:///{tmp_path}/tickets.db"
    store = TicketStore.open(url)
    bulk_tickets(store, LARGE_STORE)  # megabytes: more than the sockets on both sides buffer
    limits = {"max_concurrent_exports": 1, "export_send_timeout": "PT3S"}
    app = create_app(export_settings(url, **limits), store)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    stalled = socket.socket()
    try:
        assert wait_until(lambda: server.started)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", port))
        basic = base64.b64encode(f"it:{PASSWORD}".encode()).decode()
        stalled.sendall(f"GET /api/v1/tickets.csv HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\r\n\r\n".encode())
        assert wait_until(lambda: app.state.export_places.holders == 1)

        def other_reader() -> int:
            answer = httpx.get(f"http://127.0.0.1:{port}/api/v1/tickets.csv", auth=("hall", PASSWORD), timeout=30)
            return answer.status_code

        assert other_reader() == 503  # the stalled download holds the only place
        assert wait_until(lambda: app.state.export_places.holders == 0, timeout=20)
        assert other_reader() == 200
        received, length = b"", None
        stalled.settimeout(20)
        while chunk := stalled.recv(1 << 16):  # ends: the server closed the connection
            received += chunk
            if length is None and b"\r\n\r\n" in received:
                head = received.split(b"\r\n\r\n", 1)[0].decode().lower()
                length = int(head.split("content-length:", 1)[1].split("\r\n", 1)[0])
        assert length is not None
        assert len(received.split(b"\r\n\r\n", 1)[1]) < length  # cut short: not mistaken for the whole export
    finally:
        stalled.close()
        server.should_exit = True
        serving.join(30)
        store.close()


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_a_formula_behind_spaces_or_control_characters_is_not_a_formula_either() -> None:
    """A spreadsheet may drop a NUL or leading spaces before it reads the cell (CSV injection)."""
    for cell in ("\x00=cmd|' /C calc'!A0", " =1+1", "\x01\x02@SUM(A1)", "\t=1", "-5"):
        assert _csv_cell(cell) == f"'{cell}"
    assert _csv_cell("T14 =1") == "T14 =1"
