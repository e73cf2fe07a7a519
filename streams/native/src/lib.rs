//! The stream worker's per-report fast path, without a Python object per field.
//!
//! For a routine report of a device whose stored state this worker wrote or read itself, it does
//! what `Processor` does between the Kafka record and the scorers: decode and check the report,
//! authenticate it, fold it into the stored state, encode the new table value, write the report's
//! points as line protocol and tell whether the report scores its device (the scorers then read the
//! value, decoded in Python). Whenever the Python path would do anything else (a dead letter, a
//! count other than an accepted report, a state to thin, a text to escape), or meets anything this
//! module does not read exactly as Python does, it returns None and the Python path handles the
//! record from the start: the fast path has no effect of its own.
//!
//! The module also evaluates a gradient-boosted forest in `models/forest.py`'s flat form (`Forest`)
//! and computes Kafka's partitioning hash (`murmur2`).

use std::panic::AssertUnwindSafe;

use hmac::{Hmac, Mac};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sha2::Sha256;

mod codec;
mod forest;
mod lines;
mod report;
mod state;

use codec::Stored;
use report::{day_ordinal, disk_key, is_event, parse_time, validate, Report};
use state::{apply_report, MAX_DISKS};

/// `contract.codec.MAX_MESSAGE_BYTES`.
const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// What a report became: the table value, its points' lines, its event time (UTC microseconds) and
/// whether it scores its device (`NOT_DUE`, `DUE` or `FIRST_OF_DAY`).
type Folded<'py> = (Bound<'py, PyBytes>, Vec<Bound<'py, PyBytes>>, i64, u8);

/// The report leaves its device's scoring as it is.
const NOT_DUE: u8 = 0;
/// The report scores its device (`Processor._due`); the value's `scored_at` is the report's time.
const DUE: u8 = 1;
/// The report scores its device for the first time on the report's day (the feature log's daily record).
const FIRST_OF_DAY: u8 = 2;

/// The fast path, bound to the worker's `[streams]` limits (microseconds).
#[pyclass(frozen, module = "fleetpulse.streams._native")]
struct Core {
    max_clock_skew: i64,
    max_backdate: i64,
    rescore_interval: i64,
    event_rescore_gap: i64,
    max_seq_jump: i64,
    max_first_report_age: Option<i64>,
}

struct Outcome {
    value: Vec<u8>,
    lines: Vec<u8>,
    ends: Vec<usize>,
    at: i64,
    due: u8,
}

impl Core {
    /// `Processor._due`: score on a later day, a health event past the gap, or the interval passed;
    /// the first scoring of the report's day when the last one was on another day.
    fn due(&self, scored_at: Option<i64>, report: &Report, at: i64) -> u8 {
        let Some(scored_at) = scored_at else {
            return FIRST_OF_DAY;
        };
        let elapsed = at - scored_at;
        let (day, last_day) = (day_ordinal(at), day_ordinal(scored_at));
        let due = (is_event(report) && elapsed >= self.event_rescore_gap)
            || day > last_day
            || elapsed >= self.rescore_interval;
        if !due {
            NOT_DUE
        } else if day != last_day {
            FIRST_OF_DAY
        } else {
            DUE
        }
    }

    /// `Processor._seq_bound` for a device without reports: `max_seq_jump - 1`, or up to the report's
    /// clock in Unix ms plus the skew, computed in the same floating point as Python's `timestamp()`.
    fn first_seq_bound(&self, at: i64) -> i64 {
        let clock_ms = (at as f64 / 1e6 * 1000.0) as i64;
        let skew_ms = (self.max_clock_skew as f64 / 1e6 * 1000.0) as i64;
        (self.max_seq_jump - 1).max(clock_ms.saturating_add(skew_ms))
    }

