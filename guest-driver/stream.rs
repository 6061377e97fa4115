// SPDX-License-Identifier: GPL-2.0

//! A stream's state: its parameters, what it offers, its period messages and the ring of
//! completed periods waiting for a reader.

use kernel::prelude::*;
use kernel::sync::Arc;

use crate::format;
use crate::pages::{PagePool, PeriodBuffer};
use crate::uapi::{self, PeriodHeader, Stats};
use crate::virtio::{Buffers, Message};
use crate::virtio_snd::{self, PcmStatus, PcmXfer};
use crate::wire::{Le32, Pod};

/// Stream parameters the driver sets (validated `uapi::Params`).
#[derive(Clone, Copy)]
pub(crate) struct Params {
    pub(crate) rate_code: u8,
    pub(crate) format: u8,
    pub(crate) channels: u8,
    pub(crate) frame_bytes: u32,
    pub(crate) period_frames: u32,
    pub(crate) periods: u32,
}

impl Params {
    pub(crate) const DEFAULT: Params = Params {
        rate_code: virtio_snd::rate::R48000,
        format: virtio_snd::format::S16,
        channels: 2,
        frame_bytes: 4,
        period_frames: 1024,
        periods: 16,
    };

    pub(crate) fn period_bytes(&self) -> u32 {
        self.period_frames * self.frame_bytes
    }

    pub(crate) fn to_uapi(self) -> uapi::Params {
        uapi::Params {
            rate: virtio_snd::rate_hz(self.rate_code).unwrap_or(0),
            channels: u32::from(self.channels),
            format: u32::from(self.format),
            period_bytes: self.period_bytes(),
            periods: self.periods,
            reserved: [0; 3],
        }
    }
}

/// What a stream offers, from PCM_INFO and its share of the receive ring.
#[derive(Clone, Copy, Default)]
pub(crate) struct Caps {
    pub(crate) streams: u32,
    pub(crate) formats: u64,
    pub(crate) rates: u64,
    pub(crate) channels_min: u8,
    pub(crate) channels_max: u8,
    pub(crate) max_periods: u32,
}

/// Largest period: one allocation per period, kept well within the page allocator's reach.
pub(crate) const MAX_PERIOD_BYTES: u32 = 1 << 20;
/// Most periods per stream (so at most 64 MiB of period buffers), whatever ring the device has.
pub(crate) const MAX_PERIODS: u32 = 64;

impl Caps {
    /// Validates user parameters (EINVAL for anything the stream does not offer).
    pub(crate) fn check(&self, u: &uapi::Params) -> Result<Params> {
        let rate_code = virtio_snd::rate_code(u.rate).ok_or(EINVAL)?;
        let format = u8::try_from(u.format).map_err(|_| EINVAL)?;
        let width = format::SampleFormat::from_wire(format)
            .ok_or(EINVAL)?
            .width() as u32;
        let channels = u8::try_from(u.channels).map_err(|_| EINVAL)?;
        let frame_bytes = width * u32::from(channels);
        let ok = u.reserved == [0; 3]
            && self.rates & (1 << rate_code) != 0
            && self.formats & (1 << format) != 0
            && (self.channels_min..=self.channels_max).contains(&channels)
            && u.period_bytes > 0
            && u.period_bytes <= MAX_PERIOD_BYTES
            // No division by zero even if the device offered 0 channels.
            && u.period_bytes.checked_rem(frame_bytes) == Some(0)
            && (2..=self.max_periods).contains(&u.periods)
            // The buffer size goes to the device as a u32.
            && u.period_bytes.checked_mul(u.periods).is_some();
        let period_frames = u
            .period_bytes
            .checked_div(frame_bytes)
            .filter(|_| ok)
            .ok_or(EINVAL)?;
        Ok(Params {
            rate_code,
            format,
            channels,
            frame_bytes,
            period_frames,
            periods: u.periods,
        })
    }
}

/// A capture message: xfer header (device-readable), frames and status (device-writable).
pub(crate) struct RxMsg {
    pub(crate) xfer: PcmXfer,
    pub(crate) status: PcmStatus,
    pub(crate) data: PeriodBuffer,
}

impl Message for RxMsg {
    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            readable: [Some(self.xfer.as_bytes()), None],
            writable: [
                Some(self.data.as_mut_slice()),
                Some(self.status.as_bytes_mut()),
            ],
        }
    }
}

/// A first-in first-out list of fixed capacity (allocated once: pushes never allocate, so
/// they are fine in interrupt context).
pub(crate) struct Ring<T> {
    slots: KVec<Option<T>>,
    pub(crate) head: usize,
    pub(crate) len: usize,
}

