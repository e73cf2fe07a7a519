"""Attacks on loading a model: skops dumps that inflate to far more memory than their size.

Before loading bounded what it inflates, each of these took gigabytes while loading (or failed with a
``MemoryError``, which a worker retried at every registry check); now each is refused, with the reason, at
registration and at load, before its memory is taken. The bombs inflate to 1 GiB rather than tens of GB so
that the code before the bounds takes the memory without ending the test run.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import tracemalloc
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fleetpulse.contract import ScorerRole
from fleetpulse.models.artifact import TrainedDiskScorer
from fleetpulse.models.index import MODEL_FILE, REGISTRY_FILE, ArtifactError, artifact_digests
from fleetpulse.models.registry import ScorerSet, load_scorers, register_artifact
from fleetpulse.models.settings import ModelSettings
from fleetpulse.streams import app as stream_app
from tests.unit.test_models_artifact import artifact_dir
from tests.unit.test_models_registry_integrity import KEY, registered_by_hand, registry_dir, reloading

__all__ = ["artifact_dir", "registry_dir"]  # fixtures

MIB = 1024 * 1024
BOMB_MIB = 1024
PEAK_BYTES = 128 * MIB
"""What loading the test artifact (about 1 MB) may take at most: far below any bomb's inflated size."""

Member = tuple[str, int, bytes, int, int]
"""(name, compression method, stored bytes, CRC-32, declared uncompressed size) of an archive member."""


def deflated(prefix: bytes, zero_mib: int) -> tuple[bytes, int, int]:
    """(raw deflate stream, CRC-32, size) of ``prefix`` then ``zero_mib`` MiB of zeros, built in milliseconds:
    once the window holds only zeros, every further MiB of zeros compresses to the same bytes."""
    zeros = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = compressor.compress(prefix) + compressor.flush(zlib.Z_SYNC_FLUSH)
    head += compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    repeated = compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
    stream = head + repeated * (zero_mib - 1) + compressor.flush()
    crc = zlib.crc32(prefix)
    for _ in range(zero_mib):
        crc = zlib.crc32(zeros, crc)
    return stream, crc, len(prefix) + zero_mib * MIB


def npy_header(shape: tuple[int, ...]) -> bytes:
    """A float64 ``.npy`` header (format 1.0) declaring ``shape``."""
    text = f"{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}, }}".encode()
    text += b" " * (63 - (10 + len(text)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def zip_archive(members: list[Member]) -> bytes:
    """A zip archive written field by field, so that its headers may state what zipfile would never write."""
    body, central = b"", b""
    for name, method, data, crc, size in members:
        encoded = name.encode()
        central += struct.pack(
            "<4s6H3L5H2L",
            b"PK\x01\x02",
            20,
            20,
            0,
            method,
            0,
            0,
            crc,
            len(data),
            size,
            len(encoded),
            0,
            0,
            0,
            0,
            0,
            len(body),
        )
        central += encoded
        body += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(encoded), 0)
        body += encoded + data
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(body), 0)
    return body + central + end


def rewritten(dump: bytes, replace: Callable[[int, str, bytes], Member | None]) -> bytes:
    """The dump with member ``i`` replaced by ``replace(i, name, content)`` where that is not None."""
    members: list[Member] = []
    with zipfile.ZipFile(io.BytesIO(dump)) as archive:
        for index, name in enumerate(archive.namelist()):
            content = archive.read(name)
            members.append(replace(index, name, content) or (name, 0, content, zlib.crc32(content), len(content)))
    return zip_archive(members)


def arrays(dump: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(dump)) as archive:
        return [name for name in archive.namelist() if name.endswith(".npy")]


