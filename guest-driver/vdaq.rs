// SPDX-License-Identifier: GPL-2.0

//! vdaq: driver for the vdaq virtual data-acquisition card, a virtio-sound (id 25) capture
//! device.
//!
//! Supported:
//! - every capture stream of each device as its own /dev/vdaqN (a misc device; one open file
//!   per node, EBUSY otherwise), started by VDAQ_IOC_START or the first read(), stopped and
//!   released by VDAQ_IOC_STOP or the close; up to 16 streams per device;
//! - parameters (VDAQ_IOC_SET_PARAMS while stopped): rate, channels and format among those the
//!   stream offers, period bytes (whole frames, up to 1 MiB) and 2 periods up to the stream's
//!   share of the receive ring (the capture streams share it evenly; three entries per period
//!   without indirect descriptors); default 48 kHz, S16, 2 channels, 1024-frame periods, 16
//!   periods (or as many as the share holds);
//! - VDAQ_IOC_INFO: what the stream offers and its current parameters;
//! - read(): whole periods, each preceded by a `uapi::PeriodHeader` (sequence, interrupt
//!   timestamp, frames, frames lost before it); O_NONBLOCK gives EAGAIN, blocking reads sleep
//!   interruptibly; a buffer too small for one record gives EINVAL;
//! - poll(): EPOLLIN | EPOLLRDNORM when a period is ready, EPOLLERR | EPOLLHUP when the device
//!   is gone, EPOLLERR when the stream stalled;
//! - stall detection by a watchdog timer: a started stream whose device holds buffers but
//!   completes none for four periods (at least 200 ms; a full ring because of a slow reader is
//!   not a stall) is stalled: sleeping readers wake with EIO, poll() sleepers wake with
//!   EPOLLERR, O_ASYNC owners get one kill_fasync(SIGIO, POLL_ERR). VDAQ_IOC_STOP, the close
//!   or a new start asks the device to stop (EIO while it stays silent, after the 1 s control
//!   time-out); once it answers, the stream starts again as usual;
//! - fasync: one kill_fasync(SIGIO, POLL_IN) for each receive interrupt that completed at
//!   least one period of the stream, and kill_fasync(SIGIO, POLL_HUP) when the device goes;
//! - mmap (zero copy): the stream's status page, its period records and its period buffers,
//!   read-only and shared (`uapi::MmapLayout`, VDAQ_IOC_MMAP_LAYOUT); the interrupt handler
//!   writes each completed period's record, then moves `head`; VDAQ_IOC_MMAP_ACK gives
//!   periods back to the device (read() of a period does too). Buffers are split pages
//!   mapped one by one, so a mapping keeps its pages after removal until it is unmapped;
//!   SET_PARAMS is refused while a mapping exists;
//! - VDAQ_IOC_STATS: the stream's statistics;
//! - XRUN events (selected in SET_PARAMS) counted as frames lost before the next period.
//!
//! The receive callback and the watchdog run in hard-interrupt context: the rings and the
//! queues are guarded by an irqsave spinlock. Every `unsafe` FFI call lives in `virtio`,
//! `miscdev`, `mm`, `pages` and `kernel_sync`; this file is safe Rust but for one call in
//! `remove`. docs/DRIVER-UPSTREAM.md maps each of those abstractions to its upstream
//! Rust-for-Linux counterpart, and says which stay local and why.

use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, ArcBorrow, Mutex};
use kernel::uaccess::{UserSlice, UserSliceWriter};
use kernel::{bindings, c_str, new_mutex};

mod kernel_sync;
mod miscdev;
mod mm;
mod pages;
mod virtio;

// The definitions shared with the device and the app (proto/src): cargo fmt formats them with
// the workspace's settings, so the kernel's rustfmt check leaves them alone.
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/format.rs"]
mod format;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/uapi.rs"]
mod uapi;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/virtio_snd.rs"]
mod virtio_snd;
#[rustfmt::skip]
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/wire.rs"]
mod wire;

use kernel_sync::{FasyncList, SpinLockIrq, Timer, TimerCallback, Wait, WaitQueue};
use pages::{PagePool, PeriodBuffer};
use uapi::{MmapRecord, PeriodHeader, Stats, PERIOD_FLAG_ERROR, PERIOD_FLAG_LOST, PERIOD_MAGIC};
use virtio::{Buffers, Message, Virtqueue};
use virtio_snd::{code, queue, Event, PcmInfo, PcmSetParams, PcmStatus, PcmXfer, QueryInfo};
use wire::{Le32, Pod};

module! {
    type: VdaqModule,
    name: "vdaq",
    author: "vdaq developers",
    description: "Driver for the vdaq virtual data-acquisition card (virtio-sound capture)",
    license: "GPL",
}

/// Stream parameters the driver sets (validated `uapi::Params`).
#[derive(Clone, Copy)]
struct Params {
    rate_code: u8,
    format: u8,
    channels: u8,
    frame_bytes: u32,
    period_frames: u32,
    periods: u32,
}

impl Params {
    const DEFAULT: Params = Params {
        rate_code: 7, // 48 kHz
        format: virtio_snd::format::S16,
        channels: 2,
        frame_bytes: 4,
        period_frames: 1024,
        periods: 16,
    };

    fn period_bytes(&self) -> u32 {
        self.period_frames * self.frame_bytes
    }

