// SPDX-License-Identifier: GPL-2.0

//! vdaq: driver for the vdaq virtual data-acquisition card, a virtio-sound (id 25) capture
//! device.
//!
//! Supported:
//! - stream 0 of each device as /dev/vdaqN (a misc device; one open file at a time, EBUSY
//!   otherwise), started by VDAQ_IOC_START or the first read(), stopped and released by
//!   VDAQ_IOC_STOP or the close;
//! - parameters (VDAQ_IOC_SET_PARAMS while stopped): rate, channels and format among those the
//!   device offers, period bytes (whole frames, up to 1 MiB) and 2 periods up to what the
//!   receive ring holds (three entries per period without indirect descriptors); default 48 kHz,
//!   S16, 2 channels, 1024-frame periods, 16 periods (or as many as the ring holds);
//! - VDAQ_IOC_INFO: what the device offers and the current parameters;
//! - read(): whole periods, each preceded by a `uapi::PeriodHeader` (sequence, interrupt
//!   timestamp, frames, frames lost before it); O_NONBLOCK gives EAGAIN, blocking reads sleep
//!   interruptibly; a buffer too small for one record gives EINVAL;
//! - poll(): EPOLLIN | EPOLLRDNORM when a period is ready, EPOLLERR | EPOLLHUP when the device
//!   is gone, EPOLLERR when it stalled;
//! - stall detection: started, holding buffers the device does not complete for four periods
//!   (at least 200 ms; a full ring because of a slow reader is not a stall), reads
//!   end with EIO and poll reports EPOLLERR (checked by readers and poll; no timer, so a
//!   process sleeping in poll() sees it when its own time-out ends);
//! - fasync: one kill_fasync(SIGIO, POLL_IN) for each receive interrupt that completed at
//!   least one period;
//! - ioctl VDAQ_IOC_STATS;
//! - XRUN events (selected in SET_PARAMS) counted as frames lost before the next period.
//!
//! The receive callback runs in hard-interrupt context (INTx): the ring and the queues are
//! guarded by an irqsave spinlock. Every `unsafe` FFI call lives in `virtio`, `miscdev` and
//! `kernel_sync`; this file is safe Rust.

use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, ArcBorrow, Mutex};
use kernel::uaccess::{UserSlice, UserSliceWriter};
use kernel::{bindings, c_str, new_mutex};

mod kernel_sync;
mod miscdev;
mod virtio;

#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/format.rs"]
mod format;
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/uapi.rs"]
mod uapi;
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/virtio_snd.rs"]
mod virtio_snd;
#[allow(dead_code, unreachable_pub)]
#[path = "../proto/src/wire.rs"]
mod wire;

use kernel_sync::{FasyncList, SpinLockIrq, Wait, WaitQueue};
use uapi::{PeriodHeader, Stats, PERIOD_FLAG_ERROR, PERIOD_FLAG_LOST, PERIOD_MAGIC};
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

/// What the device's stream 0 offers, from PCM_INFO and the ring size.
#[derive(Clone, Copy, Default)]
struct Caps {
    streams: u32,
    formats: u64,
    rates: u64,
    channels_min: u8,
    channels_max: u8,
    max_periods: u32,
}

/// Largest period: one allocation per period, kept well within kmalloc's reach.
const MAX_PERIOD_BYTES: u32 = 1 << 20;

impl Caps {
    /// Validates user parameters (EINVAL for anything the stream does not offer).
    fn check(&self, u: &uapi::Params) -> Result<Params> {
        let rate_code = virtio_snd::rate_code(u.rate).ok_or(EINVAL)?;
        let format = u8::try_from(u.format).map_err(|_| EINVAL)?;
        let width = format::SampleFormat::from_wire(format).ok_or(EINVAL)?.width() as u32;
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
            && (2..=self.max_periods).contains(&u.periods);
        let period_frames = u.period_bytes.checked_div(frame_bytes).filter(|_| ok).ok_or(EINVAL)?;
        Ok(Params { rate_code, format, channels, frame_bytes, period_frames, periods: u.periods })
    }
}

