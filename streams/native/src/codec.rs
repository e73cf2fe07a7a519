//! The table value (`models/state_codec.py` version 3): a record's JSON header, then its histories.
//!
//! Read strictly: a value with anything this module does not write itself (another version, a field
//! it does not know, a number or time spelled otherwise) is left to the Python path, which reads
//! every version and resets what it cannot read. The header is kept as parsed (key order and number
//! spellings included) and only the fields a report changes are replaced.

use serde_json::{Map, Number, Value};

use crate::report::{parse_time, write_time};
use crate::state::{BatteryHistory, DiskHistory, Series, State, COLUMNS};

pub const MAX_STATE_BYTES: usize = 64 * 1024;
const MAGIC: &[u8; 3] = b"FPS";
const VERSION: u8 = 3;
const MAX_DAY: i32 = 3_652_059; // date.max.toordinal()
const MISSING_BITS: u64 = 0x7ff8_0000_0000_0000; // float("nan"): the one NaN a history holds
const RECORD_KEYS: [&str; 10] = [
    "state",
    "policies",
    "inventory_at",
    "agent_inventory_at",
    "scored_at",
    "mdm_reported_at",
    "device_key",
    "pinned_fingerprint",
    "offered_key",
    "enrolled_at",
];
const STATE_KEYS: [&str; 13] = [
    "device_id",
    "kind",
    "platform",
    "last_seq",
    "last_collected_at",
    "vendor",
    "model",
    "site",
    "department",
    "purchase_date",
    "warranty_end",
    "disks",
    "battery",
];
const DISK_KEYS: [&str; 6] = ["name", "kind", "model", "capacity_bytes", "first_seen", "last_seen"];
const BATTERY_KEYS: [&str; 4] = ["design_capacity", "unit", "first_seen", "last_seen"];

/// A stored record: its header as parsed, the state a report changes, and what the checks read.
pub struct Stored {
    header: Map<String, Value>,
    pub state: State,
    pub device_id: String,
    /// The enrolled report key (`device_key`, 64 hex digits), decoded.
    pub device_key: Option<Vec<u8>>,
    /// Any agent key material (enrolled, pinned or offered): the MDM bridge may not write the device.
    pub agent_keyed: bool,
    pub inventory_at: bool,
    /// `DeviceRecord.asset_facts()`: site and model tag the points only once an inventory joined.
    pub joined: bool,
    pub scored_at: Option<i64>,
    pub site: Option<String>,
    pub model: Option<String>,
}

fn u32_at(raw: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(raw.get(at..at + 4)?.try_into().ok()?))
}

fn only_keys(map: &Map<String, Value>, allowed: &[&str]) -> Option<()> {
    map.keys().all(|k| allowed.contains(&k.as_str())).then_some(())
}

fn opt_str(map: &Map<String, Value>, key: &str) -> Option<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    }
}

fn opt_time(map: &Map<String, Value>, key: &str) -> Option<Option<i64>> {
    match map.get(key) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(parse_time(s)?)),
        Some(_) => None,
    }
}

fn time(map: &Map<String, Value>, key: &str) -> Option<i64> {
    opt_time(map, key)?
}

fn is_set(map: &Map<String, Value>, key: &str) -> bool {
    !matches!(map.get(key), None | Some(Value::Null))
}

fn enum_value(map: &Map<String, Value>, key: &str, allowed: &[&str]) -> Option<Option<String>> {
    let value = opt_str(map, key)?;
    match &value {
        Some(v) if !allowed.contains(&v.as_str()) => None,
        _ => Some(value),
    }
}

fn hex_key(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 || !bytes.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) {
        return None;
    }
    let nibble = |b: u8| if b.is_ascii_digit() { b - b'0' } else { b - b'a' + 10 };
    Some(bytes.chunks(2).map(|pair| nibble(pair[0]) << 4 | nibble(pair[1])).collect())
}

fn disk(key: &str, value: &Value) -> Option<DiskHistory> {
    let map = value.as_object()?;
    only_keys(map, &DISK_KEYS)?;
    let capacity_bytes = match map.get("capacity_bytes") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64()?),
        Some(_) => return None,
    };
    Some(DiskHistory {
        key: key.to_owned(),
        name: map.get("name")?.as_str()?.to_owned(),
        kind: enum_value(map, "kind", &["hdd", "ssd", "nvme", "unknown"])?.unwrap_or_else(|| "unknown".into()),
        model: opt_str(map, "model")?,
        capacity_bytes,
        first_seen: time(map, "first_seen")?,
        last_seen: time(map, "last_seen")?,
        series: Series::default(),
    })
}

