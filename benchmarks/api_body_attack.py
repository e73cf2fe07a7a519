"""Peak memory of the real API server under oversized uploads, next to a baseline revision.

Starts ``fleetpulse api`` (uvicorn, as deployed) from this checkout and from a baseline git
revision (exported with ``git archive``), side by side on SQLite stores, and runs the same
attacks against each: ``--clients`` concurrent uploads of ``--megabytes`` MB to the bulk-transition
route, with a Content-Length and chunked, anonymous, with a wrong password and with a valid
login. Prints what each server answered (from its access log) and its peak RSS (``VmHWM`` from
/proc) after each attack, and the ratio of the final peaks. Target: this checkout < 150 MB.

    python benchmarks/api_body_attack.py                  # baseline: main
    python benchmarks/api_body_attack.py --baseline HEAD~3 --megabytes 20
"""

from __future__ import annotations

import argparse
import asyncio
import io
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fleetpulse.alerts.api.passwords import pbkdf2_hash  # noqa: E402
from tests.integration.api_attack import ApiServer, basic_header, upload  # noqa: E402

PASSWORD = "correct horse battery staple"
ATTACKS = {
    "anonymous, Content-Length": (False, {}),
    "anonymous, chunked": (True, {}),
    "wrong password, chunked": (True, basic_header("fm", "guess")),
    "valid login, Content-Length": (False, basic_header("fm", PASSWORD)),
    "valid login, chunked": (True, basic_header("fm", PASSWORD)),
}


def export_revision(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="tar")
    return into


def attack(server: ApiServer, chunked: bool, headers: dict[str, str], clients: int, total: int) -> str:
    async def flood() -> None:
        await asyncio.gather(*(upload(server.port, chunked, headers, total) for _ in range(clients)))

    before = len(server.answered())
    asyncio.run(flood())
    answered = Counter(server.answered()[before:])
    return " ".join(f"{n}x{status}" for status, n in sorted(answered.items())) or "no answer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--megabytes", type=int, default=52)
    args = parser.parse_args()
    total = args.megabytes * 1024 * 1024
    password_hash = pbkdf2_hash(PASSWORD, 200_000)  # the format every revision reads

    with tempfile.TemporaryDirectory(prefix="fleetpulse-bench-") as tmp:
        base = Path(tmp)
        servers = {
            f"baseline {args.baseline}": ApiServer(
                base / "baseline",
                password_hash,
                pythonpath=str(export_revision(args.baseline, base / "src")),
                local_login=False,  # older revisions take Basic without a switch (and refuse unknown settings)
            ),
            "this checkout": ApiServer(base / "current", password_hash, pythonpath=str(REPO)),
        }
        idle = "idle (after one login)"
        rows: dict[str, dict[str, str]] = {name: {} for name in [idle, *ATTACKS]}
        peaks: dict[str, int] = {}
        for label, server in servers.items():
            server.start()
            try:
                assert server.get("/api/v1/me", "fm", PASSWORD) == 200, server.log_tail()
                rows[idle][label] = f"{server.memory_kib()['VmRSS'] / 1000:7.1f} MB"
                for name, (chunked, headers) in ATTACKS.items():
                    answered = attack(server, chunked, headers, args.clients, total)
                    rows[name][label] = f"{server.memory_kib()['VmHWM'] / 1000:7.1f} MB  {answered}"
                peaks[label] = server.memory_kib()["VmHWM"]
            finally:
                server.stop()

    print(f"{args.clients} concurrent uploads of {args.megabytes} MB each; peak RSS so far and answers")
    width = max(len(name) for name in rows) + 2
    labels = list(servers)
    print(" " * width + "".join(f"{label:<34}" for label in labels))
    for name in rows:
        print(f"{name:<{width}}" + "".join(f"{rows[name].get(label, ''):<34}" for label in labels))
    baseline_peak, current_peak = peaks[labels[0]], peaks[labels[1]]
    print(f"peak RSS ratio this checkout / baseline: {current_peak / baseline_peak:.2f}")


if __name__ == "__main__":
    main()
