// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
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
//! - `status = "io_err" | "bad_msg" | "not_supp" | N`: the status of `error_every`'s
//!   completions (default `io_err`); a number is any status code, the spec's or not (e.g.
//!   `0x1234`).
//!
//! A lying device, for testing how a driver copes with a device it cannot trust (what hardened
//! drivers must survive; each lie is in what the device reports, never in what it writes: it
//! writes nothing outside the buffer the driver posted):
//!
//! - `used_len_extra = N`: the used length of rx completions and control responses is N bytes
//!   (1 to 16 MiB) more than the device wrote.
//! - `used_len_short = L`: the used length is L bytes (0 to 7), shorter than the status the
//!   device wrote (8 bytes for rx, the 4-byte header for control; control gets at most 3).
//! - `lie_every = N`: `used_len_extra` and `used_len_short` lie on every Nth rx completion and
//!   every Nth control response (default 1: every one).
//! - `event_flood = N`: with each completed period, up to N (1 to 64) spurious events, while
//!   event buffers wait: in turn an XRUN for this stream, an XRUN for a stream that does not
//!   exist, an unknown event code (0x7fff) and a PCM_PERIOD_ELAPSED (a feature not offered).
//! - `spurious_notify = N`: with each completed period, N (1 to 64) extra used-buffer
//!   notifications on the rx and the control queue, with nothing new in their used rings.
//! - `event_storm_ms = MS`: while the stream runs, after each round of completed periods and
//!   each event-queue notification, for MS (up to 1000) milliseconds the device polls its
//!   rings: it answers every event buffer as soon as the driver makes it available,
//!   notification or not (an unknown event code), and serves control requests and rx buffers
//!   meanwhile; a STOP ends the storm. Events that never stop while a driver's handler
//!   re-posts its buffers.
//!
//! Control responses lie with the faults of the stream the request names (a PCM command's
//! stream id), or of stream 0 for requests that name none (queries, unknown codes).

use serde::Deserialize;
use vdaq_proto::virtio_snd::code;

/// `[stream.faults]` as written; its flags (`--fault-*`) set every stream.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = "Fault injection (every stream; [stream.faults] in the file)")]
pub struct FaultsConfig {
    /// Lose every Nth period produced (a forced overrun).
    #[arg(long = "fault-drop-every", value_name = "N")]
    pub drop_every: Option<i64>,
    /// Complete every Nth buffer with VIRTIO_SND_S_IO_ERR (or --fault-status) and no frames.
    #[arg(long = "fault-error-every", value_name = "N")]
    pub error_every: Option<i64>,
    /// Complete every Nth buffer without notifying the driver.
    #[arg(long = "fault-withhold-every", value_name = "N")]
    pub withhold_every: Option<i64>,
    /// Hold each period this long before completing it.
    #[arg(long = "fault-delay-ms", value_name = "MS")]
    pub delay_ms: Option<f64>,
    /// Plus a random delay below this (from --fault-seed).
    #[arg(long = "fault-jitter-ms", value_name = "MS")]
    pub jitter_ms: Option<f64>,
    /// Seed of --fault-jitter-ms (default 0).
    #[arg(id = "fault-seed", long = "fault-seed", value_name = "SEED")]
    pub seed: Option<u64>,
    /// Complete nothing for --fault-stall-ms from this long after each START (default 0).
    #[arg(long = "fault-stall-at-ms", value_name = "MS")]
    pub stall_at_ms: Option<f64>,
    /// Length of the stall.
    #[arg(long = "fault-stall-ms", value_name = "MS")]
    pub stall_ms: Option<f64>,
    /// Status of --fault-error-every's completions: io_err (default), bad_msg, not_supp or
    /// any number (e.g. 0x1234, not a status the spec has).
    #[arg(long = "fault-status", value_name = "STATUS")]
    pub status: Option<StatusConfig>,
    /// A lying device: report used lengths N bytes (1 to 16 MiB) past what was written, on rx
    /// completions and control responses (nothing is written past the buffer).
    #[arg(long = "fault-used-len-extra", value_name = "N")]
    pub used_len_extra: Option<i64>,
    /// A lying device: report used lengths of L bytes (0 to 7), shorter than the status
    /// written (control responses: at most 3).
    #[arg(long = "fault-used-len-short", value_name = "L")]
    pub used_len_short: Option<i64>,
    /// Lie about the used length on every Nth rx completion and control response (default 1).
    #[arg(long = "fault-lie-every", value_name = "N")]
    pub lie_every: Option<i64>,
    /// With each completed period, up to N (1 to 64) spurious events while event buffers
    /// wait: XRUNs for this stream and for one that does not exist, an unknown event code,
    /// PCM_PERIOD_ELAPSED.
    #[arg(long = "fault-event-flood", value_name = "N")]
    pub event_flood: Option<i64>,
    /// With each completed period, N (1 to 64) extra notifications on the rx and control
    /// queues with nothing new in their used rings.
    #[arg(long = "fault-spurious-notify", value_name = "N")]
    pub spurious_notify: Option<i64>,
    /// While the stream runs, after each completed period and event-queue notification, for
    /// MS (up to 1000) ms answer every event buffer as soon as it is available, polling the
    /// rings (an event storm).
    #[arg(long = "fault-event-storm-ms", value_name = "MS")]
    pub event_storm_ms: Option<f64>,
}

