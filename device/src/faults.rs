//! Fault injection: a stream that misbehaves on purpose, so that a driver meets the faults real
//! hardware has. Configured per stream (`[stream.faults]` in the TOML file) or for every stream
//! (`--fault-*` flags). Each fault is counted in the device's statistics.
//!
//! - `drop_every = N`: every Nth period the sample clock produces is lost, as if the FIFO were
//!   full (a forced overrun): counted, and announced by an XRUN event when the driver asked for
//!   them.
//! - `error_every = N`: every Nth buffer completes with `VIRTIO_SND_S_IO_ERR` and no frames; its
//!   period's frames are lost (counted).
//! - `withhold_every = N`: every Nth completed buffer goes into the used ring without a
//!   notification; the driver finds it with the next one.
//! - `delay_ms`, `jitter_ms`, `seed`: each period is completed no sooner than `delay_ms` plus a
//!   random part in [0, `jitter_ms`) (from `seed`: the same seed, the same delays) after the
//!   sample clock produced it. Periods stay in order.
//! - `stall_at_ms`, `stall_ms`: after each START, from `stall_at_ms` on, nothing completes for
//!   `stall_ms`; the clock runs on (periods that find the FIFO full are lost and counted).

use serde::Deserialize;

/// `[stream.faults]` as written.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultsConfig {
    pub drop_every: Option<i64>,
    pub error_every: Option<i64>,
    pub withhold_every: Option<i64>,
    pub delay_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub seed: Option<u64>,
    pub stall_at_ms: Option<f64>,
    pub stall_ms: Option<f64>,
}

/// The faults of one stream, validated. The default injects nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub drop_every: u64,
    pub error_every: u64,
    pub withhold_every: u64,
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub seed: u64,
    /// (from START, for) in ns.
    pub stall: Option<(u64, u64)>,
}

/// The longest delay or stall accepted: one minute.
const MAX_MS: f64 = 60_000.0;

impl FaultsConfig {
    /// Checks every value; `at` names the table (e.g. `stream[1].faults`).
    pub fn to_plan(&self, at: &str) -> Result<FaultPlan, String> {
        let every = |name: &str, v: Option<i64>| match v {
            None => Ok(0),
            Some(n) if n >= 1 => Ok(n as u64),
            Some(n) => Err(format!("{at}.{name} = {n} must be 1 or more")),
        };
        let ms = |name: &str, v: Option<f64>| match v {
            None => Ok(0),
            Some(x) if x.is_finite() && (0.0..=MAX_MS).contains(&x) => Ok((x * 1e6) as u64),
            Some(x) => Err(format!("{at}.{name} = {x} is out of range (0 to {MAX_MS} ms)")),
        };
        let stall = match (self.stall_at_ms, self.stall_ms) {
            (None, None) => None,
            (at_ms, Some(len)) => Some((ms("stall_at_ms", at_ms)?, ms("stall_ms", Some(len))?)),
            (Some(_), None) => return Err(format!("{at}.stall_at_ms needs stall_ms")),
        };
        Ok(FaultPlan {
            drop_every: every("drop_every", self.drop_every)?,
            error_every: every("error_every", self.error_every)?,
            withhold_every: every("withhold_every", self.withhold_every)?,
            delay_ns: ms("delay_ms", self.delay_ms)?,
            jitter_ns: ms("jitter_ms", self.jitter_ms)?,
            seed: self.seed.unwrap_or(0),
            stall: stall.filter(|&(_, len)| len > 0),
        })
    }
}

/// What a stream's faults did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Periods dropped by `drop_every`.
    pub dropped: u64,
    /// Buffers completed with an error status.
    pub errors: u64,
    /// Completions without a notification.
    pub withheld: u64,
    /// Periods held back by a delay or a stall.
    pub delayed: u64,
    /// Stalls begun.
    pub stalls: u64,
}

impl std::ops::AddAssign for FaultStats {
    fn add_assign(&mut self, o: Self) {
        self.dropped += o.dropped;
        self.errors += o.errors;
        self.withheld += o.withheld;
        self.delayed += o.delayed;
        self.stalls += o.stalls;
    }
}

/// A stream's faults at run time.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    plan: FaultPlan,
    produced: u64,
    completed: u64,
    notified: u64,
    /// The stall window of the current START, in CLOCK_MONOTONIC ns.
    stall_window: Option<(u64, u64)>,
    stall_counted: bool,
    /// The latest release time handed out: periods complete in order.
    last_release_ns: u64,
    stats: FaultStats,
}

/// True on every `n`th call counted by `count` (never when `n` is 0).
fn nth(count: &mut u64, n: u64) -> bool {
    *count += 1;
    n != 0 && count.is_multiple_of(n)
}

impl Faults {
    pub fn new(plan: FaultPlan) -> Self {
        Self { plan, ..Self::default() }
    }

    /// What the faults did so far.
    pub fn stats(&self) -> FaultStats {
        self.stats
    }

    /// The stream started at `now_ns`: the stall window starts from here.
    pub fn start(&mut self, now_ns: u64) {
        self.stall_window = self.plan.stall.map(|(at, len)| (now_ns + at, now_ns + at + len));
        self.stall_counted = false;
    }

    /// Whether the period being produced is dropped.
    pub fn drop_period(&mut self) -> bool {
        let drop = nth(&mut self.produced, self.plan.drop_every);
        self.stats.dropped += u64::from(drop);
        drop
    }

