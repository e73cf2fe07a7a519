"""A skops dump inflated under bounds before skops reads it.

A skops dump is a zip archive: a member of a few kilobytes can inflate to gigabytes, a member's header
can state a smaller size than its data inflates to, and a ``.npy`` header can declare an array far larger
than the bytes that follow (numpy allocates the declared array before reading it). Any of these would
make loading fail with ``MemoryError`` or take the machine's memory. :func:`stored_dump` checks the
central directory's declared sizes before inflating anything, inflates each member here while counting
what comes out, checks every array header against its member's length, and returns the same members in
an uncompressed archive: skops then has nothing left to inflate, and its reads are bounded by sizes
checked here. Whatever breaks a bound is an :class:`ArtifactError`, a refusal, never retried.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fleetpulse.models.index import ArtifactError

MAX_DUMP_BYTES = 256 * 1024 * 1024
"""Inflated size of a whole dump, and size of the file itself. The shipped disk model needs about 2 MB
(a few hundred trees per horizon), so this leaves over a hundred times that for larger models while a
worker's memory stays bounded."""
MAX_MEMBER_BYTES = 64 * 1024 * 1024
"""Inflated size of one member: the shipped model's largest is about 1.2 MB."""
MAX_MEMBERS = 50_000
"""Members of a dump (the shipped model has under a thousand): zipfile builds an object per central
directory entry before any size can be checked, so their number is bounded first."""
SCHEMA = "schema.json"
_CHUNK = 1024 * 1024
_CENTRAL_HEADER = b"PK\x01\x02"
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
"""A zip local file header (APPNOTE 4.3.7): signature ... file name length, extra field length."""
_NPY_MAGIC = b"\x93NUMPY"


def _refuse(path: Path, reason: str) -> ArtifactError:
    return ArtifactError(f"{path}: refused before loading, {reason}")


def stored_dump(path: Path, data: bytes) -> bytes:
    """The dump ``data`` (read from ``path``) as an uncompressed archive of the same members, once every
    bound above holds; :class:`ArtifactError` naming the broken bound otherwise."""
    if len(data) > MAX_DUMP_BYTES:
        raise _refuse(path, f"the file is larger than {MAX_DUMP_BYTES} bytes")
    if data.count(_CENTRAL_HEADER) > MAX_MEMBERS:  # an upper bound of the entries zipfile would parse
        raise _refuse(path, f"the archive has more than {MAX_MEMBERS} members")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, struct.error) as exc:
        raise ArtifactError(f"{path}: not a skops dump ({exc})") from None
    _check_declared(path, members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as stored:
        for member in members:
            content = _inflate(path, data, member)
            if member.filename != SCHEMA:
                _check_array(path, member.filename, content)
            stored.writestr(member.filename, content)
    return out.getvalue()


def _check_declared(path: Path, members: list[zipfile.ZipInfo]) -> None:
    """Refuse from the central directory alone, before anything is inflated."""
    names = [m.filename for m in members]
    if len(set(names)) != len(names):
        raise _refuse(path, "the archive names a member twice")
    if SCHEMA not in names:
        raise ArtifactError(f"{path}: not a skops dump (no {SCHEMA})")
    for member in members:
        if member.flag_bits & 0x1:
            raise _refuse(path, f"member {member.filename!r} is encrypted")
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise _refuse(path, f"member {member.filename!r} uses compression method {member.compress_type}")
        if member.file_size > MAX_MEMBER_BYTES:
            raise _refuse(
                path, f"member {member.filename!r} declares {member.file_size} bytes, more than {MAX_MEMBER_BYTES}"
            )
    declared = sum(m.file_size for m in members)
    if declared > MAX_DUMP_BYTES:
        raise _refuse(path, f"its members declare {declared} bytes in all, more than {MAX_DUMP_BYTES}")


def _inflate(path: Path, data: bytes, member: zipfile.ZipInfo) -> bytes:
    """The member's bytes, inflated in bounded steps: never more than its declared size (itself bounded),
    whatever its compressed stream holds, and exactly that size with the declared CRC."""
    start = member.header_offset
    header = data[start : start + _LOCAL_HEADER.size]
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise ArtifactError(f"{path}: not a skops dump (member {member.filename!r} has no local header)")
    fields = _LOCAL_HEADER.unpack(header)
    begin = start + _LOCAL_HEADER.size + fields[10] + fields[11]
    raw = memoryview(data)[begin : begin + member.compress_size]
    if len(raw) != member.compress_size:
        raise ArtifactError(f"{path}: not a skops dump (member {member.filename!r} is truncated)")
    if member.compress_type == zipfile.ZIP_STORED:
        content = bytes(raw)
    else:
        try:
            content = _inflated(path, member, raw)
        except zlib.error as exc:
            raise ArtifactError(f"{path}: not a skops dump (member {member.filename!r}: {exc})") from None
    if len(content) != member.file_size or zlib.crc32(content) != member.CRC:
        raise ArtifactError(
            f"{path}: not a skops dump (member {member.filename!r} does not match its declared size and CRC)"
        )
    return content


def _inflated(path: Path, member: zipfile.ZipInfo, raw: memoryview) -> bytes:
    """The member's deflate stream inflated a bounded step at a time: input fed in pieces, output taken at
    most up to one byte beyond the declared size, so a stream that goes on is refused as it overruns."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    chunks: list[bytes] = []
    size = 0

    def take(pending: bytes | memoryview) -> bytes:
        nonlocal size
        chunk = inflater.decompress(pending, min(_CHUNK, member.file_size - size + 1))
        size += len(chunk)
        if size > member.file_size:
            raise _refuse(path, f"member {member.filename!r} inflates beyond the {member.file_size} bytes it declares")
        chunks.append(chunk)
        return chunk

    for offset in range(0, len(raw), _CHUNK):
        pending: bytes | memoryview = raw[offset : offset + _CHUNK]
        while pending and not inflater.eof:
            take(pending)
            pending = inflater.unconsumed_tail
        if inflater.eof:
            break
    while not inflater.eof and take(b""):  # output zlib still holds once the input is used up
        pass
    if not inflater.eof:
        raise ArtifactError(f"{path}: not a skops dump (member {member.filename!r} is truncated)")
    return b"".join(chunks)


def _check_array(path: Path, name: str, content: bytes) -> None:
    """Refuse a member that is not a ``.npy`` array whose header declares exactly the bytes that follow:
    numpy allocates the declared array before reading, and anything else (an ``.npz`` archive, say) would
    be inflated later by numpy, past these bounds."""
    if not content.startswith(_NPY_MAGIC):
        raise _refuse(path, f"member {name!r} is not a numpy array")
    stream = io.BytesIO(content)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"array format {version[0]}.{version[1]}")
    except ValueError as exc:
        raise ArtifactError(f"{path}: not a skops dump (member {name!r}: {str(exc)[:200]})") from None
    declared = math.prod(shape) * dtype.itemsize
    if dtype.hasobject or declared != len(content) - stream.tell():
        raise _refuse(
            path, f"member {name!r} declares an array of {declared} bytes, it holds {len(content) - stream.tell()}"
        )
