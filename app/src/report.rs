// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The app's JSON outputs as serde types: one shape for the stream parameters (the format by
//! name, as `info` and `capture --json` both give it) and the driver's statistics.

use serde::Serialize;
use vdaq_proto::format::SampleFormat;
use vdaq_proto::uapi::{Params, Stats};

/// A format code's name (`s16`, ...), or `unknown-N` for a code the app does not know.
pub fn format_name(code: u32) -> String {
    u8::try_from(code)
        .ok()
        .and_then(SampleFormat::from_wire)
        .map_or_else(|| format!("unknown-{code}"), |f| f.name().to_string())
}

/// Stream parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamsJson {
    pub rate: u32,
    pub channels: u32,
    /// The format's name: `u8`, `s16`, `s32`, `float`, `float64`.
    pub format: String,
    pub period_bytes: u32,
    pub periods: u32,
    /// Bytes per frame.
    pub frame_bytes: u64,
}

impl From<&Params> for ParamsJson {
    fn from(p: &Params) -> Self {
        let width =
            u8::try_from(p.format).ok().and_then(SampleFormat::from_wire).map_or(0, |f| f.width());
        ParamsJson {
            rate: p.rate,
            channels: p.channels,
            format: format_name(p.format),
            period_bytes: p.period_bytes,
            periods: p.periods,
            frame_bytes: width as u64 * u64::from(p.channels),
        }
    }
}

/// The driver's statistics (`VDAQ_IOC_STATS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverStats {
    pub periods: u64,
    pub frames: u64,
    pub frames_lost: u64,
    pub xruns: u64,
    pub rx_interrupts: u64,
    pub rx_interrupts_with_data: u64,
    pub signals_sent: u64,
    pub periods_read: u64,
    pub stalls: u64,
    pub stall_signals: u64,
    pub error_periods: u64,
}

impl From<&Stats> for DriverStats {
    fn from(d: &Stats) -> Self {
        DriverStats {
            periods: d.periods,
            frames: d.frames,
            frames_lost: d.frames_lost,
            xruns: d.xruns,
            rx_interrupts: d.rx_interrupts,
            rx_interrupts_with_data: d.rx_interrupts_with_data,
            signals_sent: d.signals_sent,
            periods_read: d.periods_read,
            stalls: d.stalls,
            stall_signals: d.stall_signals,
            error_periods: d.error_periods,
        }
    }
}

/// `vdaq info`.
#[derive(Debug, Clone, Serialize)]
pub struct InfoJson {
    pub streams: u32,
    pub stream: u32,
    pub formats: Vec<&'static str>,
    pub rates: Vec<u32>,
    pub channels_min: u32,
    pub channels_max: u32,
    pub max_periods: u32,
    pub max_period_bytes: u32,
    pub params: ParamsJson,
    pub started: bool,
}

/// Latency percentiles (microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

/// Period timing against the nominal period.
#[derive(Debug, Clone, Serialize)]
pub struct JitterJson {
    pub nominal_us: u64,
    pub max_us: u64,
    pub log2_us_histogram: Vec<u64>,
}

/// The counter check's result.
#[derive(Debug, Clone, Serialize)]
pub struct CounterJson {
    pub frames: u64,
    pub first: Option<u64>,
    pub gaps: u64,
    pub missing_frames: u64,
    pub reorders: u64,
    pub corrupt_frames: u64,
    pub restarts: u64,
    pub restarts_allowed: u64,
    pub trailing_bytes: usize,
    pub clean: bool,
}

impl From<&crate::verify::CounterReport> for CounterJson {
    fn from(r: &crate::verify::CounterReport) -> Self {
        CounterJson {
            frames: r.frames,
            first: r.first,
            gaps: r.gaps,
            missing_frames: r.missing_frames,
            reorders: r.reorders,
            corrupt_frames: r.corrupt_frames,
            restarts: r.restarts,
            restarts_allowed: r.restarts_allowed,
            trailing_bytes: r.trailing_bytes,
            clean: r.is_clean(),
        }
    }
}

/// The output file of a capture.
#[derive(Debug, Clone, Serialize)]
pub struct FileJson {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub bytes: u64,
    pub frames: u64,
    pub frames_dropped: u64,
}

/// `vdaq capture --json`.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureJson {
    pub device: String,
    pub mode: &'static str,
    pub error: Option<String>,
    pub interrupted: bool,
    pub signal: String,
    pub signals: u64,
    pub error_signals: u64,
    pub signals_with_wrong_fd: u64,
    pub handler_runs_without_data: u64,
    pub periods: u64,
    pub frames: u64,
    pub frames_wanted: u64,
    pub frames_lost_reported: u64,
    pub error_periods: u64,
    pub loss_mismatches: u64,
    pub unreported_frames: u64,
    pub bad_records: u64,
    pub read_errors: u64,
    pub unread_at_stop: u64,
    pub stream_seconds: f64,
    pub rate_hz: f64,
    pub wall_seconds: f64,
    pub latency_us: Percentiles,
    pub latency_log2_us_histogram: Vec<u64>,
    pub period_jitter: JitterJson,
    pub verified: bool,
    pub counter: CounterJson,
    pub driver: DriverStats,
    pub irq_delta: Option<u64>,
    pub params: ParamsJson,
    pub file: Option<FileJson>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_give_the_format_by_name() {
        let p = Params {
            rate: 48_000,
            channels: 2,
            format: u32::from(SampleFormat::S32.wire_code()),
            period_bytes: 4096,
            periods: 16,
            ..Default::default()
        };
        let v = serde_json::to_value(ParamsJson::from(&p)).unwrap();
        assert_eq!(v["format"], "s32");
        assert_eq!(v["frame_bytes"], 8);
        assert_eq!(v["rate"], 48_000);
        assert_eq!(format_name(999), "unknown-999");
    }
}