fn battery(value: &Value) -> Option<BatteryHistory> {
    let map = value.as_object()?;
    only_keys(map, &BATTERY_KEYS)?;
    let design_capacity = map.get("design_capacity")?.as_f64()?;
    let unit = enum_value(map, "unit", &["mWh", "mAh"])?.unwrap_or_else(|| "mWh".into());
    (design_capacity.is_finite() && design_capacity > 0.0).then_some(())?;
    Some(BatteryHistory {
        design_capacity,
        unit,
        first_seen: time(map, "first_seen")?,
        last_seen: time(map, "last_seen")?,
        series: Series::default(),
    })
}

/// The histories of a version-3 value after its header, in stored order; None for anything
/// `state_codec.unpack` would refuse (or not read back exactly).
fn histories(raw: &[u8], count_at: usize) -> Option<Vec<Series>> {
    let count = usize::from(*raw.get(count_at)?);
    let heads_at = count_at + 1;
    let days_at = heads_at + 3 * count;
    let heads = raw.get(heads_at..days_at)?;
    let shapes: Vec<(usize, usize)> = heads
        .chunks(3)
        .map(|h| (usize::from(u16::from_le_bytes([h[0], h[1]])), usize::from(h[2])))
        .collect();
    let ids_at = days_at + 4 * shapes.iter().map(|s| s.0).sum::<usize>();
    let values_at = ids_at + shapes.iter().map(|s| s.1).sum::<usize>();
    let end = values_at + 8 * shapes.iter().map(|s| s.0 * s.1).sum::<usize>();
    if end != raw.len() {
        return None;
    }
    let (mut day_at, mut id_at, mut value_at) = (days_at, ids_at, values_at);
    let mut out = Vec::with_capacity(count);
    for (n_days, n_columns) in shapes {
        let days: Vec<i32> = raw[day_at..day_at + 4 * n_days]
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        day_at += 4 * n_days;
        if days.first().is_some_and(|&d| d <= 0) || days.last().is_some_and(|&d| d > MAX_DAY) {
            return None;
        }
        if days.windows(2).any(|w| w[0] >= w[1]) {
            return None;
        }
        let ids = &raw[id_at..id_at + n_columns];
        id_at += n_columns;
        let mut columns: Vec<(u8, Vec<f64>)> = Vec::with_capacity(n_columns);
        for &id in ids {
            if id >= COLUMNS || columns.iter().any(|(c, _)| *c == id) {
                return None;
            }
            let mut values = Vec::with_capacity(n_days);
            for c in raw[value_at..value_at + 8 * n_days].chunks(8) {
                let bits = u64::from_le_bytes(c.try_into().ok()?);
                let value = f64::from_bits(bits);
                // a NaN other than MISSING, an infinity, or a value at or past 2**1009 (high byte 0x7f/0xff)
                if (bits >> 56) & 0x7f == 0x7f && bits != MISSING_BITS {
                    return None;
                }
                values.push(value);
            }
            value_at += 8 * n_days;
            columns.push((id, values));
        }
        out.push(Series { days, columns });
    }
    Some(out)
}

impl Stored {
    /// Read a stored value; None: the Python path reads it.
    pub fn decode(raw: &[u8]) -> Option<Stored> {
        if raw.get(..3)? != MAGIC || *raw.get(3)? != VERSION {
            return None;
        }
        let header_len = u32_at(raw, 4)? as usize;
        let count_at = 8usize.checked_add(header_len)?;
        let header: Map<String, Value> = serde_json::from_slice(raw.get(8..count_at)?).ok()?;
        only_keys(&header, &RECORD_KEYS)?;
        let state_map = header.get("state")?.as_object()?;
        only_keys(state_map, &STATE_KEYS)?;
        let mut series = histories(raw, count_at)?.into_iter();
        let device = series.next()?;
        let mut disks = Vec::new();
        for (key, value) in state_map.get("disks")?.as_object()? {
            let mut history = disk(key, value)?;
            history.series = series.next()?;
            disks.push(history);
        }
        let battery = match state_map.get("battery") {
            None | Some(Value::Null) => None,
            Some(value) => {
                let mut history = battery(value)?;
                history.series = series.next()?;
                Some(history)
            }
        };
        if series.next().is_some() {
            return None;
        }
        let last_seq = state_map.get("last_seq")?.as_i64()?;
        let state = State {
            kind: enum_value(state_map, "kind", &["laptop", "desktop", "phone", "tablet"])?,
            platform: enum_value(state_map, "platform", &["linux", "windows", "macos", "android", "ios"])?,
            last_seq,
            last_collected_at: opt_time(state_map, "last_collected_at")?,
            disks,
            battery,
            device,
        };
        let device_id = state_map.get("device_id")?.as_str()?.to_owned();
        let site = opt_str(state_map, "site")?;
        let model = opt_str(state_map, "model")?;
        let device_key = match opt_str(&header, "device_key")? {
            Some(text) => Some(hex_key(&text)?),
            None => None,
        };
        let agent_keyed =
            device_key.is_some() || is_set(&header, "pinned_fingerprint") || is_set(&header, "offered_key");
        let inventory_at = is_set(&header, "inventory_at");
        let joined = inventory_at || is_set(&header, "agent_inventory_at");
        let scored_at = opt_time(&header, "scored_at")?;
        // the policies are the Python path's: kept as stored, but only an object of objects
        header.get("policies")?.as_object()?.values().all(Value::is_object).then_some(())?;
        Some(Stored {
            header,
            state,
            device_id,
            device_key,
            agent_keyed,
            inventory_at,
            joined,
            scored_at,
            site,
            model,
        })
    }

