// SPDX-License-Identifier: GPL-2.0

//! One bound device: the state its interrupt handlers and its files share, the receive and
//! event handlers, and the stall watchdog.

use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Mutex;

use crate::control::CtlMsg;
pub(crate) use crate::kernel_sync::now_ns;
use crate::kernel_sync::{
    FasyncList, HrTimer, HrTimerCallback, HrTimerRestart, SpinLockIrq, WaitQueue,
};
use crate::miscdev;
use crate::node::StreamNode;
use crate::probe::NodeNumber;
use crate::stream::{Ready, RxMsg, Stream};
use crate::uapi::{MmapRecord, PeriodHeader, PERIOD_FLAG_ERROR, PERIOD_FLAG_LOST, PERIOD_MAGIC};
use crate::virtio::{Buffers, Message, Virtqueue};
use crate::virtio_snd::{code, Event, PcmStatus};
use crate::wire::Pod;

/// Event buffers kept posted: the device sends one XRUN event per lost period, all before the
/// completion that follows the gap, so a burst of losses needs as many buffers (a burst longer
/// than this is undercounted; the device counts the events it had to drop).
pub(crate) const EVENT_BUFFERS: usize = 64;
/// Room for one event.
pub(crate) struct EventMsg {
    pub(crate) event: Event,
}

impl Message for EventMsg {
    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            readable: [None, None],
            writable: [Some(self.event.as_bytes_mut()), None],
        }
    }
}

/// What the interrupt handlers and the file operations share, under the irqsave lock.
pub(crate) struct State {
    pub(crate) control: Option<Virtqueue<CtlMsg>>,
    pub(crate) events: Option<Virtqueue<EventMsg>>,
    pub(crate) rx: Option<Virtqueue<RxMsg>>,
    pub(crate) gone: bool,
    /// Periods the receive ring holds, shared by the capture streams.
    pub(crate) ring_periods: u32,
    /// Indexed by virtio-snd stream id.
    pub(crate) streams: KVec<Stream>,
}

impl State {
    pub(crate) fn stream(&mut self, id: u32) -> Result<&mut Stream> {
        self.streams.get_mut(id as usize).ok_or(EINVAL)
    }

    /// Gives a period message back to the device, or keeps it when its stream is stopped.
    pub(crate) fn recycle(&mut self, mut msg: KBox<RxMsg>) {
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
    pub(crate) fn drain_events(&mut self) {
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
pub(crate) struct VdaqDev {
    /// Declared first: dropped (cancelled) before what its callback uses.
    #[pin]
    pub(crate) watchdog: HrTimer<VdaqDev>,
    #[pin]
    pub(crate) state: SpinLockIrq<State>,
    /// Readers and poll() callers of every stream sleep here.
    #[pin]
    pub(crate) readers: WaitQueue,
    /// One fasync list per stream id (outside the lock: fasync_helper may sleep).
    pub(crate) fasync: KVec<FasyncList>,
    /// Serialises control requests and stream start/stop (process context).
    #[pin]
    pub(crate) control_lock: Mutex<()>,
    /// Serialises joining and leaving the fasync lists.
    #[pin]
    pub(crate) async_lock: Mutex<()>,
    /// The /dev nodes; taken out (and so unregistered, then their numbers freed) on removal.
    #[pin]
    pub(crate) nodes: Mutex<Nodes>,
}

/// A device's /dev nodes, each with the number its name carries.
pub(crate) type Nodes = KVec<(
    Pin<KBox<miscdev::MiscDeviceRegistration<StreamNode>>>,
    NodeNumber,
)>;

crate::impl_has_hr_timer! {
    impl HasHrTimer<Self> for VdaqDev { self.watchdog }
}

/// Who collects completed receive buffers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Collector {
    /// The receive queue's interrupt.
    Interrupt,
    /// The stall watchdog, before it calls a silent stream stalled.
    Watchdog,
}

impl HrTimerCallback for VdaqDev {
    /// The watchdog: finds streams gone silent and tells their users; runs again in a quarter
    /// of the shortest stall time-out while a stream is started and not stalled.
    fn run(this: &Self) -> HrTimerRestart {
        let now = now_ns();
        // Periods the device completed whose interrupt has not run yet (a guest vCPU the host
        // did not run for longer than the time-out) are not a stall: collect them first.
        if this.state.lock().streams.iter().any(|s| s.is_silent(now)) {
            this.collect_rx(Collector::Watchdog);
        }
        let mut next: Option<u64> = None;
        let mut stalled_any = false;
        {
            let mut st = this.state.lock();
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
                        if let Some(list) = this.fasync.get(id) {
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
            this.readers.wake_all();
        }
        next.map_or(HrTimerRestart::NoRestart, HrTimerRestart::RestartIn)
    }
}

impl VdaqDev {
    /// Moves completed periods to their streams' ready lists, then wakes readers and signals
    /// each stream's fasync owners once; the interrupt counters count only the interrupt.
    pub(crate) fn collect_rx(&self, by: Collector) {
        let mut wake = false;
        {
            let mut guard = self.state.lock();
            let st = &mut *guard;
            st.drain_events();
            // Streams that completed a period in this interrupt (bit per stream id).
            let mut completed: u32 = 0;
            let mut seen: u32 = 0;
            while let Some((msg, len)) = st.rx.as_mut().and_then(|rx| rx.get_buf()) {
                // The device uses a gap's XRUN events before the completion after the gap, but
                // they may have landed after the drain above: take them now, so that this
                // period's header announces the loss before its frames, never after.
                st.drain_events();
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
    pub(crate) fn copy_out(
        &self,
        id: u32,
        ready: Ready,
        out: &mut miscdev::IovIterDest<'_>,
    ) -> Result<usize> {
        let frames = ready.msg.data.as_slice();
        let n = (ready.header.bytes as usize).min(frames.len());
        let header = ready.header.as_bytes();
        // A short copy is a fault in the reader's memory: the period is lost to it (and
        // counted as not read), as with read() into a bad buffer.
        let result =
            if out.copy_to_iter(header) == header.len() && out.copy_to_iter(&frames[..n]) == n {
                Ok(())
            } else {
                Err(EFAULT)
            };
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
    pub(crate) fn give_back(&self, id: u32, upto: u64) -> Result {
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
    pub(crate) fn set_async(
        &self,
        id: u32,
        fd: i32,
        file: &miscdev::File,
        on: bool,
    ) -> Result<i32> {
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
