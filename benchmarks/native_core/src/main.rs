//! Measurement prototype of a native per-report core for the stream worker: what the per-report path
//! costs without Python objects. Not part of the product: `benchmarks/native_core.py` builds and runs it.
//!
//! It does what the Python worker does for one health report between the Kafka record and the scorers,
//! with no Python object per field: JSON decode and the contract's checks of the fields it reads, the
//! record-key check, HMAC authentication (or the mobile topic's source rule), deduplication, the fold into
//! the device's cached state (`models/state.py`), the table value (`models/state_codec.py` version 3 with
//! the record's JSON header) and the report's line-protocol points (`streams/points.py`). The driver checks
//! that every table value and every line equals the Python worker's, byte for byte, on the same records.
//!
//! Input (from the driver): records framed as `u32 length, bytes` for record key, device key (empty: a
//! mobile-topic record), MAC header (empty: none) and value. Output: the final table values and all lines
//! to the two files named on the command line; on stdout one JSON object with CPU seconds and counts.

use std::collections::HashMap;
use std::io::Write as _;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

const WINDOW_DAYS: i32 = 35;
const MAX_DISKS: usize = 8;
const MAX_BATTERY_POINTS: usize = 240;
const MAX_STATE_BYTES: usize = 64 * 1024;
const THERMAL_EXCURSION_C: f64 = 95.0;
const COUNT_MAX: u64 = 1 << 48;
const BYTES_MAX: u64 = 1 << 60;
const EARLIEST_MICROS: i64 = 946_684_800_000_000; // 2000-01-01
const LATEST_MICROS: i64 = 4_102_444_800_000_000; // 2100-01-01
const ORDINAL_OF_EPOCH: i64 = 719_163; // date(1970, 1, 1).toordinal()

// column ids: positions in state_codec.COLUMN_NAMES
const DISK_COLUMNS: [u8; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
const HEALTH_RATIO: u8 = 14;
const FULL_CHARGE: u8 = 16;
const CYCLE_COUNT: u8 = 18;
const RUNTIME_FULL: u8 = 19;
const REPORTS: u8 = 21;
const CRASHES: u8 = 22;
const UNEXPECTED_SHUTDOWNS: u8 = 23;
const THERMAL_EXCURSIONS: u8 = 24;
const CPU_MAX_C: u8 = 25;
const THROTTLE_EVENTS: u8 = 26;
const FAN_RPM_MAX: u8 = 27;
const BOOT_DURATION: u8 = 28;
const MEM_CORRECTABLE: u8 = 30;
const MEM_UNCORRECTABLE: u8 = 31;

// -- the contract's health report (the fields and checks of fleetpulse/contract/v1.py) -------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    #[serde(default = "one")]
    schema_version: u8,
    device_id: String,
    seq: u64,
    collected_at: String,
    #[serde(default = "agent")]
    source: String,
    kind: String,
    platform: String,
    #[serde(default)]
    agent_version: Option<String>,
    #[serde(default)]
    disks: Vec<Disk>,
    battery: Option<Battery>,
    thermal: Option<Thermal>,
    memory: Option<Memory>,
    stability: Option<Stability>,
    system: Option<System>,
    #[serde(default)]
    collector_errors: Vec<CollectorError>,
}

