"""A seeded fleet of PCs, phones and tablets that degrade like real hardware, with ground truth.

Why it exists: the pipeline, the demo and the benchmarks need many devices whose
failures are *known*, so precision, recall and lead time can be measured end to end.

Design:
- Every device gets a static profile at construction (drawn from ``random.Random(seed)``):
  hardware, age, and the day each component will die (or never, within the window).
- A report is a pure function of (profile, time, per-report noise). The noise comes from
  one ``random.Random`` reseeded with an integer derived from (seed, device, round), so any
  report can be regenerated on its own (``report_at``) and the same seed gives the same
  bytes. Per-device state is the compact profile plus one ``seq`` counter.
- Stdlib only (it lives in the light agent package).

Calibration (see ``README`` section "Simulator and MDM bridge"):
- Disks fail at a constant hazard: HDD 3.5 %/year (Backblaze 2013 window: ~5 % AFR on
  data-centre drives; PC drives are less loaded), SATA SSD 1.2 %, NVMe 0.8 %.
- Only part of the failures are announced by SMART: 2/3 of HDD failures (in the Backblaze
  2013 data, 80 of 120 failed drives showed SMART 5/197 > 0 beforehand), the rest die
  suddenly. 8.8 % of healthy HDDs carry small, static non-zero reallocated/pending counts
  (Backblaze: 2,013 of 22,772 healthy drives), so a naive rule is not precise.
- Battery fade follows a linear-then-knee curve fitted by eye to the real MacBook log
  (85 % at 384 cycles, ~74 % at 468, reading noise ~1.2 % with rare 5-9 % outliers).
  A battery "fails" when its true capacity crosses 60 % of design (replacement due) or by a
  sudden cell fault. Batteries that crossed 60 % before the window are treated as replaced.
- Fans fail at 2 %/year with a rising-temperature/throttling onset; main boards die suddenly
  (PCs 0.4 %/year, often preceded by crashes; phones/tablets 3 %/year, drops and water).
- Memory modules (assumed rates, no public fleet data): 0.3 %/year, most announced by growing
  corrected-error counts and crashes.
- After a component fails the device stops reporting it; a dead system disk or main board
  silences the whole device (repairs are not modelled).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from pydantic import AwareDatetime, BaseModel, ConfigDict

from fleetpulse.agents.signing import derived_device_key
from fleetpulse.compat import UTC
from fleetpulse.contract import (
    BatteryHealth,
    Component,
    DeviceInventory,
    DeviceKind,
    DiskHealth,
    DiskKind,
    HealthReport,
    MemoryHealth,
    Platform,
    ReportSource,
    StabilityHealth,
    SystemLoad,
    ThermalHealth,
)

NEVER = math.inf
DAY_S = 86_400.0
GB = 1_000_000_000

# Annual failure rates (probability of failing within a year of operation).
DISK_AFR = {DiskKind.HDD: 0.035, DiskKind.SSD: 0.012, DiskKind.NVME: 0.008}
# Fraction of disk failures that SMART announces beforehand (the rest are sudden).
DISK_PREDICTABLE = {DiskKind.HDD: 0.67, DiskKind.SSD: 0.60, DiskKind.NVME: 0.70}
# Fraction of healthy drives with small non-zero error counters (false-positive bait).
DISK_BENIGN_NONZERO = {DiskKind.HDD: 0.088, DiskKind.SSD: 0.03, DiskKind.NVME: 0.02}
FAN_AFR = 0.02
PC_BOARD_AFR = 0.004
MOBILE_BOARD_AFR = 0.03
# Assumed (no public PC-fleet data staged): a memory module dies in ~0.3 % of PCs a year, 60 % of
# them after days to weeks of growing corrected errors; ~1 % of healthy PCs log a few corrected errors.
MEMORY_AFR = 0.003
MEMORY_PREDICTABLE = 0.6
MEMORY_BENIGN_NONZERO = 0.01
BATTERY_CELL_FAULT_AFR = 0.005
BATTERY_FAILED_PCT = 60.0

_VERSION = "sim-1"


@dataclass(frozen=True, slots=True)
class FleetMix:
    """Shares of device kinds. Default: the municipality's ~26k PCs (60 % laptops) and ~25k mobiles."""

    laptop: float = 0.306
    desktop: float = 0.204
    phone: float = 0.417
    tablet: float = 0.073

    def __post_init__(self) -> None:
        shares = (self.laptop, self.desktop, self.phone, self.tablet)
        if any(s < 0 for s in shares) or sum(shares) <= 0:
            raise ValueError("fleet mix shares must be non-negative and not all zero")


