//! The vhost-user glue: virtqueues, guest memory, timers and notifications around the device
//! model.
//!
//! All queues and the streams' sample-clock timers are served by one epoll thread, so the
//! device model needs no locking on its hot path.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use log::{debug, warn};
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

use crate::chain::Chain;
use crate::control::Device;
use crate::frames::Frames;
use crate::stream::{StreamCaps, StreamStats};

/// Guest memory as the daemon hands it over.
pub type GuestMemory = GuestMemoryAtomic<GuestMemoryMmap>;

/// Largest control request the device reads (the largest request is 24 bytes).
const MAX_CONTROL_REQUEST: usize = 64;
/// First epoll `data` value of the stream timers (values up to the queue count are reserved).
const TIMER_EVENT_BASE: u16 = queue::COUNT as u16 + 1;
/// Queue size the device accepts (QEMU's sound frontend uses 64).
const MAX_QUEUE_SIZE: usize = 1024;

/// Counters shared with the daemon's main thread while the device runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
}

fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
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
        };
        // Statistics are readable (all zero) before the first event.
        if let Ok(mut shared) = backend.shared.lock() {
            shared.clone_from(&backend.stats);
        }
        Ok(backend)
    }

    /// Forgets every stream's state and held buffers, and stops the sample clocks.
    fn reset_streams(&mut self) {
        for (total, s) in self.retired.iter_mut().zip(self.device.streams()) {
            *total += s.stats();
        }
        self.device = Device::new(self.caps.clone());
        for timer in &self.timers {
            let _ = timer.unset();
        }
        self.publish_stats();
    }

    /// The stream timers with the epoll `data` value to register each under.
    pub fn timer_events(&self) -> Vec<(RawFd, u64)> {
        self.timers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_fd().as_raw_fd(), u64::from(TIMER_EVENT_BASE) + i as u64))
            .collect()
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
        for desc in pop_all(vring, mem, self.event_idx) {
            let chain = match Chain::parse(desc, mem) {
                Ok(c) => c,
                Err((head, e)) => {
                    warn!("control: refusing a descriptor chain: {e}");
                    self.stats.bad_chains += 1;
                    add_used(vring, head, 0);
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
            let response = match request {
                Some(request) => {
                    self.device.handle_control(&request, chain.writable_len(), now_ns())
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
            let len = match chain.write_at(mem, 0, &response) {
                Ok(()) => response.len() as u32,
                Err(e) => {
                    warn!("control: cannot write the response: {e}");
                    0
                }
            };
            add_used(vring, chain.head, len);
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
        for (id, stream) in self.device.streams_mut().iter_mut().enumerate() {
            // Losses no completion announced before the release: announced now.
            for _ in 0..stream.take_unannounced_xruns() {
                if send_event(events, mem, code::EVT_PCM_XRUN, id as u32) {
                    self.stats.xrun_events_sent += 1;
                    events_used = true;
                } else {
                    self.stats.xrun_events_dropped += 1;
                }
            }
            for chain in stream.take_flushed() {
                complete_rx(vring, mem, &chain, Frames::none(&mut []), code::S_OK, 0);
                used = true;
            }
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
        for desc in pop_all(vring, mem, self.event_idx) {
            let chain = match Chain::parse(desc, mem) {
                Ok(c) => c,
                Err((head, e)) => {
                    warn!("rx: refusing a descriptor chain: {e}");
                    self.stats.bad_chains += 1;
                    add_used(vring, head, 0);
                    round.add(true);
                    continue;
                }
            };
            if let Err((chain, code)) = self.post_rx(chain, mem) {
                self.stats.bad_chains += 1;
                complete_rx(vring, mem, &chain, Frames::none(&mut []), code, 0);
                round.add(true);
            }
        }
        self.service_streams_in(vrings, mem, round)
    }

    /// Hands an rx message to its stream, or returns it with the status to complete it with.
    fn post_rx(&mut self, chain: Chain, mem: &GuestMemoryMmap) -> Result<(), (Chain, u32)> {
        let status_len = size_of::<PcmStatus>();
        if chain.readable_len() != size_of::<PcmXfer>() || chain.writable_len() < status_len {
            return Err((chain, code::S_BAD_MSG));
        }
        let xfer = chain.read_all(mem).ok().and_then(|b| PcmXfer::from_prefix(&b));
        let Some(stream) = xfer
            .and_then(|x| usize::try_from(x.stream_id.get()).ok())
            .and_then(|id| self.device.streams_mut().get_mut(id))
        else {
            return Err((chain, code::S_BAD_MSG));
        };
        let payload = chain.writable_len() - status_len;
        stream.post(chain, payload)
    }

    /// Advances every stream's clock, sends due XRUN events, completes ready buffers and
    /// re-arms the timers.
    fn service_streams(&mut self, vrings: &[VringRwLock], mem: &GuestMemoryMmap) -> io::Result<()> {
        self.service_streams_in(vrings, mem, RxRound::default())
    }

    /// [`Self::service_streams`] as part of `round`: every rx completion of the round goes into
    /// the used ring first, then the driver is signalled once (if EVENT_IDX lets it).
    fn service_streams_in(
        &mut self,
        vrings: &[VringRwLock],
        mem: &GuestMemoryMmap,
        mut round: RxRound,
    ) -> io::Result<()> {
        let rx = &vrings[usize::from(queue::RX)];
        let events = &vrings[usize::from(queue::EVENT)];
        let now = now_ns();
        let event_idx = self.event_idx;
        let mut events_used = false;
        for (id, stream) in self.device.streams_mut().iter_mut().enumerate() {
            loop {
                stream.produce(now);
                if !stream.has_ready() {
                    break;
                }
                let (stats, events_used, round) = (&mut self.stats, &mut events_used, &mut round);
                stream.complete_ready(|chain, frames, c| {
                    // The loss before these frames is announced just before them.
                    for _ in 0..c.xruns_before {
                        if send_event(events, mem, code::EVT_PCM_XRUN, id as u32) {
                            stats.xrun_events_sent += 1;
                            *events_used = true;
                        } else {
                            stats.xrun_events_dropped += 1;
                        }
                    }
                    if c.xruns_before > 0 {
                        // The driver must see the events before the completion.
                        let _ = notify(events, event_idx);
                    }
                    let written = complete_rx(rx, mem, &chain, frames, c.status, c.latency_bytes);
                    round.add(c.notify);
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
        if events_used {
            notify(events, self.event_idx)?;
        }
        // Injected faults may withhold the notification: the used buffers wait for the next.
        if round.notify {
            self.stats.rx_interrupts += u64::from(notify(rx, self.event_idx)?);
        }
        self.publish_stats();
        Ok(())
    }

    fn drain_tx(&mut self, vrings: &[VringRwLock], mem: &GuestMemoryMmap) -> io::Result<()> {
        // There are no playback streams: every tx message is refused.
        let vring = &vrings[usize::from(queue::TX)];
        let mut used = false;
        for desc in pop_all(vring, mem, self.event_idx) {
            self.stats.bad_chains += 1;
            match Chain::parse(desc, mem) {
                Ok(chain) => {
                    let len = chain.writable_len();
                    let ok = len >= size_of::<PcmStatus>()
                        && chain
                            .write_at(mem, len - 8, status(code::S_BAD_MSG, 0).as_bytes())
                            .is_ok();
                    add_used(vring, chain.head, if ok { 8 } else { 0 });
                }
                Err((head, _)) => add_used(vring, head, 0),
            }
            used = true;
        }
        if used {
            notify(vring, self.event_idx)?;
        }
        Ok(())
    }
}

/// The rx completions of one service round, signalled together at its end.
#[derive(Clone, Copy, Debug, Default)]
struct RxRound {
    /// Some completion of the round asks for a notification (an injected fault may withhold
    /// one: its buffer waits in the used ring for the next).
    notify: bool,
}

impl RxRound {
    /// Counts a buffer added to the used ring.
    fn add(&mut self, notify: bool) {
        self.notify |= notify;
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

/// Takes every available chain. With EVENT_IDX, re-enabling notifications publishes
/// `avail_event` (without it the driver never kicks again); chains that arrived meanwhile are
/// taken too.
fn pop_all<'a>(
    vring: &VringRwLock,
    mem: &'a GuestMemoryMmap,
    event_idx: bool,
) -> Vec<virtio_queue::DescriptorChain<&'a GuestMemoryMmap>> {
    let mut chains = Vec::new();
    loop {
        if event_idx {
            let _ = vring.disable_notification();
        }
        while let Some(desc) = pop(vring, mem) {
            chains.push(desc);
        }
        if !event_idx || !vring.enable_notification().unwrap_or(false) {
            return chains;
        }
    }
}

fn add_used(vring: &VringRwLock, head: u16, len: u32) {
    if let Err(e) = vring.add_used(head, len) {
        warn!("cannot add a used buffer: {e}");
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

/// Completes an rx message: its frames rendered straight into the buffer from its start, then
/// the status (`code`, `latency_bytes`) right after them. The used length is the frame bytes
/// written plus the status (rule b). When the frames cannot all be written, none are reported:
/// the status is `S_IO_ERR` and the used length the status alone (0 when even the status
/// cannot be written). Returns whether the frames were written and reported.
fn complete_rx(
    vring: &VringRwLock,
    mem: &GuestMemoryMmap,
    chain: &Chain,
    frames: Frames<'_>,
    code: u32,
    latency_bytes: u32,
) -> bool {
    let status_len = size_of::<PcmStatus>();
    let n = frames.len();
    let Some(status_at) = chain.writable_len().checked_sub(status_len).filter(|&room| room >= n)
    else {
        // The frames and the status do not fit: nothing is written.
        add_used(vring, chain.head, 0);
        return n == 0;
    };
    let mut writer = chain.writer();
    let written = frames.write_to(|piece| writer.write(mem, piece)).is_ok();
    let (code, frame_bytes) = if written {
        (code, n)
    } else {
        warn!("rx: writing {n} bytes of frames into guest memory failed");
        (code::S_IO_ERR, 0)
    };
    let ok = chain.write_at(mem, status_at, status(code, latency_bytes).as_bytes()).is_ok();
    if !ok {
        warn!("rx: writing the status into guest memory failed");
    }
    add_used(vring, chain.head, if ok { (frame_bytes + status_len) as u32 } else { 0 });
    written && ok
}

/// Sends an event on the event queue; false when the driver has posted no event buffer.
fn send_event(vring: &VringRwLock, mem: &GuestMemoryMmap, code: u32, data: u32) -> bool {
    loop {
        let Some(desc) = pop(vring, mem) else { return false };
        match Chain::parse(desc, mem) {
            Ok(chain) if chain.writable_len() >= size_of::<Event>() => {
                let ev = Event { hdr: Hdr::new(code), data: Le32::new(data) };
                let ok = chain.write_at(mem, 0, ev.as_bytes()).is_ok();
                add_used(vring, chain.head, if ok { size_of::<Event>() as u32 } else { 0 });
                if ok {
                    return true;
                }
            }
            Ok(chain) => add_used(vring, chain.head, 0),
            Err((head, e)) => {
                warn!("event: refusing a descriptor chain: {e}");
                add_used(vring, head, 0);
            }
        }
    }
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
        let Some(mem) = self.mem.as_ref().map(|m| m.memory().clone()) else {
            warn!("event {device_event} before guest memory was set up");
            return Ok(());
        };
        let result = match device_event {
            queue::CONTROL => self.process_control(vrings, &mem),
            queue::RX => self.process_rx(vrings, &mem),
            queue::TX => self.drain_tx(vrings, &mem),
            // Event buffers are taken when an event is due.
            queue::EVENT => Ok(()),
            t if t >= TIMER_EVENT_BASE => {
                if let Some(timer) = self.timers.get(usize::from(t - TIMER_EVENT_BASE)) {
                    // The expiration count does not matter: the clock counts periods by time.
                    let _ = timer.wait();
                }
                self.service_streams(vrings, &mem)
            }
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
