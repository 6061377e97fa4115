// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The vhost-user glue: virtqueues, guest memory, timers and notifications around the device
//! model.
//!
//! All queues and the streams' sample-clock timers are served by one epoll thread, so the
//! device model needs no locking on its hot path.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use log::{debug, error, warn};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use vdaq_proto::virtio_snd::{code, queue, Event, Hdr, PcmStatus, PcmXfer};
use vdaq_proto::wire::{Le32, Pod};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::chain::Chain;
use crate::control::Device;
use crate::faults::UsedLenLie;
use crate::frames::Frames;
use crate::ratelimit::refusal;
use crate::status::Status;
use crate::stream::{StreamCaps, StreamStats};

/// Guest memory as the daemon hands it over.
pub type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap>;

/// Largest control request the device reads (the largest request is 24 bytes).
const MAX_CONTROL_REQUEST: usize = 64;
/// Epoll `data` value of the resume event: queues whose chains did not all fit in one event's
/// budget (values up to the queue count are the daemon's).
const RESUME_EVENT: u16 = queue::COUNT as u16 + 1;
/// First epoll `data` value of the stream timers.
const TIMER_EVENT_BASE: u16 = queue::COUNT as u16 + 2;
/// The unknown event code `event_flood` sends.
const FLOOD_UNKNOWN_EVENT: u32 = 0x7fff;
/// Largest queue size the device accepts: it bounds the chains the device holds per queue.
/// QEMU's VIRTQUEUE_MAX_SIZE, and what Debian 13's QEMU 10.0.13 asks of `vhost-user-snd-pci`
/// (bookworm-backports' 10.0.2 asks 64).
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Chains the device takes from one queue in one event. The rest wait for the resume event,
/// which epoll delivers after the other ready events: a busy queue cannot starve the others
/// or keep the worker thread for itself.
pub const CHAINS_PER_EVENT: usize = 32;

/// A guest that broke the ring rules. The device is then broken until the guest resets it
/// (QEMU's rule, virtio_error): it stops using every ring (takes nothing, completes nothing,
/// writes nothing into guest memory) and drops the buffers it held. vhost-user gives the
/// backend no way to set DEVICE_NEEDS_RESET; the driver sees a device that went silent. A
/// reset is the frontend setting the features again or stopping a ring (GET_VRING_BASE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    /// A head the device holds was made available again (VIRTIO 1.2, 2.7.13: the driver
    /// gives a buffer back only after the device used it).
    #[error("queue {queue}: head {head} was made available again while the device holds it")]
    HeadInFlight {
        /// Queue index.
        queue: u16,
        /// The head.
        head: u16,
    },
    /// The available index is more than the queue's size past the last chain the device took
    /// (VIRTIO 1.2, 2.7.6: the driver makes at most the queue's size of chains available).
    #[error("queue {queue}: the available index {avail} is more than {size} past {taken}")]
    AvailIndexTooFar {
        /// Queue index.
        queue: u16,
        /// The driver's available index.
        avail: u16,
        /// The index of the next chain the device takes.
        taken: u16,
        /// The queue's size.
        size: u16,
    },
    /// A head past the queue's size.
    #[error("queue {queue}: head {head} is past the queue size {size}")]
    HeadOutOfRange {
        /// Queue index.
        queue: u16,
        /// The head.
        head: u16,
        /// The queue's size.
        size: u16,
    },
}

/// The heads the device holds on one queue: taken from the available ring and not yet put in
/// the used ring. At most the queue's size, since a head is held once.
#[derive(Debug)]
struct InFlight {
    held: Vec<bool>,
    count: usize,
}

impl InFlight {
    fn new() -> Self {
        Self { held: vec![false; MAX_QUEUE_SIZE], count: 0 }
    }

    /// Holds `head`, taken from queue `queue` of `size` entries.
    fn take(&mut self, queue: u16, head: u16, size: u16) -> Result<(), GuestError> {
        let slot = self
            .held
            .get_mut(usize::from(head))
            .filter(|_| head < size)
            .ok_or(GuestError::HeadOutOfRange { queue, head, size })?;
        if *slot {
            return Err(GuestError::HeadInFlight { queue, head });
        }
        *slot = true;
        self.count += 1;
        Ok(())
    }

    /// `head` went into the used ring.
    fn release(&mut self, head: u16) {
        if let Some(slot) = self.held.get_mut(usize::from(head)).filter(|s| **s) {
            *slot = false;
            self.count -= 1;
        }
    }

    fn clear(&mut self) {
        self.held.fill(false);
        self.count = 0;
    }
}