    fn run(
        &self,
        key: &[u8],
        stored: &[u8],
        value: &[u8],
        mac: Option<&[u8]>,
        mobile: bool,
        now: i64,
    ) -> Option<Outcome> {
        if value.len() > MAX_MESSAGE_BYTES {
            return None;
        }
        let report: Report = serde_json::from_slice(value).ok()?;
        validate(&report).ok()?;
        let at = parse_time(&report.collected_at)?;
        if key != report.device_id.as_bytes() || at > now.checked_add(self.max_clock_skew)? {
            return None;
        }
        let mut record = Stored::decode(stored)?;
        if record.device_id() != report.device_id {
            return None;
        }
        if mobile {
            if report.source != "mdm" || record.agent_keyed() {
                return None;
            }
        } else {
            let mut check = Hmac::<Sha256>::new_from_slice(record.device_key.as_deref()?).ok()?;
            check.update(value);
            check.verify_slice(mac?).ok()?;
        }
        let seq = i64::try_from(report.seq).ok()?;
        match record.state.last_collected_at {
            // the next report in sequence, not older than the backdate bound
            Some(last_at) => {
                if record.state.last_seq < 0
                    || seq != record.state.last_seq + 1
                    || at < last_at - self.max_backdate
                {
                    return None;
                }
            }
            // the device's first report: within the first report's age and `Processor._seq_bound`
            None => {
                if record.state.last_seq != -1
                    || self.max_first_report_age.is_some_and(|age| at < now - age)
                    || seq > self.first_seq_bound(at)
                {
                    return None;
                }
            }
        }
        // of a device IT's register knows
        if !record.inventory_joined() {
            return None;
        }
        let due = self.due(record.scored_at, &report, at);
        if due != NOT_DUE {
            record.scored_at = Some(at);
        }
        let tracked = &record.state.disks;
        if tracked.len() + report.disks.len() > MAX_DISKS
            && report
                .disks
                .iter()
                .any(|d| !tracked.iter().any(|t| t.key == disk_key(d)))
        {
            return None; // `admitted_disks` decides whether a new disk finds room
        }
        apply_report(&mut record.state, &report, at);
        let encoded = record.encode(mobile.then_some(at))?;
        let (site, model) = record.facts();
        let mut lines = Vec::with_capacity(1024);
        let mut ends = Vec::with_capacity(4);
        lines::report_lines(&mut lines, &mut ends, &report, at, site, model)?;
        Some(Outcome {
            value: encoded,
            lines,
            ends,
            at,
            due,
        })
    }
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (max_clock_skew, max_backdate, rescore_interval, event_rescore_gap, max_seq_jump, max_first_report_age))]
    fn new(
        max_clock_skew: i64,
        max_backdate: i64,
        rescore_interval: i64,
        event_rescore_gap: i64,
        max_seq_jump: i64,
        max_first_report_age: Option<i64>,
    ) -> Self {
        Core {
            max_clock_skew,
            max_backdate,
            rescore_interval,
            event_rescore_gap,
            max_seq_jump,
            max_first_report_age,
        }
    }

    /// Fold the report `value` (record key `key`, MAC header `mac`; `mobile`: read from the MDM
    /// bridge's topic) into the table value `stored`, at receive time `now` (UTC microseconds).
    /// Returns the new table value, the report's line-protocol lines, its event time and whether it
    /// scores the device, or None when the Python path must handle the record.
    #[pyo3(signature = (key, stored, value, mac, mobile, now))]
    #[allow(clippy::too_many_arguments)]
    fn fold<'py>(
        &self,
        py: Python<'py>,
        key: &[u8],
        stored: &[u8],
        value: &[u8],
        mac: Option<&[u8]>,
        mobile: bool,
        now: i64,
    ) -> Option<Folded<'py>> {
        // a panic (a bug here, never expected) hands the record to the Python path instead of raising
        // PanicException, which no `except Exception` in the worker would catch
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.run(key, stored, value, mac, mobile, now)
        }));
        let outcome = run.ok().flatten()?;
        let mut start = 0;
        let lines = outcome
            .ends
            .iter()
            .map(|&end| {
                let line = PyBytes::new(py, &outcome.lines[start..end]);
                start = end;
                line
            })
            .collect();
        Some((
            PyBytes::new(py, &outcome.value),
            lines,
            outcome.at,
            outcome.due,
        ))
    }
}

/// Kafka's MurmurHash2 of `data` (`partitioning.murmur2`): the default partitioner's hash, which the
/// worker computes for every record it produces, most feature-log keys for the first time.
#[pyfunction]
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5BD1_E995;
    let mut h: u32 = 0x9747_B28C ^ data.len() as u32;
    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]).wrapping_mul(M);
        k = (k ^ (k >> 24)).wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        if tail.len() == 3 {
            h ^= u32::from(tail[2]) << 16;
        }
        if tail.len() >= 2 {
            h ^= u32::from(tail[1]) << 8;
        }
        h = (h ^ u32::from(tail[0])).wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Core>()?;
    m.add_class::<forest::Forest>()?;
    m.add_function(wrap_pyfunction!(murmur2, m)?)?;
    m.add("NOT_DUE", NOT_DUE)?;
    m.add("DUE", DUE)?;
    m.add("FIRST_OF_DAY", FIRST_OF_DAY)?;
    Ok(())
}