@dataclass(frozen=True, slots=True)
class FirmwareFault:
    """One laptop model's SSD firmware defect, a failure signature Backblaze's data never showed.

    On that model's NVMe drives the firmware logs a few spurious media errors that never grow
    (``spurious_share`` of the drives), and a share of drives (``afr`` a year) dies of the defect
    after weeks of steadily rising media errors -- no spare drop, no critical warning, the SMART
    verdict stays "passed". A model that reads any media error as the drive declaring itself
    failing cannot tell the two apart; a model that learned the fleet's outcomes can.
    """

    laptop_model: str = "ThinkPad L14 Gen 2"
    afr: float = 0.25
    lead_days: tuple[float, float] = (21.0, 60.0)
    spurious_share: float = 0.3
    spurious_max: int = 6
    model_share: float = 0.0
    """Extra share of (non-Apple) laptops bought as the affected model, on top of its 1-in-5 catalogue share."""

    def __post_init__(self) -> None:
        if not 0.0 < self.afr <= 1.0 or not 0.0 <= self.spurious_share <= 1.0:
            raise ValueError("afr must be in (0, 1], spurious_share in [0, 1]")
        if not 0.0 <= self.model_share <= 1.0:
            raise ValueError("model_share must be in [0, 1]")
        if not 0.0 < self.lead_days[0] <= self.lead_days[1]:
            raise ValueError("lead_days must be (low, high) with 0 < low <= high")


class GroundTruthFailure(BaseModel):
    """The day a component dies (what a perfect predictor would have ticketed in advance)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    device_kind: DeviceKind
    component: Component
    component_id: str = ""
    fails_at: AwareDatetime
    cause: str
    predictable: bool
    signal_from: AwareDatetime | None = None
    """When the component's data first starts to show the fault (None for sudden failures)."""


# --- catalogues (realistic municipal procurement; no person data anywhere) -------------

_LAPTOPS = (
    ("Lenovo", "ThinkPad T14 Gen 3", 52_500),
    ("Lenovo", "ThinkPad L14 Gen 2", 45_000),
    ("Dell", "Latitude 5440", 54_000),
    ("HP", "EliteBook 840 G9", 51_000),
    ("Fujitsu", "LIFEBOOK U7412", 50_000),
)
_MACBOOK = ("Apple", "MacBook Pro 14 (2021)", 69_600)
_DESKTOPS = (
    ("Dell", "OptiPlex 7010"),
    ("HP", "EliteDesk 800 G6"),
    ("Lenovo", "ThinkCentre M70q Gen 3"),
    ("Fujitsu", "ESPRIMO D7012"),
)
_PHONES = {
    Platform.IOS: (("Apple", "iPhone 13"), ("Apple", "iPhone SE (3rd generation)"), ("Apple", "iPhone 15")),
    Platform.ANDROID: (("Samsung", "Galaxy A54 5G"), ("Samsung", "Galaxy XCover6 Pro"), ("Google", "Pixel 7a")),
}
_TABLETS = {
    Platform.IOS: (("Apple", "iPad (9th generation)"), ("Apple", "iPad Air (5th generation)")),
    Platform.ANDROID: (("Samsung", "Galaxy Tab Active4 Pro"), ("Samsung", "Galaxy Tab S9 FE")),
}
_DISK_MODELS = {
    DiskKind.NVME: ("Samsung PM9A1 512GB", "SK hynix PC711 512GB", "WDC PC SN740 256GB", "KIOXIA KBG50ZNV512G"),
    DiskKind.SSD: ("Samsung SSD 870 EVO 500GB", "Crucial MX500 500GB", "SanDisk SD8SN8U512G"),
    DiskKind.HDD: ("ST1000DM010-2EP102", "WDC WD10EZEX-08WN4A0", "TOSHIBA MQ01ABF050", "ST2000DM008-2FR102"),
}
_DISK_CAPACITY = {DiskKind.NVME: (256 * GB, 512 * GB), DiskKind.SSD: (500 * GB,), DiskKind.HDD: (1000 * GB, 2000 * GB)}
_SITES = (
    "City Hall",
    "Civic Center North",
    "Civic Center South",
    "Public Works Depot",
    "Central Library",
    "Fire Station 1",
    "Fire Station 3",
    "Registry Office",
    "Social Services Center",
    "Building Authority",
    "Schools Administration",
    "Parks Yard",
)
_DEPARTMENTS = (
    "Finance",
    "Public Works",
    "Social Services",
    "Citizen Services",
    "Fire and Rescue",
    "Libraries",
    "Education",
    "Planning and Building",
    "IT Services",
    "Public Health",
    "Parks and Environment",
    "Youth Services",
    "Human Resources",
    "Mayor's Office",
)


# --- compact per-device profiles ---------------------------------------------------------