/// Counters shared with the daemon's main thread while the device runs; serialised as the
/// statistics file (`--stats-json`), field names as here.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceStats {
    /// Per stream totals.
    pub streams: Vec<StreamStats>,
    /// FIFO level of each stream in bytes.
    pub fifo_levels: Vec<usize>,
    /// Used-buffer notifications on the rx queue (the interrupts of the capture path).
    pub rx_interrupts: u64,
    /// Control requests answered.
    pub control_requests: u64,
    /// Control requests answered with an error status.
    pub control_errors: u64,
    /// Descriptor chains refused as malformed (all queues).
    pub bad_chains: u64,
    /// XRUN events that found no event buffer and were dropped.
    pub xrun_events_dropped: u64,
    /// XRUN events sent.
    pub xrun_events_sent: u64,
    /// Why the device is broken (until the guest resets it), if it is: in JSON, the message.
    #[serde(serialize_with = "message_or_null")]
    pub broken: Option<GuestError>,
    /// Spurious events sent (the `event_flood` fault).
    pub spurious_events: u64,
    /// Extra notifications sent with nothing new in the used ring (`spurious_notify`).
    pub spurious_notifications: u64,
}

/// An optional error as its message, or null.
fn message_or_null<S: serde::Serializer>(e: &Option<GuestError>, s: S) -> Result<S::Ok, S::Error> {
    match e {
        Some(e) => s.collect_str(e),
        None => s.serialize_none(),
    }
}

/// The vdaq vhost-user backend.
#[derive(Debug)]
pub struct VdaqBackend {
    device: Device<Chain>,
    /// The streams as configured, to start afresh after a device reset.
    caps: Vec<StreamCaps>,
    /// Totals of the streams before the last device reset (statistics are per connection).
    retired: Vec<StreamStats>,
    mem: Option<GuestMemory>,
    event_idx: bool,
    timers: Vec<TimerFd>,
    stats: DeviceStats,
    shared: Arc<Mutex<DeviceStats>>,
    exit: Option<(EventConsumer, EventNotifier)>,
    /// The heads held per queue.
    inflight: [InFlight; queue::COUNT],
    /// Signalled when a queue has chains left over from an event's budget.
    resume: EventFd,
    /// The queues to go on with at the resume event.
    resume_pending: [bool; queue::COUNT],
    /// Chains taken, buffers completed and events sent in the last event.
    work: usize,
    clock: Clock,
    /// In an injected event storm (`event_storm_ms`), which does not nest.
    storming: bool,
}

fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Where the backend reads the time: CLOCK_MONOTONIC, or a clock its user sets (the fuzz
/// target drives time itself).
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// CLOCK_MONOTONIC.
    #[default]
    Monotonic,
    /// Nanoseconds set by the user.
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The time in ns.
    pub fn now_ns(&self) -> u64 {
        match self {
            Self::Monotonic => now_ns(),
            Self::Manual(ns) => ns.load(Ordering::Relaxed),
        }
    }
}

impl VdaqBackend {
    /// A backend with one capture stream per entry of `streams`.
    pub fn new(streams: Vec<StreamCaps>) -> io::Result<Self> {
        Self::with_stats(streams, Arc::default())
    }

    /// As [`Self::new`], publishing statistics into `shared`.
    pub fn with_stats(
        streams: Vec<StreamCaps>,
        shared: Arc<Mutex<DeviceStats>>,
    ) -> io::Result<Self> {
        let timers = streams
            .iter()
            .map(|_| {
                TimerFd::new(
                    ClockId::CLOCK_MONOTONIC,
                    TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
                )
                .map_err(io::Error::from)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let n = streams.len();
        let backend = Self {
            device: Device::new(streams.clone()),
            retired: vec![StreamStats::default(); streams.len()],
            caps: streams,
            mem: None,
            event_idx: false,
            timers,
            stats: DeviceStats {
                streams: vec![StreamStats::default(); n],
                fifo_levels: vec![0; n],
                ..DeviceStats::default()
            },
            shared,
            exit: Some(new_event_consumer_and_notifier(EventFlag::NONBLOCK)?),
            inflight: std::array::from_fn(|_| InFlight::new()),
            resume: EventFd::new(EFD_NONBLOCK)?,
            resume_pending: [false; queue::COUNT],
            work: 0,
            clock: Clock::Monotonic,
            storming: false,
        };
        // Statistics are readable (all zero) before the first event.
        if let Ok(mut shared) = backend.shared.lock() {
            shared.clone_from(&backend.stats);
        }
        Ok(backend)
    }

    /// Forgets every stream's state and held buffers, and stops the sample clocks: a device
    /// reset, which also ends a broken state.
    fn reset_streams(&mut self) {
        for (total, s) in self.retired.iter_mut().zip(self.device.streams()) {
            *total += s.stats();
        }
        self.device = Device::new(self.caps.clone());
        for timer in &self.timers {
            let _ = timer.unset();
        }
        for q in &mut self.inflight {
            q.clear();
        }
        self.resume_pending = [false; queue::COUNT];
        self.stats.broken = None;
        self.publish_stats();
    }

    /// The guest broke the ring rules: the device stops using the rings until a reset, and
    /// drops what it held (see [`GuestError`]).
    fn break_device(&mut self, e: GuestError) {
        error!("{e}: the device stops using its rings until the guest resets it");
        self.reset_streams();
        self.stats.broken = Some(e);
        self.publish_stats();
    }

    /// The file descriptors to add to the daemon's epoll loop, with the `data` value of each:
    /// the stream timers and the resume event.
    pub fn epoll_listeners(&self) -> Vec<(RawFd, u64)> {
        let mut fds: Vec<(RawFd, u64)> = self
            .timers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_fd().as_raw_fd(), u64::from(TIMER_EVENT_BASE) + i as u64))
            .collect();
        fds.push((self.resume.as_raw_fd(), u64::from(RESUME_EVENT)));
        fds
    }

