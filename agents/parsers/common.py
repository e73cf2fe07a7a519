"""Helpers shared by the parsers: bounded, linear-time number reading and building records without crashing.

Tool output is hostile input (a tampered binary, a ticket attachment, a broken firmware string): every
helper here runs in linear time on any text, and an absurd number (beyond 64 bits, where Python's int()
would raise or spend quadratic time) becomes a :class:`FieldError` for that one field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

MAX_LINE = 4096
"""Tool outputs print lines of at most a few hundred characters; longer ones are cut before matching."""
MAX_DIGITS = 20
"""2**64 has 20 digits: no counter, capacity or temperature of a real device needs more."""

_FIRST_INT = re.compile(r"\s*(\d+)")
_NUMBER = re.compile(r"-?(\d+)(?:\.(\d+))?")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class ParseError(ValueError):
    """The input is not the output this parser reads (or holds no usable device data)."""


class FieldError(ParseError):
    """One value is unusable (e.g. a 5000-digit number); the caller drops that field and keeps the rest."""


def valid_text(text: str) -> str:
    """``text`` with lone surrogates as U+FFFD: a name that is not UTF-8 (``/dev/sd\\udc80``, a crash file)
    reaches Python as lone surrogates, which the contract refuses, costing the whole record."""
    return _LONE_SURROGATE.sub("\ufffd", text)


def bounded_lines(text: str) -> list[str]:
    """The lines of ``text``, each cut to :data:`MAX_LINE` characters so no regex sees an unbounded line."""
    return [line[:MAX_LINE] for line in text.splitlines()]


def _bounded_digits(digits: str) -> str:
    """``digits`` (optional sign) without leading zeros, refusing absurd lengths and non-digits."""
    sign = "-" if digits.startswith("-") else ""
    significant = digits.lstrip("+-").lstrip("0")
    if len(significant) > MAX_DIGITS:
        raise FieldError(f"a number of more than {MAX_DIGITS} digits")
    if significant and not significant.isdecimal():
        raise FieldError("not a decimal number")
    return sign + (significant or "0")


def checked_int(digits: str) -> int:
    """``int()`` of a decimal digit string that refuses absurd lengths instead of raising Python's
    int-conversion ``ValueError`` (or spending quadratic time below that limit)."""
    return int(_bounded_digits(digits))


def checked_float(text: str) -> float:
    """``float()`` of ``digits[.digits]`` with the same bound on the integer part as :func:`checked_int`."""
    whole, _, fraction = text.partition(".")
    fraction = fraction[:MAX_DIGITS]
    if fraction and not fraction.isdecimal():
        raise FieldError("not a decimal number")
    return float(_bounded_digits(whole) + ("." + fraction if fraction else ""))


def first_int(text: str) -> int | None:
    """Leading integer of a raw value such as ``34 (Min/Max 0/38)`` or ``12345h+06m``."""
    match = _FIRST_INT.match(text[:MAX_LINE])
    return checked_int(match.group(1)) if match else None


def grouped_int(text: str) -> int | None:
    """An integer printed with locale thousands separators (``1,920,383``, ``1 920 383``, ``1\u2019920``)."""
    head = re.split(r"[\[(%]", text[:MAX_LINE], maxsplit=1)[0]
    head = head.split("bytes", 1)[0]
    digits = "".join(ch for ch in head if ch.isdecimal())
    return checked_int(digits) if digits else None


def first_number(text: str) -> float | None:
    match = _NUMBER.search(text[:MAX_LINE])
    return checked_float(match.group(0)) if match else None


def guarded(problems: list[str], field: str, convert: Callable[[str], T | None], text: str | None) -> T | None:
    """``convert(text)``, or ``None`` with ``field: reason`` appended to ``problems`` on a :class:`FieldError`."""
    if text is None:
        return None
    try:
        return convert(text)
    except FieldError as exc:
        problems.append(f"{field}: {exc}")
        return None


def named(field: str, convert: Callable[[str], T], text: str) -> T:
    """``convert(text)`` for a required value: a :class:`FieldError` is re-raised naming ``field``."""
    try:
        return convert(text)
    except FieldError as exc:
        raise FieldError(f"{field}: {exc}") from None


def build_lenient(
    model: type[M], fields: dict[str, Any], required: tuple[str, ...] = (), problems: list[str] | None = None
) -> M:
    """Build ``model`` dropping optional fields whose values the contract rejects.

    Real devices report garbage now and then (a temperature of 0xFFFF, a spare of 255 %); one bad
    number must not cost the rest of the record. Only when a required field is bad does it fail.
    Each dropped field is named in ``problems`` (when given) with the contract's reason.
    """
    data = {k: v for k, v in fields.items() if v is not None}
    for _ in range(len(data) + 1):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = [err for err in exc.errors(include_url=False) if err["loc"]]
            bad = {str(err["loc"][0]) for err in errors}
            if not bad or bad & set(required) or not bad & set(data):
                raise ParseError(f"{model.__name__}: {exc.errors()[0]['msg']}") from None
            for key in bad:
                data.pop(key, None)
            if problems is not None:
                problems += [f"{err['loc'][0]}: {err['msg']}" for err in errors]
    raise ParseError(f"{model.__name__}: could not build")