/// How long a control request may take before the device is considered broken.
const CONTROL_TIMEOUT_MS: u32 = 1000;
/// Event buffers kept posted: the device sends one XRUN event per lost period, all before the
/// completion that follows the gap, so a burst of losses needs as many buffers (a burst longer
/// than this is undercounted; the device counts the events it had to drop).
const EVENT_BUFFERS: usize = 64;
/// Stream 0 is the one the driver captures from.
const STREAM: u32 = 0;

/// A capture message: xfer header (device-readable), frames and status (device-writable).
struct RxMsg {
    xfer: PcmXfer,
    status: PcmStatus,
    data: KVec<u8>,
}

impl Message for RxMsg {
    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            readable: [Some(self.xfer.as_bytes()), None],
            writable: [Some(&mut self.data[..]), Some(self.status.as_bytes_mut())],
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
        Buffers { readable: [None, None], writable: [Some(self.event.as_bytes_mut()), None] }
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
        Ok(Self { slots, head: 0, len: 0 })
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

/// What the interrupt handler and the file operations share, under the irqsave lock.
struct State {
    control: Option<Virtqueue<CtlMsg>>,
    events: Option<Virtqueue<EventMsg>>,
    rx: Option<Virtqueue<RxMsg>>,
    /// Completed periods, oldest first (capacity: every period).
    ready: Ring<Ready>,
    /// Period messages neither posted nor ready.
    spare: Ring<KBox<RxMsg>>,
    /// Period messages the device holds.
    posted: u32,
    open: bool,
    /// The open file has O_ASYNC set (it is on the fasync list).
    async_on: bool,
    running: bool,
    gone: bool,
    sequence: u64,
    lost_before_next: u64,
    stats: Stats,
    /// CLOCK_MONOTONIC of the last period completion (or of the start).
    last_completion_ns: u64,
    /// No completion for [`State::stall_timeout_ns`] while started: the device is gone silent.
    stalled: bool,
    /// The stream's parameters; the period messages are allocated for them.
    params: Params,
    /// What the stream offers.
    caps: Caps,
}

#[pin_data]
struct VdaqDev {
    #[pin]
    state: SpinLockIrq<State>,
    #[pin]
    readers: WaitQueue,
    fasync: FasyncList,
    /// Serialises control requests and stream start/stop (process context).
    #[pin]
    control_lock: Mutex<()>,
    /// The /dev node; taken out (and so unregistered) on removal.
    #[pin]
    node: Mutex<Option<Pin<KBox<miscdev::Registration<VdaqDev>>>>>,
}

fn now_ns() -> u64 {
    kernel::time::Ktime::ktime_get().to_ns() as u64
}

/// Shortest stall time-out, for very short periods (scheduling noise is not a stall).
const MIN_STALL_NS: u64 = 200_000_000;

impl State {
    /// How long without a completion, while started, means the device is gone silent: four
    /// periods, and at least 200 ms.
    fn stall_timeout_ns(&self) -> u64 {
        let rate = u64::from(virtio_snd::rate_hz(self.params.rate_code).unwrap_or(48_000)).max(1);
        (4 * u64::from(self.params.period_frames) * 1_000_000_000 / rate).max(MIN_STALL_NS)
    }

    /// Marks the stream stalled if it is started and the device has been silent too long.
    fn check_stall(&mut self) -> bool {
        if self.running
            && !self.stalled
            && self.posted > 0
            && now_ns().saturating_sub(self.last_completion_ns) > self.stall_timeout_ns()
        {
            self.stalled = true;
            pr_warn!("no period completed for {} ms: the device is not responding\n",
                self.stall_timeout_ns() / 1_000_000);
        }
        self.stalled
    }

    fn pop_ready(&mut self) -> Option<Ready> {
        self.ready.pop()
    }

    /// Gives a period message back to the device, or keeps it when the stream is stopped.
    fn recycle(&mut self, msg: KBox<RxMsg>) {
        if self.running {
            if let Some(rx) = self.rx.as_mut() {
                match rx.add(msg) {
                    Ok(()) => {
                        self.posted += 1;
                        rx.kick();
                        // The device has work again: a stall is counted from here (a slow
                        // reader, whose ring was full, is not a silent device).
                        if self.posted == 1 {
                            self.last_completion_ns = now_ns();
                        }
                        return;
                    }
                    Err((_, msg)) => {
                        // Cannot happen with the ring sized for every period; keep it.
                        let _ = self.spare.push(msg);
                        return;
                    }
                }
            }
        }
        // Every period fits in `spare`.
        let _ = self.spare.push(msg);
    }