    /// The epoll `data` value of stream `id`'s timer.
    pub fn timer_event(id: usize) -> u16 {
        TIMER_EVENT_BASE + id as u16
    }

    /// The epoll `data` value of the resume event.
    pub fn resume_event() -> u16 {
        RESUME_EVENT
    }

    /// Reads the time from `clock` from now on.
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The streams (their state, held buffers and bookkeeping).
    pub fn streams(&self) -> &[crate::stream::Stream<Chain>] {
        self.device.streams()
    }

    /// Chains the device holds on queue `q` (at most the queue's size).
    pub fn in_flight(&self, q: u16) -> usize {
        self.inflight.get(usize::from(q)).map_or(0, |f| f.count)
    }

    /// Chains taken, buffers completed and events sent while handling the last event.
    pub fn last_event_work(&self) -> usize {
        self.work
    }

    /// Takes queue `q`'s available chains, at most [`CHAINS_PER_EVENT`]; when the budget ran
    /// out, the queue goes on at the resume event.
    fn take_chains<'a>(
        &mut self,
        q: u16,
        vrings: &[VringRwLock],
        mem: &'a GuestMemoryMmap,
    ) -> Result<Vec<virtio_queue::DescriptorChain<&'a GuestMemoryMmap>>, GuestError> {
        let vring = &vrings[usize::from(q)];
        let inflight = &mut self.inflight[usize::from(q)];
        let (chains, more) = take_chains(vring, mem, self.event_idx, inflight, q)?;
        self.work += chains.len();
        if more {
            self.resume_pending[usize::from(q)] = true;
            let _ = self.resume.write(1);
        }
        Ok(chains)
    }

    /// A handle on the statistics, updated as the device runs.
    pub fn stats_handle(&self) -> Arc<Mutex<DeviceStats>> {
        Arc::clone(&self.shared)
    }

    fn publish_stats(&mut self) {
        for (i, s) in self.device.streams().iter().enumerate() {
            let mut total = self.retired[i];
            total += s.stats();
            self.stats.streams[i] = total;
            self.stats.fifo_levels[i] = s.fifo_level();
        }
        if let Ok(mut shared) = self.shared.lock() {
            shared.clone_from(&self.stats);
        }
    }

    fn process_control(&mut self, vrings: &[VringRwLock], mem: &GuestMemoryMmap) -> io::Result<()> {
        let vring = &vrings[usize::from(queue::CONTROL)];
        let mut used = false;
        let chains = match self.take_chains(queue::CONTROL, vrings, mem) {
            Ok(c) => c,
            Err(e) => {
                self.break_device(e);
                return Ok(());
            }
        };
        for desc in chains {
            let inflight = &mut self.inflight[usize::from(queue::CONTROL)];
            let chain = match Chain::parse(desc, mem) {
                Ok(c) => c,
                Err(r) => {
                    refusal(format_args!("control: refusing a descriptor chain: {}", r.error));
                    self.stats.bad_chains += 1;
                    // The response's place is known (the start of the writable part): the
                    // refusal gets its status there when it fits.
                    let bad = Hdr::new(code::S_BAD_MSG);
                    let len = if r.partial.writable_len() >= size_of::<Hdr>()
                        && r.partial.write_at(mem, 0, bad.as_bytes()).is_ok()
                    {
                        size_of::<Hdr>() as u32
                    } else {
                        0
                    };
                    add_used(vring, inflight, r.head, len);
                    used = true;
                    continue;
                }
            };
            // No request is longer than MAX_CONTROL_REQUEST: a longer one is malformed, and is
            // not read.
            let request = if chain.readable_len() > MAX_CONTROL_REQUEST {
                None
            } else {
                chain.read_all(mem).ok()
            };
            let response = match &request {
                Some(request) => {
                    self.device.handle_control(request, chain.writable_len(), self.clock.now_ns())
                }
                None if chain.writable_len() >= size_of::<Hdr>() => {
                    Hdr::new(code::S_BAD_MSG).as_bytes().to_vec()
                }
                None => Vec::new(),
            };
            let status = Hdr::from_prefix(&response).map(|h| h.code.get());
            debug!("control: response status {status:#x?}");
            self.stats.control_requests += 1;
            if status != Some(code::S_OK) {
                self.stats.control_errors += 1;
            }
            // Rule (a): buffers returned by RELEASE complete before the request's response.
            self.complete_flushed(vrings, mem)?;
            if self.stats.broken.is_some() {
                return Ok(());
            }
            let mut len = match chain.write_at(mem, 0, &response) {
                Ok(()) => response.len() as u32,
                Err(e) => {
                    refusal(format_args!("control: cannot write the response: {e}"));
                    0
                }
            };
            if let Some(lie) = self.control_lie(request.as_deref()) {
                len = lie.apply(len, size_of::<Hdr>() as u32);
            }
            add_used(vring, &mut self.inflight[usize::from(queue::CONTROL)], chain.head, len);
            used = true;
        }
        if used {
            notify(vring, self.event_idx)?;
        }
        self.service_streams(vrings, mem)
    }

    fn complete_flushed(
        &mut self,
        vrings: &[VringRwLock],
        mem: &GuestMemoryMmap,
    ) -> io::Result<()> {
        let vring = &vrings[usize::from(queue::RX)];
        let events = &vrings[usize::from(queue::EVENT)];
        let mut used = false;
        let mut events_used = false;
        let mut guest_error = None;
        let [_, ev_inflight, _, rx_inflight] = &mut self.inflight;
        for (id, stream) in self.device.streams_mut().iter_mut().enumerate() {
            // Losses no completion announced before the release: announced now.
            let owed = stream.take_unannounced_xruns();
            match send_events(events, mem, ev_inflight, code::EVT_PCM_XRUN, id as u32, owed) {
                Ok(sent) => {
                    self.stats.xrun_events_sent += sent;
                    self.stats.xrun_events_dropped += owed - sent;
                    events_used |= sent > 0;
                    self.work += sent as usize;
                }
                Err(e) => guest_error = Some(e),
            }
            for chain in stream.take_flushed() {
                let done = RxStatus::plain(code::S_OK);
                complete_rx(vring, rx_inflight, mem, &chain, Frames::none(&mut []), done);
                self.work += 1;
                used = true;
            }
        }
        if let Some(e) = guest_error {
            self.break_device(e);
            return Ok(());
        }
        if events_used {
            notify(events, self.event_idx)?;
        }
        if used {
            self.stats.rx_interrupts += u64::from(notify(vring, self.event_idx)?);
        }
        Ok(())
    }

    fn process_rx(&mut self, vrings: &[VringRwLock], mem: &GuestMemoryMmap) -> io::Result<()> {
        let vring = &vrings[usize::from(queue::RX)];
        // Refused chains and the completions of this round are signalled together.
        let mut round = RxRound::default();
        let chains = match self.take_chains(queue::RX, vrings, mem) {
            Ok(c) => c,
            Err(e) => {
                self.break_device(e);
                return Ok(());
            }
        };
        for desc in chains {
            let chain = match Chain::parse(desc, mem) {
                Ok(c) => c,
                Err(r) => {
                    // The status goes after the frames, at the chain's end: for a chain refused
                    // whole, where that is is not known, and nothing is written.
                    refusal(format_args!("rx: refusing a descriptor chain: {}", r.error));
                    self.stats.bad_chains += 1;
                    add_used(vring, &mut self.inflight[usize::from(queue::RX)], r.head, 0);
                    round.add(true, 0);
                    continue;
                }
            };
            if let Err((chain, code)) = self.post_rx(chain, mem) {
                self.stats.bad_chains += 1;
                let inflight = &mut self.inflight[usize::from(queue::RX)];
                let done = RxStatus::plain(code.into());
                complete_rx(vring, inflight, mem, &chain, Frames::none(&mut []), done);
                round.add(true, 0);
            }
        }
        self.service_streams_in(vrings, mem, round)
    }

    /// The used-length lie of the response to `request`: the faults of the stream a PCM
    /// command names, else of stream 0.
    fn control_lie(&mut self, request: Option<&[u8]>) -> Option<UsedLenLie> {
        let named = request.and_then(|r| {
            let hdr = Hdr::from_prefix(r)?;
            let pcm = matches!(
                hdr.code.get(),
                code::R_PCM_SET_PARAMS
                    | code::R_PCM_PREPARE
                    | code::R_PCM_RELEASE
                    | code::R_PCM_START
                    | code::R_PCM_STOP
            );
            let id = vdaq_proto::virtio_snd::PcmHdr::from_prefix(r).filter(|_| pcm)?;
            usize::try_from(id.stream_id.get()).ok()
        });
        let streams = self.device.streams_mut();
        let id = named.filter(|&id| id < streams.len()).unwrap_or(0);
        streams.get_mut(id)?.control_lie()
    }

    /// Hands an rx message to its stream, or returns it with the status to complete it with.
    fn post_rx(&mut self, chain: Chain, mem: &GuestMemoryMmap) -> Result<(), (Chain, Status)> {
        let status_len = size_of::<PcmStatus>();
        if chain.readable_len() != size_of::<PcmXfer>() || chain.writable_len() < status_len {
            return Err((chain, Status::BadMsg));
        }
        let xfer = chain.read_all(mem).ok().and_then(|b| PcmXfer::from_prefix(&b));
        let Some(stream) = xfer
            .and_then(|x| usize::try_from(x.stream_id.get()).ok())
            .and_then(|id| self.device.streams_mut().get_mut(id))
        else {
            return Err((chain, Status::BadMsg));
        };
        let payload = chain.writable_len() - status_len;
        stream.post(chain, payload)
    }

    /// Advances every stream's clock, sends due XRUN events, completes ready buffers and
    /// re-arms the timers.
    fn service_streams(&mut self, vrings: &[VringRwLock], mem: &GuestMemoryMmap) -> io::Result<()> {
        self.service_streams_in(vrings, mem, RxRound::default())
    }

    /// [`Self::service_streams`] as part of `round`: the rx completions of the round go into
    /// the used ring, and the driver is signalled (if EVENT_IDX lets it) at the round's end, or
    /// as soon as [`SIGNAL_EVERY_BYTES`] of frames wait for it.
    fn service_streams_in(
        &mut self,
        vrings: &[VringRwLock],
        mem: &GuestMemoryMmap,
        mut round: RxRound,
    ) -> io::Result<()> {
        let rx = &vrings[usize::from(queue::RX)];
        let events = &vrings[usize::from(queue::EVENT)];
        let now = self.clock.now_ns();
        let event_idx = self.event_idx;
        let mut events_used = false;
        let mut guest_error = None;
        let mut signal_error = None;
        let [_, ev_inflight, _, rx_inflight] = &mut self.inflight;
        let n_streams = self.device.streams().len();
        for (id, stream) in self.device.streams_mut().iter_mut().enumerate() {
            loop {
                stream.produce(now);
                if !stream.has_ready() {
                    break;
                }
                let (stats, events_used, round) = (&mut self.stats, &mut events_used, &mut round);
                let (work, guest_error, signal_error) =
                    (&mut self.work, &mut guest_error, &mut signal_error);
                stream.complete_ready(|chain, frames, c| {
                    // The loss before these frames is announced just before them; what finds
                    // no event buffer is dropped at once, counted.
                    let owed = c.xruns_before;
                    match send_events(events, mem, ev_inflight, code::EVT_PCM_XRUN, id as u32, owed)
                    {
                        Ok(sent) => {
                            stats.xrun_events_sent += sent;
                            stats.xrun_events_dropped += owed - sent;
                            *events_used |= sent > 0;
                            *work += sent as usize;
                            if sent > 0 {
                                // The driver must see the events before the completion.
                                let _ = notify(events, event_idx);
                            }
                        }
                        Err(e) => *guest_error = Some(e),
                    }
                    *work += 1;
                    let done =
                        RxStatus { code: c.status, latency_bytes: c.latency_bytes, lie: c.lie };
                    let frame_bytes = frames.len();
                    let written = complete_rx(rx, rx_inflight, mem, &chain, frames, done);
                    if round.add(c.notify, frame_bytes) {
                        match notify(rx, event_idx) {
                            Ok(sent) => stats.rx_interrupts += u64::from(sent),
                            Err(e) => *signal_error = Some(e),
                        }
                        round.signalled();
                    }
                    round.spurious += u64::from(c.spurious_notify);
                    // Injected spurious events, while event buffers wait.
                    let streams = n_streams as u32;
                    for k in 0..c.flood {
                        let (code, data) = match k % 4 {
                            0 => (code::EVT_PCM_XRUN, id as u32),
                            1 => (code::EVT_PCM_XRUN, streams.wrapping_add(k)),
                            2 => (FLOOD_UNKNOWN_EVENT, id as u32),
                            _ => (code::EVT_PCM_PERIOD_ELAPSED, id as u32),
                        };
                        match send_events(events, mem, ev_inflight, code, data, 1) {
                            Ok(0) => break,
                            Ok(sent) => {
                                stats.spurious_events += sent;
                                *events_used = true;
                                *work += 1;
                            }
                            Err(e) => {
                                *guest_error = Some(e);
                                break;
                            }
                        }
                    }
                    written
                });
            }
            let timer = &self.timers[id];
            let armed = match stream.next_deadline_ns() {
                Some(ns) => {
                    let at =
                        TimeSpec::new((ns / 1_000_000_000) as i64, (ns % 1_000_000_000) as i64);
                    timer.set(Expiration::OneShot(at), TimerSetTimeFlags::TFD_TIMER_ABSTIME)
                }
                None => timer.unset(),
            };
            armed.map_err(io::Error::from)?;
        }
        if let Some(e) = guest_error {
            self.break_device(e);
            return Ok(());
        }
        if let Some(e) = signal_error {
            return Err(e);
        }
        if events_used {
            notify(events, self.event_idx)?;
        }
        // Injected faults may withhold the notification: the used buffers wait for the next.
        if round.notify {
            self.stats.rx_interrupts += u64::from(notify(rx, self.event_idx)?);
        }
        // Injected: notifications with nothing new in the rx and control used rings.
        let control = &vrings[usize::from(queue::CONTROL)];
        for _ in 0..round.spurious {
            rx.signal_used_queue()?;
            control.signal_used_queue()?;
            self.stats.spurious_notifications += 2;
        }
        self.publish_stats();
        if round.completed > 0 {
            self.event_storm(vrings, mem)?;
        }
        Ok(())
    }

    /// Serves queue `q`'s available chains (one event's budget).
    fn process_queue(
        &mut self,
        q: u16,
        vrings: &[VringRwLock],
        mem: &GuestMemoryMmap,
    ) -> io::Result<()> {
        if self.stats.broken.is_some() {
            return Ok(());
        }
        match q {
            queue::CONTROL => self.process_control(vrings, mem),
            queue::RX => self.process_rx(vrings, mem),
            queue::TX => self.drain_tx(vrings, mem),
            // Event buffers are taken when an event is due (or by an injected storm).
            _ => self.event_storm(vrings, mem),
        }
    }

    /// The `event_storm_ms` fault: while a stream with it runs, the device polls its rings
    /// for that stream's storm length: it answers every event buffer as soon as the driver
    /// makes it available, notification or not, and goes on serving control requests and rx
    /// buffers meanwhile (a STOP ends the storm). At most one storm at a time.
    fn event_storm(&mut self, vrings: &[VringRwLock], mem: &GuestMemoryMmap) -> io::Result<()> {
        if self.storming {
            return Ok(());
        }
        let Some((id, ns)) = self.storming_stream() else {
            return Ok(());
        };
        self.storming = true;
        let result = self.storm(vrings, mem, id, ns);
        self.storming = false;
        result
    }

    /// The running stream with the longest `event_storm_ms`, if any: (id, length in ns).
    fn storming_stream(&self) -> Option<(u32, u64)> {
        let running = crate::stream::PcmState::Running;
        self.device
            .streams()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.state() == running && s.caps().faults.event_storm_ns > 0)
            .map(|(id, s)| (id as u32, s.caps().faults.event_storm_ns))
            .max_by_key(|&(_, ns)| ns)
    }

    fn storm(
        &mut self,
        vrings: &[VringRwLock],
        mem: &GuestMemoryMmap,
        id: u32,
        ns: u64,
    ) -> io::Result<()> {
        let events = &vrings[usize::from(queue::EVENT)];
        let size = u64::from(events.get_ref().get_queue().size());
        let end = std::time::Instant::now() + std::time::Duration::from_nanos(ns);
        while std::time::Instant::now() < end
            && self.stats.broken.is_none()
            && self.storming_stream().is_some()
        {
            let ev_inflight = &mut self.inflight[usize::from(queue::EVENT)];
            match send_events(events, mem, ev_inflight, FLOOD_UNKNOWN_EVENT, id, size) {
                Ok(0) => std::hint::spin_loop(),
                Ok(sent) => {
                    self.stats.spurious_events += sent;
                    if let Some(s) = self.device.streams_mut().get_mut(id as usize) {
                        s.count_storm_events(sent);
                    }
                    notify(events, self.event_idx)?;
                }
                Err(e) => {
                    self.break_device(e);
                    break;
                }
            }
            self.process_control(vrings, mem)?;
            // Takes the rx buffers posted meanwhile and completes the periods due.
            self.process_rx(vrings, mem)?;
        }
        self.publish_stats();
        Ok(())
    }

    fn drain_tx(&mut self, vrings: &[VringRwLock], mem: &GuestMemoryMmap) -> io::Result<()> {
        // There are no playback streams: every tx message is refused.
        let vring = &vrings[usize::from(queue::TX)];
        let mut used = false;
        let chains = match self.take_chains(queue::TX, vrings, mem) {
            Ok(c) => c,
            Err(e) => {
                self.break_device(e);
                return Ok(());
            }
        };
        let inflight = &mut self.inflight[usize::from(queue::TX)];
        for desc in chains {
            self.stats.bad_chains += 1;
            match Chain::parse(desc, mem) {
                Ok(chain) => {
                    let len = chain.writable_len();
                    let ok = len >= size_of::<PcmStatus>()
                        && chain
                            .write_at(mem, len - 8, status(code::S_BAD_MSG, 0).as_bytes())
                            .is_ok();
                    add_used(vring, inflight, chain.head, if ok { 8 } else { 0 });
                }
                Err(r) => {
                    refusal(format_args!("tx: refusing a descriptor chain: {}", r.error));
                    add_used(vring, inflight, r.head, 0);
                }
            }
            used = true;
        }
        if used {
            notify(vring, self.event_idx)?;
        }
        Ok(())
    }
}