impl FaultsConfig {
    /// The flags given win over the file.
    pub fn override_with(&mut self, flags: &Self) {
        crate::config::override_fields!(
            self,
            flags,
            drop_every,
            error_every,
            withhold_every,
            delay_ms,
            jitter_ms,
            seed,
            stall_at_ms,
            stall_ms,
            status,
            used_len_extra,
            used_len_short,
            lie_every,
            event_flood,
            spurious_notify,
            event_storm_ms,
        );
    }
}

/// `status` as written: a name or a number.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum StatusConfig {
    /// `io_err`, `bad_msg`, `not_supp` or a number as text (`0x1234`, `4660`).
    Name(String),
    /// A number.
    Code(i64),
}

impl std::str::FromStr for StatusConfig {
    type Err = std::convert::Infallible;

    /// A flag's value is text; it is checked with the file's, by [`FaultsConfig::to_plan`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::Name(s.to_string()))
    }
}

/// The status of an injected error completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// VIRTIO_SND_S_IO_ERR.
    IoErr,
    /// VIRTIO_SND_S_BAD_MSG.
    BadMsg,
    /// VIRTIO_SND_S_NOT_SUPP.
    NotSupp,
    /// Any other status code, the spec's or not.
    Code(u32),
}

/// Why a `status` value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a status (io_err, bad_msg, not_supp or a number from 0 to 0xffffffff)")]
pub struct BadStatus(pub String);

impl TryFrom<&str> for FaultStatus {
    type Error = BadStatus;

    fn try_from(s: &str) -> Result<Self, BadStatus> {
        let number = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => s.parse::<u32>().ok(),
        };
        match (s.to_ascii_lowercase().as_str(), number) {
            ("io_err", _) => Ok(Self::IoErr),
            ("bad_msg", _) => Ok(Self::BadMsg),
            ("not_supp", _) => Ok(Self::NotSupp),
            (_, Some(n)) => Ok(Self::from(n)),
            _ => Err(BadStatus(s.to_string())),
        }
    }
}

impl From<u32> for FaultStatus {
    fn from(n: u32) -> Self {
        match n {
            code::S_IO_ERR => Self::IoErr,
            code::S_BAD_MSG => Self::BadMsg,
            code::S_NOT_SUPP => Self::NotSupp,
            n => Self::Code(n),
        }
    }
}

impl From<FaultStatus> for u32 {
    fn from(s: FaultStatus) -> u32 {
        match s {
            FaultStatus::IoErr => code::S_IO_ERR,
            FaultStatus::BadMsg => code::S_BAD_MSG,
            FaultStatus::NotSupp => code::S_NOT_SUPP,
            FaultStatus::Code(n) => n,
        }
    }
}

/// A used length that lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsedLenLie {
    /// This many bytes more than were written.
    Extra(u32),
    /// This many bytes in all, fewer than the status written.
    Short(u32),
}

impl UsedLenLie {
    /// The used length reported for `written` bytes, of which the status is `status_len`.
    pub fn apply(self, written: u32, status_len: u32) -> u32 {
        match self {
            Self::Extra(n) => written.saturating_add(n),
            Self::Short(l) => l.min(status_len.saturating_sub(1)),
        }
    }
}

