//! The table value (`models/state_codec.py` version 3): a record's JSON header, then its histories.
//!
//! Read strictly: a value with anything this module does not write itself (another version, a field
//! it does not know, a number or time spelled otherwise) is left to the Python path, which reads
//! every version and resets what it cannot read. The header is kept as parsed (key order and number
//! spellings included) and only the fields a report changes are replaced.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::report::{
    parse_time, push_int, push_padded, write_time, BATTERY_UNITS, DEVICE_KINDS, DISK_KINDS,
    PLATFORMS,
};
use crate::state::{BatteryHistory, DiskHistory, Series, State, COLUMNS};

pub const MAX_STATE_BYTES: usize = 64 * 1024;
const MAGIC: &[u8; 3] = b"FPS";
const VERSION: u8 = 3;
const MAX_DAY: i32 = 3_652_059; // date.max.toordinal()
const MISSING_BITS: u64 = 0x7ff8_0000_0000_0000; // float("nan"): the one NaN a history holds

type Raw<'a> = &'a RawValue;
type Text<'a> = Cow<'a, str>;

/// `DeviceRecord`'s header, as `header_json` writes it. Fields a report does not change are kept as
/// their stored JSON text; an unknown field (a newer version's) leaves the value to the Python path.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordHeader<'a> {
    #[serde(borrow)]
    state: StateHeader<'a>,
    #[serde(borrow)]
    policies: Raw<'a>,
    #[serde(borrow)]
    inventory_at: Option<Raw<'a>>,
    #[serde(borrow)]
    agent_inventory_at: Option<Raw<'a>>,
    #[serde(borrow)]
    scored_at: Option<Text<'a>>,
    #[serde(borrow)]
    mdm_reported_at: Option<Text<'a>>,
    #[serde(borrow)]
    device_key: Option<Text<'a>>,
    #[serde(borrow)]
    pinned_fingerprint: Option<Raw<'a>>,
    #[serde(borrow)]
    offered_key: Option<Raw<'a>>,
    #[serde(borrow, default)]
    enrolled_at: Option<Raw<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateHeader<'a> {
    #[serde(borrow)]
    device_id: Text<'a>,
    #[serde(borrow)]
    kind: Option<Text<'a>>,
    #[serde(borrow)]
    platform: Option<Text<'a>>,
    last_seq: i64,
    #[serde(borrow)]
    last_collected_at: Option<Text<'a>>,
    #[serde(borrow)]
    vendor: Option<Raw<'a>>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    #[serde(borrow)]
    site: Option<Text<'a>>,
    #[serde(borrow)]
    department: Option<Raw<'a>>,
    #[serde(borrow)]
    purchase_date: Option<Raw<'a>>,
    #[serde(borrow)]
    warranty_end: Option<Raw<'a>>,
    #[serde(borrow)]
    disks: Disks<'a>,
    #[serde(borrow)]
    battery: Option<BatteryHeader<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskHeader<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    model: Option<Text<'a>>,
    capacity_bytes: Option<u64>,
    #[serde(borrow)]
    first_seen: Text<'a>,
    #[serde(borrow)]
    last_seen: Text<'a>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatteryHeader<'a> {
    design_capacity: f64,
    #[serde(borrow)]
    unit: Text<'a>,
    #[serde(borrow)]
    first_seen: Text<'a>,
    #[serde(borrow)]
    last_seen: Text<'a>,
}

/// The disks object in its stored order (a Python dict's insertion order).
struct Disks<'a>(Vec<(Text<'a>, DiskHeader<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Disks<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for InOrder<'a> {
            type Value = Disks<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of disks")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Disks<'a>, M::Error> {
                let mut disks: Vec<(Text<'a>, DiskHeader<'a>)> = Vec::new();
                while let Some((key, disk)) = map.next_entry::<Text<'de>, DiskHeader<'de>>()? {
                    if disks.iter().any(|(k, _)| *k == key) {
                        return Err(serde::de::Error::custom("a disk key twice"));
                    }
                    disks.push((key, disk));
                }
                Ok(Disks(disks))
            }
        }
        deserializer.deserialize_map(InOrder(std::marker::PhantomData))
    }
}

/// A stored record: the state a report changes, what the checks read, and the rest as stored.
pub struct Stored<'a> {
    header: RecordHeader<'a>,
    pub state: State,
    /// The enrolled report key (`device_key`, 64 hex digits), decoded.
    pub device_key: Option<Vec<u8>>,
    pub scored_at: Option<i64>,
    mdm_reported_at: Option<i64>,
}

fn one_of(text: &str, allowed: &[&str]) -> Option<String> {
    allowed.contains(&text).then(|| text.to_owned())
}

fn is_null(raw: &Option<Raw<'_>>) -> bool {
    raw.is_none_or(|r| r.get() == "null")
}