    fn to_uapi(self) -> uapi::Params {
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
struct Caps {
    streams: u32,
    formats: u64,
    rates: u64,
    channels_min: u8,
    channels_max: u8,
    max_periods: u32,
}

/// Largest period: one allocation per period, kept well within the page allocator's reach.
const MAX_PERIOD_BYTES: u32 = 1 << 20;
/// Most periods per stream (so at most 64 MiB of period buffers), whatever ring the device has.
const MAX_PERIODS: u32 = 64;

impl Caps {
    /// Validates user parameters (EINVAL for anything the stream does not offer).
    fn check(&self, u: &uapi::Params) -> Result<Params> {
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

/// How long a control request may take before the device is considered broken.
const CONTROL_TIMEOUT_MS: u32 = 1000;
/// Event buffers kept posted: the device sends one XRUN event per lost period, all before the
/// completion that follows the gap, so a burst of losses needs as many buffers (a burst longer
/// than this is undercounted; the device counts the events it had to drop).
const EVENT_BUFFERS: usize = 64;
/// Most streams handled per device (the count comes from the device).
const MAX_STREAMS: u32 = 16;

/// A capture message: xfer header (device-readable), frames and status (device-writable).
struct RxMsg {
    xfer: PcmXfer,
    status: PcmStatus,
    data: PeriodBuffer,
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

/// A control request and room for its response.
struct CtlMsg {
    /// Tells a late answer to an abandoned (timed-out) request from the awaited one.
    id: u64,
    request: KVec<u8>,
    response: KVec<u8>,
}

impl Message for CtlMsg {
    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            readable: [Some(&self.request[..]), None],
            writable: [Some(&mut self.response[..]), None],
        }
    }
}

/// Room for one event.
struct EventMsg {
    event: Event,
}

impl Message for EventMsg {
    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            readable: [None, None],
            writable: [Some(self.event.as_bytes_mut()), None],
        }
    }
}

/// A first-in first-out list of fixed capacity (allocated once: pushes never allocate, so
/// they are fine in interrupt context).
struct Ring<T> {
    slots: KVec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Ring<T> {
    fn with_capacity(n: usize) -> Result<Self> {
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

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Appends `v`; gives it back when full.
    fn push(&mut self, v: T) -> core::result::Result<(), T> {
        let cap = self.slots.len();
        if self.len == cap {
            return Err(v);
        }
        self.slots[(self.head + self.len) % cap] = Some(v);
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self) -> Option<T> {
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
struct Ready {
    msg: KBox<RxMsg>,
    header: PeriodHeader,
}

/// One stream's state, under the device's lock.
struct Stream {
    /// A capture stream: it has a node (other streams are left alone).
    capture: bool,
    /// Completed periods, oldest first (capacity: every period).
    ready: Ring<Ready>,
    /// Period messages neither posted nor ready.
    spare: Ring<KBox<RxMsg>>,
    /// Period messages the device holds.
    posted: u32,
    open: bool,
    /// The open file has O_ASYNC set (it is on the stream's fasync list).
    async_on: bool,
    running: bool,
    sequence: u64,
    lost_before_next: u64,
    stats: Stats,
    /// CLOCK_MONOTONIC of the last period completion (or of the start).
    last_completion_ns: u64,
    /// Found silent by the watchdog while started; cleared by the next start.
    stalled: bool,
    /// The stream's parameters; the period messages are allocated for them.
    params: Params,
    /// What the stream offers.
    caps: Caps,
    /// The period buffers and the status pages of the mapping, for `params`.
    pool: Option<Arc<PagePool>>,
    /// Mappings of the stream's pages that exist (SET_PARAMS waits for none).
    mappings: u32,
}

/// Shortest stall time-out, for very short periods (scheduling noise is not a stall).
const MIN_STALL_NS: u64 = 200_000_000;

impl Stream {
    fn new() -> Result<Self> {
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
    fn tail(&self) -> u64 {
        self.sequence - self.ready.len() as u64
    }

    /// Takes `new` as the stream's period memory; returns the old one, to be freed outside
    /// the lock.
    fn install(&mut self, new: Periods) -> Periods {
        Periods {
            pool: core::mem::replace(&mut self.pool, new.pool),
            ready: core::mem::replace(&mut self.ready, new.ready),
            spare: core::mem::replace(&mut self.spare, new.spare),
        }
    }

    /// Publishes the tail in the mapping's status, after periods were given back.
    fn publish_tail(&self) {
        if let Some(pool) = &self.pool {
            pool.set_tail(self.tail());
        }
    }

    /// How long without a completion, while started, means the device is gone silent: four
    /// periods, and at least 200 ms.
    fn stall_timeout_ns(&self) -> u64 {
        let rate = u64::from(virtio_snd::rate_hz(self.params.rate_code).unwrap_or(48_000)).max(1);
        (4 * u64::from(self.params.period_frames) * 1_000_000_000 / rate).max(MIN_STALL_NS)
    }

    /// Started, not yet found stalled, the device holding buffers, and silent too long.
    fn is_silent(&self, now: u64) -> bool {
        self.running
            && !self.stalled
            && self.posted > 0
            && now.saturating_sub(self.last_completion_ns) > self.stall_timeout_ns()
    }

    /// True when the stream just became stalled (see `is_silent`).
    fn becomes_stalled(&mut self, now: u64) -> bool {
        if self.is_silent(now) {
            self.stalled = true;
            self.stats.stalls += 1;
            return true;
        }
        false
    }
}

/// What the interrupt handlers and the file operations share, under the irqsave lock.
struct State {
    control: Option<Virtqueue<CtlMsg>>,
    events: Option<Virtqueue<EventMsg>>,
    rx: Option<Virtqueue<RxMsg>>,
    gone: bool,
    /// Periods the receive ring holds, shared by the capture streams.
    ring_periods: u32,
    /// Indexed by virtio-snd stream id.
    streams: KVec<Stream>,
}

impl State {
    fn stream(&mut self, id: u32) -> Result<&mut Stream> {
        self.streams.get_mut(id as usize).ok_or(EINVAL)
    }

    /// Gives a period message back to the device, or keeps it when its stream is stopped.
    fn recycle(&mut self, mut msg: KBox<RxMsg>) {
        // A status the device does not write again must not pass for its answer next time.
        msg.status = PcmStatus::default();
        let id = msg.xfer.stream_id.get() as usize;
        let State { rx, streams, .. } = self;
        // The stream ids of the messages are ours: this always finds the stream.
        let Some(s) = streams.get_mut(id) else { return };
        let msg = match rx.as_mut() {
            Some(rx) if s.running => match rx.add(msg) {
                Ok(()) => {
                    s.posted += 1;
                    rx.kick();
                    // The device has work again: a stall is counted from here (a slow
                    // reader, whose ring was full, is not a silent device).
                    if s.posted == 1 {
                        s.last_completion_ns = now_ns();
                    }
                    return;
                }
                // Cannot happen with the ring shared out by periods; keep it.
                Err((_, msg)) => msg,
            },
            _ => msg,
        };
        // Every period of the stream fits in `spare`.
        let _ = s.spare.push(msg);
    }

    /// Takes XRUN events: each is a period of its stream lost before the next completion.
    /// At most one pass over the event buffers per call (they are posted again after it), so
    /// a device that completes them as fast as they come cannot keep the handler looping.
    fn drain_events(&mut self) {
        let State {
            events, streams, ..
        } = self;
        let Some(events) = events.as_mut() else {
            return;
        };
        let mut taken: [Option<KBox<EventMsg>>; EVENT_BUFFERS] = [const { None }; EVENT_BUFFERS];
        let mut n = 0;
        while n < EVENT_BUFFERS {
            let Some((mut msg, len)) = events.get_buf() else {
                break;
            };
            if len as usize >= core::mem::size_of::<Event>()
                && msg.event.hdr.code.get() == code::EVT_PCM_XRUN
            {
                // The stream id comes from the device: ignore one we do not know, or that is
                // not a capture stream of ours.
                if let Some(s) = streams
                    .get_mut(msg.event.data.get() as usize)
                    .filter(|s| s.capture)
                {
                    let frames = u64::from(s.params.period_frames);
                    s.lost_before_next += frames;
                    s.stats.xruns += 1;
                    s.stats.frames_lost += frames;
                }
            }
            // A device that reports less than it wrote must not leave this event behind.
            msg.event = Event::default();
            taken[n] = Some(msg);
            n += 1;
        }
        let mut reposted = false;
        for msg in taken.into_iter().flatten() {
            reposted |= events.add(msg).is_ok();
        }
        if reposted {
            events.kick();
        }
    }
}

/// One virtio device: its queues, streams and nodes.
#[pin_data]
struct VdaqDev {
    /// Declared first: dropped (cancelled) before what its callback uses.
    #[pin]
    watchdog: Timer<VdaqDev>,
    #[pin]
    state: SpinLockIrq<State>,
    /// Readers and poll() callers of every stream sleep here.
    #[pin]
    readers: WaitQueue,
    /// One fasync list per stream id (outside the lock: fasync_helper may sleep).
    fasync: KVec<FasyncList>,
    /// Serialises control requests and stream start/stop (process context).
    #[pin]
    control_lock: Mutex<()>,
    /// Serialises joining and leaving the fasync lists.
    #[pin]
    async_lock: Mutex<()>,
    /// The /dev nodes; taken out (and so unregistered, then their numbers freed) on removal.
    #[pin]
    nodes: Mutex<KVec<(Pin<KBox<miscdev::Registration<StreamNode>>>, NodeNumber)>>,
}

crate::impl_has_timer!(VdaqDev, watchdog);

/// Who collects completed receive buffers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Collector {
    /// The receive queue's interrupt.
    Interrupt,
    /// The stall watchdog, before it calls a silent stream stalled.
    Watchdog,
}

fn now_ns() -> u64 {
    kernel::time::Ktime::ktime_get().to_ns() as u64
}

impl TimerCallback for VdaqDev {
    /// The watchdog: finds streams gone silent and tells their users; runs again in a quarter
    /// of the shortest stall time-out while a stream is started and not stalled.
    fn timer_fired(&self) -> Option<u64> {
        let now = now_ns();
        // Periods the device completed whose interrupt has not run yet (a guest vCPU the host
        // did not run for longer than the time-out) are not a stall: collect them first.
        if self.state.lock().streams.iter().any(|s| s.is_silent(now)) {
            self.collect_rx(Collector::Watchdog);
        }
        let mut next: Option<u64> = None;
        let mut stalled_any = false;
        {
            let mut st = self.state.lock();
            for (id, s) in st.streams.iter_mut().enumerate() {
                if s.becomes_stalled(now) {
                    stalled_any = true;
                    pr_warn!(
                        "stream {}: no period completed for {} ms: the device is not responding\n",
                        id,
                        s.stall_timeout_ns() / 1_000_000
                    );
                    if s.async_on {
                        s.stats.stall_signals += 1;
                        if let Some(list) = self.fasync.get(id) {
                            list.kill(bindings::SIGIO, bindings::POLL_ERR);
                        }
                    }
                }
                if s.running && !s.stalled {
                    let tick = s.stall_timeout_ns() / 4;
                    next = Some(next.map_or(tick, |n| n.min(tick)));
                }
            }
        }
        if stalled_any {
            self.readers.wake_all();
        }
        next
    }
}

impl VdaqDev {
    /// Sends a control request and waits (polling: the control queue has no interrupt) for
    /// its response, which must say OK.
    fn control(&self, request: &[u8], response_len: usize) -> Result<KVec<u8>> {
        let mut req = KVec::with_capacity(request.len(), GFP_KERNEL)?;
        req.extend_from_slice(request, GFP_KERNEL)?;
        let response = KVec::from_elem(0u8, response_len, GFP_KERNEL)?;
        let id = {
            static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
            NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
        };
        let msg = KBox::new(
            CtlMsg {
                id,
                request: req,
                response,
            },
            GFP_KERNEL,
        )?;
        {
            let mut st = self.state.lock();
            let ctl = st.control.as_mut().ok_or(ENODEV)?;
            ctl.add(msg).map_err(|(e, _)| e)?;
            ctl.kick();
        }
        // By time, not by count: msleep(1) sleeps at least a jiffy.
        let deadline = now_ns() + u64::from(CONTROL_TIMEOUT_MS) * 1_000_000;
        while now_ns() < deadline {
            let done = {
                let mut st = self.state.lock();
                st.control.as_mut().ok_or(ENODEV)?.get_buf()
            };
            if let Some((msg, len)) = done {
                if msg.id != id {
                    // The late answer of a request that timed out: drop it, keep waiting.
                    continue;
                }
                // The device's used length is a claim, not a fact: never past what was posted.
                let written = (len as usize).min(msg.response.len());
                let status = wire::Le32::from_prefix(&msg.response[..written])
                    .map(|s| s.get())
                    .unwrap_or(0);
                if status != code::S_OK {
                    pr_warn!(
                        "control request failed with status {:#x} ({} bytes)\n",
                        status,
                        len
                    );
                    return Err(EIO);
                }
                let mut response = KVec::with_capacity(written, GFP_KERNEL)?;
                response.extend_from_slice(&msg.response[..written], GFP_KERNEL)?;
                return Ok(response);
            }
            kernel_sync::sleep_ms(1);
        }
        pr_err!("control request timed out\n");
        Err(Error::from_errno(-(bindings::ETIMEDOUT as i32)))
    }

    fn pcm_command(&self, op: u32, stream: u32) -> Result {
        self.control(virtio_snd::PcmHdr::new(op, stream).as_bytes(), 4)
            .map(|_| ())
    }

    /// SET_PARAMS, PREPARE, post every period, START; arms the watchdog. A stalled stream is
    /// first stopped, which fails with EIO while the device stays silent.
    fn start_stream(&self, id: u32) -> Result {
        let (p, stalled) = {
            let mut st = self.state.lock();
            let s = st.stream(id)?;
            (s.params, s.stalled)
        };
        if stalled {
            self.stop_stream(id)?;
        }
        let set = PcmSetParams {
            hdr: virtio_snd::PcmHdr::new(code::R_PCM_SET_PARAMS, id),
            buffer_bytes: Le32::new(p.period_bytes().checked_mul(p.periods).ok_or(EINVAL)?),
            period_bytes: Le32::new(p.period_bytes()),
            features: Le32::new(1 << virtio_snd::pcm_feature::EVT_XRUNS),
            channels: p.channels,
            format: p.format,
            rate: p.rate_code,
            padding: 0,
        };
        self.control(set.as_bytes(), 4)?;
        self.pcm_command(code::R_PCM_PREPARE, id)?;
        let tick = {
            let mut st = self.state.lock();
            let s = st.stream(id)?;
            s.running = true;
            s.stalled = false;
            s.last_completion_ns = now_ns();
            s.sequence = 0;
            s.lost_before_next = 0;
            if let Some(pool) = &s.pool {
                pool.set_positions(0, 0);
            }
            let tick = s.stall_timeout_ns() / 4;
            // Messages the device kept through a stall are not in `spare`: post what is.
            for _ in 0..s.spare.len() {
                if let Some(msg) = st.stream(id)?.spare.pop() {
                    st.recycle(msg);
                }
            }
            tick
        };
        // Not `start`: re-arming a running watchdog at every START postpones it, and a stream
        // started and stopped every 25 ms kept a 50 ms watchdog from ever finding another
        // stream's stall (scenario race-watchdog-start). `running` is set above, under the
        // state lock, as `start_within` needs.
        self.watchdog.start_within(tick);
        if let Err(e) = self.pcm_command(code::R_PCM_START, id) {
            let _ = self.stop_stream(id);
            return Err(e);
        }
        Ok(())
    }

    /// STOP and RELEASE; the device returns every posted period on RELEASE. After a stall
    /// the device is asked too (it may only have paused); a silent one gives EIO.
    fn stop_stream(&self, id: u32) -> Result {
        let stalled = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let s = st.stream(id)?;
            s.running = false;
            let stalled = s.stalled;
            while let Some(r) = st.stream(id)?.ready.pop() {
                st.recycle(r.msg);
            }
            st.stream(id)?.publish_tail();
            stalled
        };
        let stopped = self.pcm_command(code::R_PCM_STOP, id);
        if stalled {
            if matches!(stopped, Err(e) if e.to_errno() == -(bindings::ETIMEDOUT as i32)) {
                return Err(EIO);
            }
            // It answers again (an error status too: a STOP that timed out earlier may have
            // reached it late): release the stream, which may then be started anew.
            self.state.lock().stream(id)?.stalled = false;
        }
        let released = self.pcm_command(code::R_PCM_RELEASE, id);
        // RELEASE answered only after the device returned every period (virtio-snd rule).
        let timeout = kernel::time::msecs_to_jiffies(1000) as kernel::ffi::c_long;
        let returned = self.readers.wait_until(Some(timeout), || {
            self.state.lock().stream(id).map_or(true, |s| s.posted == 0)
        });
        if !matches!(returned, Ok(Wait::Ready)) {
            pr_warn!(
                "stream {}: the device did not return every period on release\n",
                id
            );
        }
        if stalled {
            return released;
        }
        stopped.and(released)
    }

    /// Moves completed periods to their streams' ready lists, then wakes readers and signals
    /// each stream's fasync owners once; the interrupt counters count only the interrupt.
    fn collect_rx(&self, by: Collector) {
        let mut wake = false;
        {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            st.drain_events();
            // Streams that completed a period in this interrupt (bit per stream id).
            let mut completed: u32 = 0;
            let mut seen: u32 = 0;
            while let Some((msg, len)) = st.rx.as_mut().and_then(|rx| rx.get_buf()) {
                let id = msg.xfer.stream_id.get();
                let Ok(s) = st.stream(id) else { continue };
                seen |= 1 << id;
                s.posted = s.posted.saturating_sub(1);
                wake = true;
                if !s.running {
                    // Returned by RELEASE: stop_stream waits for these.
                    st.recycle(msg);
                    continue;
                }
                let p = s.params;
                let status_len = core::mem::size_of::<PcmStatus>() as u32;
                // The used length is the device's claim: frames never past the message's own
                // buffer, and a length without room for the status means none was written
                // (`recycle` cleared it to 0, which is not S_OK).
                let capacity = msg.data.as_slice().len() as u32;
                let mut bytes = len.saturating_sub(status_len).min(capacity);
                let mut flags = 0;
                if len < status_len || msg.status.status.get() != code::S_OK {
                    // The device failed this period: whatever it wrote is not data, and the
                    // period's frames are lost.
                    flags |= PERIOD_FLAG_ERROR;
                    bytes = 0;
                    let lost = u64::from(p.period_bytes() / p.frame_bytes);
                    s.lost_before_next += lost;
                    s.stats.frames_lost += lost;
                    s.stats.error_periods += 1;
                }
                let frames = bytes / p.frame_bytes;
                if s.lost_before_next > 0 {
                    flags |= PERIOD_FLAG_LOST;
                }
                let header = PeriodHeader {
                    magic: PERIOD_MAGIC,
                    flags,
                    sequence: s.sequence,
                    timestamp_ns: now_ns(),
                    frames,
                    bytes: frames * p.frame_bytes,
                    frames_lost: core::mem::take(&mut s.lost_before_next),
                };
                // The record first, then `head` past it: a reader of the mapping sees it whole.
                let record = MmapRecord {
                    header,
                    buffer: msg.data.index(),
                    reserved: 0,
                };
                msg.data.pool().publish(&record);
                s.sequence += 1;
                s.last_completion_ns = header.timestamp_ns;
                s.stats.periods += 1;
                s.stats.frames += u64::from(frames);
                // `ready` holds every period of the stream, so this cannot fail.
                if let Err(r) = s.ready.push(Ready { msg, header }) {
                    st.recycle(r.msg);
                    continue;
                }
                completed |= 1 << id;
            }
            for (id, s) in st.streams.iter_mut().enumerate() {
                let interrupt = by == Collector::Interrupt;
                if interrupt && (seen & (1 << id) != 0 || s.running) {
                    s.stats.rx_interrupts += 1;
                }
                if completed & (1 << id) == 0 {
                    continue;
                }
                if interrupt {
                    s.stats.rx_interrupts_with_data += 1;
                }
                // Under the lock, so that a concurrent fasync(off) cannot slip between
                // counting and sending: the count is exactly the signals delivered.
                if s.async_on {
                    s.stats.signals_sent += 1;
                    if let Some(list) = self.fasync.get(id) {
                        list.kill(bindings::SIGIO, bindings::POLL_IN);
                    }
                }
            }
        }
        if wake {
            self.readers.wake_all();
        }
    }

    /// Copies one ready period to `out` (header, then frames) and recycles it.
    fn copy_out(&self, id: u32, ready: Ready, out: &mut UserSliceWriter) -> Result<usize> {
        let frames = ready.msg.data.as_slice();
        let n = (ready.header.bytes as usize).min(frames.len());
        let result = out
            .write_slice(ready.header.as_bytes())
            .and_then(|()| out.write_slice(&frames[..n]));
        let mut st = self.state.lock();
        st.recycle(ready.msg);
        let s = st.stream(id)?;
        s.publish_tail();
        if result.is_ok() {
            s.stats.periods_read += 1;
        }
        result.map(|()| core::mem::size_of::<PeriodHeader>() + n)
    }

    /// Gives back to the device every period of stream `id` before sequence `upto`, which
    /// must lie between the tail and the head (EINVAL: given back already, or not completed).
    fn give_back(&self, id: u32, upto: u64) -> Result {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        if st.gone {
            return Err(ENODEV);
        }
        let s = st.stream(id)?;
        let tail = s.tail();
        if !(tail..=s.sequence).contains(&upto) {
            return Err(EINVAL);
        }
        for _ in tail..upto {
            let Some(r) = st.stream(id)?.ready.pop() else {
                break;
            };
            st.recycle(r.msg);
            st.stream(id)?.stats.periods_read += 1;
        }
        st.stream(id)?.publish_tail();
        Ok(())
    }

    /// Joins or leaves a stream's fasync list; `async_on` changes on the side where the
    /// interrupt handler cannot signal a file that is not on the list.
    fn set_async(&self, id: u32, fd: i32, file: &miscdev::File, on: bool) -> Result<i32> {
        let list = self.fasync.get(id as usize).ok_or(EINVAL)?;
        // The VFS does not serialise fasync calls of one file (two threads may set and clear
        // O_ASYNC at once): without this, the list and `async_on` could disagree.
        let _serial = self.async_lock.lock();
        if on {
            let ret = list.helper(fd, file, true)?;
            self.state.lock().stream(id)?.async_on = true;
            Ok(ret)
        } else {
            self.state.lock().stream(id)?.async_on = false;
            list.helper(fd, file, false)
        }
    }
}

/// What the files of one /dev/vdaqN share: the device and the node's stream.
struct StreamNode {
    dev: Arc<VdaqDev>,
    id: u32,
}

impl miscdev::FileOperations for StreamNode {
    fn open(node: &Arc<Self>, _file: &miscdev::File) -> Result {
        // Not under `control_lock`: the misc core holds its global lock during open, and a
        // control request to a silent device holds `control_lock` for seconds. `open` stays
        // set until release has stopped the stream, so a new open cannot meet a stopping one.
        let dev = &node.dev;
        let mut st = dev.state.lock();
        if st.gone {
            return Err(ENODEV);
        }
        let s = st.stream(node.id)?;
        if s.open {
            return Err(EBUSY);
        }
        s.open = true;
        Ok(())
    }

    fn release(node: &Arc<Self>, file: &miscdev::File) {
        let (dev, id) = (&node.dev, node.id);
        // The LDD3 rule: leave the async queue on release (the VFS does it too; harmless).
        let _ = dev.set_async(id, -1, file, false);
        // Read without `control_lock`: only this file starts the stream, and no other
        // operation of it runs during release. A stopped stream's close so does not wait for
        // another stream's control request.
        let (gone, running) = {
            let mut st = dev.state.lock();
            let gone = st.gone;
            (gone, st.stream(id).is_ok_and(|s| s.running))
        };
        if !gone && running {
            let _serial = dev.control_lock.lock();
            let _ = dev.stop_stream(id);
        }
        if let Ok(s) = dev.state.lock().stream(id) {
            s.open = false;
        }
    }

    fn read(
        node: ArcBorrow<'_, Self>,
        file: &miscdev::File,
        out: &mut UserSliceWriter,
    ) -> Result<usize> {
        let (dev, id) = (&node.dev, node.id);
        let (record, running) = {
            let mut st = dev.state.lock();
            let s = st.stream(id)?;
            (
                core::mem::size_of::<PeriodHeader>() + s.params.period_bytes() as usize,
                s.running,
            )
        };
        if out.len() < record {
            return Err(EINVAL);
        }
        if !running {
            // A read of a stopped stream starts it.
            let _serial = dev.control_lock.lock();
            if !dev.state.lock().stream(id)?.running {
                dev.start_stream(id)?;
            }
        }
        let first = loop {
            let next = {
                let mut st = dev.state.lock();
                if st.gone {
                    return Err(ENODEV);
                }
                let s = st.stream(id)?;
                if s.stalled {
                    return Err(EIO);
                }
                s.ready.pop()
            };
            if let Some(r) = next {
                break r;
            }
            if file.is_nonblocking() {
                return Err(EAGAIN);
            }
            // The watchdog wakes us if the device goes silent.
            dev.readers.wait_until(None, || {
                let mut st = dev.state.lock();
                st.gone
                    || st
                        .stream(id)
                        .map_or(true, |s| !s.ready.is_empty() || s.stalled)
            })?;
        };
        let mut total = dev.copy_out(id, first, out)?;
        // Whole periods only: more if they are ready and fit, without waiting.
        while out.len() >= record {
            let Some(r) = dev.state.lock().stream(id)?.ready.pop() else {
                break;
            };
            total += dev.copy_out(id, r, out)?;
        }
        Ok(total)
    }

    fn poll(node: ArcBorrow<'_, Self>, _file: &miscdev::File, table: &miscdev::PollTable) -> u32 {
        let dev = &node.dev;
        table.register(&dev.readers);
        let mut st = dev.state.lock();
        let mut mask = 0;
        if st.gone {
            mask |= bindings::EPOLLERR | bindings::EPOLLHUP;
        }
        if let Ok(s) = st.stream(node.id) {
            if !s.ready.is_empty() {
                mask |= bindings::EPOLLIN | bindings::EPOLLRDNORM;
            } else if s.stalled {
                mask |= bindings::EPOLLERR;
            }
        }
        mask
    }

    fn ioctl(
        node: ArcBorrow<'_, Self>,
        _file: &miscdev::File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize> {
        let (dev, id) = (&node.dev, node.id);
        let size = |n| UserSlice::new(arg, n);
        match cmd {
            uapi::VDAQ_IOC_INFO => {
                let info = {
                    let mut st = dev.state.lock();
                    let s = st.stream(id)?;
                    uapi::Info {
                        streams: s.caps.streams,
                        stream: id,
                        formats: s.caps.formats,
                        rates: s.caps.rates,
                        channels_min: u32::from(s.caps.channels_min),
                        channels_max: u32::from(s.caps.channels_max),
                        max_periods: s.caps.max_periods,
                        max_period_bytes: MAX_PERIOD_BYTES,
                        params: s.params.to_uapi(),
                        started: u32::from(s.running),
                        reserved: 0,
                    }
                };
                size(core::mem::size_of::<uapi::Info>())
                    .writer()
                    .write_slice(info.as_bytes())?;
                Ok(0)
            }
            uapi::VDAQ_IOC_SET_PARAMS => {
                let mut raw = uapi::Params::default();
                size(core::mem::size_of::<uapi::Params>())
                    .reader()
                    .read_slice(raw.as_bytes_mut())?;
                let _serial = dev.control_lock.lock();
                let (caps, running) = {
                    let mut st = dev.state.lock();
                    let s = st.stream(id)?;
                    (s.caps, s.running)
                };
                if running {
                    return Err(EBUSY);
                }
                let p = caps.check(&raw)?;
                let periods = alloc_periods(id, &p)?;
                let old = {
                    let mut st = dev.state.lock();
                    let s = st.stream(id)?;
                    // The device still holds messages of these parameters (it never returned
                    // them after a stall), or a process maps their pages: keep them.
                    if s.posted > 0 || s.mappings > 0 {
                        return Err(EBUSY);
                    }
                    s.params = p;
                    s.install(periods)
                };
                // The old period buffers are freed outside the lock.
                drop(old);
                Ok(0)
            }
            uapi::VDAQ_IOC_START => {
                let _serial = dev.control_lock.lock();
                if dev.state.lock().stream(id)?.running {
                    return Err(EBUSY);
                }
                dev.start_stream(id)?;
                Ok(0)
            }
            uapi::VDAQ_IOC_STOP => {
                let _serial = dev.control_lock.lock();
                let (running, stalled) = {
                    let mut st = dev.state.lock();
                    let s = st.stream(id)?;
                    (s.running, s.stalled)
                };
                if !running && !stalled {
                    return Err(Error::from_errno(-(bindings::EBADFD as i32)));
                }
                // A stalled stream stays stalled until the device answers STOP.
                dev.stop_stream(id)?;
                Ok(0)
            }
            uapi::VDAQ_IOC_MMAP_LAYOUT => {
                let layout = {
                    let mut st = dev.state.lock();
                    if st.gone {
                        return Err(ENODEV);
                    }
                    st.stream(id)?.pool.as_ref().ok_or(EINVAL)?.layout()
                };
                size(core::mem::size_of::<uapi::MmapLayout>())
                    .writer()
                    .write_slice(layout.as_bytes())?;
                Ok(0)
            }
            uapi::VDAQ_IOC_MMAP_ACK => {
                let mut upto = [0u8; 8];
                size(upto.len()).reader().read_slice(&mut upto)?;
                dev.give_back(id, u64::from_ne_bytes(upto))?;
                Ok(0)
            }
            uapi::VDAQ_IOC_STATS => {
                let stats = dev.state.lock().stream(id)?.stats;
                let mut w = UserSlice::new(arg, core::mem::size_of::<Stats>()).writer();
                w.write_slice(stats.as_bytes())?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }

    fn fasync(node: ArcBorrow<'_, Self>, fd: i32, file: &miscdev::File, on: bool) -> Result<i32> {
        node.dev.set_async(node.id, fd, file, on)
    }

    /// Maps the stream's status, records and period buffers read-only (MAP_SHARED only).
    fn mmap(node: ArcBorrow<'_, Self>, _file: &miscdev::File, vma: &mm::VmaNew) -> Result {
        if !vma.is_shared() {
            return Err(EINVAL);
        }
        vma.try_clear_maywrite()?;
        vma.set_dontexpand();
        let (dev, id) = (&node.dev, node.id);
        // Counted before the pages go in: SET_PARAMS cannot replace them meanwhile.
        let pool = {
            let mut st = dev.state.lock();
            if st.gone {
                return Err(ENODEV);
            }
            let s = st.stream(id)?;
            let pool = s.pool.clone().ok_or(EINVAL)?;
            s.mappings += 1;
            pool
        };
        let mapped = pool.map_into(vma);
        if mapped.is_err() {
            Self::mapping_closed(node);
        }
        mapped
    }

    /// `stats`: the stream's statistics (the fields of `VDAQ_IOC_STATS`), whether it is
    /// started, and its ring's head and tail, one `name value` line each.
    fn show_stats(node: &Self, out: &mut miscdev::SysfsText<'_>) -> core::fmt::Result {
        use core::fmt::Write;
        let (s, started, head, tail) = {
            let mut st = node.dev.state.lock();
            let Ok(s) = st.stream(node.id) else {
                return Ok(());
            };
            (s.stats, s.running, s.sequence, s.tail())
        };
        let fields: [(&str, u64); 14] = [
            ("started", u64::from(started)),
            ("head", head),
            ("tail", tail),
            ("periods", s.periods),
            ("frames", s.frames),
            ("frames_lost", s.frames_lost),
            ("xruns", s.xruns),
            ("rx_interrupts", s.rx_interrupts),
            ("rx_interrupts_with_data", s.rx_interrupts_with_data),
            ("signals_sent", s.signals_sent),
            ("periods_read", s.periods_read),
            ("stalls", s.stalls),
            ("stall_signals", s.stall_signals),
            ("error_periods", s.error_periods),
        ];
        for (name, value) in fields {
            writeln!(out, "{} {}", name, value)?;
        }
        Ok(())
    }

    fn mapping_opened(node: ArcBorrow<'_, Self>) {
        if let Ok(s) = node.dev.state.lock().stream(node.id) {
            s.mappings += 1;
        }
    }

    fn mapping_closed(node: ArcBorrow<'_, Self>) {
        if let Ok(s) = node.dev.state.lock().stream(node.id) {
            s.mappings = s.mappings.saturating_sub(1);
        }
    }
}

/// A stream's period memory and messages for one set of parameters.
struct Periods {
    pool: Option<Arc<PagePool>>,
    ready: Ring<Ready>,
    spare: Ring<KBox<RxMsg>>,
}

/// The period messages, their pages and the ready list of stream `id` for `p`.
fn alloc_periods(id: u32, p: &Params) -> Result<Periods> {
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

struct VdaqDriver;

impl VdaqDriver {
    /// Reads every stream's PCM_INFO; the capture streams get their capabilities, default
    /// parameters and period messages, sharing `ring_periods` evenly.
    fn discover_streams(dev: &VdaqDev, ring_periods: u32) -> Result<u32> {
        let count = dev.state.lock().streams.len() as u32;
        if count == 0 {
            pr_err!("the device has no PCM stream\n");
            return Err(ENODEV);
        }
        let info_len = core::mem::size_of::<PcmInfo>();
        let query = QueryInfo::new(code::R_PCM_INFO, 0, count, info_len as u32);
        let resp = dev.control(query.as_bytes(), 4 + count as usize * info_len)?;
        let infos = resp.get(4..).ok_or(EIO)?;
        let captures = infos
            .chunks_exact(info_len)
            .filter_map(PcmInfo::from_prefix)
            .filter(|i| i.direction == virtio_snd::direction::INPUT)
            .count() as u32;
        if captures == 0 {
            pr_err!("the device has no capture stream\n");
            return Err(ENODEV);
        }
        // Whatever ring size the device reports, a stream never gets more than MAX_PERIODS.
        let max_periods = (ring_periods / captures).min(MAX_PERIODS);
        if max_periods < 2 {
            pr_err!("the receive ring holds fewer than two periods per capture stream\n");
            return Err(ENOSPC);
        }
        for (id, chunk) in infos.chunks_exact(info_len).enumerate() {
            let Some(info) = PcmInfo::from_prefix(chunk) else {
                continue;
            };
            if info.direction != virtio_snd::direction::INPUT {
                continue;
            }
            let caps = Caps {
                streams: captures,
                formats: info.formats.get(),
                rates: info.rates.get(),
                channels_min: info.channels_min,
                channels_max: info.channels_max,
                max_periods,
            };
            // The defaults must be offered: 48 kHz S16 stereo, else the nearest the stream has.
            let mut want = Params::DEFAULT.to_uapi();
            want.periods = want.periods.min(max_periods);
            if caps.check(&want).is_err() {
                let first_bit = |mask: u64| mask.trailing_zeros();
                want.rate = virtio_snd::rate_hz(first_bit(caps.rates) as u8).unwrap_or(0);
                want.format = first_bit(caps.formats);
                want.channels = u32::from(caps.channels_min.max(1));
                let width =
                    format::SampleFormat::from_wire(want.format as u8).map_or(0, |f| f.width());
                want.period_bytes = 1024 * width as u32 * want.channels;
            }
            let Ok(p) = caps.check(&want) else {
                pr_warn!(
                    "stream {} offers no format this driver handles: skipped\n",
                    id
                );
                continue;
            };
            let periods = alloc_periods(id as u32, &p)?;
            let old = {
                let mut st = dev.state.lock();
                let s = st.stream(id as u32)?;
                s.capture = true;
                s.caps = caps;
                s.params = p;
                s.install(periods)
            };
            drop(old);
        }
        Ok(captures)
    }
}

impl virtio::Driver for VdaqDriver {
    type Data = Arc<VdaqDev>;
    const NAME: &'static kernel::str::CStr = c_str!("vdaq");
    const DEVICE_ID: u32 = virtio_snd::DEVICE_ID;

    fn probe(vdev: &virtio::Device) -> Result<Arc<VdaqDev>> {
        let names = [
            c_str!("control"),
            c_str!("event"),
            c_str!("tx"),
            c_str!("rx"),
        ];
        let raw = vdev.find_vqs::<Self>(&names, &[false, true, false, true])?;
        let mut raw = raw.into_iter();
        let (Some(control), Some(events), Some(_tx), Some(rx)) =
            (raw.next(), raw.next(), raw.next(), raw.next())
        else {
            return Err(EINVAL);
        };
        // `streams` is the second field of the configuration space.
        let mut count = vdev.read_config_u32(4);
        if count > MAX_STREAMS {
            pr_warn!(
                "the device has {} streams: using the first {}\n",
                count,
                MAX_STREAMS
            );
            count = MAX_STREAMS;
        }
        let mut streams = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        let mut fasync = KVec::with_capacity(count as usize, GFP_KERNEL)?;
        for _ in 0..count {
            streams.push(Stream::new()?, GFP_KERNEL)?;
            fasync.push(FasyncList::new(), GFP_KERNEL)?;
        }
        // Every period is posted at once: no more than the ring holds (xfer header, frames
        // and status take three entries unless they go in an indirect table).
        let per_period = if vdev.has_indirect_descriptors() {
            1
        } else {
            3
        };
        let state = State {
            control: Some(Virtqueue::new(control)),
            events: Some(Virtqueue::new(events)),
            ring_periods: rx.size() / per_period,
            rx: Some(Virtqueue::new(rx)),
            gone: false,
            streams,
        };
        Arc::pin_init(
            pin_init!(VdaqDev {
                watchdog <- Timer::new(),
                state <- new_spinlock_irq!(state, "vdaq:state"),
                readers <- WaitQueue::new(),
                fasync: fasync,
                control_lock <- new_mutex!((), "vdaq:control"),
                async_lock <- new_mutex!((), "vdaq:async"),
                nodes <- new_mutex!(KVec::new(), "vdaq:nodes"),
            }),
            GFP_KERNEL,
        )
    }

    fn ready(vdev: &virtio::Device, dev: ArcBorrow<'_, VdaqDev>) -> Result {
        vdev.ready();
        let mut event_msgs = KVec::with_capacity(EVENT_BUFFERS, GFP_KERNEL)?;
        for _ in 0..EVENT_BUFFERS {
            event_msgs.push(
                KBox::new(
                    EventMsg {
                        event: Event::default(),
                    },
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        let ring_periods = {
            let mut st = dev.state.lock();
            if let Some(events) = st.events.as_mut() {
                for msg in event_msgs {
                    events.add(msg).map_err(|(e, _)| e)?;
                }
                events.kick();
            }
            st.ring_periods
        };
        let captures = Self::discover_streams(&dev, ring_periods)?;
        // Bit n: stream n captures (no allocation under the spinlock).
        let capture_mask = {
            let st = dev.state.lock();
            st.streams
                .iter()
                .enumerate()
                .fold(0u32, |m, (id, s)| m | (u32::from(s.capture) << id))
        };
        // On an error, `remove` unregisters the nodes made so far.
        for id in (0..MAX_STREAMS).filter(|id| capture_mask & (1 << id) != 0) {
            let number = NodeNumber::take()?;
            let name = CString::try_from_fmt(kernel::fmt!("vdaq{}", number.0))?;
            let node = Arc::new(
                StreamNode {
                    dev: dev.into(),
                    id,
                },
                GFP_KERNEL,
            )?;
            let reg = KBox::pin_init(miscdev::Registration::register(name, node), GFP_KERNEL)?;
            pr_info!(
                "virtio{}: stream {} is /dev/vdaq{}\n",
                vdev.index(),
                id,
                number.0
            );
            dev.nodes.lock().push((reg, number), GFP_KERNEL)?;
        }
        pr_info!(
            "virtio{} bound: {} capture stream(s)\n",
            vdev.index(),
            captures
        );
        Ok(())
    }

    fn callback(dev: ArcBorrow<'_, VdaqDev>, queue_index: u32) {
        match queue_index {
            q if q == u32::from(queue::RX) => dev.collect_rx(Collector::Interrupt),
            q if q == u32::from(queue::EVENT) => dev.state.lock().drain_events(),
            _ => {}
        }
    }

    fn remove(vdev: &virtio::Device, dev: ArcBorrow<'_, VdaqDev>) {
        // No new opens; open files keep the state alive and now see `gone`. Taking the nodes
        // out also breaks the cycle device -> node -> device.
        drop(core::mem::take(&mut *dev.nodes.lock()));
        let queues = {
            let mut st = dev.state.lock();
            st.gone = true;
            for (id, s) in st.streams.iter_mut().enumerate() {
                s.running = false;
                // A process that only waits for signals learns of it too (its read: ENODEV).
                if s.async_on {
                    if let Some(list) = dev.fasync.get(id) {
                        list.kill(bindings::SIGIO, bindings::POLL_HUP);
                    }
                }
            }
            (st.control.take(), st.events.take(), st.rx.take())
        };
        dev.watchdog.cancel();
        dev.readers.wake_all();
        vdev.reset();
        let (control, events, rx) = queues;
        if let Some(mut q) = control {
            while q.detach_unused().is_some() {}
        }
        if let Some(mut q) = events {
            while q.detach_unused().is_some() {}
        }
        if let Some(mut q) = rx {
            while let Some(msg) = q.detach_unused() {
                dev.state.lock().recycle(msg);
            }
        }
        // SAFETY: the device was reset and every `Virtqueue` was dropped just above.
        unsafe { vdev.del_vqs() };
        pr_info!("virtio{} removed\n", vdev.index());
    }
}

/// The N of /dev/vdaqN: the lowest number free, taken while the node exists (so that a device
/// bound again gets /dev/vdaq0 again), given back when it is dropped, after the node.
struct NodeNumber(u32);

/// Bit n: /dev/vdaqn exists.
static NODE_NUMBERS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

impl NodeNumber {
    fn take() -> Result<Self> {
        use core::sync::atomic::Ordering;
        let mut used = NODE_NUMBERS.load(Ordering::Relaxed);
        loop {
            let n = (!used).trailing_zeros();
            if n >= 64 {
                pr_err!("no free /dev/vdaqN number (64 nodes exist)\n");
                return Err(ENOSPC);
            }
            let taken = used | (1 << n);
            match NODE_NUMBERS.compare_exchange(used, taken, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(Self(n)),
                Err(now) => used = now,
            }
        }
    }
}

impl Drop for NodeNumber {
    fn drop(&mut self) {
        NODE_NUMBERS.fetch_and(!(1 << self.0), core::sync::atomic::Ordering::AcqRel);
    }
}

struct VdaqModule {
    _driver: Pin<KBox<virtio::Registration<VdaqDriver>>>,
}

impl kernel::Module for VdaqModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let driver = KBox::pin_init(virtio::Registration::register(module), GFP_KERNEL)?;
        Ok(Self { _driver: driver })
    }
}