    /// Takes XRUN events: each is a period lost before the next completion.
    fn drain_events(&mut self, period_frames: u32) {
        let Some(events) = self.events.as_mut() else { return };
        let mut reposted = false;
        while let Some((msg, len)) = events.get_buf() {
            if len as usize >= core::mem::size_of::<Event>()
                && msg.event.hdr.code.get() == code::EVT_PCM_XRUN
                && msg.event.data.get() == STREAM
            {
                self.lost_before_next += u64::from(period_frames);
                self.stats.xruns += 1;
                self.stats.frames_lost += u64::from(period_frames);
            }
            if events.add(msg).is_ok() {
                reposted = true;
            }
        }
        if reposted {
            events.kick();
        }
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
        let msg = KBox::new(CtlMsg { id, request: req, response }, GFP_KERNEL)?;
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
            if let Some((mut msg, len)) = done {
                if msg.id != id {
                    // The late answer of a request that timed out: drop it, keep waiting.
                    continue;
                }
                let status = wire::Le32::from_prefix(&msg.response[..len as usize])
                    .map(|s| s.get())
                    .unwrap_or(0);
                if status != code::S_OK {
                    pr_warn!("control request failed with status {:#x}\n", status);
                    return Err(EIO);
                }
                return Ok(core::mem::replace(&mut msg.response, KVec::new()));
            }
            kernel_sync::sleep_ms(1);
        }
        pr_err!("control request timed out\n");
        Err(Error::from_errno(-(bindings::ETIMEDOUT as i32)))
    }

    fn pcm_command(&self, op: u32) -> Result {
        self.control(virtio_snd::PcmHdr::new(op, STREAM).as_bytes(), 4).map(|_| ())
    }

    /// SET_PARAMS, PREPARE, post every period, START.
    fn start_stream(&self) -> Result {
        let p = self.state.lock().params;
        let set = PcmSetParams {
            hdr: virtio_snd::PcmHdr::new(code::R_PCM_SET_PARAMS, STREAM),
            buffer_bytes: Le32::new(p.period_bytes() * p.periods),
            period_bytes: Le32::new(p.period_bytes()),
            features: Le32::new(1 << virtio_snd::pcm_feature::EVT_XRUNS),
            channels: p.channels,
            format: p.format,
            rate: p.rate_code,
            padding: 0,
        };
        self.control(set.as_bytes(), 4)?;
        self.pcm_command(code::R_PCM_PREPARE)?;
        {
            let mut st = self.state.lock();
            st.running = true;
            st.stalled = false;
            st.last_completion_ns = now_ns();
            st.sequence = 0;
            st.lost_before_next = 0;
            for _ in 0..st.spare.len() {
                if let Some(msg) = st.spare.pop() {
                    st.recycle(msg);
                }
            }
        }
        if let Err(e) = self.pcm_command(code::R_PCM_START) {
            let _ = self.stop_stream();
            return Err(e);
        }
        Ok(())
    }

    /// STOP and RELEASE; the device returns every posted period on RELEASE.
    fn stop_stream(&self) -> Result {
        let stalled = {
            let mut st = self.state.lock();
            st.running = false;
            while let Some(r) = st.pop_ready() {
                st.recycle(r.msg);
            }
            st.stalled
        };
        if stalled {
            // A silent device would only time the requests out; it is reset when the driver
            // unbinds (rmmod, removal), which also returns its buffers.
            return Err(EIO);
        }
        let stopped = self.pcm_command(code::R_PCM_STOP);
        let released = self.pcm_command(code::R_PCM_RELEASE);
        // RELEASE answered only after the device returned every period (virtio-snd rule).
        let timeout = kernel::time::msecs_to_jiffies(1000) as kernel::ffi::c_long;
        let returned = self.readers.wait_until(Some(timeout), || {
            self.state.lock().posted == 0
        });
        if !matches!(returned, Ok(Wait::Ready)) {
            pr_warn!("the device did not return every period on release\n");
        }
        stopped.and(released)
    }