fn hex_key(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() != 64
        || !bytes
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return None;
    }
    let nibble = |b: u8| {
        if b.is_ascii_digit() {
            b - b'0'
        } else {
            b - b'a' + 10
        }
    };
    Some(
        bytes
            .chunks(2)
            .map(|pair| nibble(pair[0]) << 4 | nibble(pair[1]))
            .collect(),
    )
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
        .map(|h| {
            (
                usize::from(u16::from_le_bytes([h[0], h[1]])),
                usize::from(h[2]),
            )
        })
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

impl<'a> Stored<'a> {
    /// Read a stored value; None: the Python path reads it.
    pub fn decode(raw: &'a [u8]) -> Option<Stored<'a>> {
        if raw.get(..3)? != MAGIC || *raw.get(3)? != VERSION {
            return None;
        }
        let header_len = u32::from_le_bytes(raw.get(4..8)?.try_into().ok()?) as usize;
        let count_at = 8usize.checked_add(header_len)?;
        let header: RecordHeader<'a> = serde_json::from_slice(raw.get(8..count_at)?).ok()?;
        let mut series = histories(raw, count_at)?.into_iter();
        let device = series.next()?;
        let h = &header.state;
        let mut disks = Vec::with_capacity(h.disks.0.len());
        for (key, d) in &h.disks.0 {
            disks.push(DiskHistory {
                key: key.to_string(),
                name: d.name.to_string(),
                kind: one_of(&d.kind, DISK_KINDS)?,
                model: d.model.as_deref().map(str::to_owned),
                capacity_bytes: d.capacity_bytes,
                first_seen: parse_time(&d.first_seen)?,
                last_seen: parse_time(&d.last_seen)?,
                series: series.next()?,
            });
        }
        let battery = match &h.battery {
            None => None,
            Some(b) if b.design_capacity.is_finite() && b.design_capacity > 0.0 => {
                Some(BatteryHistory {
                    design_capacity: b.design_capacity,
                    unit: one_of(&b.unit, BATTERY_UNITS)?,
                    first_seen: parse_time(&b.first_seen)?,
                    last_seen: parse_time(&b.last_seen)?,
                    series: series.next()?,
                })
            }
            Some(_) => return None,
        };
        if series.next().is_some() {
            return None;
        }
        let kind = match &h.kind {
            Some(k) => Some(one_of(k, DEVICE_KINDS)?),
            None => None,
        };
        let platform = match &h.platform {
            Some(p) => Some(one_of(p, PLATFORMS)?),
            None => None,
        };
        let last_collected_at = match &h.last_collected_at {
            Some(t) => Some(parse_time(t)?),
            None => None,
        };
        let state = State {
            kind,
            platform,
            last_seq: h.last_seq,
            last_collected_at,
            disks,
            battery,
            device,
        };
        let device_key = match &header.device_key {
            Some(text) => Some(hex_key(text)?),
            None => None,
        };
        let scored_at = match &header.scored_at {
            Some(t) => Some(parse_time(t)?),
            None => None,
        };
        // the policies are the Python path's: kept as stored, but only an object
        header.policies.get().starts_with('{').then_some(())?;
        let mdm_reported_at = match &header.mdm_reported_at {
            Some(t) => Some(parse_time(t)?),
            None => None,
        };
        Some(Stored {
            header,
            state,
            device_key,
            scored_at,
            mdm_reported_at,
        })
    }

    pub fn device_id(&self) -> &str {
        &self.header.state.device_id
    }

    /// Any agent key material (enrolled, pinned or offered): the MDM bridge may not write the device.
    pub fn agent_keyed(&self) -> bool {
        self.device_key.is_some()
            || !is_null(&self.header.pinned_fingerprint)
            || !is_null(&self.header.offered_key)
    }

    /// Whether IT's register record joined (`inventory_at`): a device without it is counted unknown.
    pub fn inventory_joined(&self) -> bool {
        !is_null(&self.header.inventory_at)
    }

    /// Site and model tags (`DeviceRecord.asset_facts()`): set once any inventory joined.
    pub fn facts<'s>(&'s self) -> (&'s str, &'s str) {
        let joined = self.inventory_joined() || !is_null(&self.header.agent_inventory_at);
        let fact = |text: &'s Option<Text<'a>>| match text.as_deref() {
            Some(text) if joined && !text.is_empty() => text,
            _ => "unknown",
        };
        (
            fact(&self.header.state.site),
            fact(&self.header.state.model),
        )
    }

