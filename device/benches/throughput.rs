// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Throughput of the device alone, through the host harness: free-run mode, counter source,
//! 48 kHz stereo S16 stream, period sizes from 4 KiB to 256 KiB, 8 buffers in flight. Printed
//! next to a host write-stream baseline measured in the same run (copying the same amount of
//! data into a 64 MiB region of memory), with the ratio. Run: `cargo bench -p vdaq-device --bench throughput`.
//!
//! The harness plays a driver that polls the used ring and gives each batch of completed
//! buffers back with one kick: the rate is the device's. A driver that sleeps until signalled
//! (as a guest's interrupt handler does) is measured too: on a machine where waking a thread
//! costs tens of microseconds (a small VM), that round trip, not the device, sets its rate.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use support::{caps, Harness};
use vdaq_device::source::{ChannelSignal, StreamSignal, Units, Waveform};
use vdaq_device::stream::StreamCaps;
use vdaq_proto::virtio_snd::code;

/// How long each measurement runs (VDAQ_BENCH_RUN_MS, default 700 ms).
fn run_time() -> Duration {
    let ms = std::env::var("VDAQ_BENCH_RUN_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(700);
    Duration::from_millis(ms)
}
const IN_FLIGHT: usize = 8;

/// Measurements of the device per period size (VDAQ_BENCH_REPEATS, default 3): the median is
/// reported, with the spread.
fn repeats() -> usize {
    std::env::var("VDAQ_BENCH_REPEATS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1)
}

/// How the harness, as the driver, learns of completed buffers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// Polls the used ring.
    Polling,
    /// Sleeps on the call eventfd until the device signals.
    Sleeping,
}

/// `runs` sorted: (median, min, max).
fn spread(mut runs: Vec<f64>) -> (f64, f64, f64) {
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], runs[0], runs[runs.len() - 1])
}

