"""JSON encoding of contract records, with errors that say what was wrong.

Decoding never raises anything but :class:`ContractError`, whose ``kind`` maps
one-to-one onto :class:`~fleetpulse.contract.v1.DeadLetter` error kinds.
"""

from __future__ import annotations

import json
from typing import Literal, TypeVar

from pydantic import BaseModel, ValidationError

from fleetpulse.contract.v1 import SCHEMA_VERSION, HealthReport

MAX_MESSAGE_BYTES = 256 * 1024
"""Larger messages are refused: a real report is a few KiB; anything bigger is a bug or an attack."""

ErrorKind = Literal["malformed_json", "schema_violation", "unsupported_version", "oversized"]
M = TypeVar("M", bound=BaseModel)


class ContractError(ValueError):
    def __init__(self, kind: ErrorKind, reason: str) -> None:
        super().__init__(f"{kind}: {reason}")
        self.kind: ErrorKind = kind
        self.reason = reason


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json(exclude_none=True).encode()


def report_key(device_id: str) -> bytes:
    """Partition key: all of a device's records land on one partition, in order."""
    return device_id.encode()


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode(payload: bytes | str, model: type[M]) -> M:
    """Valid records take pydantic's compiled JSON path; anything it refuses is re-read to say why."""
    # a lone surrogate has no UTF-8 form: passed through, it is refused below with a reason instead of raising here
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ContractError("oversized", f"{len(raw)} bytes > limit {MAX_MESSAGE_BYTES}")
    try:
        return model.model_validate_json(raw)
    except (ValidationError, ValueError, RecursionError, OverflowError):
        return _decode_explained(raw, model)


def _decode_explained(raw: bytes, model: type[M]) -> M:
    """The slow path: classifies the failure (or accepts what only the stdlib parser reads)."""
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError("malformed_json", str(exc)[:300]) from None
    except RecursionError:
        raise ContractError("malformed_json", "nested too deeply") from None
    except ValueError as exc:
        # Python's int-string limit (sys.set_int_max_str_digits): json.loads refuses a huge integer literal with a
        # plain ValueError; escaping decode's ContractError-only promise, it would wedge a consumer on the record
        raise ContractError("malformed_json", f"unreadable number: {str(exc).partition(';')[0][:200]}") from None
    if not isinstance(obj, dict):
        raise ContractError("schema_violation", f"expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        # only a scalar is quoted: the repr of a deeply nested value could itself raise RecursionError
        shown = repr(version)[:80] if isinstance(version, str | int | float | bool) else type(version).__name__
        raise ContractError("unsupported_version", f"schema_version {shown}; this consumer reads {SCHEMA_VERSION}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise ContractError("schema_violation", _describe(exc)) from None
    except (RecursionError, OverflowError) as exc:
        raise ContractError("schema_violation", str(exc)[:300]) from None


def decode_report(payload: bytes | str) -> HealthReport:
    return decode(payload, HealthReport)