/// Frame bytes completed in a round past which the driver is signalled at once rather than at
/// the round's end. A free-running round can fill every buffer the driver posted; signalled
/// only at its end, the driver could post none back meanwhile and the device would then wait
/// for it, idle (device/BREAKDOWN.md). 64 KiB take a few microseconds to write, so small
/// periods still share a signal.
const SIGNAL_EVERY_BYTES: usize = 64 << 10;

/// The rx completions of one service round, signalled together: at its end, or once
/// [`SIGNAL_EVERY_BYTES`] of frames wait.
#[derive(Clone, Copy, Debug, Default)]
struct RxRound {
    /// Some completion not signalled yet asks for a notification (an injected fault may
    /// withhold one: its buffer waits in the used ring for the next).
    notify: bool,
    /// Frame bytes completed since the last signal.
    unsignalled_bytes: usize,
    /// Injected extra notifications to send on the rx and control queues after the round's.
    spurious: u64,
    /// Buffers added to the used ring.
    completed: u64,
}

impl RxRound {
    /// Counts a buffer with `frame_bytes` of frames added to the used ring; returns whether
    /// the driver should be signalled now, before the round ends.
    fn add(&mut self, notify: bool, frame_bytes: usize) -> bool {
        self.notify |= notify;
        self.completed += 1;
        self.unsignalled_bytes = self.unsignalled_bytes.saturating_add(frame_bytes);
        self.notify && self.unsignalled_bytes >= SIGNAL_EVERY_BYTES
    }