/// Period sizes to measure, in KiB (VDAQ_BENCH_PERIODS="64,256"; default 4, 16, 64 and 256).
/// When set, the per-source table is skipped: for profiling one period size.
fn periods_kib() -> Option<Vec<u32>> {
    let v = std::env::var("VDAQ_BENCH_PERIODS").ok()?;
    Some(v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
}

fn device_bytes_per_s(period: u32, driver: Driver) -> f64 {
    device_bytes_per_s_with(period, StreamSignal::default(), driver)
}

fn device_bytes_per_s_with(period: u32, signal: StreamSignal, driver: Driver) -> f64 {
    let mut h = Harness::start(vec![StreamCaps { signal, ..caps(false) }], false);
    assert_eq!(h.set_params(0, 48_000, 2, period * IN_FLIGHT as u32, period, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    let bufs: Vec<_> = (0..IN_FLIGHT).map(|_| h.post_rx(0, period, false)).collect();
    let by_head: std::collections::HashMap<u16, usize> =
        bufs.iter().enumerate().map(|(i, b)| (b.head, i)).collect();
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    // As a driver does: every buffer completed by the time it wakes goes back at once, with
    // one kick for the batch (virtqueue_add per buffer, then virtqueue_kick).
    h.queues[3].quiet = true;
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < run_time() {
        let used = match driver {
            Driver::Sleeping => h.wait_rx(1, Duration::from_millis(100)),
            Driver::Polling => h.poll_rx(Duration::from_millis(100)),
        };
        for u in &used {
            bytes += u64::from(u.len - 8);
            // Heads are reused in order by the harness's free list: find the buffer by head.
            let b = bufs[*by_head.get(&u.id).unwrap_or(&0)];
            h.repost_rx(&b);
        }
        if !used.is_empty() {
            h.queues[3].kick_again();
        }
    }
    let rate = bytes as f64 / start.elapsed().as_secs_f64();
    h.finish().expect("clean disconnect");
    rate
}

fn host_write_bytes_per_s(period: usize) -> f64 {
    // A destination far larger than the caches: a stream of writes to memory.
    host_write_into(period, (64 << 20) / period)
}

/// Copies of a cached `period`-byte source into `slots` destination slots in turn, in bytes/s.
/// With `slots` = the buffers in flight, the destination is the device's own working set (the
/// harness reuses its buffers, which stay in the caches at every size measured here).
fn host_write_into(period: usize, slots: usize) -> f64 {
    let src: Vec<u8> = (0..period).map(|i| i as u8).collect();
    let mut dst = vec![0u8; period * slots];
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut i = 0;
    while start.elapsed() < run_time() {
        for _ in 0..64 {
            let at = (i % slots) * period;
            dst[at..at + period].copy_from_slice(black_box(&src));
            i += 1;
            bytes += period as u64;
        }
        black_box(&dst);
    }
    bytes as f64 / start.elapsed().as_secs_f64()
}

/// Prints the tables; with VDAQ_BENCH_JSON=FILE, also writes them as JSON (ci/bench.py's P5).
fn main() {
    let mut periods = Vec::new();
    let mut sources_json = Vec::new();
    println!("vdaq device throughput (free-run, counter source, {IN_FLIGHT} buffers in flight)");
    println!("host write: copies into 64 MiB; same set: into {IN_FLIGHT} period-sized slots");
    println!(
        "device: median of {} runs (min-max), polling driver; sleeping: a driver woken by the \
         device's signal",
        repeats()
    );
    println!(
        "{:>10} {:>12} {:>19} {:>14} {:>16} {:>8} {:>14} {:>8}",
        "period",
        "device MB/s",
        "(min-max)",
        "sleeping MB/s",
        "host write MB/s",
        "ratio",
        "same set MB/s",
        "ratio"
    );
    let only = periods_kib();
    for kib in only.clone().unwrap_or_else(|| vec![4, 16, 64, 256]) {
        let period = kib * 1024;
        let runs: Vec<f64> =
            (0..repeats()).map(|_| device_bytes_per_s(period, Driver::Polling)).collect();
        let sleeping: Vec<f64> =
            (0..repeats()).map(|_| device_bytes_per_s(period, Driver::Sleeping)).collect();
        let (dev, min, max) = spread(runs.clone());
        let (sleep, _, _) = spread(sleeping.clone());
        let host = host_write_bytes_per_s(period as usize);
        let same = host_write_into(period as usize, IN_FLIGHT);
        println!(
            "{:>7} KiB {:>12.1} {:>19} {:>14.1} {:>16.1} {:>8.3} {:>14.1} {:>8.3}",
            kib,
            dev / 1e6,
            format!("({:.0}-{:.0})", min / 1e6, max / 1e6),
            sleep / 1e6,
            host / 1e6,
            dev / host,
            same / 1e6,
            dev / same
        );
        periods.push(serde_json::json!({
            "period_bytes": period, "device_bytes_per_s": dev, "device_runs_bytes_per_s": runs,
            "device_sleeping_bytes_per_s": sleep,
            "device_sleeping_runs_bytes_per_s": sleeping,
            "host_write_bytes_per_s": host,
            "ratio": dev / host, "host_write_same_set_bytes_per_s": same,
            "ratio_same_set": dev / same,
        }));
    }
    if only.is_some() {
        return;
    }
    println!();
    println!("per source (64 KiB periods, stereo S16)");
    println!("{:>10} {:>14} {:>16}", "source", "device MB/s", "Mframes/s");
    let sources = [
        ("counter", Waveform::Counter),
        ("sine", Waveform::Sine),
        ("square", Waveform::Square { duty: 0.5 }),
        ("noise", Waveform::Noise { seed: 1, gaussian: false }),
        ("gaussian", Waveform::Noise { seed: 1, gaussian: true }),
    ];
    for (name, waveform) in sources {
        let ch = ChannelSignal {
            waveform,
            amplitude: 1000.0,
            offset: 0.0,
            frequency: 1000.0,
            phase_deg: 0.0,
        };
        let signal = StreamSignal { channels: vec![ch], units: Units::Codes };
        let dev = device_bytes_per_s_with(64 * 1024, signal, Driver::Polling);
        println!("{name:>10} {:>14.1} {:>16.2}", dev / 1e6, dev / 4.0 / 1e6);
        sources_json.push(serde_json::json!({"source": name, "device_bytes_per_s": dev}));
    }
    if let Ok(path) = std::env::var("VDAQ_BENCH_JSON") {
        let value = serde_json::json!({
            "stream": "48 kHz stereo S16, free-run", "buffers_in_flight": IN_FLIGHT,
            "run_ms": run_time().as_millis() as u64, "periods": periods, "sources": sources_json,
        });
        std::fs::write(&path, value.to_string()).expect("write the JSON results");
    }
}
