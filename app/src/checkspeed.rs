// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq check-bandwidth`: the counter check's throughput beside a memory copy of the same
//! buffer, per format and channel count. The check must not bound a capture: it has to run at
//! least at memory-copy speed (a read() capture copies every byte once).

use std::hint::black_box;
use std::time::{Duration, Instant};

use vdaq_proto::format::SampleFormat;

use crate::verify::CounterChecker;

/// One measurement: a format and channel count, throughputs in MB/s (10^6 bytes per second).
#[derive(Debug, Clone, PartialEq)]
pub struct Speed {
    pub format: SampleFormat,
    pub channels: usize,
    /// The check as captures run it (fast path, period by period).
    pub check_mb_s: f64,
    /// The frame-by-frame check (every sample decoded: the check before the fast path).
    pub exact_mb_s: f64,
    /// A copy of the same buffer.
    pub memcpy_mb_s: f64,
}

/// Counter frames from `first`, about `bytes` long (whole frames).
pub fn counter_buffer(format: SampleFormat, channels: usize, first: u64, bytes: usize) -> Vec<u8> {
    let w = format.width();
    let frames = (bytes / (w * channels)).max(1);
    let mut out = vec![0u8; frames * w * channels];
    let mut sample = [0u8; 8];
    for (i, frame) in out.chunks_exact_mut(w * channels).enumerate() {
        format.encode_counter(first + i as u64, &mut sample[..w]);
        for s in frame.chunks_exact_mut(w) {
            s.copy_from_slice(&sample[..w]);
        }
    }
    out
}

/// Bytes per second of `f` over `bytes`, repeated for about `seconds` (at least twice).
fn rate(bytes: usize, seconds: f64, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut passes = 0u64;
    while passes < 2 || start.elapsed() < Duration::from_secs_f64(seconds) {
        f();
        passes += 1;
    }
    (bytes as u64 * passes) as f64 / start.elapsed().as_secs_f64() / 1e6
}

/// Measures every format with each of `channel_counts`, over buffers of about `bytes`
/// checked in periods of `period_frames`; `Err` when a check is not clean (a bug).
pub fn measure(
    bytes: usize,
    seconds: f64,
    period_frames: usize,
    channel_counts: &[usize],
) -> Result<Vec<Speed>, String> {
    let mut out = Vec::new();
    for format in SampleFormat::ALL {
        for &channels in channel_counts {
            let buf = counter_buffer(format, channels, 1000, bytes);
            let period = period_frames.max(1) * format.width() * channels;
            let mut clean = true;
            let mut run = |exact: bool| {
                let mut c = CounterChecker::new(format, channels);
                for p in black_box(&buf).chunks(period) {
                    if exact {
                        c.check_exact(p);
                    } else {
                        c.check(p);
                    }
                }
                let r = c.finish(0);
                clean &= r.is_clean() && r.frames as usize * format.width() * channels == buf.len();
            };
            let check_mb_s = rate(buf.len(), seconds, || run(false));
            let exact_mb_s = rate(buf.len(), seconds, || run(true));
            if !clean {
                return Err(format!("{format:?} x{channels}: the check of a clean buffer failed"));
            }
            let mut dst = vec![0u8; buf.len()];
            let memcpy_mb_s = rate(buf.len(), seconds, || {
                dst.copy_from_slice(black_box(&buf));
                black_box(&mut dst);
            });
            out.push(Speed { format, channels, check_mb_s, exact_mb_s, memcpy_mb_s });
        }
    }
    Ok(out)
}

/// The measurements as a table.
pub fn table(speeds: &[Speed]) -> String {
    let mut out = format!(
        "{:<8} {:>8} {:>12} {:>12} {:>12} {:>10}\n",
        "format", "channels", "check MB/s", "exact MB/s", "memcpy MB/s", "check/copy"
    );
    for s in speeds {
        out += &format!(
            "{:<8} {:>8} {:>12.0} {:>12.0} {:>12.0} {:>10.2}\n",
            s.format.name(),
            s.channels,
            s.check_mb_s,
            s.exact_mb_s,
            s.memcpy_mb_s,
            s.check_mb_s / s.memcpy_mb_s.max(1e-9)
        );
    }
    out
}

/// The measurements as one line of JSON.
pub fn to_json(speeds: &[Speed], bytes: usize, period_frames: usize) -> String {
    let rows: Vec<_> = speeds
        .iter()
        .map(|s| {
            serde_json::json!({
                "format": s.format.name(), "channels": s.channels,
                "check_mb_s": s.check_mb_s, "exact_mb_s": s.exact_mb_s,
                "memcpy_mb_s": s.memcpy_mb_s,
                "check_over_memcpy": s.check_mb_s / s.memcpy_mb_s.max(1e-9),
            })
        })
        .collect();
    serde_json::json!({"buffer_bytes": bytes, "period_frames": period_frames, "results": rows})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_measurement_is_clean_and_positive() {
        let speeds = measure(1 << 14, 0.0, 100, &[1, 3]).unwrap_or_default();
        assert_eq!(speeds.len(), 10);
        assert!(speeds.iter().all(|s| s.check_mb_s > 0.0 && s.memcpy_mb_s > 0.0));
        assert!(table(&speeds).lines().count() == 11);
    }
}
