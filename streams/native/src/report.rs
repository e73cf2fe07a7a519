//! The contract's health report (`fleetpulse/contract/v1.py`), read without Python objects.
//!
//! Accepts a subset of what pydantic accepts: every field, bound and validator of `HealthReport`, with
//! serde's strict JSON types (no string or float for an integer, no number for a time). Anything it
//! refuses is handed back to the Python path, which gives the record its dead letter and reason.

use serde::Deserialize;
use std::io::Write as _;

pub const COUNT_MAX: u64 = 1 << 48;
/// The contract's enums (`DeviceKind`, `Platform`, `DiskKind`, a battery's unit), as the report and
/// the stored state spell them.
pub const DEVICE_KINDS: &[&str] = &["laptop", "desktop", "phone", "tablet"];
pub const PLATFORMS: &[&str] = &["linux", "windows", "macos", "android", "ios"];
pub const DISK_KINDS: &[&str] = &["hdd", "ssd", "nvme", "unknown"];
pub const BATTERY_UNITS: &[&str] = &["mWh", "mAh"];
const BYTES_MAX: u64 = 1 << 60;
const EARLIEST_MICROS: i64 = 946_684_800_000_000; // 2000-01-01
const LATEST_MICROS: i64 = 4_102_444_800_000_000; // 2100-01-01
const ORDINAL_OF_EPOCH: i64 = 719_163; // date(1970, 1, 1).toordinal()

// -- the contract's health report (the fields and checks of fleetpulse/contract/v1.py) -------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    #[serde(default = "one")]
    pub schema_version: u8,
    pub device_id: String,
    pub seq: u64,
    pub collected_at: String,
    #[serde(default = "agent")]
    pub source: String,
    pub kind: String,
    pub platform: String,
    #[serde(default = "agent_version")]
    pub agent_version: String,
    #[serde(default)]
    pub disks: Vec<Disk>,
    pub battery: Option<Battery>,
    pub thermal: Option<Thermal>,
    pub memory: Option<Memory>,
    pub stability: Option<Stability>,
    pub system: Option<System>,
    #[serde(default)]
    pub collector_errors: Vec<CollectorError>,
}