    /// The driver was signalled of every completion so far.
    fn signalled(&mut self) {
        self.notify = false;
        self.unsignalled_bytes = 0;
    }
}

fn status(code: u32, latency_bytes: u32) -> PcmStatus {
    PcmStatus { status: Le32::new(code), latency_bytes: Le32::new(latency_bytes) }
}

fn pop<'a>(
    vring: &VringRwLock,
    mem: &'a GuestMemoryMmap,
) -> Option<virtio_queue::DescriptorChain<&'a GuestMemoryMmap>> {
    vring.get_mut().get_queue_mut().pop_descriptor_chain(mem)
}

/// Takes available chains, at most [`CHAINS_PER_EVENT`], each head held in `inflight`;
/// returns them and whether the budget ran out (more may wait). With EVENT_IDX, re-enabling
/// notifications publishes `avail_event` (without it the driver never kicks again); chains
/// that arrived meanwhile are taken too. When the budget runs out, notifications stay off
/// until the resume event takes the rest.
fn take_chains<'a>(
    vring: &VringRwLock,
    mem: &'a GuestMemoryMmap,
    event_idx: bool,
    inflight: &mut InFlight,
    q: u16,
) -> Result<(Vec<virtio_queue::DescriptorChain<&'a GuestMemoryMmap>>, bool), GuestError> {
    let size = vring.get_ref().get_queue().size();
    let mut chains = Vec::new();
    // Each round but the last takes a chain (or returns): at most the budget's rounds.
    for _ in 0..=CHAINS_PER_EVENT {
        if event_idx {
            let _ = vring.disable_notification();
        }
        while chains.len() < CHAINS_PER_EVENT {
            let Some(desc) = pop(vring, mem) else {
                // virtio-queue takes nothing from a ring whose available index is more than
                // its size ahead, and says nothing: a broken guest, which would otherwise keep
                // this loop (re-enabling notifications finds entries) going for ever.
                check_avail_index(vring, mem, q, size)?;
                break;
            };
            inflight.take(q, desc.head_index(), size)?;
            chains.push(desc);
        }
        if chains.len() >= CHAINS_PER_EVENT {
            return Ok((chains, true));
        }
        if !event_idx || !vring.enable_notification().unwrap_or(false) {
            return Ok((chains, false));
        }
    }
    Ok((chains, true))
}