impl<T> Ring<T> {
    pub(crate) fn with_capacity(n: usize) -> Result<Self> {
        let mut slots = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            slots.push(None, GFP_KERNEL)?;
        }
        Ok(Self {
            slots,
            head: 0,
            len: 0,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `v`; gives it back when full.
    pub(crate) fn push(&mut self, v: T) -> core::result::Result<(), T> {
        let cap = self.slots.len();
        if self.len == cap {
            return Err(v);
        }
        self.slots[(self.head + self.len) % cap] = Some(v);
        self.len += 1;
        Ok(())
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let v = self.slots[self.head].take();
        self.head = (self.head + 1) % self.slots.len();
        self.len -= 1;
        v
    }
}

/// A completed period waiting for a reader.
pub(crate) struct Ready {
    pub(crate) msg: KBox<RxMsg>,
    pub(crate) header: PeriodHeader,
}

/// One stream's state, under the device's lock.
pub(crate) struct Stream {
    /// A capture stream: it has a node (other streams are left alone).
    pub(crate) capture: bool,
    /// Completed periods, oldest first (capacity: every period).
    pub(crate) ready: Ring<Ready>,
    /// Period messages neither posted nor ready.
    pub(crate) spare: Ring<KBox<RxMsg>>,
    /// Period messages the device holds.
    pub(crate) posted: u32,
    pub(crate) open: bool,
    /// The open file has O_ASYNC set (it is on the stream's fasync list).
    pub(crate) async_on: bool,
    pub(crate) running: bool,
    pub(crate) sequence: u64,
    pub(crate) lost_before_next: u64,
    pub(crate) stats: Stats,
    /// CLOCK_MONOTONIC of the last period completion (or of the start).
    pub(crate) last_completion_ns: u64,
    /// Found silent by the watchdog while started; cleared by the next start.
    pub(crate) stalled: bool,
    /// The stream's parameters; the period messages are allocated for them.
    pub(crate) params: Params,
    /// What the stream offers.
    pub(crate) caps: Caps,
    /// The period buffers and the status pages of the mapping, for `params`.
    pub(crate) pool: Option<Arc<PagePool>>,
    /// Mappings of the stream's pages that exist (SET_PARAMS waits for none).
    pub(crate) mappings: u32,
}

/// Shortest stall time-out, for very short periods (scheduling noise is not a stall).
const MIN_STALL_NS: u64 = 200_000_000;

impl Stream {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            capture: false,
            ready: Ring::with_capacity(0)?,
            spare: Ring::with_capacity(0)?,
            posted: 0,
            open: false,
            async_on: false,
            running: false,
            sequence: 0,
            lost_before_next: 0,
            stats: Stats::default(),
            last_completion_ns: 0,
            stalled: false,
            params: Params::DEFAULT,
            caps: Caps::default(),
            pool: None,
            mappings: 0,
        })
    }

    /// Sequence of the oldest period not given back to the device (`head` is `sequence`).
    pub(crate) fn tail(&self) -> u64 {
        self.sequence - self.ready.len() as u64
    }

    /// Takes `new` as the stream's period memory; returns the old one, to be freed outside
    /// the lock.
    pub(crate) fn install(&mut self, new: Periods) -> Periods {
        Periods {
            pool: core::mem::replace(&mut self.pool, new.pool),
            ready: core::mem::replace(&mut self.ready, new.ready),
            spare: core::mem::replace(&mut self.spare, new.spare),
        }
    }

    /// Publishes the tail in the mapping's status, after periods were given back.
    pub(crate) fn publish_tail(&self) {
        if let Some(pool) = &self.pool {
            pool.set_tail(self.tail());
        }
    }

    /// How long without a completion, while started, means the device is gone silent: four
    /// periods, and at least 200 ms.
    pub(crate) fn stall_timeout_ns(&self) -> u64 {
        let rate = u64::from(virtio_snd::rate_hz(self.params.rate_code).unwrap_or(48_000)).max(1);
        (4 * u64::from(self.params.period_frames) * 1_000_000_000 / rate).max(MIN_STALL_NS)
    }

    /// Started, not yet found stalled, the device holding buffers, and silent too long.
    pub(crate) fn is_silent(&self, now: u64) -> bool {
        self.running
            && !self.stalled
            && self.posted > 0
            && now.saturating_sub(self.last_completion_ns) > self.stall_timeout_ns()
    }

    /// True when the stream just became stalled (see `is_silent`).
    pub(crate) fn becomes_stalled(&mut self, now: u64) -> bool {
        if self.is_silent(now) {
            self.stalled = true;
            self.stats.stalls += 1;
            return true;
        }
        false
    }
}

/// A stream's period memory and messages for one set of parameters.
pub(crate) struct Periods {
    pub(crate) pool: Option<Arc<PagePool>>,
    pub(crate) ready: Ring<Ready>,
    pub(crate) spare: Ring<KBox<RxMsg>>,
}

/// The period messages, their pages and the ready list of stream `id` for `p`.
pub(crate) fn alloc_periods(id: u32, p: &Params) -> Result<Periods> {
    let ready = Ring::with_capacity(p.periods as usize)?;
    let mut spare = Ring::with_capacity(p.periods as usize)?;
    let (pool, buffers) = PagePool::new(p.periods, p.period_bytes())?;
    for data in buffers {
        let msg = RxMsg {
            xfer: PcmXfer {
                stream_id: Le32::new(id),
            },
            status: PcmStatus::default(),
            data,
        };
        let _ = spare.push(KBox::new(msg, GFP_KERNEL)?);
    }
    Ok(Periods {
        pool: Some(pool),
        ready,
        spare,
    })
}