class _Disk:
    __slots__ = (
        "benign_pending",
        "benign_realloc",
        "capacity",
        "fail_day",
        "firmware_failure",
        "free_frac",
        "hours_per_day",
        "kind",
        "max_pending",
        "max_realloc",
        "max_timeout",
        "max_uncorrect",
        "model",
        "name",
        "onset_day",
        "poh_start",
        "predictable",
        "serial_hash",
        "smart_trips",
        "temp_base",
        "wear_per_day",
        "wear_start",
    )

    def __init__(self, rng: random.Random, name: str, kind: DiskKind, age_days: float, on_hours: float) -> None:
        self.name = name
        self.kind = kind
        self.model = rng.choice(_DISK_MODELS[kind])
        self.serial_hash = f"{rng.getrandbits(64):016x}"
        self.capacity = rng.choice(_DISK_CAPACITY[kind])
        self.hours_per_day = on_hours
        self.poh_start = max(0.0, age_days) * on_hours
        self.temp_base = rng.uniform(30.0, 42.0) if kind is not DiskKind.HDD else rng.uniform(32.0, 45.0)
        self.free_frac = rng.uniform(0.15, 0.75)
        self.wear_start = max(0.0, age_days) / 365.0 * rng.uniform(1.0, 6.0)
        self.wear_per_day = rng.uniform(1.0, 6.0) / 365.0
        benign = rng.random() < DISK_BENIGN_NONZERO[kind]
        self.benign_realloc = rng.randint(1, 24) if benign else 0
        self.benign_pending = rng.randint(1, 4) if benign and rng.random() < 0.3 else 0
        self.fail_day = NEVER
        self.onset_day = NEVER
        self.predictable = False
        self.firmware_failure = False
        self.smart_trips = False
        self.max_realloc = self.max_pending = self.max_uncorrect = self.max_timeout = 0

    def plan_failure(self, rng: random.Random, fail_day: float) -> None:
        self.fail_day = fail_day
        self.predictable = rng.random() < DISK_PREDICTABLE[self.kind]
        if self.predictable:
            # Backblaze: failed drives were observed a median ~24 days before removal with
            # growing counters; lead times vary from days to months.
            self.onset_day = fail_day - rng.uniform(5.0, 60.0)
            self.smart_trips = rng.random() < 0.5
            self.max_realloc = int(rng.lognormvariate(math.log(200), 1.3)) + 8
            self.max_pending = int(rng.lognormvariate(math.log(24), 1.2)) + 1
            self.max_uncorrect = int(rng.lognormvariate(math.log(12), 1.2))
            self.max_timeout = int(rng.lognormvariate(math.log(3), 1.0))

    def plan_firmware_failure(self, rng: random.Random, fail_day: float, fault: FirmwareFault) -> None:
        self.fail_day = fail_day
        self.predictable = self.firmware_failure = True
        self.onset_day = fail_day - rng.uniform(*fault.lead_days)
        self.smart_trips = False
        self.max_realloc = int(rng.lognormvariate(math.log(150), 0.8)) + 20

    def progress(self, t: float) -> float:
        """0 before the fault shows, rising convexly to 1 on the failure day."""
        if t < self.onset_day:
            return 0.0
        return float(min(1.0, (t - self.onset_day) / (self.fail_day - self.onset_day)) ** 1.6)


class _Battery:
    __slots__ = (
        "cause",
        "cycles_per_day",
        "cycles_start",
        "design",
        "fade",
        "fail_day",
        "knee",
        "knee_factor",
        "outlier_rate",
        "unit",
    )

    def __init__(self, rng: random.Random, design: float, unit: str, age_days: float, cycles_per_day: float) -> None:
        self.design = design
        self.unit = unit
        self.cycles_per_day = cycles_per_day
        # Linear fade before the knee (% of design per cycle), steeper after it. The real
        # MacBook: ~0.039 %/cycle to 384 cycles, then ~0.13 %/cycle.
        self.fade = rng.lognormvariate(math.log(0.032), 0.3)
        self.knee = rng.uniform(300.0, 900.0)
        self.knee_factor = rng.uniform(1.5, 3.5)
        self.outlier_rate = 0.015
        life = self.cycles_to(BATTERY_FAILED_PCT)
        # A battery that crossed 60 % before today was replaced: keep the cycles since then.
        self.cycles_start = math.fmod(max(0.0, age_days) * cycles_per_day, life * rng.uniform(0.9, 1.0))
        self.fail_day = (life - self.cycles_start) / cycles_per_day
        self.cause = "capacity_fade"

    def health_at_cycles(self, cycles: float) -> float:
        if cycles <= self.knee:
            return 100.0 - self.fade * cycles
        return 100.0 - self.fade * self.knee - self.fade * self.knee_factor * (cycles - self.knee)

    def cycles_to(self, pct: float) -> float:
        knee_health = 100.0 - self.fade * self.knee
        if pct >= knee_health:
            return (100.0 - pct) / self.fade
        return self.knee + (knee_health - pct) / (self.fade * self.knee_factor)


class _Thermal:
    __slots__ = ("fail_day", "fan_rpm", "onset_day", "temp_base")

    def __init__(self, rng: random.Random, laptop: bool) -> None:
        self.fan_rpm = rng.uniform(2200.0, 3400.0) if laptop else rng.uniform(850.0, 1500.0)
        self.temp_base = rng.uniform(48.0, 60.0) if laptop else rng.uniform(38.0, 50.0)
        self.fail_day = NEVER
        self.onset_day = NEVER