/// Checks that queue `q`'s available index is at most `size` past the next chain to take.
fn check_avail_index(
    vring: &VringRwLock,
    mem: &GuestMemoryMmap,
    q: u16,
    size: u16,
) -> Result<(), GuestError> {
    let state = vring.get_ref();
    let queue = state.get_queue();
    let taken = queue.next_avail();
    match queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire) {
        Ok(avail) if avail.0.wrapping_sub(taken) > size => {
            Err(GuestError::AvailIndexTooFar { queue: q, avail: avail.0, taken, size })
        }
        _ => Ok(()),
    }
}

/// Puts `head` in the used ring with `len` bytes; the device no longer holds it.
fn add_used(vring: &VringRwLock, inflight: &mut InFlight, head: u16, len: u32) {
    inflight.release(head);
    if let Err(e) = vring.add_used(head, len) {
        refusal(format_args!("cannot add a used buffer: {e}"));
    }
}

/// Signals the driver if the queue wants it; returns whether it did.
fn notify(vring: &VringRwLock, event_idx: bool) -> io::Result<bool> {
    let needed = !event_idx || vring.needs_notification().unwrap_or(true);
    if needed {
        vring.signal_used_queue()?;
    }
    Ok(needed)
}

/// What an rx completion reports besides its frames.
#[derive(Clone, Copy, Debug)]
struct RxStatus {
    /// The status code.
    code: u32,
    /// The FIFO level.
    latency_bytes: u32,
    /// An injected lie about the used length.
    lie: Option<UsedLenLie>,
}

