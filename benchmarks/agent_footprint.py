"""Footprint of the endpoint agent next to Debian's prometheus-node-exporter and collectd.

All three run side by side on this machine for the same period, each collecting comparable
signals at the same interval (default 60 s):

- fleetpulse-agent ``run`` with its default collectors, sending to a real Kafka broker;
- prometheus-node-exporter with the cpu/meminfo/filesystem/hwmon/thermal/edac/power-supply/
  loadavg/stat collectors on a loopback port, scraped once per interval by this script (it
  collects only when scraped, as under Prometheus);
- collectd with cpu/memory/df/disk/thermal/battery/load/uptime, sending to a loopback UDP port
  with its network plugin.

Measured from outside via psutil: RSS sampled every second (mean and max; children included),
USS alongside (memory only this process holds), CPU = (user+system of the process and its reaped
children) / wall time over the measured period (psutil CPU times tick at 10 ms: +-0.002 % over 600 s),
after a warm-up that excludes start-up costs. Targets: agent RSS <= 1.5x node-exporter's,
agent CPU < 0.1 % of one core at a 60 s interval.

Floor rows, measured in the same run the same way: idle processes of the agent's own interpreter
(same site-packages and .pth files) that only import what the agent cannot do without: nothing
(``python``), kafka-python (``+kafka``), and kafka-python plus the pydantic wire contract
(``+kafka+contract``). They show which part of the agent's RSS is structural to a Python agent on
kafka-python with the shared pydantic contract, and which part the agent's own code adds.

    python benchmarks/agent_footprint.py --period 600 --bootstrap 127.0.0.1:19092
    python benchmarks/agent_footprint.py --period 600 --python /path/to/agent-venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from record import record

REPO = Path(__file__).resolve().parents[1]

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
COLLECTD = "/usr/sbin/collectd"
NODE_COLLECTORS = [
    "cpu",
    "meminfo",
    "filesystem",
    "hwmon",
    "thermal_zone",
    "edac",
    "powersupplyclass",
    "loadavg",
    "stat",
]
COLLECTD_CONF = """\
Interval {interval}
BaseDir "{base}"
PIDFile "{base}/collectd.pid"
PluginDir "/usr/lib/collectd"
TypesDB "/usr/share/collectd/types.db"
FQDNLookup false
Hostname "bench"
LoadPlugin logfile
<Plugin logfile>
  LogLevel warning
  File "{base}/collectd.log"
</Plugin>
LoadPlugin cpu
LoadPlugin memory
LoadPlugin df
LoadPlugin disk
LoadPlugin thermal
LoadPlugin battery
LoadPlugin load
LoadPlugin uptime
LoadPlugin network
<Plugin network>
  Server "127.0.0.1" "{port}"
</Plugin>
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Subject:
    name: str
    proc: subprocess.Popen[bytes]
    rss_samples: list[int] = field(default_factory=list)
    uss_samples: list[int] = field(default_factory=list)
    cpu_start: float = 0.0
    cpu_end: float = 0.0

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        live_children = 0.0
        for child in self.ps.children(recursive=True):
            try:
                t = child.cpu_times()
                live_children += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        return times.user + times.system + times.children_user + times.children_system + live_children

    def sample_memory(self) -> None:
        """RSS (what the target is about) and USS (pages only this process holds, e.g. not libpython's)."""
        rss, uss = 0, 0
        for proc in [self.ps, *self.ps.children(recursive=True)]:
            try:
                info = proc.memory_full_info()
            except psutil.NoSuchProcess:
                continue
            rss += info.rss
            uss += info.uss
        self.rss_samples.append(rss)
        self.uss_samples.append(uss)


def python_env(python: str) -> dict[str, str]:
    """Another interpreter (e.g. a clean venv holding only the agent's dependencies) runs this checkout."""
    env = dict(os.environ)
    if python != sys.executable:
        env["PYTHONPATH"] = str(REPO)
    return env


def start_agent(tmp: Path, bootstrap: str, interval: float, python: str) -> subprocess.Popen[bytes]:
    env = python_env(python)
    env.update(
        FLEETPULSE_AGENT_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        FLEETPULSE_AGENT_KAFKA__TOPIC_PREFIX=f"bench{uuid.uuid4().hex[:6]}.",
        FLEETPULSE_AGENT_INTERVAL_S=str(interval),
        FLEETPULSE_AGENT_SPOOL_DIR=str(tmp / "agent"),
        FLEETPULSE_AGENT_IDENTITY__SECRET="benchmark-secret",
        FLEETPULSE_AGENT_LOG_LEVEL="WARNING",
    )
    return subprocess.Popen(
        [python, "-m", "fleetpulse.agents.cli", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "agent.log").open("wb"),
    )


FLOORS = {
    "floor: python": "",
    "floor: +kafka": "import kafka",
    "floor: +kafka+contract": "import kafka, fleetpulse.contract",
}


