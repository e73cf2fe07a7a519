//! A report's TSDB points as InfluxDB line protocol (`streams/points.py`), one line per point.
//!
//! Texts are escaped as `Point.to_line_protocol` escapes them; a tag value with a backslash leaves the
//! report to the Python path.

use std::io::Write as _;

use crate::report::{disk_key, push_int, push_padded, Report};

enum Field {
    Int(u64),
    Float(f64),
}

/// Python's `repr` of a finite float: the shortest round-trip digits, an exponent below 1e-4 and from 1e16.
fn py_float(out: &mut Vec<u8>, value: f64) {
    let mut buffer = [0u8; 64]; // `{:?}` of an f64 takes at most 24 bytes: no allocation per value
    let mut cursor = std::io::Cursor::new(&mut buffer[..]);
    let owned;
    let text = if write!(cursor, "{value:?}").is_ok() {
        let written = cursor.position() as usize;
        std::str::from_utf8(&buffer[..written]).expect("Debug writes a float in ASCII")
    } else {
        owned = format!("{value:?}");
        owned.as_str()
    };
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

/// Characters `points.stored_text` replaces with U+FFFD: the line protocol cannot carry them identically.
fn unrepresentable(c: char) -> bool {
    let code = c as u32;
    code < 0x20 || (0x7f..=0x9f).contains(&code) || code == 0x2028 || code == 0x2029
}

/// A tag as `Point.to_line_protocol` writes it (`_escape_key`); None for a value with a backslash,
/// whose reading differs between servers (the Python path replaces the ambiguous ones).
fn tag(out: &mut Vec<u8>, key: &str, value: &str) -> Option<()> {
    if value.is_empty() {
        return Some(());
    }
    if value.contains('\\') {
        return None;
    }
    out.push(b',');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    if value
        .bytes()
        .all(|b| b > b' ' && b < 0x7f && b != b',' && b != b'=')
    {
        out.extend_from_slice(value.as_bytes()); // printable ASCII with nothing to escape: most tags
        return Some(());
    }
    for c in value.chars() {
        match c {
            ',' | '=' | ' ' => {
                out.push(b'\\');
                out.push(c as u8);
            }
            c if unrepresentable(c) => out.extend_from_slice("\u{fffd}".as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    Some(())
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
                push_padded(out, *v, 1);
                out.push(b'i');
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

/// The lines of `report_points(report, facts)`, appended to `out`; `ends` gets each line's end.
pub fn report_lines(
    out: &mut Vec<u8>,
    ends: &mut Vec<usize>,
    report: &Report,
    at: i64,
    site: &str,
    device_model: &str,
) -> Option<()> {
    let nanos = at * 1000;
    let id = report.device_id.as_str();
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
    out.push(b' ');
    push_int(out, nanos);
    ends.push(out.len());
    for disk in &report.disks {
        let start = out.len();
        out.extend_from_slice(b"disk");
        tag(out, "device_id", id)?;
        tag(out, "device_model", device_model)?;
        tag(out, "disk", disk_key(disk))?;
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
            out.push(b' ');
            push_int(out, nanos);
            ends.push(out.len());
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
        out.push(b' ');
        push_int(out, nanos);
        ends.push(out.len());
    }
    Some(())
}