impl RxStatus {
    fn plain(code: u32) -> Self {
        Self { code, latency_bytes: 0, lie: None }
    }
}

/// Completes an rx message: its frames rendered straight into the buffer from its start, then
/// the status (`code`, `latency_bytes`) right after them. The used length is the frame bytes
/// written plus the status (rule b). When the frames cannot all be written, none are reported:
/// the status is `S_IO_ERR` and the used length the status alone (0 when even the status
/// cannot be written). Returns whether the frames were written and reported.
fn complete_rx(
    vring: &VringRwLock,
    inflight: &mut InFlight,
    mem: &GuestMemoryMmap,
    chain: &Chain,
    frames: Frames<'_>,
    done: RxStatus,
) -> bool {
    let RxStatus { code, latency_bytes, lie } = done;
    let status_len = size_of::<PcmStatus>();
    let n = frames.len();
    let Some(status_at) = chain.writable_len().checked_sub(status_len).filter(|&room| room >= n)
    else {
        // The frames and the status do not fit: nothing is written.
        add_used(vring, inflight, chain.head, lie.map_or(0, |lie| lie.apply(0, status_len as u32)));
        return n == 0;
    };
    let written = frames.write_to(&mut chain.writer(mem)).is_ok();
    let (code, frame_bytes) = if written {
        (code, n)
    } else {
        refusal(format_args!("rx: writing {n} bytes of frames into guest memory failed"));
        (code::S_IO_ERR, 0)
    };
    let ok = chain.write_at(mem, status_at, status(code, latency_bytes).as_bytes()).is_ok();
    if !ok {
        refusal(format_args!("rx: writing the status into guest memory failed"));
    }
    let len = if ok { (frame_bytes + status_len) as u32 } else { 0 };
    // An injected lie changes the length reported, never what was written.
    let len = lie.map_or(len, |lie| lie.apply(len, status_len as u32));
    add_used(vring, inflight, chain.head, len);
    written && ok
}