    /// The receive interrupt: moves completed periods to the ready list, then wakes readers
    /// and signals fasync owners once.
    fn rx_interrupt(&self) {
        let completed = {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            let p = st.params;
            st.stats.rx_interrupts += 1;
            st.drain_events(p.period_frames);
            let mut completed = 0u32;
            let mut returned = 0u32;
            while let Some((msg, len)) = st.rx.as_mut().and_then(|rx| rx.get_buf()) {
                st.posted = st.posted.saturating_sub(1);
                if !st.running {
                    // Returned by RELEASE: stop_stream waits for these.
                    st.recycle(msg);
                    returned += 1;
                    continue;
                }
                let status_len = core::mem::size_of::<PcmStatus>() as u32;
                let bytes = len.saturating_sub(status_len).min(p.period_bytes());
                let frames = bytes / p.frame_bytes;
                let mut flags = 0;
                if st.lost_before_next > 0 {
                    flags |= PERIOD_FLAG_LOST;
                }
                if msg.status.status.get() != code::S_OK {
                    flags |= PERIOD_FLAG_ERROR;
                }
                let header = PeriodHeader {
                    magic: PERIOD_MAGIC,
                    flags,
                    sequence: st.sequence,
                    timestamp_ns: kernel::time::Ktime::ktime_get().to_ns() as u64,
                    frames,
                    bytes: frames * p.frame_bytes,
                    frames_lost: core::mem::take(&mut st.lost_before_next),
                };
                st.sequence += 1;
                st.last_completion_ns = header.timestamp_ns;
                st.stats.periods += 1;
                st.stats.frames += u64::from(frames);
                // `ready` holds every period, so this cannot fail.
                if let Err(r) = st.ready.push(Ready { msg, header }) {
                    st.recycle(r.msg);
                    continue;
                }
                completed += 1;
            }
            if completed > 0 {
                st.stats.rx_interrupts_with_data += 1;
                // Under the lock, so that a concurrent fasync(off) cannot slip between
                // counting and sending: the count is exactly the signals delivered.
                if st.async_on {
                    st.stats.signals_sent += 1;
                    self.fasync.kill(bindings::SIGIO, bindings::POLL_IN);
                }
            }
            (completed, returned)
        };
        if completed.0 > 0 || completed.1 > 0 {
            self.readers.wake_all();
        }
    }

    /// Copies one ready period to `out` (header, then frames) and recycles it.
    fn copy_out(&self, ready: Ready, out: &mut UserSliceWriter) -> Result<usize> {
        let n = ready.header.bytes as usize;
        let result = out
            .write_slice(ready.header.as_bytes())
            .and_then(|()| out.write_slice(&ready.msg.data[..n]));
        let mut st = self.state.lock();
        st.recycle(ready.msg);
        if result.is_ok() {
            st.stats.periods_read += 1;
        }
        result.map(|()| core::mem::size_of::<PeriodHeader>() + n)
    }
}

impl miscdev::FileOperations for VdaqDev {
    fn open(dev: &Arc<Self>, _file: &miscdev::File) -> Result {
        let _serial = dev.control_lock.lock();
        {
            let mut st = dev.state.lock();
            if st.gone {
                return Err(ENODEV);
            }
            if st.open {
                return Err(EBUSY);
            }
            st.open = true;
        }
        Ok(())
    }

    fn release(dev: &Arc<Self>, file: &miscdev::File) {
        // The LDD3 rule: leave the async queue on release (the VFS does it too; harmless).
        let _ = Self::set_async(dev, -1, file, false);
        let _serial = dev.control_lock.lock();
        let (gone, running) = {
            let st = dev.state.lock();
            (st.gone, st.running)
        };
        if !gone && running {
            let _ = dev.stop_stream();
        }
        dev.state.lock().open = false;
    }