    /// The value after a report (`mdm_reported_at`: a report the MDM bridge sent): the header's changed
    /// fields written anew, the rest as stored. None: over `MAX_STATE_BYTES` (the Python path thins it).
    pub fn encode(&self, mdm_reported_at: Option<i64>) -> Option<Vec<u8>> {
        let h = &self.header;
        let s = &h.state;
        let state = &self.state;
        let mut out = Vec::with_capacity(8192);
        out.extend_from_slice(b"FPS\x03\0\0\0\0{\"state\":{\"device_id\":");
        json_str(&mut out, &s.device_id);
        out.extend_from_slice(b",\"kind\":");
        json_opt_str(&mut out, state.kind.as_deref());
        out.extend_from_slice(b",\"platform\":");
        json_opt_str(&mut out, state.platform.as_deref());
        out.extend_from_slice(b",\"last_seq\":");
        push_int(&mut out, state.last_seq);
        out.extend_from_slice(b",\"last_collected_at\":");
        json_opt_time(&mut out, state.last_collected_at);
        out.extend_from_slice(b",\"vendor\":");
        raw_or_null(&mut out, &s.vendor);
        out.extend_from_slice(b",\"model\":");
        json_opt_str(&mut out, s.model.as_deref());
        out.extend_from_slice(b",\"site\":");
        json_opt_str(&mut out, s.site.as_deref());
        out.extend_from_slice(b",\"department\":");
        raw_or_null(&mut out, &s.department);
        out.extend_from_slice(b",\"purchase_date\":");
        raw_or_null(&mut out, &s.purchase_date);
        out.extend_from_slice(b",\"warranty_end\":");
        raw_or_null(&mut out, &s.warranty_end);
        out.extend_from_slice(b",\"disks\":{");
        for (i, disk) in state.disks.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            json_str(&mut out, &disk.key);
            out.extend_from_slice(b":{\"name\":");
            json_str(&mut out, &disk.name);
            out.extend_from_slice(b",\"kind\":");
            json_str(&mut out, &disk.kind);
            out.extend_from_slice(b",\"model\":");
            json_opt_str(&mut out, disk.model.as_deref());
            match disk.capacity_bytes {
                Some(c) => {
                    out.extend_from_slice(b",\"capacity_bytes\":");
                    push_padded(&mut out, c, 1);
                }
                None => out.extend_from_slice(b",\"capacity_bytes\":null"),
            }
            out.extend_from_slice(b",\"first_seen\":");
            write_time(&mut out, disk.first_seen);
            out.extend_from_slice(b",\"last_seen\":");
            write_time(&mut out, disk.last_seen);
            out.push(b'}');
        }
        out.extend_from_slice(b"},\"battery\":");
        match &state.battery {
            Some(b) => {
                out.extend_from_slice(b"{\"design_capacity\":");
                json_float(&mut out, b.design_capacity)?;
                out.extend_from_slice(b",\"unit\":");
                json_str(&mut out, &b.unit);
                out.extend_from_slice(b",\"first_seen\":");
                write_time(&mut out, b.first_seen);
                out.extend_from_slice(b",\"last_seen\":");
                write_time(&mut out, b.last_seen);
                out.push(b'}');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"},\"policies\":");
        out.extend_from_slice(h.policies.get().as_bytes());
        out.extend_from_slice(b",\"inventory_at\":");
        raw_or_null(&mut out, &h.inventory_at);
        out.extend_from_slice(b",\"agent_inventory_at\":");
        raw_or_null(&mut out, &h.agent_inventory_at);
        out.extend_from_slice(b",\"scored_at\":");
        json_opt_time(&mut out, self.scored_at);
        out.extend_from_slice(b",\"mdm_reported_at\":");
        json_opt_time(&mut out, mdm_reported_at.or(self.mdm_reported_at));
        out.extend_from_slice(b",\"device_key\":");
        json_opt_str(&mut out, h.device_key.as_deref());
        out.extend_from_slice(b",\"pinned_fingerprint\":");
        raw_or_null(&mut out, &h.pinned_fingerprint);
        out.extend_from_slice(b",\"offered_key\":");
        raw_or_null(&mut out, &h.offered_key);
        if !is_null(&h.enrolled_at) {
            out.extend_from_slice(b",\"enrolled_at\":");
            raw_or_null(&mut out, &h.enrolled_at);
        }
        out.push(b'}');
        let header_len = u32::try_from(out.len() - 8).ok()?;
        out[4..8].copy_from_slice(&header_len.to_le_bytes());
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
                    let bits = if value.is_nan() {
                        MISSING_BITS
                    } else {
                        value.to_bits()
                    };
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

fn raw_or_null(out: &mut Vec<u8>, raw: &Option<Raw<'_>>) {
    match raw {
        Some(raw) => out.extend_from_slice(raw.get().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
}

/// A finite float as orjson writes it (the shortest text that reads back to it).
fn json_float(out: &mut Vec<u8>, value: f64) -> Option<()> {
    value.is_finite().then_some(())?;
    serde_json::to_writer(&mut *out, &value).ok()
}