def start_floor(imports: str, python: str) -> subprocess.Popen[bytes]:
    """An idle interpreter holding only ``imports``: what any agent built on them costs at least."""
    return subprocess.Popen(
        [python, "-c", f"{imports}\nimport signal\nsignal.pause()"],
        env=python_env(python),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_node_exporter(port: int) -> subprocess.Popen[bytes]:
    argv = [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", "--collector.disable-defaults"]
    argv += [f"--collector.{name}" for name in NODE_COLLECTORS]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_collectd(tmp: Path, interval: float) -> subprocess.Popen[bytes]:
    base = tmp / "collectd"
    base.mkdir()
    conf = base / "collectd.conf"
    conf.write_text(COLLECTD_CONF.format(interval=int(interval), base=base, port=free_port()))
    return subprocess.Popen([COLLECTD, "-f", "-C", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return len(resp.read())


def delivered(tmp: Path) -> tuple[int, int]:
    from fleetpulse.agents.spool import Spool

    with Spool(tmp / "agent" / "spool.sqlite3", 10**9) as spool:
        return spool.next_seq - spool.initial_seq, spool.count()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--period", type=float, default=600.0, help="measured seconds (after warm-up)")
    parser.add_argument("--interval", type=float, default=60.0, help="collection interval of all three")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds excluded from the measurement")
    parser.add_argument("--bootstrap", default="127.0.0.1:19092", help="Kafka the agent sends to")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter of the agent and the floor rows, e.g. a venv with only the agent's dependencies "
        "(this checkout goes on its PYTHONPATH); default: this one",
    )
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    for tool in (NODE_EXPORTER, COLLECTD):
        if not shutil.which(tool):
            print(f"missing {tool}: apt-get install prometheus-node-exporter collectd-core", file=sys.stderr)
            return 2

    tmp = Path(tempfile.mkdtemp(prefix="fleetpulse-footprint-"))
    port = free_port()
    subjects = [
        Subject("fleetpulse-agent", start_agent(tmp, args.bootstrap, args.interval, args.python)),
        Subject("node-exporter", start_node_exporter(port)),
        Subject("collectd", start_collectd(tmp, args.interval)),
        *(Subject(name, start_floor(imports, args.python)) for name, imports in FLOORS.items()),
    ]
    try:
        time.sleep(args.warmup)
        for s in subjects:
            if s.proc.poll() is not None:
                print(f"{s.name} exited early with {s.proc.returncode}", file=sys.stderr)
                return 1
        startup_rss = {s.name: s.ps.memory_info().rss for s in subjects}
        started = time.monotonic()
        for s in subjects:
            s.cpu_start = s.cpu_seconds()
        next_scrape = started
        next_progress = started + 60
        while (now := time.monotonic()) < started + args.period:
            if now >= next_scrape:
                scrape(port)
                next_scrape += args.interval
            for s in subjects:
                s.sample_memory()
            if now >= next_progress:
                print(f"  ... {now - started:.0f}/{args.period:.0f} s measured", file=sys.stderr, flush=True)
                next_progress += 60
            time.sleep(1.0)
        wall = time.monotonic() - started
        for s in subjects:
            s.cpu_end = s.cpu_seconds()
        produced, spooled = delivered(tmp)
    finally:
        for s in subjects:
            if s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        for s in subjects:
            try:
                s.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                s.proc.kill()

    print(f"\nFootprint over {wall:.0f} s at a {args.interval:g} s interval (warm-up {args.warmup:g} s excluded)")
    print(f"agent and floor rows run under {args.python}")
    print(
        f"{'process':<24}{'RSS mean MB':>12}{'RSS max MB':>12}{'USS mean MB':>12}{'CPU % core':>12}"
        f"{'RSS vs NE':>11}{'CPU vs NE':>11}"
    )
    ne = next(s for s in subjects if s.name == "node-exporter")
    recorded: dict[str, object] = {"period_s": round(wall), "interval_s": args.interval, "processes": {}}
    ne_rss = sum(ne.rss_samples) / len(ne.rss_samples)
    ne_cpu = (ne.cpu_end - ne.cpu_start) / wall * 100
    for s in subjects:
        rss = sum(s.rss_samples) / len(s.rss_samples)
        cpu = (s.cpu_end - s.cpu_start) / wall * 100
        cpu_ratio = f"{cpu / ne_cpu:.2f}x" if ne_cpu > 0 else "n/a"
        recorded["processes"][s.name] = {  # type: ignore[index]
            "rss_mb": round(rss / 2**20, 1),
            "uss_mb": round(sum(s.uss_samples) / len(s.uss_samples) / 2**20, 1),
            "cpu_pct_core": round(cpu, 4),
        }
        print(
            f"{s.name:<24}{rss / 2**20:>12.1f}{max(s.rss_samples) / 2**20:>12.1f}"
            f"{sum(s.uss_samples) / len(s.uss_samples) / 2**20:>12.1f}{cpu:>12.4f}"
            f"{rss / ne_rss:>10.2f}x{cpu_ratio:>11}"
        )
    agent = subjects[0]
    agent_rss = sum(agent.rss_samples) / len(agent.rss_samples)
    agent_cpu = (agent.cpu_end - agent.cpu_start) / wall * 100
    print(f"agent RSS at start of measurement: {startup_rss['fleetpulse-agent'] / 2**20:.1f} MB")
    print(f"agent reports: {produced} collected, {produced - spooled} delivered to Kafka, {spooled} still spooled")
    print(
        f"target RSS <= 1.5x node-exporter: {'met' if agent_rss <= 1.5 * ne_rss else 'NOT met'} ({agent_rss / ne_rss:.2f}x)"
    )
    floor = next(s for s in subjects if s.name == "floor: +kafka+contract")
    floor_rss = sum(floor.rss_samples) / len(floor.rss_samples)
    print(
        f"structural floor (idle python + kafka-python + contract): {floor_rss / 2**20:.1f} MB = "
        f"{floor_rss / ne_rss:.2f}x node-exporter; the agent's own code and work add "
        f"{(agent_rss - floor_rss) / 2**20:.1f} MB; 1.5x node-exporter = {1.5 * ne_rss / 2**20:.1f} MB"
    )
    print(f"target CPU < 0.1 % of one core: {'met' if agent_cpu < 0.1 else 'NOT met'} ({agent_cpu:.4f} %)")
    recorded["reports"] = {"collected": produced, "delivered": produced - spooled}
    record("agent_footprint", recorded, load_at_start)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