class _Memory:
    __slots__ = ("benign", "fail_day", "max_corrected", "max_uncorrected", "onset_day", "predictable")

    def __init__(self, rng: random.Random, fail_day: float, in_window: bool) -> None:
        self.benign = rng.randint(1, 6) if rng.random() < MEMORY_BENIGN_NONZERO else 0
        self.predictable = in_window and rng.random() < MEMORY_PREDICTABLE
        self.fail_day = fail_day if in_window else NEVER
        self.onset_day = fail_day - rng.uniform(3.0, 45.0) if self.predictable else NEVER
        self.max_corrected = int(rng.lognormvariate(math.log(150), 1.0)) + 5
        self.max_uncorrected = rng.randint(1, 4)

    def progress(self, t: float) -> float:
        if t < self.onset_day:
            return 0.0
        return min(1.0, (t - self.onset_day) / (self.fail_day - self.onset_day))


class _Device:
    battery: _Battery | None
    board_fail_day: float
    board_predictable: bool
    crash_rate: float
    department: str
    device_id: str
    disks: tuple[_Disk, ...]
    end_day: float
    index: int
    kind: DeviceKind
    memory: _Memory | None
    miss_rate: float
    model: str
    offset_s: float
    platform: Platform
    purchase: float
    site: str
    storage: tuple[int, float] | None
    thermal: _Thermal | None
    vendor: str
    warranty_years: int

    __slots__ = (
        "battery",
        "board_fail_day",
        "board_predictable",
        "crash_rate",
        "department",
        "device_id",
        "disks",
        "end_day",
        "index",
        "kind",
        "memory",
        "miss_rate",
        "model",
        "offset_s",
        "platform",
        "purchase",
        "site",
        "storage",
        "thermal",
        "vendor",
        "warranty_years",
    )

    @property
    def mobile(self) -> bool:
        return self.kind in (DeviceKind.PHONE, DeviceKind.TABLET)


def _fail_day(rng: random.Random, afr: float, scale: float) -> float:
    """Day (from the window start) of failure under a constant hazard with this annual rate."""
    rate_per_day = -math.log(1.0 - afr) / 365.0 * scale
    return rng.expovariate(rate_per_day)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0.0:
        return 0
    limit, k, p = math.exp(-min(lam, 50.0)), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


# --- the simulator ------------------------------------------------------------------------


