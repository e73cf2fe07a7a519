"""The long-running consumer survives a PostgreSQL outage: nothing lost, nothing doubled.

The store is reached through a TCP proxy the test can cut (the shared PostgreSQL is never stopped).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer

from fleetpulse.alerts.consumer import run_consumer
from fleetpulse.alerts.settings import AlertSettings
from fleetpulse.alerts.store.repository import TicketStore
from fleetpulse.config import KafkaSettings
from fleetpulse.contract.codec import encode
from fleetpulse.contract.topics import Topics
from fleetpulse.streams.settings import StreamSettings
from tests.alerts_support import make_alert, pg_schema_url
from tests.harness import PORTS, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class TcpProxy:
    """Forwards 127.0.0.1:port to a target port; ``cut()`` drops the listener and every open connection."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.listener: socket.socket | None = None
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        if self.listener is not None:
            # shutdown wakes the thread blocked in accept(); close() alone would leave it accepting once more
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)
            self.listener.close()
            self.listener = None
        with self.lock:
            for sock in self.sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
            self.sockets.clear()


@pytest.fixture
def schema_url(postgres_url: str) -> Iterator[str]:
    yield from pg_schema_url(postgres_url)


def wait_for(condition, within_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.5)


def test_consumer_resumes_after_the_store_comes_back(kafka_settings: KafkaSettings, schema_url: str) -> None:
    proxy = TcpProxy(PORTS["postgres"])
    proxy.start()
    proxied = schema_url.replace(f":{PORTS['postgres']}/", f":{proxy.port}/")
    settings = AlertSettings(store_url=proxied)
    topics = Topics(prefix=kafka_settings.topic_prefix)
    producer = KafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers, acks="all")

    def send(devices: range) -> None:
        for n in devices:
            alert = make_alert(f"pc-{n}")
            producer.send(topics.alerts, key=alert.device_id.encode(), value=encode(alert))
        producer.flush()

    direct = TicketStore.open(schema_url)
    stop = threading.Event()
    result = {}
    worker = threading.Thread(
        target=lambda: result.update(stats=run_consumer(settings, kafka_settings, StreamSettings(), stop, retry_s=1.0)),
        daemon=True,
    )
    worker.start()
    try:
        send(range(5))
        wait_for(lambda: len(direct.open_tickets()) == 5)
        proxy.cut()
        send(range(5, 10))
        send(range(5))  # replays of the first five while the store is down
        time.sleep(4)
        assert len(direct.open_tickets()) == 5
        proxy.start()
        wait_for(lambda: len(direct.open_tickets()) == 10)
        time.sleep(2)
    finally:
        stop.set()
        worker.join(60)
        proxy.cut()
        producer.close()
    tickets = direct.open_tickets()
    direct.close()
    assert sorted(t.device_id for t in tickets) == sorted(f"pc-{n}" for n in range(10))
    assert result["stats"].results.get("restarts", 0) >= 1
    assert result["stats"].results["opened"] == 10