/// The faults of one stream, validated. The default injects nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultPlan {
    pub drop_every: u64,
    pub error_every: u64,
    pub withhold_every: u64,
    pub delay_ns: u64,
    pub jitter_ns: u64,
    pub seed: u64,
    /// (from START, for) in ns.
    pub stall: Option<(u64, u64)>,
    /// Status of the error completions.
    pub error_status: FaultStatus,
    /// The used-length lie, if any.
    pub used_len: Option<UsedLenLie>,
    /// Lie on every Nth completion or response (1 when lying on all).
    pub lie_every: u64,
    /// Spurious events per completed period.
    pub event_flood: u32,
    /// Extra notifications per completed period.
    pub spurious_notify: u32,
    /// Length of each event storm, in ns (0: none).
    pub event_storm_ns: u64,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            drop_every: 0,
            error_every: 0,
            withhold_every: 0,
            delay_ns: 0,
            jitter_ns: 0,
            seed: 0,
            stall: None,
            error_status: FaultStatus::IoErr,
            used_len: None,
            lie_every: 1,
            event_flood: 0,
            spurious_notify: 0,
            event_storm_ns: 0,
        }
    }
}

/// The longest delay or stall accepted: one minute.
const MAX_MS: f64 = 60_000.0;
/// The largest `used_len_extra`: 16 MiB.
const MAX_EXTRA: i64 = 16 << 20;
/// The most spurious events or notifications per period.
const MAX_PER_PERIOD: i64 = 64;
/// The longest event storm: the worker thread polls the rings meanwhile and serves no other
/// event (the daemon's exit among them).
const MAX_STORM_MS: f64 = 1000.0;

/// Why a fault setting is refused; the message names the field (`stream[0].faults.drop_every`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum FaultsError {
    /// An "every Nth" below 1.
    #[error("{field} = {value} must be 1 or more")]
    NotPositive {
        /// The field.
        field: String,
        /// The value.
        value: i64,
    },
    /// A time outside 0 to a minute.
    #[error("{field} = {value} is out of range (0 to {MAX_MS} ms)")]
    Ms {
        /// The field.
        field: String,
        /// The value.
        value: f64,
    },
    /// An event storm outside (0, 1000] ms.
    #[error("{field} = {value} is out of range (more than 0, at most {MAX_STORM_MS} ms)")]
    StormMs {
        /// The field.
        field: String,
        /// The value.
        value: f64,
    },
    /// stall_at_ms without stall_ms.
    #[error("{at}.stall_at_ms needs stall_ms")]
    StallAtWithoutStall {
        /// The table.
        at: String,
    },
    /// An integer outside its range.
    #[error("{field} = {value} is out of range ({min} to {max})")]
    OutOfRange {
        /// The field.
        field: String,
        /// The value.
        value: i64,
        /// The least allowed.
        min: i64,
        /// The most allowed.
        max: i64,
    },
    /// Both used-length lies.
    #[error("{at}: used_len_extra and used_len_short exclude each other")]
    UsedLenBoth {
        /// The table.
        at: String,
    },
    /// A status that is no name and no number.
    #[error("{field} = {source}")]
    Status {
        /// The field.
        field: String,
        /// The value.
        source: BadStatus,
    },
    /// A status number outside 32 bits.
    #[error("{field} = {value} is out of range (0 to 0xffffffff)")]
    StatusOutOfRange {
        /// The field.
        field: String,
        /// The value.
        value: i64,
    },
}

