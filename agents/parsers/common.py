"""Helpers shared by the parsers: tolerant number reading and building records without crashing."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_FIRST_INT = re.compile(r"^\s*(\d+)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class ParseError(ValueError):
    """The input is not the output this parser reads (or holds no usable device data)."""


def first_int(text: str) -> int | None:
    """Leading integer of a raw value such as ``34 (Min/Max 0/38)`` or ``12345h+06m``."""
    match = _FIRST_INT.match(text)
    return int(match.group(1)) if match else None


def grouped_int(text: str) -> int | None:
    """An integer printed with locale thousands separators (``1,920,383``, ``1 920 383``, ``1\u2019920``)."""
    head = re.split(r"[\[(%]", text, maxsplit=1)[0]
    head = head.split("bytes", 1)[0]
    digits = re.sub(r"[^\d]", "", head)
    return int(digits) if digits else None


def first_number(text: str) -> float | None:
    match = _NUMBER.search(text)
    return float(match.group(0)) if match else None


def build_lenient(model: type[M], fields: dict[str, Any], required: tuple[str, ...] = ()) -> M:
    """Build ``model`` dropping optional fields whose values the contract rejects.

    Real devices report garbage now and then (a temperature of 0xFFFF, a spare of 255 %); one bad
    number must not cost the rest of the record. Only when a required field is bad does it fail.
    """
    data = {k: v for k, v in fields.items() if v is not None}
    for _ in range(len(data) + 1):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            if not bad or bad & set(required) or not bad & set(data):
                raise ParseError(f"{model.__name__}: {exc.errors()[0]['msg']}") from None
            for key in bad:
                data.pop(key, None)
    raise ParseError(f"{model.__name__}: could not build")
