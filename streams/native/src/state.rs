//! A device's state (`models/state.py`): daily histories as typed columns and the fold of one report.

use crate::report::{day_ordinal, disk_key, Report};

pub const WINDOW_DAYS: i32 = 35;
pub const MAX_DISKS: usize = 8;
const MAX_BATTERY_POINTS: usize = 240;
const THERMAL_EXCURSION_C: f64 = 95.0;

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
/// How many columns `state_codec.COLUMN_NAMES` names: a stored id at or past it is unknown.
pub const COLUMNS: u8 = 32;

/// `DailySeries`: day ordinals and columns in insertion order (a Python dict's order), NaN for a missing day.
#[derive(Default)]
pub struct Series {
    pub days: Vec<i32>,
    pub columns: Vec<(u8, Vec<f64>)>,
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

pub struct DiskHistory {
    pub key: String,
    pub name: String,
    pub kind: String,
    pub model: Option<String>,
    pub capacity_bytes: Option<u64>,
    pub first_seen: i64,
    pub last_seen: i64,
    pub series: Series,
}

pub struct BatteryHistory {
    pub design_capacity: f64,
    pub unit: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub series: Series,
}

/// The fields of `DeviceState` a report changes; the header keeps the rest as stored.
pub struct State {
    pub kind: Option<String>,
    pub platform: Option<String>,
    pub last_seq: i64,
    pub last_collected_at: Option<i64>,
    pub disks: Vec<DiskHistory>, // a Python dict: insertion order
    pub battery: Option<BatteryHistory>,
    pub device: Series,
}

fn apply_disks(state: &mut State, report: &Report, at: i64, day: i32) {
    for disk in &report.disks {
        let key = disk_key(disk);
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

fn apply_battery(state: &mut State, report: &Report, at: i64, day: i32) {
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

fn apply_device(state: &mut State, report: &Report, day: i32) {
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

pub fn apply_report(state: &mut State, report: &Report, at: i64) {
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