def member_bomb(dump: bytes) -> bytes:
    """One array member of about a megabyte that inflates to 1 GiB, its header truthful."""
    target = arrays(dump)[0]

    def bomb(index: int, name: str, content: bytes) -> Member | None:
        if name != target:
            return None
        stream, crc, size = deflated(npy_header((BOMB_MIB * MIB // 8,)), BOMB_MIB)
        return name, zipfile.ZIP_DEFLATED, stream, crc, size

    return rewritten(dump, bomb)


def total_bomb(dump: bytes) -> bytes:
    """Six array members, each under the per-member bound, together inflating to 360 MiB."""
    targets = set(arrays(dump)[:6])
    stream, crc, size = deflated(b"", 60)

    def bomb(index: int, name: str, content: bytes) -> Member | None:
        return (name, zipfile.ZIP_DEFLATED, stream, crc, size) if name in targets else None

    return rewritten(dump, bomb)


def lying_bomb(dump: bytes) -> bytes:
    """An array member whose header states its true size and CRC, while its stream goes on for 1 GiB more:
    zipfile inflates the whole stream in one call, then keeps the declared bytes, which load as before."""
    target = arrays(dump)[0]

    def bomb(index: int, name: str, content: bytes) -> Member | None:
        if name != target:
            return None
        stream, _, _ = deflated(content, BOMB_MIB)
        return name, zipfile.ZIP_DEFLATED, stream, zlib.crc32(content), len(content)

    return rewritten(dump, bomb)


def array_bomb(dump: bytes) -> bytes:
    """An array member of a hundred bytes whose header declares 8 TB: numpy allocates it before reading."""
    target = arrays(dump)[0]

    def bomb(index: int, name: str, content: bytes) -> Member | None:
        if name != target:
            return None
        data = npy_header((10**12,)) + bytes(64)
        return name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data)

    return rewritten(dump, bomb)


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """The largest memory Python and numpy held meanwhile, above what they held before."""
    peak: list[int] = []
    tracemalloc.start()
    try:
        yield peak
    finally:
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peak.append(top)


@pytest.mark.parametrize(
    ("bomb", "refusal"),
    [
        (member_bomb, r"member '\d+\.npy' declares 10737419\d\d bytes, more than 67108864"),
        (total_bomb, r"its members declare 37\d{7} bytes in all, more than 268435456"),
        (lying_bomb, r"member '\d+\.npy' inflates beyond the \d+ bytes it declares"),
        (array_bomb, r"member '\d+\.npy' declares an array of 8000000000000 bytes, it holds 64"),
    ],
)
def test_attack_a_dump_that_inflates_beyond_the_bounds_is_refused_at_registration_and_at_load(
    artifact_dir: Path, tmp_path: Path, bomb: Callable[[bytes], bytes], refusal: str
) -> None:
    root = tmp_path / "registry"
    shutil.copytree(artifact_dir, root / "disk-bomb")
    dump = root / "disk-bomb" / MODEL_FILE
    dump.write_bytes(bomb(dump.read_bytes()))
    assert dump.stat().st_size < 16 * MIB

    with peak_memory() as peak, pytest.raises(ArtifactError, match=refusal):
        register_artifact(root, "disk", "disk-bomb", ScorerRole.CHAMPION, key=KEY.encode())
    assert peak[0] < PEAK_BYTES
    assert not (root / REGISTRY_FILE).exists()

    registered_by_hand(root, "disk-bomb")  # as if registered before loading bounded what it inflates
    with peak_memory() as peak:
        scorers = load_scorers(ModelSettings(registry_dir=root, signing_key=KEY))  # a refusal: never retried
    assert peak[0] < PEAK_BYTES
    assert scorers.champions[0].name == "disk-rule"
    assert len(scorers.refused) == 1
    assert re.search(f"refused before loading, {refusal}", scorers.refused[0])


def test_the_shipped_model_is_far_within_the_bounds() -> None:
    """The bounds leave large models room: the shipped one inflates to under a hundredth of them."""
    from fleetpulse.models import dump
    from fleetpulse.models.settings import SHIPPED_REGISTRY

    (model,) = SHIPPED_REGISTRY.glob(f"*/{MODEL_FILE}")
    with zipfile.ZipFile(model) as archive:
        members = archive.infolist()
    assert len(members) * 20 < dump.MAX_MEMBERS
    assert sum(m.file_size for m in members) * 100 < dump.MAX_DUMP_BYTES
    assert max(m.file_size for m in members) * 50 < dump.MAX_MEMBER_BYTES
    assert dump.stored_dump(model, model.read_bytes())


def test_attack_a_bomb_promoted_while_a_worker_serves_is_refused_once_not_retried(
    registry_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The array bomb raised ``MemoryError``, which the worker took for a passing failure: it loaded the
    changed index again at the next checks. Now one load refuses it and the worker keeps its models."""
    check = reloading(registry_dir)
    loads: list[int] = []
    real_load = stream_app.load_scorers

    def counted(models: ModelSettings) -> ScorerSet:
        loads.append(1)
        return real_load(models)

    monkeypatch.setattr(stream_app, "load_scorers", counted)
    shutil.copytree(registry_dir / "disk-gbm-test", registry_dir / "disk-bomb")
    dump = registry_dir / "disk-bomb" / MODEL_FILE
    dump.write_bytes(array_bomb(dump.read_bytes()))
    registered_by_hand(registry_dir, "disk-bomb")
    assert not any(check() for _ in range(5))
    assert len(loads) == 1


def test_a_dump_deflated_within_the_bounds_still_loads(artifact_dir: Path, tmp_path: Path) -> None:
    """skops may write deflated dumps: inflating them under the bounds gives the same model."""
    copy = tmp_path / "deflated"
    shutil.copytree(artifact_dir, copy)
    out = io.BytesIO()
    with zipfile.ZipFile(copy / MODEL_FILE) as dump, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as deflated:
        for name in dump.namelist():
            deflated.writestr(name, dump.read(name))
    (copy / MODEL_FILE).write_bytes(out.getvalue())
    assert (copy / MODEL_FILE).stat().st_size < (artifact_dir / MODEL_FILE).stat().st_size
    loaded = TrainedDiskScorer.from_artifact(copy, artifact_digests(copy))
    assert loaded.version == "test-1"