class FleetSimulator:
    """``devices`` devices reporting every ``report_interval`` for ``days`` days from ``start``."""

    def __init__(
        self,
        devices: int,
        seed: int,
        start: datetime,
        days: int,
        report_interval: timedelta = timedelta(days=1),
        mix: FleetMix | None = None,
        failure_scale: float = 1.0,
        firmware_fault: FirmwareFault | None = None,
    ) -> None:
        """``failure_scale`` multiplies every failure hazard: >1 gives a small demo fleet enough
        failures to evaluate; calibration holds only at 1.0. ``firmware_fault`` adds one laptop
        model's SSD firmware defect (a fleet unlike Backblaze's); without it the fleet is unchanged."""
        if devices < 1:
            raise ValueError("devices must be >= 1")
        if days < 1:
            raise ValueError("days must be >= 1")
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        if report_interval <= timedelta(0):
            raise ValueError("report_interval must be positive")
        if not 0.0 < failure_scale <= 100.0:
            raise ValueError("failure_scale must be in (0, 100]")
        self.failure_scale = failure_scale
        self.firmware_fault = firmware_fault
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.days = days
        self.interval = report_interval
        self.mix = mix or FleetMix()
        self._interval_s = report_interval.total_seconds()
        self._rounds = max(1, math.ceil(days * DAY_S / self._interval_s))
        self._noise = random.Random()
        rng = random.Random(seed)
        self._devices = [self._make_device(rng, i) for i in range(devices)]
        # Reports within a round are emitted in collected_at order.
        self._order = sorted(range(devices), key=lambda i: (self._devices[i].offset_s, i))
        self._live_seq = [0] * devices
        self._live_round = 0

    def device_key(self, device_id: str) -> bytes:
        """The simulated device's report key, derived from the seed (a simulated fleet is not a secret)."""
        return derived_device_key(f"fleetpulse-simulator:{self.seed}".encode(), device_id)

    # -- profile generation ---------------------------------------------------------------

    def _make_device(self, rng: random.Random, index: int) -> _Device:
        mix = self.mix
        dev = _Device()
        dev.index = index
        dev.device_id = f"sim{self.seed & 0xFFFF:04x}-{index:06d}"
        dev.kind = rng.choices(
            (DeviceKind.LAPTOP, DeviceKind.DESKTOP, DeviceKind.PHONE, DeviceKind.TABLET),
            weights=(mix.laptop, mix.desktop, mix.phone, mix.tablet),
        )[0]
        dev.offset_s = float(int(rng.random() * self._interval_s))
        dev.site = rng.choice(_SITES)
        dev.department = rng.choice(_DEPARTMENTS)
        dev.miss_rate = rng.uniform(0.0, 0.06)
        dev.disks = ()
        dev.battery = None
        dev.thermal = None
        dev.storage = None
        dev.memory = None
        dev.board_predictable = False
        if dev.mobile:
            self._make_mobile(rng, dev)
        else:
            self._make_pc(rng, dev)
        self._settle_failures(dev)
        return dev

    def _make_pc(self, rng: random.Random, dev: _Device) -> None:
        laptop = dev.kind is DeviceKind.LAPTOP
        age = rng.uniform(30.0, 6.0 * 365.0)
        dev.purchase = -age
        dev.warranty_years = 3 if laptop else rng.choice((3, 5))
        dev.platform = rng.choices((Platform.WINDOWS, Platform.LINUX, Platform.MACOS), weights=(0.86, 0.09, 0.05))[0]
        on_hours = rng.uniform(6.0, 11.0) if laptop else rng.uniform(8.0, 24.0)
        if laptop:
            vendor, model, design = _MACBOOK if dev.platform is Platform.MACOS else rng.choice(_LAPTOPS)
            batch = self.firmware_fault
            # a draw only when a batch share is set: a fleet with the defect but no batch stays as it was
            batched = batch is not None and batch.model_share > 0 and dev.platform is not Platform.MACOS
            if batch is not None and batched and rng.random() < batch.model_share:
                vendor, model, design = next((v, m, d) for v, m, d in _LAPTOPS if m == batch.laptop_model)
            dev.battery = _Battery(rng, float(design), "mWh", age, rng.uniform(0.15, 0.9))
            self._maybe_cell_fault(rng, dev.battery)
            kinds = ((DiskKind.NVME, DiskKind.SSD, DiskKind.HDD), (0.75, 0.20, 0.05))
        else:
            vendor, model = ("Apple", "Mac mini (2020)") if dev.platform is Platform.MACOS else rng.choice(_DESKTOPS)
            kinds = ((DiskKind.NVME, DiskKind.SSD, DiskKind.HDD), (0.50, 0.30, 0.20))
        dev.vendor, dev.model = vendor, model
        system_kind = rng.choices(kinds[0], weights=kinds[1])[0]
        disks = [_Disk(rng, "nvme0" if system_kind is DiskKind.NVME else "sda", system_kind, age, on_hours)]
        if not laptop and rng.random() < 0.12:
            disks.append(_Disk(rng, "sdb", DiskKind.HDD, age, on_hours))
        for disk in disks:
            day = _fail_day(rng, DISK_AFR[disk.kind], self.failure_scale)
            if day < self.days:
                disk.plan_failure(rng, day)
        fault = self.firmware_fault
        if fault is not None and laptop and model == fault.laptop_model and disks[0].kind is DiskKind.NVME:
            # drawn only for the affected model: every other device keeps the fleet it has without the fault
            if rng.random() < fault.spurious_share:
                disks[0].benign_realloc = max(disks[0].benign_realloc, rng.randint(1, fault.spurious_max))
            day = _fail_day(rng, fault.afr, self.failure_scale)
            if day < min(self.days, disks[0].fail_day):
                disks[0].plan_firmware_failure(rng, day, fault)
        dev.disks = tuple(disks)
        dev.thermal = _Thermal(rng, laptop)
        fan_day = _fail_day(rng, FAN_AFR, self.failure_scale)
        if fan_day < self.days:
            dev.thermal.fail_day = fan_day
            dev.thermal.onset_day = fan_day - rng.uniform(3.0, 30.0)
        dev.board_fail_day = _fail_day(rng, PC_BOARD_AFR, self.failure_scale)
        dev.board_predictable = rng.random() < 0.5
        flaky = rng.random() < 0.05
        dev.crash_rate = rng.uniform(0.2, 0.5) if flaky else rng.uniform(0.002, 0.03)
        mem_day = _fail_day(rng, MEMORY_AFR, self.failure_scale)
        if dev.platform is not Platform.MACOS:  # EDAC/WHEA counters exist on Linux and Windows only
            dev.memory = _Memory(rng, mem_day, mem_day < self.days)

    def _make_mobile(self, rng: random.Random, dev: _Device) -> None:
        age = rng.uniform(30.0, 4.0 * 365.0)
        dev.purchase = -age
        dev.warranty_years = 2
        phone = dev.kind is DeviceKind.PHONE
        dev.platform = rng.choices((Platform.IOS, Platform.ANDROID), weights=(0.55, 0.45) if phone else (0.7, 0.3))[0]
        catalogue = _PHONES if phone else _TABLETS
        dev.vendor, dev.model = rng.choice(catalogue[dev.platform])
        # The MDM reports health as a percentage: design normalised to 100 (as the MDM bridge does).
        dev.battery = _Battery(rng, 100.0, "mAh", age, rng.uniform(0.4, 1.0) if phone else rng.uniform(0.2, 0.6))
        self._maybe_cell_fault(rng, dev.battery)
        dev.storage = (rng.choice((64, 128, 256)) * GB, rng.uniform(0.1, 0.7))
        dev.board_fail_day = _fail_day(rng, MOBILE_BOARD_AFR, self.failure_scale)
        dev.crash_rate = 0.0

    def _maybe_cell_fault(self, rng: random.Random, battery: _Battery) -> None:
        """Sudden cell failure (swelling, internal short) at a constant hazard."""
        day = _fail_day(rng, BATTERY_CELL_FAULT_AFR, self.failure_scale)
        if day < battery.fail_day and day < self.days:
            battery.fail_day = day
            battery.cause = "cell_fault"

    def _settle_failures(self, dev: _Device) -> None:
        """The device goes silent at its first terminal failure; later failures never happen."""
        end = dev.board_fail_day
        if dev.disks and dev.disks[0].fail_day < end:
            end = dev.disks[0].fail_day
        if dev.memory is not None and dev.memory.fail_day < end:
            end = dev.memory.fail_day
        dev.end_day = end if end < self.days else NEVER
        if dev.end_day < NEVER:
            if dev.board_fail_day > dev.end_day:
                dev.board_fail_day = NEVER
            for disk in dev.disks:
                if disk.fail_day > dev.end_day:
                    disk.fail_day = disk.onset_day = NEVER
                    disk.predictable = False
            if dev.battery is not None and dev.battery.fail_day >= dev.end_day:
                dev.battery.fail_day = NEVER
            if dev.thermal is not None and dev.thermal.fail_day >= dev.end_day:
                dev.thermal.fail_day = dev.thermal.onset_day = NEVER
            if dev.memory is not None and dev.memory.fail_day > dev.end_day:
                dev.memory.fail_day = dev.memory.onset_day = NEVER
                dev.memory.predictable = False
        if dev.board_fail_day >= self.days:
            dev.board_fail_day = NEVER
        if dev.battery is not None and dev.battery.fail_day >= self.days:
            dev.battery.fail_day = NEVER

    # -- public API --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._devices)

    @property
    def rounds(self) -> int:
        """Report rounds in the window (``days`` / ``report_interval``)."""
        return self._rounds

    def device_ids(self) -> list[str]:
        return [d.device_id for d in self._devices]

    def disk_population(self) -> dict[DiskKind, int]:
        """How many drives of each kind the fleet has (denominator of failure rates)."""
        counts: dict[DiskKind, int] = {}
        for dev in self._devices:
            for disk in dev.disks:
                counts[disk.kind] = counts.get(disk.kind, 0) + 1
        return counts

    def is_mobile(self, device_index: int) -> bool:
        return self._devices[device_index].mobile

    def inventory(self) -> list[DeviceInventory]:
        out = []
        for dev in self._devices:
            purchased = (self.start + timedelta(days=dev.purchase)).date()
            out.append(
                DeviceInventory(
                    device_id=dev.device_id,
                    kind=dev.kind,
                    vendor=dev.vendor,
                    model=dev.model,
                    purchase_date=purchased,
                    warranty_end=_add_years(purchased, dev.warranty_years),
                    site=dev.site,
                    department=dev.department,
                    updated_at=self.start,
                )
            )
        return out

    def ground_truth(self) -> list[GroundTruthFailure]:
        """Every component failure inside the window, in time order."""
        out: list[GroundTruthFailure] = []
        for dev in self._devices:
            for disk in dev.disks:
                if disk.fail_day < NEVER:
                    out.append(
                        self._truth(
                            dev,
                            Component.DISK,
                            disk.serial_hash,
                            disk.fail_day,
                            _disk_cause(disk),
                            disk.predictable,
                            disk.onset_day if disk.predictable else None,
                        )
                    )
            bat = dev.battery
            if bat is not None and bat.fail_day < NEVER:
                fade = bat.cause == "capacity_fade"
                onset = max(0.0, bat.fail_day - 90.0) if fade else None
                out.append(self._truth(dev, Component.BATTERY, "", bat.fail_day, bat.cause, fade, onset))
            th = dev.thermal
            if th is not None and th.fail_day < NEVER:
                out.append(self._truth(dev, Component.THERMAL, "", th.fail_day, "fan_failure", True, th.onset_day))
            mem = dev.memory
            if mem is not None and mem.fail_day < NEVER:
                cause = "memory_degradation" if mem.predictable else "memory_sudden"
                onset = mem.onset_day if mem.predictable else None
                out.append(self._truth(dev, Component.MEMORY, "", mem.fail_day, cause, mem.predictable, onset))
            if dev.board_fail_day < NEVER:
                predictable = dev.board_predictable and not dev.mobile
                onset = dev.board_fail_day - 14.0 if predictable else None
                cause = "mainboard" if not dev.mobile else "device_damage"
                out.append(self._truth(dev, Component.DEVICE, "", dev.board_fail_day, cause, predictable, onset))
        out.sort(key=lambda g: (g.fails_at, g.device_id, g.component.value))
        return out

    def reports(self) -> Iterator[HealthReport]:
        """All reports of the window, time-ordered across the fleet; ``seq`` from 0 per device."""
        seqs = [0] * len(self._devices)
        for rnd in range(self._rounds):
            base_s = rnd * self._interval_s
            base = self.start + timedelta(seconds=base_s)
            for i in self._order:
                dev = self._devices[i]
                t_s = base_s + dev.offset_s
                if t_s >= self.days * DAY_S:
                    continue
                report = self._report(dev, t_s / DAY_S, base + timedelta(seconds=dev.offset_s), seqs[i], rnd)
                if report is not None:
                    seqs[i] += 1
                    yield report

    def live_reports(self, now: datetime) -> Iterator[HealthReport]:
        """One round of the whole fleet stamped ``now`` (for benchmarks at wall-clock time).

        Device state is evaluated at ``now``; ``seq`` continues across calls.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        now = now.astimezone(UTC)
        t = (now - self.start).total_seconds() / DAY_S
        rnd = 1_000_000 + self._live_round
        self._live_round += 1
        for i in self._order:
            report = self._report(self._devices[i], t, now, self._live_seq[i], rnd)
            if report is not None:
                self._live_seq[i] += 1
                yield report

    def report_at(self, device_index: int, when: datetime, seq: int = 0) -> HealthReport | None:
        """The report device ``device_index`` would send at ``when`` (None if it is silent then)."""
        if when.tzinfo is None:
            raise ValueError("when must be timezone-aware")
        when = when.astimezone(UTC)
        t = (when - self.start).total_seconds() / DAY_S
        return self._report(self._devices[device_index], t, when, seq, int(t * DAY_S // self._interval_s))

    # -- report construction -------------------------------------------------------------------

    def _truth(
        self,
        dev: _Device,
        component: Component,
        component_id: str,
        day: float,
        cause: str,
        predictable: bool,
        onset: float | None,
    ) -> GroundTruthFailure:
        return GroundTruthFailure(
            device_id=dev.device_id,
            device_kind=dev.kind,
            component=component,
            component_id=component_id,
            fails_at=self.start + timedelta(days=day),
            cause=cause,
            predictable=predictable,
            signal_from=None if onset is None else self.start + timedelta(days=max(onset, dev.purchase)),
        )

    def _report(self, dev: _Device, t: float, when: datetime, seq: int, rnd: int) -> HealthReport | None:
        if t >= dev.end_day:
            return None
        rng = self._noise
        rng.seed(((self.seed * 1_000_003) ^ (dev.index * 2_654_435_761)) * 1_000_033 + rnd)
        if rng.random() < dev.miss_rate:
            return None
        if dev.mobile:
            return self._mobile_report(dev, t, when, seq, rng)
        return self._pc_report(dev, t, when, seq, rng)

    def _battery(self, bat: _Battery | None, t: float, rng: random.Random, laptop: bool) -> BatteryHealth | None:
        if bat is None or t >= bat.fail_day:
            return None
        cycles = bat.cycles_start + bat.cycles_per_day * max(0.0, t)
        health = bat.health_at_cycles(cycles)
        reading = health * (1.0 + rng.gauss(0.0, 0.012))
        if rng.random() < bat.outlier_rate:
            reading *= 1.0 + rng.choice((-1.0, 1.0)) * rng.uniform(0.05, 0.09)
        full = max(0.0, min(reading, 110.0)) * bat.design / 100.0
        return BatteryHealth(
            design_capacity=bat.design,
            full_charge_capacity=round(full, 1 if bat.unit == "mAh" else 0),
            unit="mAh" if bat.unit == "mAh" else "mWh",
            cycle_count=int(cycles),
            temperature_c=round(rng.uniform(26.0, 36.0), 1) if laptop else None,
            runtime_full_minutes=round(max(0.0, health) * rng.uniform(2.6, 3.4), 0) if laptop else None,
        )

    def _pc_report(self, dev: _Device, t: float, when: datetime, seq: int, rng: random.Random) -> HealthReport:
        days_left = NEVER
        disks = []
        for disk in dev.disks:
            if t >= disk.fail_day:
                continue
            disks.append(self._disk(disk, t, rng))
            days_left = min(days_left, disk.fail_day - t if disk.predictable else NEVER)
        thermal = None
        fan_fault = 0.0
        th = dev.thermal
        if th is not None and t < th.fail_day:
            if t >= th.onset_day:
                fan_fault = min(1.0, (t - th.onset_day) / (th.fail_day - th.onset_day))
            load = rng.uniform(5.0, 60.0)
            cpu = th.temp_base + load * 0.35 + fan_fault * 38.0 + rng.gauss(0.0, 2.0)
            fan = th.fan_rpm * (1.0 - 0.95 * fan_fault**1.3) * rng.uniform(0.9, 1.1)
            # Cumulative, like the agent's since-boot CPU throttle counters: grows as the fan fades.
            throttle = int(120.0 * fan_fault**2 * (t - th.onset_day)) if fan_fault > 0.0 else 0
            thermal = ThermalHealth(
                cpu_max_c=round(min(cpu, 110.0), 1),
                sensors_max_c=round(min(cpu, 110.0) - rng.uniform(3.0, 12.0), 1),
                fan_rpm=[round(fan, 0)],
                throttle_events=throttle,
            )
        else:
            load = rng.uniform(5.0, 60.0)
        crash_rate = dev.crash_rate
        if dev.board_predictable and dev.board_fail_day - 14.0 <= t:
            crash_rate += 1.5
        if days_left < 20.0:
            crash_rate += 0.3
        memory = None
        if dev.memory is not None:
            mp = dev.memory.progress(t)
            crash_rate += 1.2 * mp
            memory = MemoryHealth(
                correctable_errors=dev.memory.benign + int(mp**1.5 * dev.memory.max_corrected),
                uncorrectable_errors=int(mp**4 * dev.memory.max_uncorrected),
            )
        interval_days = self._interval_s / DAY_S
        stability = StabilityHealth(
            crashes=_poisson(rng, crash_rate * interval_days),
            unexpected_shutdowns=_poisson(rng, (crash_rate * 0.3 + fan_fault * 0.8) * interval_days),
            boot_duration_s=round(
                rng.uniform(60.0, 140.0) if dev.disks[0].kind is DiskKind.HDD else rng.uniform(12.0, 40.0), 1
            ),
            uptime_s=round(rng.uniform(0.05, 1.0) * min(self._interval_s, 14 * DAY_S), 0),
        )
        return HealthReport(
            device_id=dev.device_id,
            seq=seq,
            collected_at=when,
            source=ReportSource.SIMULATOR,
            kind=dev.kind,
            platform=dev.platform,
            agent_version=_VERSION,
            disks=disks,
            battery=self._battery(dev.battery, t, rng, True),
            thermal=thermal,
            memory=memory,
            stability=stability,
            system=SystemLoad(
                cpu_percent=round(load, 1),
                memory_percent=round(rng.uniform(30.0, 85.0), 1),
                disk_free_bytes=disks[0].free_bytes if disks else None,
            ),
        )

    def _disk(self, disk: _Disk, t: float, rng: random.Random) -> DiskHealth:
        poh = int(disk.poh_start + disk.hours_per_day * max(0.0, t))
        temp = round(disk.temp_base + rng.gauss(0.0, 1.5), 0)
        free = int(disk.capacity * max(0.02, disk.free_frac - 0.0003 * max(0.0, t)))
        p = disk.progress(t)
        if disk.kind is DiskKind.NVME:
            wearing = disk.predictable and not disk.firmware_failure  # the firmware defect shows in media errors only
            spare = 100.0 - p * rng.uniform(88.0, 96.0) if wearing else 100.0
            warning = (1 if spare < 10.0 else 0) | (4 if wearing and p > 0.85 else 0)
            return DiskHealth(
                name=disk.name,
                kind=disk.kind,
                model=disk.model,
                serial_hash=disk.serial_hash,
                capacity_bytes=disk.capacity,
                smart_passed=warning == 0,
                power_on_hours=poh,
                temperature_c=temp,
                critical_warning=warning,
                available_spare_pct=round(spare, 0),
                available_spare_threshold_pct=10.0,
                percentage_used=round(min(255.0, disk.wear_start + disk.wear_per_day * max(0.0, t)), 0),
                media_errors=disk.benign_realloc + int(p * disk.max_realloc),
                num_err_log_entries=disk.benign_realloc * 3 + int(p * disk.max_realloc * 4),
                unsafe_shutdowns=int(disk.poh_start / 400.0 + t * 0.02),
                free_bytes=free,
            )
        return DiskHealth(
            name=disk.name,
            kind=disk.kind,
            model=disk.model,
            serial_hash=disk.serial_hash,
            capacity_bytes=disk.capacity,
            smart_passed=not (disk.smart_trips and p > 0.6),
            power_on_hours=poh,
            temperature_c=temp,
            reallocated_sectors=disk.benign_realloc + int(p * disk.max_realloc),
            reported_uncorrect=int(p * disk.max_uncorrect),
            command_timeout=int(p * disk.max_timeout),
            current_pending_sectors=disk.benign_pending + int(p * disk.max_pending),
            offline_uncorrectable=int(p * p * disk.max_pending),
            udma_crc_errors=0,
            free_bytes=free,
        )

    def _mobile_report(self, dev: _Device, t: float, when: datetime, seq: int, rng: random.Random) -> HealthReport:
        assert dev.storage is not None
        capacity, free_frac = dev.storage
        free = int(capacity * max(0.01, free_frac - 0.0002 * max(0.0, t) + rng.uniform(-0.01, 0.01)))
        return HealthReport(
            device_id=dev.device_id,
            seq=seq,
            collected_at=when,
            source=ReportSource.MDM,
            kind=dev.kind,
            platform=dev.platform,
            agent_version=_VERSION,
            disks=[DiskHealth(name="internal", kind=DiskKind.UNKNOWN, capacity_bytes=capacity, free_bytes=free)],
            battery=self._battery(dev.battery, t, rng, False),
            system=SystemLoad(disk_free_bytes=free),
        )


def _disk_cause(disk: _Disk) -> str:
    if disk.firmware_failure:
        return f"{disk.kind.value}_firmware"
    return f"{disk.kind.value}_{'wear_out' if disk.predictable else 'sudden'}"


def _add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def stable_digest(reports: Iterator[HealthReport]) -> str:
    """SHA-256 over the encoded reports: the reproducibility check used by tests and the CLI."""
    from fleetpulse.contract import encode

    h = hashlib.sha256()
    for report in reports:
        h.update(encode(report))
        h.update(b"\n")
    return h.hexdigest()