    /// The value after a report: the header's changed fields replaced, the histories packed.
    /// None: over `MAX_STATE_BYTES` (the Python path thins the record) or a value it cannot store.
    pub fn encode(&mut self, mdm_reported_at: Option<i64>) -> Option<Vec<u8>> {
        let state = &self.state;
        let state_map = self.header.get_mut("state")?.as_object_mut()?;
        state_map.insert("kind".into(), state.kind.clone().map_or(Value::Null, Value::String));
        state_map.insert("platform".into(), state.platform.clone().map_or(Value::Null, Value::String));
        state_map.insert("last_seq".into(), Value::Number(Number::from(state.last_seq)));
        state_map.insert("last_collected_at".into(), state.last_collected_at.map_or(Value::Null, time_value));
        let mut disks = Map::with_capacity(state.disks.len());
        for d in &state.disks {
            let mut disk = Map::with_capacity(DISK_KEYS.len());
            disk.insert("name".into(), Value::String(d.name.clone()));
            disk.insert("kind".into(), Value::String(d.kind.clone()));
            disk.insert("model".into(), d.model.clone().map_or(Value::Null, Value::String));
            disk.insert("capacity_bytes".into(), d.capacity_bytes.map_or(Value::Null, |c| Value::Number(c.into())));
            disk.insert("first_seen".into(), time_value(d.first_seen));
            disk.insert("last_seen".into(), time_value(d.last_seen));
            disks.insert(d.key.clone(), Value::Object(disk));
        }
        state_map.insert("disks".into(), Value::Object(disks));
        let battery = match &state.battery {
            None => Value::Null,
            Some(b) => {
                let mut map = Map::with_capacity(BATTERY_KEYS.len());
                map.insert("design_capacity".into(), Value::Number(Number::from_f64(b.design_capacity)?));
                map.insert("unit".into(), Value::String(b.unit.clone()));
                map.insert("first_seen".into(), time_value(b.first_seen));
                map.insert("last_seen".into(), time_value(b.last_seen));
                Value::Object(map)
            }
        };
        state_map.insert("battery".into(), battery);
        if let Some(at) = mdm_reported_at {
            self.header.insert("mdm_reported_at".into(), time_value(at));
        }
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(b"FPS\x03\0\0\0\0");
        serde_json::to_writer(&mut out, &self.header).ok()?;
        let header_len = u32::try_from(out.len() - 8).ok()?;
        out[4..8].copy_from_slice(&header_len.to_le_bytes());
        let state = &self.state;
        let mut series: Vec<&Series> = Vec::with_capacity(state.disks.len() + 2);
        series.push(&state.device);
        series.extend(state.disks.iter().map(|d| &d.series));
        if let Some(b) = &state.battery {
            series.push(&b.series);
        }
        out.push(u8::try_from(series.len()).ok()?);
        for s in &series {
            out.extend_from_slice(&u16::try_from(s.days.len()).ok()?.to_le_bytes());
            out.push(u8::try_from(s.columns.len()).ok()?);
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
                    let bits = if value.is_nan() { MISSING_BITS } else { value.to_bits() };
                    if (bits >> 56) & 0x7f == 0x7f && bits != MISSING_BITS {
                        return None;
                    }
                    out.extend_from_slice(&bits.to_le_bytes());
                }
            }
        }
        (out.len() <= MAX_STATE_BYTES).then_some(out)
    }
}

fn time_value(at: i64) -> Value {
    let mut quoted = Vec::with_capacity(32);
    write_time(&mut quoted, at);
    Value::String(String::from_utf8_lossy(&quoted[1..quoted.len() - 1]).into_owned())
}
