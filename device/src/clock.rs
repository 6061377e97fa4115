// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The sample clock: how many periods are due at a given time, against CLOCK_MONOTONIC.
//!
//! The count is computed from the elapsed time since the run started (frames = rate x
//! elapsed), never accumulated from timer ticks, so late wake-ups do not drift the rate.

const NS_PER_S: u128 = 1_000_000_000;

/// A run of the clock: started at `start_ns`, producing whole periods.
#[derive(Clone, Copy, Debug)]
struct Run {
    start_ns: u64,
    periods: u64,
}

/// Produces periods of `period_frames` frames at `rate` frames per second while running.
#[derive(Clone, Debug)]
pub struct SampleClock {
    rate: u32,
    period_frames: u64,
    run: Option<Run>,
}

impl SampleClock {
    /// A stopped clock.
    pub fn new(rate: u32, period_frames: u64) -> Self {
        Self { rate, period_frames: period_frames.max(1), run: None }
    }

    /// Starts (or resumes) counting periods from `now_ns`.
    pub fn start(&mut self, now_ns: u64) {
        self.run = Some(Run { start_ns: now_ns, periods: 0 });
    }

    /// Stops the clock; a partial period is not produced.
    pub fn stop(&mut self) {
        self.run = None;
    }

    /// True while started.
    pub fn is_running(&self) -> bool {
        self.run.is_some()
    }

    /// Time at which period `k` of the run (1-based) is complete.
    fn period_end_ns(&self, start_ns: u64, k: u64) -> u64 {
        let frames = u128::from(k) * u128::from(self.period_frames);
        let ns = (frames * NS_PER_S).div_ceil(u128::from(self.rate));
        start_ns.saturating_add(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Number of periods completed by `now_ns` and not yet taken; takes them.
    pub fn take_due(&mut self, now_ns: u64) -> u64 {
        let Some(run) = self.run else { return 0 };
        let elapsed = u128::from(now_ns.saturating_sub(run.start_ns));
        let total = elapsed * u128::from(self.rate) / (NS_PER_S * u128::from(self.period_frames));
        let total = u64::try_from(total).unwrap_or(u64::MAX);
        let due = total.saturating_sub(run.periods);
        if let Some(r) = self.run.as_mut() {
            r.periods = total.max(r.periods);
        }
        due
    }

    /// When the next period completes (absolute CLOCK_MONOTONIC ns), or `None` when stopped.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.run.map(|r| self.period_end_ns(r.start_ns, r.periods + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_whole_periods_from_elapsed_time() {
        // 48 kHz, 480-frame periods: one period every 10 ms.
        let mut c = SampleClock::new(48_000, 480);
        assert_eq!(c.take_due(5_000_000_000), 0, "stopped clocks produce nothing");
        c.start(1_000);
        assert_eq!(c.next_deadline_ns(), Some(1_000 + 10_000_000));
        assert_eq!(c.take_due(1_000 + 9_999_999), 0);
        assert_eq!(c.take_due(1_000 + 10_000_000), 1);
        assert_eq!(c.take_due(1_000 + 10_000_000), 0, "a period is taken once");
        // A late wake-up gets every period it missed, and no more.
        assert_eq!(c.take_due(1_000 + 55_000_000), 4);
        assert_eq!(c.next_deadline_ns(), Some(1_000 + 60_000_000));
    }

    #[test]
    fn has_no_drift_over_long_runs_with_inexact_periods() {
        // 44.1 kHz with 1000-frame periods: 22.675736... ms, not a whole number of ns.
        let mut c = SampleClock::new(44_100, 1000);
        c.start(0);
        let mut total = 0;
        let mut t = 0;
        while let Some(d) = c.next_deadline_ns() {
            if d > 3_600_000_000_000 {
                break;
            }
            t = d;
            total += c.take_due(t);
        }
        assert_eq!(total, 3_600 * 44_100 / 1000);
        assert!(t <= 3_600_000_000_000);
    }

    #[test]
    fn stop_and_start_resume_counting_from_the_new_start() {
        let mut c = SampleClock::new(8_000, 80);
        c.start(0);
        assert_eq!(c.take_due(25_000_000), 2);
        c.stop();
        assert_eq!(c.next_deadline_ns(), None);
        c.start(100_000_000);
        assert_eq!(c.take_due(105_000_000), 0);
        assert_eq!(c.take_due(110_000_000), 1);
    }
}