    fn read(
        dev: ArcBorrow<'_, Self>,
        file: &miscdev::File,
        out: &mut UserSliceWriter,
    ) -> Result<usize> {
        let record = {
            let st = dev.state.lock();
            core::mem::size_of::<PeriodHeader>() + st.params.period_bytes() as usize
        };
        if out.len() < record {
            return Err(EINVAL);
        }
        if !dev.state.lock().running {
            // A read of a stopped stream starts it.
            let _serial = dev.control_lock.lock();
            if !dev.state.lock().running {
                dev.start_stream()?;
            }
        }
        let first = loop {
            let (next, timeout_ns) = {
                let mut st = dev.state.lock();
                if st.gone {
                    return Err(ENODEV);
                }
                let next = st.pop_ready();
                if next.is_none() && st.check_stall() {
                    return Err(EIO);
                }
                (next, st.stall_timeout_ns())
            };
            if let Some(r) = next {
                break r;
            }
            if file.is_nonblocking() {
                return Err(EAGAIN);
            }
            // Sleep at most a stall time-out: a silent device ends the read with EIO.
            let jiffies = kernel::time::msecs_to_jiffies((timeout_ns / 1_000_000) as u32);
            dev.readers.wait_until(Some(jiffies as kernel::ffi::c_long), || {
                let st = dev.state.lock();
                !st.ready.is_empty() || st.gone
            })?;
        };
        let mut total = dev.copy_out(first, out)?;
        // Whole periods only: more if they are ready and fit, without waiting.
        while out.len() >= record {
            let Some(r) = dev.state.lock().pop_ready() else { break };
            total += dev.copy_out(r, out)?;
        }
        Ok(total)
    }

    fn poll(dev: ArcBorrow<'_, Self>, _file: &miscdev::File, table: &miscdev::PollTable) -> u32 {
        table.register(&dev.readers);
        let mut st = dev.state.lock();
        let mut mask = 0;
        if !st.ready.is_empty() {
            mask |= bindings::EPOLLIN | bindings::EPOLLRDNORM;
        } else if st.check_stall() {
            mask |= bindings::EPOLLERR;
        }
        if st.gone {
            mask |= bindings::EPOLLERR | bindings::EPOLLHUP;
        }
        mask
    }

    fn ioctl(dev: ArcBorrow<'_, Self>, _file: &miscdev::File, cmd: u32, arg: usize) -> Result<isize> {
        let size = |n| UserSlice::new(arg, n);
        match cmd {
            uapi::VDAQ_IOC_INFO => {
                let info = {
                    let st = dev.state.lock();
                    uapi::Info {
                        streams: st.caps.streams,
                        stream: STREAM,
                        formats: st.caps.formats,
                        rates: st.caps.rates,
                        channels_min: u32::from(st.caps.channels_min),
                        channels_max: u32::from(st.caps.channels_max),
                        max_periods: st.caps.max_periods,
                        max_period_bytes: MAX_PERIOD_BYTES,
                        params: st.params.to_uapi(),
                        started: u32::from(st.running),
                        reserved: 0,
                    }
                };
                size(core::mem::size_of::<uapi::Info>()).writer().write_slice(info.as_bytes())?;
                Ok(0)
            }
            uapi::VDAQ_IOC_SET_PARAMS => {
                let mut raw = uapi::Params::default();
                size(core::mem::size_of::<uapi::Params>()).reader().read_slice(raw.as_bytes_mut())?;
                let _serial = dev.control_lock.lock();
                let (caps, running) = {
                    let st = dev.state.lock();
                    (st.caps, st.running)
                };
                if running {
                    return Err(EBUSY);
                }
                let p = caps.check(&raw)?;
                let (ready, spare) = alloc_periods(&p)?;
                let (old_ready, old_spare) = {
                    let mut st = dev.state.lock();
                    st.params = p;
                    (core::mem::replace(&mut st.ready, ready), core::mem::replace(&mut st.spare, spare))
                };
                // The old period buffers are freed outside the lock.
                drop((old_ready, old_spare));
                Ok(0)
            }
            uapi::VDAQ_IOC_START => {
                let _serial = dev.control_lock.lock();
                if dev.state.lock().running {
                    return Err(EBUSY);
                }
                dev.start_stream()?;
                Ok(0)
            }
            uapi::VDAQ_IOC_STOP => {
                let _serial = dev.control_lock.lock();
                if !dev.state.lock().running {
                    return Err(Error::from_errno(-(bindings::EBADFD as i32)));
                }
                dev.stop_stream()?;
                Ok(0)
            }
            uapi::VDAQ_IOC_STATS => {
                let stats = dev.state.lock().stats;
                let mut w = UserSlice::new(arg, core::mem::size_of::<Stats>()).writer();
                w.write_slice(stats.as_bytes())?;
                Ok(0)
            }
            _ => Err(ENOTTY),
        }
    }