impl FaultsConfig {
    /// Checks every value; `at` names the table (e.g. `stream[1].faults`).
    pub fn to_plan(&self, at: &str) -> Result<FaultPlan, FaultsError> {
        let field = |name: &str| format!("{at}.{name}");
        let every = |name: &str, v: Option<i64>| match v {
            None => Ok(0),
            Some(n) if n >= 1 => Ok(n as u64),
            Some(value) => Err(FaultsError::NotPositive { field: field(name), value }),
        };
        let ms = |name: &str, v: Option<f64>| match v {
            None => Ok(0),
            Some(x) if x.is_finite() && (0.0..=MAX_MS).contains(&x) => Ok((x * 1e6) as u64),
            Some(value) => Err(FaultsError::Ms { field: field(name), value }),
        };
        let event_storm_ns = match self.event_storm_ms {
            None => 0,
            Some(x) if x.is_finite() && x > 0.0 && x <= MAX_STORM_MS => (x * 1e6) as u64,
            Some(value) => {
                return Err(FaultsError::StormMs { field: field("event_storm_ms"), value })
            }
        };
        let stall = match (self.stall_at_ms, self.stall_ms) {
            (None, None) => None,
            (at_ms, Some(len)) => Some((ms("stall_at_ms", at_ms)?, ms("stall_ms", Some(len))?)),
            (Some(_), None) => return Err(FaultsError::StallAtWithoutStall { at: at.to_string() }),
        };
        let range = |name: &str, v: Option<i64>, min: i64, max: i64| match v {
            None => Ok(None),
            Some(n) if (min..=max).contains(&n) => Ok(Some(n as u32)),
            Some(value) => Err(FaultsError::OutOfRange { field: field(name), value, min, max }),
        };
        let used_len = match (
            range("used_len_extra", self.used_len_extra, 1, MAX_EXTRA)?,
            range("used_len_short", self.used_len_short, 0, 7)?,
        ) {
            (Some(_), Some(_)) => return Err(FaultsError::UsedLenBoth { at: at.to_string() }),
            (Some(n), None) => Some(UsedLenLie::Extra(n)),
            (None, Some(l)) => Some(UsedLenLie::Short(l)),
            (None, None) => None,
        };
        let error_status = match &self.status {
            None => FaultStatus::IoErr,
            Some(StatusConfig::Name(name)) => FaultStatus::try_from(name.as_str())
                .map_err(|source| FaultsError::Status { field: field("status"), source })?,
            Some(StatusConfig::Code(n)) => u32::try_from(*n)
                .map(FaultStatus::from)
                .map_err(|_| FaultsError::StatusOutOfRange { field: field("status"), value: *n })?,
        };
        Ok(FaultPlan {
            error_status,
            used_len,
            lie_every: every("lie_every", self.lie_every)?.max(1),
            event_flood: range("event_flood", self.event_flood, 1, MAX_PER_PERIOD)?.unwrap_or(0),
            spurious_notify: range("spurious_notify", self.spurious_notify, 1, MAX_PER_PERIOD)?
                .unwrap_or(0),
            event_storm_ns,
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
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
    /// Used lengths that lied.
    pub lies: u64,
    /// Events sent by `event_storm_ms`.
    pub storm_events: u64,
}

impl std::ops::AddAssign for FaultStats {
    fn add_assign(&mut self, o: Self) {
        self.dropped += o.dropped;
        self.errors += o.errors;
        self.withheld += o.withheld;
        self.delayed += o.delayed;
        self.stalls += o.stalls;
        self.lies += o.lies;
        self.storm_events += o.storm_events;
    }
}

/// A stream's faults at run time.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    plan: FaultPlan,
    produced: u64,
    completed: u64,
    notified: u64,
    rx_lies: u64,
    control_lies: u64,
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

    /// Counts events sent by this stream's event storm.
    pub fn count_storm_events(&mut self, n: u64) {
        self.stats.storm_events += n;
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

    /// The plan.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// The status of an error completion.
    pub fn error_status(&self) -> u32 {
        self.plan.error_status.into()
    }

    /// The used-length lie of the rx buffer being completed, if it lies.
    pub fn rx_lie(&mut self) -> Option<UsedLenLie> {
        let lie = self.plan.used_len?;
        let now = nth(&mut self.rx_lies, self.plan.lie_every);
        self.stats.lies += u64::from(now);
        now.then_some(lie)
    }

    /// The used-length lie of the control response being written, if it lies.
    pub fn control_lie(&mut self) -> Option<UsedLenLie> {
        let lie = self.plan.used_len?;
        let now = nth(&mut self.control_lies, self.plan.lie_every);
        self.stats.lies += u64::from(now);
        now.then_some(lie)
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
        cfg.to_plan("stream[0].faults").map_err(|e| e.to_string())
    }

    fn refusal(text: &str) -> FaultsError {
        let cfg: FaultsConfig = toml::from_str(text).unwrap();
        cfg.to_plan("stream[0].faults").unwrap_err()
    }

    #[test]
    fn refusals_are_told_apart_by_variant_and_name_the_field() {
        let f = |name: &str| format!("stream[0].faults.{name}");
        assert_eq!(
            refusal("drop_every = 0"),
            FaultsError::NotPositive { field: f("drop_every"), value: 0 }
        );
        assert_eq!(
            refusal("delay_ms = -1.0"),
            FaultsError::Ms { field: f("delay_ms"), value: -1.0 }
        );
        assert_eq!(
            refusal("stall_at_ms = 5.0"),
            FaultsError::StallAtWithoutStall { at: "stream[0].faults".into() }
        );
        assert_eq!(
            refusal("event_flood = 65"),
            FaultsError::OutOfRange { field: f("event_flood"), value: 65, min: 1, max: 64 }
        );
        assert_eq!(
            refusal("used_len_extra = 4\nused_len_short = 1"),
            FaultsError::UsedLenBoth { at: "stream[0].faults".into() }
        );
        assert_eq!(
            refusal("status = \"loud\""),
            FaultsError::Status { field: f("status"), source: BadStatus("loud".into()) }
        );
        assert_eq!(
            refusal("status = -1"),
            FaultsError::StatusOutOfRange { field: f("status"), value: -1 }
        );
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
    fn the_lies_are_configured_by_name_and_number() {
        let p = plan("used_len_extra = 4096\nlie_every = 3\nstatus = \"bad_msg\"").unwrap();
        assert_eq!(p.used_len, Some(UsedLenLie::Extra(4096)));
        assert_eq!(p.error_status, FaultStatus::BadMsg);
        for (text, want) in [
            ("status = \"io_err\"", code::S_IO_ERR),
            ("status = \"NOT_SUPP\"", code::S_NOT_SUPP),
            ("status = \"0x1234\"", 0x1234),
            ("status = 0x8001", code::S_BAD_MSG),
            ("status = 7", 7),
        ] {
            assert_eq!(u32::from(plan(text).unwrap().error_status), want, "{text}");
        }
        let mut f = Faults::new(p);
        let lies: Vec<bool> = (0..6).map(|_| f.rx_lie().is_some()).collect();
        assert_eq!(lies, [false, false, true, false, false, true]);
        assert_eq!(f.control_lie(), None, "counted on its own");
        assert_eq!(f.stats().lies, 2);
        assert_eq!(UsedLenLie::Extra(4096).apply(168, 8), 4264);
        assert_eq!(UsedLenLie::Short(7).apply(168, 8), 7);
        assert_eq!(UsedLenLie::Short(7).apply(4, 4), 3, "control: shorter than its header");
        let p = plan("used_len_short = 0\nevent_flood = 4\nspurious_notify = 2").unwrap();
        assert_eq!(
            (p.used_len, p.event_flood, p.spurious_notify),
            (Some(UsedLenLie::Short(0)), 4, 2)
        );
        assert_eq!(plan("event_storm_ms = 2.5").unwrap().event_storm_ns, 2_500_000);
        assert_eq!(plan("").unwrap().event_storm_ns, 0, "no storm unless asked");
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
            ("used_len_extra = 0", "used_len_extra = 0 is out of range (1 to 16777216)"),
            ("used_len_short = 8", "used_len_short = 8 is out of range (0 to 7)"),
            ("used_len_extra = 4\nused_len_short = 1", "exclude each other"),
            ("status = \"loud\"", "status = \"loud\" is not a status"),
            ("status = -1", "status = -1 is out of range"),
            ("event_flood = 65", "event_flood = 65 is out of range (1 to 64)"),
            ("spurious_notify = 0", "spurious_notify = 0 is out of range"),
            ("lie_every = 0", "lie_every = 0 must be 1 or more"),
            ("event_storm_ms = 0.0", "event_storm_ms = 0 is out of range (more than 0"),
            ("event_storm_ms = 1000.5", "event_storm_ms = 1000.5 is out of range"),
            ("event_storm_ms = inf", "event_storm_ms = inf is out of range"),
        ] {
            let e = plan(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