fn one() -> u8 {
    1
}
fn agent_version() -> String {
    "0".to_owned()
}
fn agent() -> String {
    "agent".to_owned()
}
fn unknown() -> String {
    "unknown".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    pub name: String,
    #[serde(default = "unknown")]
    pub kind: String,
    pub model: Option<String>,
    pub serial_hash: Option<String>,
    pub firmware: Option<String>,
    pub capacity_bytes: Option<u64>,
    pub smart_passed: Option<bool>,
    pub power_on_hours: Option<u64>,
    pub temperature_c: Option<f64>,
    pub reallocated_sectors: Option<u64>,
    pub reported_uncorrect: Option<u64>,
    pub command_timeout: Option<u64>,
    pub current_pending_sectors: Option<u64>,
    pub offline_uncorrectable: Option<u64>,
    pub udma_crc_errors: Option<u64>,
    pub critical_warning: Option<u64>,
    pub available_spare_pct: Option<f64>,
    pub available_spare_threshold_pct: Option<f64>,
    pub percentage_used: Option<f64>,
    pub media_errors: Option<u64>,
    pub num_err_log_entries: Option<u64>,
    pub unsafe_shutdowns: Option<u64>,
    pub free_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Battery {
    pub design_capacity: f64,
    pub full_charge_capacity: f64,
    #[serde(default = "mwh")]
    pub unit: String,
    pub cycle_count: Option<u64>,
    pub temperature_c: Option<f64>,
    pub runtime_full_minutes: Option<f64>,
}

fn mwh() -> String {
    "mWh".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thermal {
    pub cpu_max_c: Option<f64>,
    pub sensors_max_c: Option<f64>,
    #[serde(default)]
    pub fan_rpm: Vec<f64>,
    pub throttle_events: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub correctable_errors: Option<u64>,
    pub uncorrectable_errors: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stability {
    #[serde(default)]
    pub crashes: u64,
    #[serde(default)]
    pub unexpected_shutdowns: u64,
    pub boot_duration_s: Option<f64>,
    pub uptime_s: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct System {
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub disk_free_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorError {
    pub collector: String,
    pub error: String,
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

pub fn validate(report: &Report) -> Check {
    if report.schema_version != 1 {
        return Err("schema_version: 1".into());
    }
    if !device_id_ok(&report.device_id) {
        return Err("device_id: pattern".into());
    }
    count("seq", Some(report.seq), COUNT_MAX)?;
    one_of("source", &report.source, &["agent", "mdm", "simulator"])?;
    one_of("kind", &report.kind, DEVICE_KINDS)?;
    one_of("platform", &report.platform, PLATFORMS)?;
    short("agent_version", &report.agent_version)?;
    if report.disks.len() > 32 || report.collector_errors.len() > 64 {
        return Err("disks or collector_errors: too many".into());
    }
    for disk in &report.disks {
        short("disk.name", &disk.name)?;
        one_of("disk.kind", &disk.kind, DISK_KINDS)?;
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
        one_of("unit", &bat.unit, BATTERY_UNITS)?;
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

pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
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

/// `YYYY-MM-DDTHH:MM:SS[.ffffff]` in UTC (`Z` or `+00:00`), as agents and the MDM bridge write
/// `collected_at` and the state header stores times; UTC microseconds. Other spellings pydantic reads
/// (other offsets and separators, timestamps as numbers) are left to the Python path.
pub fn parse_time(text: &str) -> Option<i64> {
    let t = text.as_bytes();
    let (y, mo, d) = (digits(t, 0, 4)?, digits(t, 5, 2)?, digits(t, 8, 2)?);
    let (h, mi, s) = (digits(t, 11, 2)?, digits(t, 14, 2)?, digits(t, 17, 2)?);
    if t.len() <= 19
        || t[4] != b'-'
        || t[7] != b'-'
        || t[10] != b'T'
        || t[13] != b':'
        || t[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
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
        return None;
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
            return None;
        }
        micros = digits(t, start, n)? * 10i64.pow((6 - n) as u32);
    }
    if !matches!(&t[at..], b"Z" | b"+00:00") {
        return None;
    }
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    let utc = seconds * 1_000_000 + micros;
    (EARLIEST_MICROS..LATEST_MICROS)
        .contains(&utc)
        .then_some(utc)
}

pub fn day_ordinal(micros: i64) -> i32 {
    (micros.div_euclid(86_400_000_000) + ORDINAL_OF_EPOCH) as i32
}

/// orjson's `OPT_UTC_Z` spelling, as the Python header writes datetimes.
pub fn write_time(out: &mut Vec<u8>, micros: i64) {
    let (days, rest) = (
        micros.div_euclid(86_400_000_000),
        micros.rem_euclid(86_400_000_000),
    );
    let (y, m, d) = civil_from_days(days);
    let (secs, frac) = (rest / 1_000_000, rest % 1_000_000);
    out.push(b'"');
    match u64::try_from(y) {
        Ok(year) if year <= 9999 => push_padded(out, year, 4),
        _ => {
            let _ = write!(out, "{y:04}");
        }
    }
    out.push(b'-');
    push_padded(out, m as u64, 2);
    out.push(b'-');
    push_padded(out, d as u64, 2);
    out.push(b'T');
    // `rest` is within one day: every part is small and not negative
    push_padded(out, (secs / 3600) as u64, 2);
    out.push(b':');
    push_padded(out, (secs / 60 % 60) as u64, 2);
    out.push(b':');
    push_padded(out, (secs % 60) as u64, 2);
    if frac != 0 {
        out.push(b'.');
        push_padded(out, frac as u64, 6);
    }
    out.extend_from_slice(b"Z\"");
}

/// `value` in decimal, as Python's `str(int)` writes it, without `fmt`'s machinery (a hot path).
pub fn push_int(out: &mut Vec<u8>, value: i64) {
    if value < 0 {
        out.push(b'-');
    }
    push_padded(out, value.unsigned_abs(), 1);
}

/// `value` in decimal with leading zeros to `width` digits (at most 20).
pub fn push_padded(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut start = digits.len();
    while value > 0 {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    out.extend_from_slice(&digits[start.min(digits.len() - width.clamp(1, 20))..]);
}

/// `HealthReport.priority is Priority.EVENT`: a report carrying a health event.
pub fn is_event(report: &Report) -> bool {
    if let Some(s) = &report.stability {
        if s.crashes != 0 || s.unexpected_shutdowns != 0 {
            return true;
        }
    }
    for disk in &report.disks {
        if disk.smart_passed == Some(false) || disk.critical_warning.unwrap_or(0) != 0 {
            return true;
        }
        let counters = [
            disk.reallocated_sectors,
            disk.current_pending_sectors,
            disk.offline_uncorrectable,
            disk.reported_uncorrect,
            disk.media_errors,
        ];
        if counters.iter().any(|v| v.unwrap_or(0) > 0) {
            return true;
        }
    }
    report
        .memory
        .as_ref()
        .is_some_and(|m| m.uncorrectable_errors.unwrap_or(0) != 0)
}

/// The key a disk's history is stored under (`models.state.disk_key`).
pub fn disk_key(disk: &Disk) -> &str {
    disk.serial_hash
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(&disk.name)
}