    fn fasync(dev: ArcBorrow<'_, Self>, fd: i32, file: &miscdev::File, on: bool) -> Result<i32> {
        Self::set_async(&dev, fd, file, on)
    }
}

impl VdaqDev {
    /// Joins or leaves the fasync list; `async_on` changes on the side where the interrupt
    /// handler cannot signal a file that is not on the list.
    fn set_async(dev: &VdaqDev, fd: i32, file: &miscdev::File, on: bool) -> Result<i32> {
        if on {
            let ret = dev.fasync.helper(fd, file, true)?;
            dev.state.lock().async_on = true;
            Ok(ret)
        } else {
            dev.state.lock().async_on = false;
            dev.fasync.helper(fd, file, false)
        }
    }
}

/// The period messages and the ready list for `p`.
fn alloc_periods(p: &Params) -> Result<(Ring<Ready>, Ring<KBox<RxMsg>>)> {
    let ready = Ring::with_capacity(p.periods as usize)?;
    let mut spare = Ring::with_capacity(p.periods as usize)?;
    for _ in 0..p.periods {
        let msg = RxMsg {
            xfer: PcmXfer { stream_id: Le32::new(STREAM) },
            status: PcmStatus::default(),
            data: KVec::from_elem(0u8, p.period_bytes() as usize, GFP_KERNEL)?,
        };
        let _ = spare.push(KBox::new(msg, GFP_KERNEL)?);
    }
    Ok((ready, spare))
}

struct VdaqDriver;

impl VdaqDriver {
    /// Checks that stream 0 captures with the driver's parameters.
    fn check_stream(dev: &VdaqDev, streams: u32) -> Result {
        if streams == 0 {
            pr_err!("the device has no PCM stream\n");
            return Err(ENODEV);
        }
        let query =
            QueryInfo::new(code::R_PCM_INFO, STREAM, 1, core::mem::size_of::<PcmInfo>() as u32);
        let resp = dev.control(query.as_bytes(), 4 + core::mem::size_of::<PcmInfo>())?;
        let info = PcmInfo::from_prefix(&resp[4..]).ok_or(EIO)?;
        if info.direction != virtio_snd::direction::INPUT {
            pr_err!("stream 0 is not a capture stream\n");
            return Err(ENODEV);
        }
        let mut st = dev.state.lock();
        st.caps = Caps {
            streams,
            formats: info.formats.get(),
            rates: info.rates.get(),
            channels_min: info.channels_min,
            channels_max: info.channels_max,
            max_periods: st.caps.max_periods,
        };
        // The defaults must be offered: 48 kHz S16 stereo, else the nearest the device has.
        let mut want = st.params.to_uapi();
        if st.caps.check(&want).is_err() {
            let first_bit = |mask: u64| mask.trailing_zeros();
            want.rate = virtio_snd::rate_hz(first_bit(st.caps.rates) as u8).unwrap_or(0);
            want.format = first_bit(st.caps.formats);
            want.channels = u32::from(st.caps.channels_min.max(1));
            let width = format::SampleFormat::from_wire(want.format as u8).map_or(0, |f| f.width());
            want.period_bytes = 1024 * width as u32 * want.channels;
        }
        let p = st.caps.check(&want).map_err(|e| {
            pr_err!("stream 0 offers no format this driver handles\n");
            e
        })?;
        let same_size = p.period_bytes() == st.params.period_bytes() && p.periods == st.params.periods;
        st.params = p;
        drop(st);
        if !same_size {
            let (ready, spare) = alloc_periods(&p)?;
            let mut st = dev.state.lock();
            st.ready = ready;
            st.spare = spare;
        }
        Ok(())
    }
}

impl virtio::Driver for VdaqDriver {
    type Data = Arc<VdaqDev>;
    const NAME: &'static kernel::str::CStr = c_str!("vdaq");
    const DEVICE_ID: u32 = virtio_snd::DEVICE_ID;

