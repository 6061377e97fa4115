// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Rate-limited warnings for what a guest controls: a guest that sends one bad chain after
//! another must not flood the log (or keep the worker thread writing it). The first
//! [`BURST`] refusals of each second are logged; the rest are counted, and the count is logged
//! once with the first refusal of a later second.

use std::sync::Mutex;

use log::warn;

/// Refusals logged per window.
pub const BURST: u32 = 10;
/// The window: one second.
pub const WINDOW_NS: u64 = 1_000_000_000;

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it.
    Log,
    /// Log it, after a line saying this many were suppressed since the last one logged.
    LogAfterSuppressed(u64),
    /// Count it, do not log it.
    Suppress,
}

/// The limiter's state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogLimit {
    window_start: Option<u64>,
    in_window: u32,
    suppressed: u64,
}

impl LogLimit {
    /// A limiter with nothing logged yet.
    pub const fn new() -> Self {
        Self { window_start: None, in_window: 0, suppressed: 0 }
    }

    /// The verdict on a message at `now_ns`.
    pub fn check(&mut self, now_ns: u64) -> Verdict {
        let new_window =
            self.window_start.is_none_or(|start| now_ns.saturating_sub(start) >= WINDOW_NS);
        if new_window {
            self.window_start = Some(now_ns);
            self.in_window = 0;
        }
        if self.in_window >= BURST {
            self.suppressed += 1;
            return Verdict::Suppress;
        }
        self.in_window += 1;
        match std::mem::take(&mut self.suppressed) {
            0 => Verdict::Log,
            n => Verdict::LogAfterSuppressed(n),
        }
    }
}

static REFUSALS: Mutex<LogLimit> = Mutex::new(LogLimit::new());

fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Logs a refusal of guest input at warn level, rate-limited (one limit for the process).
pub fn refusal(args: std::fmt::Arguments<'_>) {
    let verdict = REFUSALS.lock().map_or(Verdict::Log, |mut l| l.check(now_ns()));
    match verdict {
        Verdict::Log => warn!("{args}"),
        Verdict::LogAfterSuppressed(n) => {
            warn!("{n} more refusals of guest input were not logged");
            warn!("{args}");
        }
        Verdict::Suppress => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ten_a_second_are_logged_then_one_count_of_the_rest() {
        let mut l = LogLimit::new();
        let first: Vec<Verdict> = (0..1000).map(|i| l.check(1_000 + i)).collect();
        assert!(first[..10].iter().all(|&v| v == Verdict::Log));
        assert!(first[10..].iter().all(|&v| v == Verdict::Suppress));
        assert_eq!(l.check(500_000_000), Verdict::Suppress, "still the same second");
        assert_eq!(l.check(1_000_001_000), Verdict::LogAfterSuppressed(991));
        assert_eq!(l.check(1_000_002_000), Verdict::Log);
    }
}
