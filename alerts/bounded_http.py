"""HTTP answers from servers fleetpulse does not control, read with a size cap and an overall deadline.

An ITSM, a webhook receiver or an identity provider that answers with gigabytes, or trickles
bytes just fast enough to beat every per-read timeout, must not exhaust the consumer's memory
or hold it for hours. Error answers are only ever shown as a short scrubbed text, so no more
of them than that is read. The mail connector bounds its SMTP conversation with the same :class:`Watchdog`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

MAX_ANSWER_BYTES = 1024 * 1024
"""A JSON answer of an ITSM or an identity provider is a few KB; anything past this is refused."""
MAX_ERROR_BYTES = 4096
"""What is read of an error answer: more than the scrubbed excerpt the outbox and the log keep."""


class AnswerTooLarge(httpx.TransportError):
    """The server sent more than the caller accepts: handled like a server that cannot be reached."""


class AnswerTooSlow(httpx.ReadTimeout):
    """The answer did not complete within the overall deadline, however steadily its bytes came."""


@dataclass(frozen=True)
class Answer:
    """The status and the (bounded) body of one HTTP answer."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` for anything else, a nesting no parser should follow included."""
        try:
            return json.loads(self.content)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None


def request(
    method: str,
    url: str,
    *,
    deadline_s: float,
    client: httpx.Client | None = None,
    max_bytes: int = MAX_ANSWER_BYTES,
    max_error_bytes: int = MAX_ERROR_BYTES,
    **kwargs: Any,
) -> Answer:
    """Send the request and read the answer: at most ``max_bytes`` of a 1xx/2xx answer (more raises
    :class:`AnswerTooLarge`), the first ``max_error_bytes`` of any other, all within ``deadline_s``
    from the start (else :class:`AnswerTooSlow`). Both are ``httpx.HTTPError``, as a refused
    connection is. The cap counts decoded bytes, so a compressed answer cannot expand past it.

    The deadline covers the whole exchange (connect, TLS, request, headers, body): see :class:`Watchdog`.
    The request asks for ``Connection: close`` so it never rides on a pooled connection whose
    socket the watchdog has not seen opened.
    """
    headers = httpx.Headers(kwargs.pop("headers", None))
    headers["Connection"] = "close"
    watchdog = Watchdog(deadline_s)
    too_slow = f"the answer took longer than {deadline_s:g} s"
    try:
        with contextlib.ExitStack() as scope:
            scope.enter_context(watchdog)
            if client is None:  # a client of its own, as ``httpx.request`` makes
                client = scope.enter_context(httpx.Client())
            response = scope.enter_context(
                client.stream(method, url, headers=headers, extensions={"trace": watchdog.trace}, **kwargs)
            )
            failed = response.status_code >= 300
            limit = max_error_bytes if failed else max_bytes
            body = bytearray()
            for chunk in response.iter_bytes():
                if watchdog.expired:  # also checked here, for a transport whose socket the watchdog cannot see
                    raise AnswerTooSlow(too_slow)
                body += chunk
                if len(body) > limit:
                    if failed:
                        del body[limit:]
                        break
                    raise AnswerTooLarge(f"the answer is larger than {limit} bytes")
            return Answer(response.status_code, bytes(body))
    except httpx.HTTPError as exc:
        if watchdog.expired and not isinstance(exc, AnswerTooSlow):  # whatever the cut connection raised
            raise AnswerTooSlow(too_slow) from None
        raise


_OPENED = ".connect_tcp.complete"
"""The httpcore ``trace`` event carrying a new connection's stream (TLS and proxy tunnels ride on its socket)."""


class Watchdog:
    """Shuts the exchange's sockets down when the deadline passes, wherever the exchange waits.

    A per-read timeout cannot bound a server that sends one byte just before each timeout, in its
    TLS handshake or headers as in its body, and the callers are synchronous (the consumer's
    delivery loop, the API's worker threads): a timer thread shuts the socket down, so the blocked
    read or write fails at once. Each socket is handed over as the connection opens (:meth:`watch`;
    for httpx, httpcore's ``trace`` extension); the watchdog shuts down its own duplicate of it, so
    a descriptor the exchange has already closed and the process reused is never touched.
    """

    def __init__(self, deadline_s: float) -> None:
        self.expired = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(deadline_s, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._timer.cancel()
        with self._lock:
            for own in self._sockets:
                own.close()
            self._sockets.clear()

    def watch(self, opened: socket.socket) -> None:
        """Keep a duplicate of ``opened`` (a plain socket; TLS rides on it) to shut down at the deadline."""
        with self._lock, contextlib.suppress(OSError):  # out of descriptors: the exchange goes on unwatched
            own = opened.dup()
            self._sockets.append(own)
            if self.expired:
                _shut(own)

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpcore's ``trace`` callback: watch each socket the exchange opens."""
        if not event.endswith(_OPENED):
            return
        opened = info["return_value"].get_extra_info("socket")
        if isinstance(opened, socket.socket):
            self.watch(opened)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for own in self._sockets:
                _shut(own)


def _shut(own: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the peer or the exchange
        own.shutdown(socket.SHUT_RDWR)