    fn probe(vdev: &virtio::Device) -> Result<Arc<VdaqDev>> {
        let mut p = Params::DEFAULT;
        let names = [c_str!("control"), c_str!("event"), c_str!("tx"), c_str!("rx")];
        let raw = vdev.find_vqs::<Self>(&names, &[false, true, false, true])?;
        let mut raw = raw.into_iter();
        let (Some(control), Some(events), Some(_tx), Some(rx)) =
            (raw.next(), raw.next(), raw.next(), raw.next())
        else {
            return Err(EINVAL);
        };
        // Every period is posted at once: no more than the ring holds (xfer header, frames
        // and status take three entries unless they go in an indirect table).
        let per_period = if vdev.has_indirect_descriptors() { 1 } else { 3 };
        p.periods = p.periods.min(rx.size() / per_period);
        if p.periods < 2 {
            pr_err!("the receive ring ({} entries) holds fewer than two periods\n", rx.size());
            return Err(ENOSPC);
        }
        let max_periods = rx.size() / per_period;
        let (ready, spare) = alloc_periods(&p)?;
        let state = State {
            control: Some(Virtqueue::new(control)),
            events: Some(Virtqueue::new(events)),
            rx: Some(Virtqueue::new(rx)),
            ready,
            spare,
            posted: 0,
            open: false,
            async_on: false,
            running: false,
            gone: false,
            sequence: 0,
            lost_before_next: 0,
            last_completion_ns: 0,
            stalled: false,
            stats: Stats::default(),
            params: p,
            caps: Caps { max_periods, ..Caps::default() },
        };
        Arc::pin_init(
            pin_init!(VdaqDev {
                state <- new_spinlock_irq!(state, "vdaq:state"),
                readers <- WaitQueue::new(),
                fasync: FasyncList::new(),
                control_lock <- new_mutex!((), "vdaq:control"),
                node <- new_mutex!(None, "vdaq:node"),
            }),
            GFP_KERNEL,
        )
    }

    fn ready(vdev: &virtio::Device, dev: ArcBorrow<'_, VdaqDev>) -> Result {
        vdev.ready();
        let mut event_msgs = KVec::with_capacity(EVENT_BUFFERS, GFP_KERNEL)?;
        for _ in 0..EVENT_BUFFERS {
            event_msgs.push(KBox::new(EventMsg { event: Event::default() }, GFP_KERNEL)?, GFP_KERNEL)?;
        }
        {
            let mut st = dev.state.lock();
            if let Some(events) = st.events.as_mut() {
                for msg in event_msgs {
                    events.add(msg).map_err(|(e, _)| e)?;
                }
                events.kick();
            }
        }
        // `streams` is the second field of the configuration space.
        let streams = vdev.read_config_u32(4);
        Self::check_stream(&dev, streams)?;
        let name = CString::try_from_fmt(kernel::fmt!("vdaq{}", next_minor_index()))?;
        let node = KBox::pin_init(miscdev::Registration::register(name, dev.into()), GFP_KERNEL)?;
        *dev.node.lock() = Some(node);
        pr_info!("virtio{} bound: {} stream(s), capturing stream 0\n", vdev.index(), streams);
        Ok(())
    }

    fn callback(dev: ArcBorrow<'_, VdaqDev>, queue_index: u32) {
        match queue_index {
            q if q == u32::from(queue::RX) => dev.rx_interrupt(),
            q if q == u32::from(queue::EVENT) => {
                let mut st = dev.state.lock();
                let period_frames = st.params.period_frames;
                st.drain_events(period_frames);
            }
            _ => {}
        }
    }

    fn remove(vdev: &virtio::Device, dev: ArcBorrow<'_, VdaqDev>) {
        // No new opens; open files keep the state alive and now see `gone`.
        drop(dev.node.lock().take());
        let queues = {
            let mut st = dev.state.lock();
            st.gone = true;
            st.running = false;
            (st.control.take(), st.events.take(), st.rx.take())
        };
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
                let _ = dev.state.lock().spare.push(msg);
            }
        }
        // SAFETY: the device was reset and every `Virtqueue` was dropped just above.
        unsafe { vdev.del_vqs() };
        pr_info!("virtio{} removed\n", vdev.index());
    }
}

/// Numbers the /dev nodes vdaq0, vdaq1, ... in binding order.
fn next_minor_index() -> u32 {
    static NEXT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, core::sync::atomic::Ordering::Relaxed)
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