    /// `n` periods produced that are lost anyway (the FIFO is full): returns how many of them
    /// `drop_every` would have dropped, counted as dropped.
    pub fn drop_periods(&mut self, n: u64) -> u64 {
        let before = self.produced;
        self.produced += n;
        let dropped = match self.plan.drop_every {
            0 => 0,
            k => self.produced / k - before / k,
        };
        self.stats.dropped += dropped;
        dropped
    }

    /// When a period produced at `now_ns` may complete.
    pub fn release_at(&mut self, now_ns: u64) -> u64 {
        let mut at = now_ns + self.plan.delay_ns;
        if self.plan.jitter_ns > 0 {
            at += splitmix64(self.plan.seed ^ self.produced) % self.plan.jitter_ns;
        }
        at = at.max(self.last_release_ns);
        self.last_release_ns = at;
        if at > now_ns {
            self.stats.delayed += 1;
        }
        at
    }

    /// The end of the stall `now_ns` falls in, if any (counting the stall when it begins).
    pub fn stalled_until(&mut self, now_ns: u64) -> Option<u64> {
        let (from, to) = self.stall_window?;
        if !(from..to).contains(&now_ns) {
            return None;
        }
        if !self.stall_counted {
            self.stall_counted = true;
            self.stats.stalls += 1;
        }
        Some(to)
    }

    /// The start of the stall window still ahead of `now_ns` (a timer must fire then).
    pub fn stall_ahead(&self, now_ns: u64) -> Option<u64> {
        self.stall_window.map(|(from, _)| from).filter(|&from| from > now_ns)
    }

    /// Whether the buffer being completed gets an error status instead of frames.
    pub fn error_completion(&mut self) -> bool {
        let error = nth(&mut self.completed, self.plan.error_every);
        self.stats.errors += u64::from(error);
        error
    }

    /// Whether the buffer being completed is announced by a notification.
    pub fn notify(&mut self) -> bool {
        let withhold = nth(&mut self.notified, self.plan.withhold_every);
        self.stats.withheld += u64::from(withhold);
        !withhold
    }
}

/// splitmix64: the jitter's pseudo-random numbers (reproducible from the seed).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<FaultPlan, String> {
        let cfg: FaultsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.to_plan("stream[0].faults")
    }

    #[test]
    fn no_table_injects_nothing() {
        let mut f = Faults::new(plan("").unwrap());
        f.start(0);
        for t in 0..100 {
            assert!(!f.drop_period());
            assert_eq!(f.release_at(t), t);
            assert!(!f.error_completion());
            assert!(f.notify());
            assert_eq!(f.stalled_until(t), None);
        }
        assert_eq!(f.stats(), FaultStats::default());
    }

    #[test]
    fn every_nth_counts_each_kind_on_its_own() {
        let mut f =
            Faults::new(plan("drop_every = 3\nerror_every = 4\nwithhold_every = 2").unwrap());
        let drops: Vec<bool> = (0..6).map(|_| f.drop_period()).collect();
        assert_eq!(drops, [false, false, true, false, false, true]);
        let errors: Vec<bool> = (0..8).map(|_| f.error_completion()).collect();
        assert_eq!(errors, [false, false, false, true, false, false, false, true]);
        let notified: Vec<bool> = (0..4).map(|_| f.notify()).collect();
        assert_eq!(notified, [true, false, true, false]);
        assert_eq!((f.stats().dropped, f.stats().errors, f.stats().withheld), (2, 2, 2));
    }

    #[test]
    fn delays_keep_order_and_the_seed_repeats_them() {
        let p = plan("delay_ms = 5\njitter_ms = 20\nseed = 42").unwrap();
        let run = || {
            let mut f = Faults::new(p);
            (0..50u64)
                .map(|i| {
                    f.drop_period();
                    f.release_at(i * 1_000_000)
                })
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.windows(2).all(|w| w[0] <= w[1]), "in order");
        for (i, &at) in a.iter().enumerate() {
            assert!(at >= i as u64 * 1_000_000 + 5_000_000);
        }
        assert!(a.iter().enumerate().any(|(i, &at)| at > i as u64 * 1_000_000 + 6_000_000));
    }

    #[test]
    fn the_stall_window_follows_each_start() {
        let mut f = Faults::new(plan("stall_at_ms = 10\nstall_ms = 5").unwrap());
        f.start(1_000_000_000);
        assert_eq!(f.stall_ahead(1_000_000_000), Some(1_010_000_000));
        assert_eq!(f.stalled_until(1_009_999_999), None);
        assert_eq!(f.stalled_until(1_010_000_000), Some(1_015_000_000));
        assert_eq!(f.stalled_until(1_014_000_000), Some(1_015_000_000));
        assert_eq!(f.stalled_until(1_015_000_000), None);
        assert_eq!(f.stats().stalls, 1);
        f.start(2_000_000_000);
        assert_eq!(f.stalled_until(2_012_000_000), Some(2_015_000_000));
        assert_eq!(f.stats().stalls, 2);
    }

    #[test]
    fn bad_values_are_refused_with_the_field_named() {
        for (text, want) in [
            ("drop_every = 0", "stream[0].faults.drop_every = 0 must be 1 or more"),
            ("error_every = -2", "error_every = -2 must be 1 or more"),
            ("delay_ms = -1.0", "delay_ms = -1 is out of range"),
            ("jitter_ms = nan", "jitter_ms = NaN is out of range"),
            ("stall_ms = 1e9", "stall_ms = 1000000000 is out of range"),
            ("stall_at_ms = 5.0", "stall_at_ms needs stall_ms"),
            ("drop = 3", "unknown field"),
        ] {
            let e = plan(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
