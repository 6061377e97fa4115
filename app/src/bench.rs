// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq bench`: the same capture by each way of learning that periods are ready, side by side.

use std::process::ExitCode;

use crate::capture::{self, Mode, Options, Summary};

/// Runs the captures and prints a table (or, with --json, one JSON line per capture).
pub fn run(base: &Options) -> ExitCode {
    let ways: [(&str, Mode, Option<i32>); 5] = [
        ("SIGIO", Mode::Sigio, None),
        ("SIGRTMIN+1", Mode::Sigio, Some(1)),
        ("poll", Mode::Poll, None),
        ("read", Mode::Read, None),
        ("mmap", Mode::Mmap, None),
    ];
    let mut results: Vec<(&str, Summary)> = Vec::new();
    let mut ok = true;
    for (name, mode, rt) in ways {
        let opts =
            Options { mode, rt_signal: rt, live: false, output: None, file: None, ..base.clone() };
        eprintln!("vdaq bench: {name} ...");
        match capture::run(&opts, None, false) {
            Ok(s) => {
                ok &= s.ok();
                if base.json {
                    println!("{}", s.to_json());
                }
                results.push((name, s));
            }
            Err(e) => {
                eprintln!("vdaq: {e}");
                return ExitCode::from(2);
            }
        }
        if crate::sys::interrupted() {
            break;
        }
    }
    if !base.json {
        print!("{}", table(&results));
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The comparison: rates and latency percentiles, then each latency histogram.
fn table(results: &[(&str, Summary)]) -> String {
    let mut out = format!(
        "{:<11} {:>11} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8}\n",
        "way", "frames/s", "periods", "lost", "p50 us", "p90 us", "p99 us", "max us"
    );
    for (name, s) in results {
        out += &format!(
            "{:<11} {:>11.1} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8}\n",
            name,
            s.rate_hz,
            s.periods,
            s.frames_lost_reported,
            s.latency_us[0],
            s.latency_us[1],
            s.latency_us[2],
            s.latency_us[3]
        );
    }
    for (name, s) in results {
        out += &format!("\n{name}: periods by latency (interrupt to read)\n");
        out += &histogram(&s.latency_histogram);
    }
    out
}

/// Rows "[2^i, 2^(i+1)) us  count  bar" for the non-empty range of a log2 histogram.
fn histogram(buckets: &[u64]) -> String {
    let first = buckets.iter().position(|&n| n > 0);
    let last = buckets.iter().rposition(|&n| n > 0);
    let (Some(first), Some(last)) = (first, last) else { return "  (no periods)\n".into() };
    let peak = buckets.iter().copied().max().unwrap_or(1).max(1);
    let mut out = String::new();
    for (i, &n) in buckets.iter().enumerate().take(last + 1).skip(first) {
        let bar = "#".repeat(((n * 40).div_ceil(peak)) as usize);
        out += &format!("  {:>8} - {:<8} us {:>8}  {bar}\n", 1u64 << i, 1u64 << (i + 1), n);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_shows_the_occupied_range() {
        let text = histogram(&[0, 0, 3, 0, 6, 0]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("4 - 8") && lines[0].contains(" 3 "));
        assert!(lines[2].contains("16 - 32") && lines[2].ends_with(&"#".repeat(40)));
        assert_eq!(histogram(&[0, 0]), "  (no periods)\n");
    }
}