fn one() -> u8 {
    1
}
fn agent() -> String {
    "agent".to_owned()
}
fn unknown() -> String {
    "unknown".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disk {
    name: String,
    #[serde(default = "unknown")]
    kind: String,
    model: Option<String>,
    serial_hash: Option<String>,
    firmware: Option<String>,
    capacity_bytes: Option<u64>,
    smart_passed: Option<bool>,
    power_on_hours: Option<u64>,
    temperature_c: Option<f64>,
    reallocated_sectors: Option<u64>,
    reported_uncorrect: Option<u64>,
    command_timeout: Option<u64>,
    current_pending_sectors: Option<u64>,
    offline_uncorrectable: Option<u64>,
    udma_crc_errors: Option<u64>,
    critical_warning: Option<u64>,
    available_spare_pct: Option<f64>,
    available_spare_threshold_pct: Option<f64>,
    percentage_used: Option<f64>,
    media_errors: Option<u64>,
    num_err_log_entries: Option<u64>,
    unsafe_shutdowns: Option<u64>,
    free_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Battery {
    design_capacity: f64,
    full_charge_capacity: f64,
    #[serde(default = "mwh")]
    unit: String,
    cycle_count: Option<u64>,
    temperature_c: Option<f64>,
    runtime_full_minutes: Option<f64>,
}

fn mwh() -> String {
    "mWh".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Thermal {
    cpu_max_c: Option<f64>,
    sensors_max_c: Option<f64>,
    #[serde(default)]
    fan_rpm: Vec<f64>,
    throttle_events: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Memory {
    correctable_errors: Option<u64>,
    uncorrectable_errors: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stability {
    #[serde(default)]
    crashes: u64,
    #[serde(default)]
    unexpected_shutdowns: u64,
    boot_duration_s: Option<f64>,
    uptime_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct System {
    cpu_percent: Option<f64>,
    memory_percent: Option<f64>,
    disk_free_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectorError {
    collector: String,
    error: String,
}

type Check = Result<(), String>;

fn short(what: &str, text: &str) -> Check {
    if text.chars().count() > 128 {
        return Err(format!("{what}: at most 128 characters"));
    }
    Ok(())
}

fn count(what: &str, value: Option<u64>, max: u64) -> Check {
    match value {
        Some(v) if v > max => Err(format!("{what}: at most {max}")),
        _ => Ok(()),
    }
}

fn within(what: &str, value: Option<f64>, low: f64, high: f64) -> Check {
    match value {
        Some(v) if !(low..=high).contains(&v) => Err(format!("{what}: within {low}..{high}")),
        _ => Ok(()),
    }
}

fn one_of(what: &str, value: &str, allowed: &[&str]) -> Check {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(format!("{what}: one of {allowed:?}"))
    }
}

fn device_id_ok(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

fn validate(report: &Report) -> Check {
    if report.schema_version != 1 {
        return Err("schema_version: 1".into());
    }
    if !device_id_ok(&report.device_id) {
        return Err("device_id: pattern".into());
    }
    count("seq", Some(report.seq), COUNT_MAX)?;
    one_of("source", &report.source, &["agent", "mdm", "simulator"])?;
    one_of(
        "kind",
        &report.kind,
        &["laptop", "desktop", "phone", "tablet"],
    )?;
    one_of(
        "platform",
        &report.platform,
        &["linux", "windows", "macos", "android", "ios"],
    )?;
    short(
        "agent_version",
        report.agent_version.as_deref().unwrap_or(""),
    )?;
    if report.disks.len() > 32 || report.collector_errors.len() > 64 {
        return Err("disks or collector_errors: too many".into());
    }
    for disk in &report.disks {
        short("disk.name", &disk.name)?;
        one_of("disk.kind", &disk.kind, &["hdd", "ssd", "nvme", "unknown"])?;
        for text in [&disk.model, &disk.serial_hash, &disk.firmware]
            .into_iter()
            .flatten()
        {
            short("disk text", text)?;
        }
        count("capacity_bytes", disk.capacity_bytes, BYTES_MAX)?;
        count("free_bytes", disk.free_bytes, BYTES_MAX)?;
        for value in [
            disk.power_on_hours,
            disk.reallocated_sectors,
            disk.reported_uncorrect,
            disk.command_timeout,
            disk.current_pending_sectors,
            disk.offline_uncorrectable,
            disk.udma_crc_errors,
            disk.media_errors,
            disk.num_err_log_entries,
            disk.unsafe_shutdowns,
        ] {
            count("disk counter", value, COUNT_MAX)?;
        }
        count("critical_warning", disk.critical_warning, 255)?;
        within("temperature_c", disk.temperature_c, -40.0, 150.0)?;
        within("available_spare_pct", disk.available_spare_pct, 0.0, 100.0)?;
        within(
            "available_spare_threshold_pct",
            disk.available_spare_threshold_pct,
            0.0,
            100.0,
        )?;
        within("percentage_used", disk.percentage_used, 0.0, 255.0)?;
    }
    if let Some(bat) = &report.battery {
        if !(bat.design_capacity > 0.0 && bat.design_capacity <= 1e7) {
            return Err("design_capacity".into());
        }
        within(
            "full_charge_capacity",
            Some(bat.full_charge_capacity),
            0.0,
            1e7,
        )?;
        one_of("unit", &bat.unit, &["mWh", "mAh"])?;
        count("cycle_count", bat.cycle_count, COUNT_MAX)?;
        within("battery.temperature_c", bat.temperature_c, -40.0, 150.0)?;
        within(
            "runtime_full_minutes",
            bat.runtime_full_minutes,
            0.0,
            10_000.0,
        )?;
        if bat.full_charge_capacity > 2.0 * bat.design_capacity {
            return Err("full_charge_capacity more than twice design_capacity".into());
        }
    }
    if let Some(t) = &report.thermal {
        within("cpu_max_c", t.cpu_max_c, -40.0, 150.0)?;
        within("sensors_max_c", t.sensors_max_c, -40.0, 150.0)?;
        if t.fan_rpm.len() > 16 || t.fan_rpm.iter().any(|r| !(0.0..=30_000.0).contains(r)) {
            return Err("fan_rpm".into());
        }
        count("throttle_events", t.throttle_events, COUNT_MAX)?;
    }
    if let Some(m) = &report.memory {
        count("correctable_errors", m.correctable_errors, COUNT_MAX)?;
        count("uncorrectable_errors", m.uncorrectable_errors, COUNT_MAX)?;
    }
    if let Some(s) = &report.stability {
        count("crashes", Some(s.crashes), COUNT_MAX)?;
        count(
            "unexpected_shutdowns",
            Some(s.unexpected_shutdowns),
            COUNT_MAX,
        )?;
        within("boot_duration_s", s.boot_duration_s, 0.0, 3600.0)?;
        within("uptime_s", s.uptime_s, 0.0, 10.0 * 365.0 * 86400.0)?;
    }
    if let Some(s) = &report.system {
        within("cpu_percent", s.cpu_percent, 0.0, 100.0)?;
        within("memory_percent", s.memory_percent, 0.0, 100.0)?;
        count("disk_free_bytes", s.disk_free_bytes, BYTES_MAX)?;
    }
    for e in &report.collector_errors {
        short("collector", &e.collector)?;
        if e.error.chars().count() > 2048 {
            return Err("error: at most 2048 characters".into());
        }
    }
    Ok(())
}

// -- time: microseconds since the epoch, UTC ------------------------------------------------------------

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn digits(text: &[u8], at: usize, n: usize) -> Option<i64> {
    let part = text.get(at..at + n)?;
    part.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

/// RFC 3339 with an explicit offset (`Z` or `±HH:MM`), as the contract's aware datetimes; UTC microseconds.
fn parse_time(text: &str) -> Result<i64, String> {
    let t = text.as_bytes();
    let bad = || format!("collected_at {text:?}: not an RFC 3339 time with an offset");
    let (y, mo, d) = (digits(t, 0, 4), digits(t, 5, 2), digits(t, 8, 2));
    let (h, mi, s) = (digits(t, 11, 2), digits(t, 14, 2), digits(t, 17, 2));
    let ([Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)], true) = (
        [y, mo, d, h, mi, s],
        t.len() > 19 && t[4] == b'-' && t[7] == b'-' && matches!(t[10], b'T' | b't' | b' '),
    ) else {
        return Err(bad());
    };
    if t[13] != b':'
        || t[16] != b':'
        || !(1..=12).contains(&mo)
        || d < 1
        || h > 23
        || mi > 59
        || s > 59
    {
        return Err(bad());
    }
    let month_days = [
        31,
        if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) {
            29
        } else {
            28
        },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > month_days[(mo - 1) as usize] {
        return Err(bad());
    }
    let mut at = 19;
    let mut micros = 0i64;
    if t[at] == b'.' {
        let start = at + 1;
        at = start;
        while at < t.len() && t[at].is_ascii_digit() {
            at += 1;
        }
        let n = at - start;
        if n == 0 || n > 6 {
            return Err(bad());
        }
        micros = digits(t, start, n).ok_or_else(bad)? * 10i64.pow((6 - n) as u32);
    }
    let offset = match t.get(at..) {
        Some(b"Z" | b"z") => 0,
        Some([sign @ (b'+' | b'-'), ..]) if t.len() == at + 6 && t[at + 3] == b':' => {
            let (oh, om) = (
                digits(t, at + 1, 2).ok_or_else(bad)?,
                digits(t, at + 4, 2).ok_or_else(bad)?,
            );
            let minutes = oh * 60 + om;
            if *sign == b'-' {
                -minutes
            } else {
                minutes
            }
        }
        _ => return Err(bad()),
    };
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset * 60;
    let utc = seconds * 1_000_000 + micros;
    if !(EARLIEST_MICROS..LATEST_MICROS).contains(&utc) {
        return Err(format!("timestamp {text} outside 2000..2100"));
    }
    Ok(utc)
}

fn day_ordinal(micros: i64) -> i32 {
    (micros.div_euclid(86_400_000_000) + ORDINAL_OF_EPOCH) as i32
}

/// orjson's `OPT_UTC_Z` spelling, as the Python header writes datetimes.
fn write_time(out: &mut Vec<u8>, micros: i64) {
    let (days, rest) = (
        micros.div_euclid(86_400_000_000),
        micros.rem_euclid(86_400_000_000),
    );
    let (y, m, d) = civil_from_days(days);
    let (secs, frac) = (rest / 1_000_000, rest % 1_000_000);
    let _ = write!(
        out,
        "\"{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    if frac != 0 {
        let _ = write!(out, ".{frac:06}");
    }
    out.extend_from_slice(b"Z\"");
}

// -- state: models/state.py --------------------------------------------------------------------------------

/// `DailySeries`: day ordinals and columns in insertion order (a Python dict's order), NaN for a missing day.
#[derive(Default)]
struct Series {
    days: Vec<i32>,
    columns: Vec<(u8, Vec<f64>)>,
}

#[derive(Clone, Copy)]
enum Merge {
    Last,
    Sum,
    Max,
    Mean(u8), // the hidden count column's id
}

impl Series {
    fn bucket(&mut self, day: i32) -> usize {
        if self.days.last() == Some(&day) {
            return self.days.len() - 1;
        }
        let index = self.days.partition_point(|&d| d < day);
        if index == self.days.len() || self.days[index] != day {
            self.days.insert(index, day);
            for (_, col) in &mut self.columns {
                col.insert(index, f64::NAN);
            }
        }
        index
    }

    fn column(&mut self, id: u8) -> usize {
        if let Some(at) = self.columns.iter().position(|(c, _)| *c == id) {
            return at;
        }
        self.columns.push((id, vec![f64::NAN; self.days.len()]));
        self.columns.len() - 1
    }

    fn upsert(&mut self, day: i32, values: &[(u8, Option<f64>, Merge)]) {
        let index = self.bucket(day);
        for &(id, value, merge) in values {
            let Some(value) = value else { continue };
            let at = self.column(id);
            let old = self.columns[at].1[index];
            let missing = old.is_nan();
            let new = match merge {
                Merge::Last => value,
                Merge::Mean(counts_id) => {
                    let counts_at = self.column(counts_id);
                    let mut n = self.columns[counts_at].1[index];
                    if n.is_nan() {
                        n = 0.0;
                    }
                    self.columns[counts_at].1[index] = n + 1.0;
                    if missing || n == 0.0 {
                        value
                    } else {
                        old + (value - old) / (n + 1.0)
                    }
                }
                _ if missing => value,
                Merge::Sum => old + value,
                Merge::Max => {
                    if value > old {
                        value
                    } else {
                        old
                    }
                }
            };
            self.columns[at].1[index] = new;
        }
    }

    fn keep_from(&mut self, first_day: i32) {
        let cut = self.days.partition_point(|&d| d < first_day);
        if cut > 0 {
            self.days.drain(..cut);
            for (_, col) in &mut self.columns {
                col.drain(..cut);
            }
        }
    }

    fn thin_to(&mut self, max_points: usize) {
        while self.days.len() > max_points {
            let older = self.days.len() - max_points / 2;
            let keep = |i: usize| i >= older || i.is_multiple_of(2);
            self.days = self
                .days
                .iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(_, d)| *d)
                .collect();
            for (_, col) in &mut self.columns {
                *col = col
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep(*i))
                    .map(|(_, v)| *v)
                    .collect();
            }
        }
    }
}

struct DiskHistory {
    key: String,
    name: String,
    kind: String,
    model: Option<String>,
    capacity_bytes: Option<u64>,
    first_seen: i64,
    last_seen: i64,
    series: Series,
}

struct BatteryHistory {
    design_capacity: f64,
    unit: String,
    first_seen: i64,
    last_seen: i64,
    series: Series,
}

struct DeviceRecord {
    device_id: String,
    kind: Option<String>,
    platform: Option<String>,
    last_seq: i64,
    last_collected_at: Option<i64>,
    disks: Vec<DiskHistory>, // a Python dict: insertion order
    battery: Option<BatteryHistory>,
    device: Series,
    device_key: Option<[u8; 32]>,
}

fn apply_disks(state: &mut DeviceRecord, report: &Report, at: i64, day: i32) {
    for disk in &report.disks {
        let key = disk
            .serial_hash
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(&disk.name);
        let index = match state.disks.iter().position(|d| d.key == key) {
            Some(index) => index,
            None => {
                state.disks.push(DiskHistory {
                    key: key.to_owned(),
                    name: disk.name.clone(),
                    kind: "unknown".to_owned(),
                    model: None,
                    capacity_bytes: None,
                    first_seen: at,
                    last_seen: at,
                    series: Series::default(),
                });
                state.disks.len() - 1
            }
        };
        let hist = &mut state.disks[index];
        if hist.name != disk.name {
            hist.name.clone_from(&disk.name);
        }
        if disk.kind != "unknown" && hist.kind != disk.kind {
            hist.kind.clone_from(&disk.kind);
        }
        if let Some(model) = disk.model.as_deref().filter(|m| !m.is_empty()) {
            if hist.model.as_deref() != Some(model) {
                hist.model = Some(model.to_owned());
            }
        }
        if let Some(capacity) = disk.capacity_bytes.filter(|c| *c != 0) {
            hist.capacity_bytes = Some(capacity);
        }
        if at > hist.last_seen {
            hist.last_seen = at;
        }
        let f = |v: Option<u64>| v.map(|v| v as f64);
        let readings = [
            f(disk.reallocated_sectors),
            f(disk.reported_uncorrect),
            f(disk.command_timeout),
            f(disk.current_pending_sectors),
            f(disk.offline_uncorrectable),
            f(disk.udma_crc_errors),
            f(disk.media_errors),
            f(disk.critical_warning),
            disk.available_spare_pct,
            disk.available_spare_threshold_pct,
            disk.percentage_used,
            f(disk.power_on_hours),
            disk.temperature_c,
            disk.smart_passed
                .map(|passed| if passed { 0.0 } else { 1.0 }),
        ];
        let series = &mut hist.series;
        let index = series.bucket(day);
        for (id, value) in DISK_COLUMNS.iter().zip(readings) {
            if let Some(value) = value {
                let at = series.column(*id);
                series.columns[at].1[index] = value;
            }
        }
        let newest = *series.days.last().expect("a bucket was just made");
        series.keep_from(newest - WINDOW_DAYS + 1);
    }
    let horizon = i64::from(day - WINDOW_DAYS);
    state
        .disks
        .retain(|h| i64::from(day_ordinal(h.last_seen)) > horizon);
    if state.disks.len() > MAX_DISKS {
        state.disks.sort_by_key(|d| std::cmp::Reverse(d.last_seen)); // stable, as Python's sorted(reverse=True)
        state.disks.truncate(MAX_DISKS);
    }
}

fn apply_battery(state: &mut DeviceRecord, report: &Report, at: i64, day: i32) {
    let Some(bat) = &report.battery else { return };
    let fresh = match &state.battery {
        Some(h) => h.design_capacity != bat.design_capacity || h.unit != bat.unit,
        None => true,
    };
    if fresh {
        state.battery = Some(BatteryHistory {
            design_capacity: bat.design_capacity,
            unit: bat.unit.clone(),
            first_seen: at,
            last_seen: at,
            series: Series::default(),
        });
    }
    let hist = state.battery.as_mut().expect("set above");
    if at > hist.last_seen {
        hist.last_seen = at;
    }
    hist.series.upsert(
        day,
        &[
            (
                HEALTH_RATIO,
                Some(bat.full_charge_capacity / bat.design_capacity),
                Merge::Mean(HEALTH_RATIO + 1),
            ),
            (
                FULL_CHARGE,
                Some(bat.full_charge_capacity),
                Merge::Mean(FULL_CHARGE + 1),
            ),
            (CYCLE_COUNT, bat.cycle_count.map(|c| c as f64), Merge::Last),
            (
                RUNTIME_FULL,
                bat.runtime_full_minutes,
                Merge::Mean(RUNTIME_FULL + 1),
            ),
        ],
    );
    hist.series.thin_to(MAX_BATTERY_POINTS);
}

fn apply_device(state: &mut DeviceRecord, report: &Report, day: i32) {
    let mut values: Vec<(u8, Option<f64>, Merge)> = Vec::with_capacity(10);
    values.push((REPORTS, Some(1.0), Merge::Sum));
    if let Some(s) = &report.stability {
        values.push((CRASHES, Some(s.crashes as f64), Merge::Sum));
        values.push((
            UNEXPECTED_SHUTDOWNS,
            Some(s.unexpected_shutdowns as f64),
            Merge::Sum,
        ));
        values.push((
            BOOT_DURATION,
            s.boot_duration_s,
            Merge::Mean(BOOT_DURATION + 1),
        ));
    }
    if let Some(t) = &report.thermal {
        let hottest = match (t.cpu_max_c, t.sensors_max_c) {
            (None, sensors) => sensors,
            (cpu, None) => cpu,
            (Some(cpu), Some(sensors)) => Some(if sensors > cpu { sensors } else { cpu }),
        };
        if let Some(hottest) = hottest {
            values.push((
                THERMAL_EXCURSIONS,
                Some(if hottest >= THERMAL_EXCURSION_C {
                    1.0
                } else {
                    0.0
                }),
                Merge::Sum,
            ));
            values.push((CPU_MAX_C, Some(hottest), Merge::Max));
        }
        values.push((
            THROTTLE_EVENTS,
            t.throttle_events.map(|v| v as f64),
            Merge::Max,
        ));
        if let Some(first) = t.fan_rpm.first() {
            let fastest = t.fan_rpm[1..]
                .iter()
                .fold(*first, |m, &v| if v > m { v } else { m });
            values.push((FAN_RPM_MAX, Some(fastest), Merge::Max));
        }
    }
    if let Some(m) = &report.memory {
        values.push((
            MEM_CORRECTABLE,
            m.correctable_errors.map(|v| v as f64),
            Merge::Last,
        ));
        values.push((
            MEM_UNCORRECTABLE,
            m.uncorrectable_errors.map(|v| v as f64),
            Merge::Last,
        ));
    }
    state.device.upsert(day, &values);
    let newest = *state.device.days.last().expect("a bucket was just made");
    state.device.keep_from(newest - WINDOW_DAYS + 1);
}

fn apply_report(state: &mut DeviceRecord, report: &Report, at: i64) {
    let day = day_ordinal(at);
    state.kind = Some(report.kind.clone());
    state.platform = Some(report.platform.clone());
    state.last_seq = report.seq as i64;
    if state.last_collected_at.is_none_or(|last| at > last) {
        state.last_collected_at = Some(at);
    }
    apply_disks(state, report, at, day);
    apply_battery(state, report, at, day);
    apply_device(state, report, day);
}

// -- the table value: models/state_codec.py version 3 -----------------------------------------------------

fn json_str(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("a string always serialises");
}

fn json_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

fn json_opt_time(out: &mut Vec<u8>, at: Option<i64>) {
    match at {
        Some(at) => write_time(out, at),
        None => out.extend_from_slice(b"null"),
    }
}

fn header(out: &mut Vec<u8>, r: &DeviceRecord) {
    out.extend_from_slice(b"{\"state\":{\"device_id\":");
    json_str(out, &r.device_id);
    out.extend_from_slice(b",\"kind\":");
    json_opt_str(out, r.kind.as_deref());
    out.extend_from_slice(b",\"platform\":");
    json_opt_str(out, r.platform.as_deref());
    let _ = write!(out, ",\"last_seq\":{},\"last_collected_at\":", r.last_seq);
    json_opt_time(out, r.last_collected_at);
    out.extend_from_slice(
        b",\"vendor\":null,\"model\":null,\"site\":null,\"department\":null,\"purchase_date\":null,\"warranty_end\":null,\"disks\":{",
    );
    for (i, disk) in r.disks.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json_str(out, &disk.key);
        out.extend_from_slice(b":{\"name\":");
        json_str(out, &disk.name);
        out.extend_from_slice(b",\"kind\":");
        json_str(out, &disk.kind);
        out.extend_from_slice(b",\"model\":");
        json_opt_str(out, disk.model.as_deref());
        match disk.capacity_bytes {
            Some(c) => {
                let _ = write!(out, ",\"capacity_bytes\":{c}");
            }
            None => out.extend_from_slice(b",\"capacity_bytes\":null"),
        }
        out.extend_from_slice(b",\"first_seen\":");
        write_time(out, disk.first_seen);
        out.extend_from_slice(b",\"last_seen\":");
        write_time(out, disk.last_seen);
        out.push(b'}');
    }
    out.extend_from_slice(b"},\"battery\":");
    match &r.battery {
        Some(b) => {
            let _ = write!(
                out,
                "{{\"design_capacity\":{:?},\"unit\":",
                b.design_capacity
            );
            json_str(out, &b.unit);
            out.extend_from_slice(b",\"first_seen\":");
            write_time(out, b.first_seen);
            out.extend_from_slice(b",\"last_seen\":");
            write_time(out, b.last_seen);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(
        b"},\"policies\":{},\"inventory_at\":null,\"agent_inventory_at\":null,\"scored_at\":null,\"mdm_reported_at\":null,\"device_key\":",
    );
    match &r.device_key {
        Some(key) => {
            out.push(b'"');
            for byte in key {
                let _ = write!(out, "{byte:02x}");
            }
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"pinned_fingerprint\":null,\"offered_key\":null}");
}

fn encode(out: &mut Vec<u8>, r: &DeviceRecord) -> Result<(), String> {
    out.clear();
    out.extend_from_slice(b"FPS\x03\0\0\0\0");
    header(out, r);
    let header_len = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&header_len.to_le_bytes());
    let mut series: Vec<&Series> = Vec::with_capacity(r.disks.len() + 2);
    series.push(&r.device);
    series.extend(r.disks.iter().map(|d| &d.series));
    if let Some(b) = &r.battery {
        series.push(&b.series);
    }
    out.push(series.len() as u8);
    for s in &series {
        out.extend_from_slice(&(s.days.len() as u16).to_le_bytes());
        out.push(s.columns.len() as u8);
    }
    for s in &series {
        for day in &s.days {
            out.extend_from_slice(&day.to_le_bytes());
        }
    }
    for s in &series {
        out.extend(s.columns.iter().map(|(id, _)| *id));
    }
    for s in &series {
        for (_, col) in &s.columns {
            for value in col {
                if !value.is_nan() && value.abs() >= 2f64.powi(1009) {
                    return Err("a history holds a value beyond 1e300".into());
                }
                out.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
    if out.len() > MAX_STATE_BYTES {
        return Err("over MAX_STATE_BYTES: the prototype does not thin".into());
    }
    Ok(())
}

// -- points: streams/points.py -----------------------------------------------------------------------------

enum Field {
    Int(u64),
    Float(f64),
}

/// Python's `repr` of a finite float: the shortest round-trip digits, an exponent below 1e-4 and from 1e16.
fn py_float(out: &mut Vec<u8>, value: f64) {
    let text = format!("{value:?}");
    match text.split_once('e') {
        None => out.extend_from_slice(text.as_bytes()),
        Some((mantissa, exponent)) => {
            let exponent: i32 = exponent.parse().expect("Debug writes an integer exponent");
            let mantissa = mantissa.strip_suffix(".0").unwrap_or(mantissa);
            let sign = if exponent < 0 { '-' } else { '+' };
            let _ = write!(out, "{mantissa}e{sign}{:02}", exponent.abs());
        }
    }
}

fn plain(text: &str) -> bool {
    !text.chars().any(|c| {
        let code = c as u32;
        code <= 0x20
            || (0x7f..=0x9f).contains(&code)
            || code == 0x2028
            || code == 0x2029
            || "\\,=".contains(c)
    })
}

/// `_escape_key` of a tag value; texts that need more than the plain path are out of the prototype's scope.
fn tag(out: &mut Vec<u8>, key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if !plain(value) {
        return Err(format!("tag {key}: escaping is outside the prototype"));
    }
    out.push(b',');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

fn fields(out: &mut Vec<u8>, sorted: &[(&str, Option<Field>)]) -> bool {
    let mut first = true;
    for (key, value) in sorted {
        let Some(value) = value else { continue };
        out.push(if first { b' ' } else { b',' });
        first = false;
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        match value {
            Field::Int(v) => {
                let _ = write!(out, "{v}i");
            }
            Field::Float(v) => py_float(out, *v),
        }
    }
    !first
}

fn int(v: Option<u64>) -> Option<Field> {
    v.map(Field::Int)
}

fn float(v: Option<f64>) -> Option<Field> {
    v.map(Field::Float)
}

fn report_lines(out: &mut Vec<u8>, report: &Report, at: i64) -> Result<(), String> {
    let nanos = at * 1000;
    let id = report.device_id.as_str();
    let (site, device_model) = ("unknown", "unknown");
    let (sys, stab, therm, mem) = (
        &report.system,
        &report.stability,
        &report.thermal,
        &report.memory,
    );
    out.extend_from_slice(b"device");
    tag(out, "device_id", id)?;
    tag(out, "device_model", device_model)?;
    tag(out, "kind", &report.kind)?;
    tag(out, "platform", &report.platform)?;
    tag(out, "site", site)?;
    let fan_rpm_max = therm.as_ref().and_then(|t| {
        let first = *t.fan_rpm.first()?;
        Some(
            t.fan_rpm[1..]
                .iter()
                .fold(first, |m, &v| if v > m { v } else { m }),
        )
    });
    fields(
        out,
        &[
            (
                "boot_duration_s",
                float(stab.as_ref().and_then(|s| s.boot_duration_s)),
            ),
            (
                "collector_errors",
                Some(Field::Int(report.collector_errors.len() as u64)),
            ),
            ("cpu_max_c", float(therm.as_ref().and_then(|t| t.cpu_max_c))),
            (
                "cpu_percent",
                float(sys.as_ref().and_then(|s| s.cpu_percent)),
            ),
            ("crashes", int(stab.as_ref().map(|s| s.crashes))),
            (
                "disk_free_bytes",
                int(sys.as_ref().and_then(|s| s.disk_free_bytes)),
            ),
            ("fan_rpm_max", float(fan_rpm_max)),
            (
                "mem_correctable",
                int(mem.as_ref().and_then(|m| m.correctable_errors)),
            ),
            (
                "mem_uncorrectable",
                int(mem.as_ref().and_then(|m| m.uncorrectable_errors)),
            ),
            (
                "memory_percent",
                float(sys.as_ref().and_then(|s| s.memory_percent)),
            ),
            (
                "sensors_max_c",
                float(therm.as_ref().and_then(|t| t.sensors_max_c)),
            ),
            (
                "throttle_events",
                int(therm.as_ref().and_then(|t| t.throttle_events)),
            ),
            (
                "unexpected_shutdowns",
                int(stab.as_ref().map(|s| s.unexpected_shutdowns)),
            ),
        ],
    );
    let _ = writeln!(out, " {nanos}");
    for disk in &report.disks {
        let start = out.len();
        out.extend_from_slice(b"disk");
        tag(out, "device_id", id)?;
        tag(out, "device_model", device_model)?;
        tag(
            out,
            "disk",
            disk.serial_hash
                .as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(&disk.name),
        )?;
        tag(out, "disk_kind", &disk.kind)?;
        tag(out, "site", site)?;
        let any = fields(
            out,
            &[
                ("available_spare_pct", float(disk.available_spare_pct)),
                ("command_timeout", int(disk.command_timeout)),
                ("critical_warning", int(disk.critical_warning)),
                ("current_pending_sectors", int(disk.current_pending_sectors)),
                ("media_errors", int(disk.media_errors)),
                ("num_err_log_entries", int(disk.num_err_log_entries)),
                ("offline_uncorrectable", int(disk.offline_uncorrectable)),
                ("percentage_used", float(disk.percentage_used)),
                ("power_on_hours", int(disk.power_on_hours)),
                ("reallocated_sectors", int(disk.reallocated_sectors)),
                ("reported_uncorrect", int(disk.reported_uncorrect)),
                (
                    "smart_failed",
                    int(disk.smart_passed.map(|p| u64::from(!p))),
                ),
                ("temperature_c", float(disk.temperature_c)),
                ("udma_crc_errors", int(disk.udma_crc_errors)),
                ("unsafe_shutdowns", int(disk.unsafe_shutdowns)),
            ],
        );
        if any {
            let _ = writeln!(out, " {nanos}");
        } else {
            out.truncate(start);
        }
    }
    if let Some(bat) = &report.battery {
        out.extend_from_slice(b"battery");
        tag(out, "device_id", id)?;
        tag(out, "device_model", device_model)?;
        tag(out, "kind", &report.kind)?;
        tag(out, "site", site)?;
        fields(
            out,
            &[
                ("cycle_count", int(bat.cycle_count)),
                ("design_capacity", Some(Field::Float(bat.design_capacity))),
                (
                    "full_charge_capacity",
                    Some(Field::Float(bat.full_charge_capacity)),
                ),
                (
                    "health_ratio",
                    Some(Field::Float(bat.full_charge_capacity / bat.design_capacity)),
                ),
                ("runtime_full_minutes", float(bat.runtime_full_minutes)),
                ("temperature_c", float(bat.temperature_c)),
            ],
        );
        let _ = writeln!(out, " {nanos}");
    }
    Ok(())
}

// -- the per-record path ------------------------------------------------------------------------------------

struct Input<'a> {
    key: &'a [u8],
    device_key: &'a [u8],
    mac: &'a [u8],
    value: &'a [u8],
}

#[derive(Default)]
struct Counts {
    processed: u64,
    dead_letters: u64,
}

struct Core {
    states: HashMap<String, DeviceRecord>,
    table: HashMap<String, Vec<u8>>,
    lines: Vec<u8>,
    scratch: Vec<u8>,
    counts: Counts,
    /// Stop each record after this stage (1 decode and check, 2 authenticate, 3 fold, 4 encode, 5 lines):
    /// the driver times each prefix of the path, and their differences are the stages' costs.
    stages: u8,
}

impl Core {
    fn one(&mut self, record: &Input<'_>, now: i64) -> Result<(), String> {
        let report: Report =
            serde_json::from_slice(record.value).map_err(|e| format!("schema_violation: {e}"))?;
        validate(&report)?;
        let at = parse_time(&report.collected_at)?;
        if record.key != report.device_id.as_bytes() {
            return Err("record key is not the device id".into());
        }
        if at > now + 300_000_000 {
            return Err("clock_skew".into());
        }
        if self.stages == 1 {
            return Ok(());
        }
        let known = self.states.contains_key(&report.device_id);
        if !record.device_key.is_empty() {
            let mut mac = Hmac::<Sha256>::new_from_slice(record.device_key)
                .expect("HMAC takes any key length");
            mac.update(record.value);
            if record.mac.is_empty() || mac.verify_slice(record.mac).is_err() {
                return Err("unauthenticated".into());
            }
        } else if report.source != "mdm" {
            return Err("unauthenticated: not the MDM bridge's".into());
        }
        if self.stages == 2 {
            return Ok(());
        }
        if !known {
            let device_key = <[u8; 32]>::try_from(record.device_key).ok();
            let fresh = DeviceRecord {
                device_id: report.device_id.clone(),
                kind: None,
                platform: None,
                last_seq: -1,
                last_collected_at: None,
                disks: Vec::new(),
                battery: None,
                device: Series::default(),
                device_key,
            };
            self.states.insert(report.device_id.clone(), fresh);
        }
        let state = self
            .states
            .get_mut(&report.device_id)
            .expect("inserted above");
        if known {
            let replayed = state.last_collected_at.is_none_or(|last| at <= last);
            if (report.seq as i64) <= state.last_seq && replayed {
                return Err("duplicate".into());
            }
        }
        apply_report(state, &report, at);
        if self.stages == 3 {
            return Ok(());
        }
        encode(&mut self.scratch, state)?;
        match self.table.get_mut(&report.device_id) {
            Some(value) => {
                value.clear();
                value.extend_from_slice(&self.scratch);
            }
            None => {
                self.table
                    .insert(report.device_id.clone(), self.scratch.clone());
            }
        }
        if self.stages == 4 {
            return Ok(());
        }
        report_lines(&mut self.lines, &report, at)
    }
}

fn cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn framed(data: &[u8], at: &mut usize) -> Option<std::ops::Range<usize>> {
    let size = u32::from_le_bytes(data.get(*at..*at + 4)?.try_into().ok()?) as usize;
    let start = *at + 4;
    *at = start + size;
    (*at <= data.len()).then_some(start..*at)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (input, table_out, lines_out, now, stages) = match args.as_slice() {
        [_, input, table, lines, now] => (input, table, lines, now, "5"),
        [_, input, table, lines, now, stages] => (input, table, lines, now, stages.as_str()),
        _ => {
            eprintln!("usage: probe RECORDS TABLE_OUT LINES_OUT NOW_MICROS [STAGES 1-5]");
            std::process::exit(2);
        }
    };
    let stages: u8 = stages.parse().expect("stages: 1 to 5");
    let data = std::fs::read(input).expect("records file");
    let now: i64 = now.parse().expect("now in microseconds");
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let parts: Option<Vec<_>> = (0..4).map(|_| framed(&data, &mut at)).collect();
        let parts = parts.expect("well-framed records");
        records.push(Input {
            key: &data[parts[0].clone()],
            device_key: &data[parts[1].clone()],
            mac: &data[parts[2].clone()],
            value: &data[parts[3].clone()],
        });
    }
    let mut core = Core {
        states: HashMap::new(),
        table: HashMap::new(),
        lines: Vec::with_capacity(records.len() * 700),
        scratch: Vec::with_capacity(16 * 1024),
        counts: Counts::default(),
        stages,
    };
    let started = cpu_seconds();
    for record in &records {
        match core.one(record, now) {
            Ok(()) => core.counts.processed += 1,
            Err(_) => core.counts.dead_letters += 1,
        }
    }
    let spent = cpu_seconds() - started;
    let mut table = std::io::BufWriter::new(std::fs::File::create(table_out).expect("table file"));
    let mut ids: Vec<&String> = core.table.keys().collect();
    ids.sort();
    for id in ids {
        let value = &core.table[id];
        for part in [id.as_bytes(), value.as_slice()] {
            table
                .write_all(&(part.len() as u32).to_le_bytes())
                .expect("write");
            table.write_all(part).expect("write");
        }
    }
    std::fs::write(lines_out, &core.lines).expect("lines file");
    println!(
        "{{\"records\":{},\"processed\":{},\"dead_letters\":{},\"cpu_s\":{spent}}}",
        records.len(),
        core.counts.processed,
        core.counts.dead_letters
    );
}