/// Sends up to `count` events (`code`, `data`) on the event queue, one per event buffer the
/// driver posted; returns how many were sent (the rest found no buffer). Takes at most the
/// queue's size of chains per call, refused ones included.
fn send_events(
    vring: &VringRwLock,
    mem: &GuestMemoryMmap,
    inflight: &mut InFlight,
    code: u32,
    data: u32,
    count: u64,
) -> Result<u64, GuestError> {
    let size = vring.get_ref().get_queue().size();
    let mut sent = 0;
    let mut taken = 0;
    while sent < count && taken < size {
        let Some(desc) = pop(vring, mem) else { break };
        taken += 1;
        inflight.take(queue::EVENT, desc.head_index(), size)?;
        match Chain::parse(desc, mem) {
            Ok(chain) if chain.writable_len() >= size_of::<Event>() => {
                let ev = Event { hdr: Hdr::new(code), data: Le32::new(data) };
                let ok = chain.write_at(mem, 0, ev.as_bytes()).is_ok();
                let len = if ok { size_of::<Event>() as u32 } else { 0 };
                add_used(vring, inflight, chain.head, len);
                sent += u64::from(ok);
            }
            Ok(chain) => add_used(vring, inflight, chain.head, 0),
            Err(r) => {
                refusal(format_args!("event: refusing a descriptor chain: {}", r.error));
                add_used(vring, inflight, r.head, 0);
            }
        }
    }
    Ok(sent)
}

impl VhostUserBackendMut for VdaqBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        queue::COUNT
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        1 << VIRTIO_F_VERSION_1
            | 1 << VIRTIO_RING_F_INDIRECT_DESC
            | 1 << VIRTIO_RING_F_EVENT_IDX
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn acked_features(&mut self, _features: u64) {
        // The frontend sets the features each time the guest driver starts the device (after a
        // reset, a rebind, a PCI rescan): the driver begins from the spec's initial state.
        self.reset_streams();
    }

    fn stop_vring(&mut self, _queue_index: u32) -> io::Result<()> {
        // The frontend stops the rings when the guest resets the device (GET_VRING_BASE). The
        // buffers the device holds then belong to the guest again, which may free them: not
        // one more byte may be written into them.
        self.reset_streams();
        Ok(())
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // Bytes past the config structure (e.g. `controls` when QEMU has controls=on) read 0.
        let config = self.device.config();
        let bytes = config.as_bytes();
        (offset as usize..offset as usize + size as usize)
            .map(|i| bytes.get(i).copied().unwrap_or(0))
            .collect()
    }

    fn update_memory(&mut self, mem: GuestMemory) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) = self.exit.as_ref()?;
        Some((consumer.try_clone().ok()?, notifier.try_clone().ok()?))
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            warn!("unexpected event set {evset:?} for event {device_event}");
        }
        self.work = 0;
        // Timer expirations and resume signals are consumed even when nothing else is done, or
        // the level-triggered epoll would report them again at once.
        let mut resume = [false; queue::COUNT];
        if device_event == RESUME_EVENT {
            let _ = self.resume.read();
            resume = std::mem::take(&mut self.resume_pending);
        } else if let Some(t) = device_event.checked_sub(TIMER_EVENT_BASE) {
            if let Some(timer) = self.timers.get(usize::from(t)) {
                // The expiration count does not matter: the clock counts periods by time.
                let _ = timer.wait();
            }
        }
        if self.stats.broken.is_some() {
            // Broken until reset: the rings are not touched.
            return Ok(());
        }
        let Some(mem) = self.mem.as_ref().map(|m| m.memory().clone()) else {
            warn!("event {device_event} before guest memory was set up");
            return Ok(());
        };
        let result = match device_event {
            queue::CONTROL | queue::RX | queue::TX | queue::EVENT => {
                self.process_queue(device_event, vrings, &mem)
            }
            RESUME_EVENT => (0..queue::COUNT as u16)
                .filter(|&q| resume[usize::from(q)])
                .try_for_each(|q| self.process_queue(q, vrings, &mem)),
            t if t >= TIMER_EVENT_BASE => self.service_streams(vrings, &mem),
            other => {
                warn!("unknown event {other}");
                Ok(())
            }
        };
        // An error here would end the daemon's worker thread: log it and keep serving.
        if let Err(e) = result {
            warn!("event {device_event}: {e}");
        }
        Ok(())
    }
}
