"""HTTP answers from servers fleetpulse does not control, read with a size cap and an overall deadline.

An ITSM, a webhook receiver or an identity provider that answers with gigabytes, or trickles
bytes just fast enough to beat every per-read timeout, must not exhaust the consumer's memory
or hold it for hours. Error answers are only ever shown as a short scrubbed text, so no more
of them than that is read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
    """
    started = time.monotonic()
    # without a client: a connection per request, as ``httpx.request`` makes
    opened = client.stream(method, url, **kwargs) if client is not None else httpx.stream(method, url, **kwargs)
    with opened as response:
        failed = response.status_code >= 300
        limit = max_error_bytes if failed else max_bytes
        body = bytearray()
        for chunk in _chunks(response, started, deadline_s):
            body += chunk
            if len(body) > limit:
                if failed:
                    del body[limit:]
                    break
                raise AnswerTooLarge(f"the answer is larger than {limit} bytes")
        return Answer(response.status_code, bytes(body))


def _chunks(response: httpx.Response, started: float, deadline_s: float) -> Iterator[bytes]:
    for chunk in response.iter_bytes():
        if time.monotonic() - started > deadline_s:
            raise AnswerTooSlow(f"the answer took longer than {deadline_s:g} s")
        yield chunk
