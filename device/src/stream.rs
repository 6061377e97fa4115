// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A PCM capture stream: the spec's command lifecycle, the sample clock, the device FIFO and the
//! guest's posted buffers.
//!
//! Independent of vhost-user and guest memory: posted buffers are opaque requests `R`, and
//! completions are handed to a closure, so the rules are unit-tested here directly.

use std::collections::VecDeque;

use vdaq_proto::virtio_snd::{code, pcm_feature, rate_hz, PcmSetParams};

use crate::clock::SampleClock;
use crate::faults::{FaultPlan, FaultStats, Faults, UsedLenLie};
use crate::fifo::Fifo;
use crate::frames::{chunk_buffer, Frames};
use crate::source::{Generator, StreamSignal};
use crate::status::Status;
use vdaq_proto::format::SampleFormat;

/// Largest buffer (and so device FIFO) a driver may request: bounds what a guest makes the
/// device allocate.
pub const MAX_BUFFER_BYTES: u32 = 64 << 20;
/// Most periods per buffer (buffer_bytes / period_bytes) a driver may set: bounds the
/// per-period lists (the FIFO's runs, its gaps, the held periods) at this many entries each.
/// Linux's virtio_snd asks for at most 16 by default (its `pcm_periods_max`), vdaq.ko 64.
pub const MAX_PERIODS: u32 = 1024;
/// Shortest period (ns) a driver may set: the sample clock's timer fires at most 10,000 times
/// a second per stream. 39 frames at 384 kHz, 1 frame at 5512 Hz; Linux's virtio_snd asks
/// for 10 ms by default (its `pcm_period_ms_min`), the conformance runs for 5 ms.
pub const MIN_PERIOD_NS: u64 = 100_000;

/// What a stream offers, from the device configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamCaps {
    /// Formats offered in PCM_INFO.
    pub formats: Vec<SampleFormat>,
    /// Rates offered in PCM_INFO (Hz, each in the spec's table).
    pub rates: Vec<u32>,
    /// Fewest channels.
    pub channels_min: u8,
    /// Most channels.
    pub channels_max: u8,
    /// The signal on the channels.
    pub signal: StreamSignal,
    /// Paced by the sample clock (true) or free-running as fast as buffers come (false).
    pub paced: bool,
    /// Faults to inject.
    pub faults: FaultPlan,
}

/// The spec's PCM command lifecycle (VIRTIO 1.2, 5.14.6.6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PcmState {
    /// No parameters set yet.
    Initial,
    /// SET_PARAMS succeeded.
    ParamsSet,
    /// PREPARE succeeded: buffers are accepted and held.
    Prepared,
    /// START succeeded: the clock runs and buffers complete.
    Running,
    /// STOP succeeded: the clock is paused, buffers are held.
    Stopped,
    /// RELEASE succeeded: every buffer was returned.
    Released,
}

/// Validated stream parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Frames per second.
    pub rate: u32,
    /// Samples per frame.
    pub channels: u8,
    /// Sample format.
    pub format: SampleFormat,
    /// Size of the whole buffer (and of the device FIFO) in bytes.
    pub buffer_bytes: u32,
    /// Size of a period in bytes.
    pub period_bytes: u32,
    /// The driver selected XRUN events.
    pub xrun_events: bool,
}

impl Params {
    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.format.width() * usize::from(self.channels)
    }

    /// Frames per period.
    pub fn period_frames(&self) -> u64 {
        (self.period_bytes as usize / self.frame_bytes()) as u64
    }
}

/// Running totals of a stream since the device started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    /// Periods the sample clock produced (kept or lost).
    pub periods_produced: u64,
    /// Guest buffers completed with data.
    pub buffers_completed: u64,
    /// Frames copied into guest buffers.
    pub frames_delivered: u64,
    /// Bytes copied into guest buffers.
    pub bytes_delivered: u64,
    /// Overruns: periods lost because the FIFO was full.
    pub xruns: u64,
    /// Frames lost in overruns.
    pub frames_lost: u64,
    /// XRUN events the driver asked for.
    pub xrun_events: u64,
    /// Buffers rejected with an error status.
    pub bad_buffers: u64,
    /// Buffers whose frames could not be written into guest memory (completed with an error
    /// status, their frames counted lost).
    pub write_errors: u64,
    /// What the injected faults did.
    pub faults: FaultStats,
}

impl std::ops::AddAssign for StreamStats {
    fn add_assign(&mut self, o: Self) {
        self.periods_produced += o.periods_produced;
        self.buffers_completed += o.buffers_completed;
        self.frames_delivered += o.frames_delivered;
        self.bytes_delivered += o.bytes_delivered;
        self.xruns += o.xruns;
        self.frames_lost += o.frames_lost;
        self.xrun_events += o.xrun_events;
        self.bad_buffers += o.bad_buffers;
        self.write_errors += o.write_errors;
        self.faults += o.faults;
    }
}

/// A posted guest buffer waiting for data.
#[derive(Debug)]
struct Posted<R> {
    request: R,
    payload: usize,
}

/// Status and FIFO level reported with a completed buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The spec's status code.
    pub status: u32,
    /// FIFO fill level after this buffer was taken out (`latency_bytes`).
    pub latency_bytes: u32,
    /// XRUN events to send before this completion: the periods lost just before its frames
    /// (0 unless the driver selected XRUN events). The FIFO delays them with the data, so the
    /// driver attributes each loss to the period that follows the gap.
    pub xruns_before: u64,
    /// Whether the driver is notified of this completion (false: a withheld notification).
    pub notify: bool,
    /// An injected lie about the used length.
    pub lie: Option<UsedLenLie>,
    /// Injected spurious events to send after this completion.
    pub flood: u32,
    /// Injected extra notifications after this completion.
    pub spurious_notify: u32,
}

/// One capture stream.
#[derive(Debug)]
pub struct Stream<R> {
    caps: StreamCaps,
    state: PcmState,
    params: Option<Params>,
    fifo: Fifo,
    clock: SampleClock,
    generator: Option<Generator>,
    /// The L1-sized buffer frames are rendered through on their way into guest memory.
    chunk: Vec<u8>,
    /// Sample-clock index of the next frame produced.
    next_frame: u64,
    posted: VecDeque<Posted<R>>,
    flushed: Vec<R>,
    /// Periods lost since the last period pushed into the FIFO: the gap sits before the next
    /// one pushed.
    lost_before_next_push: u64,
    /// Gaps in the FIFO's stream: (byte position in the stream of pushed bytes, periods lost
    /// just before it), oldest first.
    gaps: VecDeque<(u64, u64)>,
    /// Bytes pushed into and taken out of the FIFO since PREPARE.
    pushed_bytes: u64,
    taken_bytes: u64,
    /// Periods lost but not yet announced when the stream was released (no period followed
    /// them): announced then, so that the driver's count is the device's.
    unannounced_at_release: u64,
    faults: Faults,
    /// Periods in the FIFO that may not complete yet (injected delays): (release time, bytes),
    /// oldest first.
    held: VecDeque<(u64, usize)>,
    held_bytes: usize,
    /// The end of the injected stall under way.
    stalled_until: Option<u64>,
    stats: StreamStats,
}

impl<R> Stream<R> {
    /// A stream in the initial state.
    pub fn new(caps: StreamCaps) -> Self {
        Self {
            state: PcmState::Initial,
            params: None,
            fifo: Fifo::default(),
            clock: SampleClock::new(48_000, 1),
            generator: None,
            chunk: Vec::new(),
            next_frame: 0,
            posted: VecDeque::new(),
            flushed: Vec::new(),
            lost_before_next_push: 0,
            gaps: VecDeque::new(),
            unannounced_at_release: 0,
            pushed_bytes: 0,
            taken_bytes: 0,
            faults: Faults::new(caps.faults),
            held: VecDeque::new(),
            held_bytes: 0,
            stalled_until: None,
            stats: StreamStats::default(),
            caps,
        }
    }

    /// What the stream offers.
    pub fn caps(&self) -> &StreamCaps {
        &self.caps
    }

    /// The lifecycle state.
    pub fn state(&self) -> PcmState {
        self.state
    }

    /// The parameters set, if any.
    pub fn params(&self) -> Option<&Params> {
        self.params.as_ref()
    }

    /// Counts events sent by this stream's event storm (`event_storm_ms`).
    pub fn count_storm_events(&mut self, n: u64) {
        self.faults.count_storm_events(n);
    }

    /// Running totals.
    pub fn stats(&self) -> StreamStats {
        StreamStats { faults: self.faults.stats(), ..self.stats }
    }

    /// FIFO fill level in bytes.
    pub fn fifo_level(&self) -> usize {
        self.fifo.len()
    }

    /// Number of posted buffers waiting for data.
    pub fn posted(&self) -> usize {
        self.posted.len()
    }

    /// The used-length lie of a control response addressed to this stream, if it lies.
    pub fn control_lie(&mut self) -> Option<UsedLenLie> {
        self.faults.control_lie()
    }

    /// Entries of the per-period lists: the FIFO's runs, the gaps, the held periods (each at
    /// most [`MAX_PERIODS`] plus one).
    pub fn bookkeeping_len(&self) -> usize {
        self.fifo.runs() + self.gaps.len() + self.held.len()
    }

    /// PCM_SET_PARAMS. Refusals are the spec's statuses: `BadMsg` for a request not valid in
    /// the state or malformed, `NotSupp` for values the stream does not offer.
    pub fn set_params(&mut self, req: &PcmSetParams) -> Result<(), Status> {
        if !matches!(
            self.state,
            PcmState::Initial | PcmState::ParamsSet | PcmState::Prepared | PcmState::Released
        ) {
            return Err(Status::BadMsg);
        }
        let features = req.features.get();
        if features & !(1 << pcm_feature::EVT_XRUNS) != 0 {
            return Err(Status::NotSupp);
        }
        let format = SampleFormat::from_wire(req.format)
            .filter(|f| self.caps.formats.contains(f))
            .ok_or(Status::NotSupp)?;
        let rate =
            rate_hz(req.rate).filter(|r| self.caps.rates.contains(r)).ok_or(Status::NotSupp)?;
        if req.channels < self.caps.channels_min || req.channels > self.caps.channels_max {
            return Err(Status::NotSupp);
        }
        let params = Params {
            rate,
            channels: req.channels,
            format,
            buffer_bytes: req.buffer_bytes.get(),
            period_bytes: req.period_bytes.get(),
            xrun_events: features & (1 << pcm_feature::EVT_XRUNS) != 0,
        };
        let frame = params.frame_bytes() as u32;
        let (buffer, period) = (params.buffer_bytes, params.period_bytes);
        if period == 0
            || !period.is_multiple_of(frame)
            || !buffer.is_multiple_of(period)
            || buffer > MAX_BUFFER_BYTES
        {
            return Err(Status::BadMsg);
        }
        // Well-formed, but more work per period or more periods than the device takes.
        let period_ns = params.period_frames() * 1_000_000_000 / u64::from(rate);
        if period_ns < MIN_PERIOD_NS || buffer / period > MAX_PERIODS {
            return Err(Status::NotSupp);
        }
        self.flush_posted();
        self.params = Some(params);
        self.state = PcmState::ParamsSet;
        Ok(())
    }

    /// PCM_PREPARE: allocates the FIFO and resets the sample clock to frame 0. Buffers already
    /// posted stay posted.
    pub fn prepare(&mut self) -> Result<(), Status> {
        if !matches!(self.state, PcmState::ParamsSet | PcmState::Prepared | PcmState::Released) {
            return Err(Status::BadMsg);
        }
        let p = self.params.ok_or(Status::BadMsg)?;
        self.fifo = Fifo::new(p.buffer_bytes as usize, p.frame_bytes());
        self.clock = SampleClock::new(p.rate, p.period_frames());
        self.generator =
            Some(Generator::new(&self.caps.signal, p.format, usize::from(p.channels), p.rate));
        self.chunk = chunk_buffer(p.frame_bytes());
        self.next_frame = 0;
        self.reset_gaps();
        self.state = PcmState::Prepared;
        Ok(())
    }

    /// PCM_START at `now_ns` (CLOCK_MONOTONIC).
    pub fn start(&mut self, now_ns: u64) -> Result<(), Status> {
        if !matches!(self.state, PcmState::Prepared | PcmState::Stopped) {
            return Err(Status::BadMsg);
        }
        self.clock.start(now_ns);
        self.faults.start(now_ns);
        self.state = PcmState::Running;
        Ok(())
    }

    /// PCM_STOP: the clock pauses; the FIFO and the posted buffers are kept.
    pub fn stop(&mut self) -> Result<(), Status> {
        if self.state != PcmState::Running {
            return Err(Status::BadMsg);
        }
        self.clock.stop();
        self.state = PcmState::Stopped;
        Ok(())
    }

    /// PCM_RELEASE: every posted buffer is returned (see [`Self::take_flushed`]) and the FIFO
    /// emptied.
    pub fn release(&mut self) -> Result<(), Status> {
        if !matches!(self.state, PcmState::Prepared | PcmState::Stopped) {
            return Err(Status::BadMsg);
        }
        self.flush_posted();
        self.fifo.clear();
        if self.params.is_some_and(|p| p.xrun_events) {
            let pending = self.lost_before_next_push + self.gaps.iter().map(|g| g.1).sum::<u64>();
            self.unannounced_at_release += pending;
            self.stats.xrun_events += pending;
        }
        self.reset_gaps();
        self.state = PcmState::Released;
        Ok(())
    }

    /// XRUN events owed since the last call: periods lost just before a RELEASE, which no
    /// completion followed to carry their announcement.
    pub fn take_unannounced_xruns(&mut self) -> u64 {
        std::mem::take(&mut self.unannounced_at_release)
    }

    fn reset_gaps(&mut self) {
        self.lost_before_next_push = 0;
        self.gaps.clear();
        self.pushed_bytes = 0;
        self.taken_bytes = 0;
        self.held.clear();
        self.held_bytes = 0;
        self.stalled_until = None;
    }

    fn flush_posted(&mut self) {
        self.flushed.extend(self.posted.drain(..).map(|p| p.request));
    }

    /// Buffers returned without data by RELEASE or SET_PARAMS, to complete with `S_OK` and no
    /// frames before the request's response.
    pub fn take_flushed(&mut self) -> Vec<R> {
        std::mem::take(&mut self.flushed)
    }

    /// Accepts a posted buffer with room for `payload` bytes of frames. Buffers are held while
    /// prepared or stopped and complete in the order they were posted. A buffer the stream
    /// cannot take comes back with the status to complete it with.
    pub fn post(&mut self, request: R, payload: usize) -> Result<(), (R, Status)> {
        let Some(p) = self.params.filter(|_| {
            matches!(self.state, PcmState::Prepared | PcmState::Running | PcmState::Stopped)
        }) else {
            self.stats.bad_buffers += 1;
            return Err((request, Status::BadMsg));
        };
        if payload == 0
            || !payload.is_multiple_of(p.frame_bytes())
            || payload > p.buffer_bytes as usize
        {
            self.stats.bad_buffers += 1;
            return Err((request, Status::BadMsg));
        }
        self.posted.push_back(Posted { request, payload });
        Ok(())
    }

    /// When the sample clock next produces a period, or `None` when it does not run (stopped,
    /// or free-running).
    pub fn next_deadline_ns(&self) -> Option<u64> {
        let clock = if self.caps.paced { self.clock.next_deadline_ns() } else { None };
        if self.state != PcmState::Running {
            return clock;
        }
        // Injected faults: the end of a stall, the next held period's release.
        let fault = self.stalled_until.or_else(|| self.held.front().map(|h| h.0));
        match (clock, fault) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Produces the periods due at `now_ns` into the FIFO. A period that finds the FIFO full is
    /// lost whole: it is counted, and reported by an XRUN event if the driver selected them.
    /// Free-running streams fill the FIFO instead.
    pub fn produce(&mut self, now_ns: u64) {
        if self.state != PcmState::Running {
            return;
        }
        let Some(p) = self.params else { return };
        let period = p.period_bytes as usize;
        let due = if self.caps.paced {
            self.clock.take_due(now_ns)
        } else if self.posted.is_empty() {
            0
        } else {
            (self.fifo.free() / period) as u64
        };
        let mut left = due;
        // Once the FIFO has no room for a period, every period still due is lost: counted in
        // one step, so the work is bounded by the FIFO's periods, not by the time waited.
        while left > 0 && self.fifo.free() >= period {
            self.produce_period(period, p.period_frames(), now_ns);
            left -= 1;
        }
        if left > 0 {
            self.faults.drop_periods(left);
            self.lose_periods(left, p.period_frames());
        }
        self.release_held(now_ns);
    }

    /// Lets the held periods whose time has come complete, unless a stall is under way.
    fn release_held(&mut self, now_ns: u64) {
        self.stalled_until = self.faults.stalled_until(now_ns);
        if self.stalled_until.is_some() {
            return;
        }
        while let Some(&(_, bytes)) = self.held.front().filter(|h| h.0 <= now_ns) {
            self.held.pop_front();
            self.held_bytes -= bytes;
        }
    }

    fn produce_period(&mut self, period: usize, period_frames: u64, now_ns: u64) {
        if self.faults.drop_period() {
            self.lose_period(period_frames);
            return;
        }
        // The FIFO takes the frames' indices; their samples are rendered when a guest buffer
        // takes them (every source is a function of the index).
        if !self.fifo.push(self.next_frame, period_frames) {
            self.lose_period(period_frames);
            return;
        }
        if self.lost_before_next_push > 0 {
            let lost = std::mem::take(&mut self.lost_before_next_push);
            self.gaps.push_back((self.pushed_bytes, lost));
        }
        self.pushed_bytes += period as u64;
        let release = self.faults.release_at(now_ns);
        if release > now_ns || !self.held.is_empty() {
            self.held.push_back((release, period));
            self.held_bytes += period;
        }
        self.stats.periods_produced += 1;
        self.next_frame += period_frames;
    }

    /// A period lost whole (FIFO full, or dropped on purpose): counted, and announced before
    /// the next period that makes it into the FIFO.
    fn lose_period(&mut self, period_frames: u64) {
        self.lose_periods(1, period_frames);
    }

    /// `n` periods lost whole.
    fn lose_periods(&mut self, n: u64, period_frames: u64) {
        self.stats.xruns += n;
        self.stats.frames_lost += n * period_frames;
        self.lost_before_next_push += n;
        self.stats.periods_produced += n;
        self.next_frame = self.next_frame.wrapping_add(n * period_frames);
    }

    /// Periods lost just before (or within) the next `n` bytes taken out of the FIFO; takes
    /// those gaps.
    fn take_gaps(&mut self, n: usize) -> u64 {
        let end = self.taken_bytes + n as u64;
        let mut lost = 0;
        while self.gaps.front().is_some_and(|&(at, _)| at < end) {
            lost += self.gaps.pop_front().map_or(0, |(_, l)| l);
        }
        lost
    }

    /// True when the oldest posted buffer can be completed now.
    pub fn has_ready(&self) -> bool {
        self.state == PcmState::Running
            && self.stalled_until.is_none()
            && self
                .posted
                .front()
                .is_some_and(|b| b.payload <= self.fifo.len().saturating_sub(self.held_bytes))
    }

    /// Completes posted buffers, oldest first, while the FIFO holds enough frames for them.
    /// `deliver` gets the request, its frames (rendered as they are written, straight into
    /// the guest buffer) and the completion to report; it returns whether the frames reached
    /// the buffer. Frames that did not (a failed write into guest memory) are counted lost,
    /// and the caller completes the buffer with an error status instead.
    pub fn complete_ready(&mut self, mut deliver: impl FnMut(R, Frames<'_>, Completion) -> bool) {
        while self.has_ready() {
            let Some(buffer) = self.posted.pop_front() else { break };
            let n = buffer.payload;
            let latency_bytes = (self.fifo.len() - n) as u32;
            let lost = self.take_gaps(n);
            let xruns_before = if self.params.is_some_and(|p| p.xrun_events) { lost } else { 0 };
            self.stats.xrun_events += xruns_before;
            let Some(runs) = self.fifo.peek(n) else { break };
            let notify = self.faults.notify();
            let frame_bytes = self.fifo.frame_bytes();
            let frames = (n / frame_bytes) as u64;
            let plan = *self.faults.plan();
            let c = Completion {
                status: code::S_OK,
                latency_bytes,
                xruns_before,
                notify,
                lie: self.faults.rx_lie(),
                flood: plan.event_flood,
                spurious_notify: plan.spurious_notify,
            };
            if self.faults.error_completion() {
                // An injected error: the frames are lost, the buffer comes back without them.
                self.stats.frames_lost += frames;
                let c = Completion { status: self.faults.error_status(), ..c };
                deliver(buffer.request, Frames::none(&mut self.chunk), c);
            } else {
                let data =
                    Frames::new(runs, n, self.generator.as_mut(), &mut self.chunk, frame_bytes);
                if deliver(buffer.request, data, c) {
                    self.stats.buffers_completed += 1;
                    self.stats.bytes_delivered += n as u64;
                    self.stats.frames_delivered += frames;
                } else {
                    self.stats.frames_lost += frames;
                    self.stats.write_errors += 1;
                }
            }
            self.fifo.consume(n);
            self.taken_bytes += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdaq_proto::virtio_snd::{format, rate_code, PcmHdr};
    use vdaq_proto::wire::Le32;

    fn caps(paced: bool) -> StreamCaps {
        StreamCaps {
            formats: vec![SampleFormat::S16, SampleFormat::S32],
            rates: vec![8_000, 48_000],
            channels_min: 1,
            channels_max: 2,
            signal: StreamSignal::default(),
            paced,
            faults: FaultPlan::default(),
        }
    }

    fn params(buffer: u32, period: u32, ch: u8, xruns: bool) -> PcmSetParams {
        PcmSetParams {
            hdr: PcmHdr::new(code::R_PCM_SET_PARAMS, 0),
            buffer_bytes: Le32::new(buffer),
            period_bytes: Le32::new(period),
            features: Le32::new(if xruns { 1 << pcm_feature::EVT_XRUNS } else { 0 }),
            channels: ch,
            format: format::S16,
            rate: rate_code(8_000).unwrap_or(0),
            padding: 0,
        }
    }

    /// A started mono S16 stream at 8 kHz with 80-frame (10 ms) periods and a 4-period FIFO.
    fn running(xruns: bool) -> Stream<u32> {
        let mut s = Stream::new(caps(true));
        assert_eq!(s.set_params(&params(640, 160, 1, xruns)), Ok(()));
        assert_eq!(s.prepare(), Ok(()));
        s
    }

    fn counters(bytes: &[u8]) -> Vec<u16> {
        bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    }

    fn drain(s: &mut Stream<u32>) -> Vec<(u32, Vec<u16>, Completion)> {
        let mut out = Vec::new();
        s.complete_ready(|r, frames, c| {
            out.push((r, counters(&frames.to_vec()), c));
            true
        });
        out
    }

    #[test]
    fn lifecycle_follows_the_spec_and_refuses_out_of_order_commands() {
        let mut s: Stream<u32> = Stream::new(caps(true));
        assert_eq!(s.prepare(), Err(Status::BadMsg), "prepare before set_params");
        assert_eq!(s.start(0), Err(Status::BadMsg));
        assert_eq!(s.stop(), Err(Status::BadMsg));
        assert_eq!(s.release(), Err(Status::BadMsg));
        assert_eq!(s.set_params(&params(640, 160, 1, false)), Ok(()));
        assert_eq!(s.start(0), Err(Status::BadMsg), "start before prepare");
        assert_eq!(s.prepare(), Ok(()));
        assert_eq!(s.prepare(), Ok(()), "prepare again is allowed");
        assert_eq!(s.stop(), Err(Status::BadMsg), "stop while prepared");
        assert_eq!(s.start(0), Ok(()));
        assert_eq!(s.state(), PcmState::Running);
        assert_eq!(s.set_params(&params(640, 160, 1, false)), Err(Status::BadMsg));
        assert_eq!(s.prepare(), Err(Status::BadMsg));
        assert_eq!(s.release(), Err(Status::BadMsg), "release while running");
        assert_eq!(s.start(0), Err(Status::BadMsg));
        assert_eq!(s.stop(), Ok(()));
        assert_eq!(s.start(0), Ok(()), "restart after stop");
        assert_eq!(s.stop(), Ok(()));
        assert_eq!(s.release(), Ok(()));
        assert_eq!(s.start(0), Err(Status::BadMsg));
        assert_eq!(s.prepare(), Ok(()), "prepare again after release");
        assert_eq!(s.release(), Ok(()));
        assert_eq!(s.set_params(&params(640, 160, 2, false)), Ok(()));
    }

    #[test]
    fn set_params_rejects_unsupported_and_malformed_values() {
        let mut s: Stream<u32> = Stream::new(caps(true));
        let mut p = params(640, 160, 3, false);
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "too many channels");
        p.channels = 0;
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "too few channels");
        p.channels = 1;
        p.format = format::U16;
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "format not offered");
        p.format = 200;
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "unknown format");
        p.format = format::S16;
        p.rate = rate_code(44_100).unwrap_or(0);
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "rate not offered");
        p.rate = 99;
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "unknown rate code");
        p.rate = rate_code(8_000).unwrap_or(0);
        p.features = Le32::new(1 << pcm_feature::SHMEM_HOST);
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "shared memory transport");
        for (buffer, period) in [(640, 0), (640, 161), (650, 160), (MAX_BUFFER_BYTES + 160, 160)] {
            assert_eq!(
                s.set_params(&params(buffer, period, 1, false)),
                Err(Status::BadMsg),
                "buffer {buffer} period {period}"
            );
        }
        assert_eq!(s.state(), PcmState::Initial, "a refused request changes nothing");
    }

    #[test]
    fn set_params_refuses_periods_under_100_us_and_more_than_1024_periods_per_buffer() {
        let mut all = caps(true);
        all.rates = vdaq_proto::virtio_snd::RATES.to_vec();
        all.formats = SampleFormat::ALL.to_vec();
        all.channels_max = 8;
        let mut s: Stream<u32> = Stream::new(all);
        let with = |rate: u32, ch: u8, format: SampleFormat, period_frames: u32, periods: u32| {
            let frame = format.width() as u32 * u32::from(ch);
            PcmSetParams {
                buffer_bytes: Le32::new(period_frames * frame * periods),
                period_bytes: Le32::new(period_frames * frame),
                channels: ch,
                format: format.wire_code(),
                rate: rate_code(rate).unwrap_or(0),
                ..params(0, 0, 1, false)
            }
        };
        // 1-frame periods at 384 kHz (2.6 us), 38 frames (99 us): refused.
        for frames in [1, 38] {
            let p = with(384_000, 1, SampleFormat::U8, frames, 4);
            assert_eq!(s.set_params(&p), Err(Status::NotSupp), "{frames} frames at 384 kHz");
        }
        // A 2-byte period in a 64 MiB buffer: 33,554,432 periods per buffer.
        let p = with(8_000, 1, SampleFormat::S16, 1, 32 << 20);
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "periods per buffer");
        let p = with(8_000, 1, SampleFormat::S16, 80, MAX_PERIODS + 1);
        assert_eq!(s.set_params(&p), Err(Status::NotSupp), "1025 periods");
        assert_eq!(s.state(), PcmState::Initial);
        // What Linux's virtio_snd and arecord ask for here: max(rate / 200, 32)-frame periods
        // (5 ms; 32 frames at 5512 Hz), in every format and channel count, and a 1-frame
        // period at 5512 Hz (181 us); 39 frames at 384 kHz (101 us); 1024 periods.
        for rate in vdaq_proto::virtio_snd::RATES {
            for format in SampleFormat::ALL {
                for ch in [1, 2, 8] {
                    let p = with(rate, ch, format, (rate / 200).max(32), 4);
                    assert_eq!(s.set_params(&p), Ok(()), "{rate} Hz {format:?} x{ch}");
                }
            }
        }
        assert_eq!(s.set_params(&with(5_512, 1, SampleFormat::U8, 1, 2)), Ok(()));
        assert_eq!(s.set_params(&with(384_000, 1, SampleFormat::U8, 39, 2)), Ok(()));
        assert_eq!(s.set_params(&with(8_000, 1, SampleFormat::S16, 80, MAX_PERIODS)), Ok(()));
    }

    #[test]
    fn a_long_wait_loses_its_periods_in_one_step_and_the_lists_stay_bounded() {
        // 5-frame periods at 48 kHz with XRUN events, never serviced for a minute: 576,000
        // periods due at once.
        let mut s: Stream<u32> = Stream::new(caps(true));
        let p = PcmSetParams { rate: rate_code(48_000).unwrap_or(0), ..params(40, 10, 1, true) };
        assert_eq!(s.set_params(&p), Ok(()));
        assert_eq!(s.prepare(), Ok(()));
        assert_eq!(s.start(0), Ok(()));
        s.produce(60_000_000_000);
        let st = s.stats();
        // 5 frames at 48 kHz: 104.2 us.
        assert_eq!(st.periods_produced, 576_000);
        assert_eq!(st.xruns, 576_000 - 4, "the FIFO kept four");
        assert!(s.bookkeeping_len() <= 3 * MAX_PERIODS as usize);
        for id in 0..5 {
            assert!(s.post(id, 10).is_ok());
        }
        let mut done = drain(&mut s);
        s.produce(60_000_200_000);
        done.extend(drain(&mut s));
        assert_eq!(done.len(), 5);
        assert_eq!(done[4].2.xruns_before, 576_000 - 4, "owed as one count");
    }

    #[test]
    fn buffers_posted_while_prepared_are_held_then_complete_in_order_with_the_counter() {
        let mut s = running(false);
        for id in 0..4 {
            assert!(s.post(id, 160).is_ok());
        }
        s.produce(1_000_000_000);
        assert!(drain(&mut s).is_empty(), "nothing completes before START");
        assert_eq!(s.start(0), Ok(()));
        assert_eq!(s.next_deadline_ns(), Some(10_000_000));
        s.produce(25_000_000);
        let done = drain(&mut s);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].0, 0);
        assert_eq!(done[1].0, 1);
        assert_eq!(done[0].1, (0..80).collect::<Vec<u16>>());
        assert_eq!(done[1].1, (80..160).collect::<Vec<u16>>());
        assert_eq!(
            done[1].2,
            Completion {
                status: code::S_OK,
                latency_bytes: 0,
                xruns_before: 0,
                notify: true,
                lie: None,
                flood: 0,
                spurious_notify: 0
            }
        );
    }

    #[test]
    fn latency_bytes_is_the_fifo_level_after_the_buffer_is_taken() {
        let mut s = running(false);
        assert_eq!(s.start(0), Ok(()));
        s.produce(30_000_000);
        assert_eq!(s.fifo_level(), 480);
        assert!(s.post(7, 160).is_ok());
        let done = drain(&mut s);
        assert_eq!(done[0].2.latency_bytes, 320);
    }

    #[test]
    fn a_full_fifo_loses_whole_periods_and_the_counter_shows_the_gap() {
        let mut s = running(true);
        assert_eq!(s.start(0), Ok(()));
        // Six periods with no buffer posted: four fit, two are lost.
        s.produce(60_000_000);
        let st = s.stats();
        assert_eq!((st.xruns, st.frames_lost), (2, 160));
        for id in 0..5 {
            assert!(s.post(id, 160).is_ok());
        }
        let done = drain(&mut s);
        assert_eq!(done.len(), 4, "the FIFO held four periods");
        assert!(done.iter().all(|d| d.2.xruns_before == 0), "the loss comes after these");
        s.produce(70_000_000);
        let next = drain(&mut s);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].1[0], 480, "frames 320..480 were lost, and only they");
        assert_eq!(next[0].2.xruns_before, 2, "announced with the period after the gap");
        assert_eq!(s.stats().xrun_events, 2);
        assert_eq!(done[3].1[79], 319);
    }

    /// As [`running`] (with XRUN events), with the faults of a `[stream.faults]` table, started
    /// at 0 with four one-period buffers posted.
    fn with_faults(table: &str) -> Stream<u32> {
        let cfg: crate::faults::FaultsConfig = toml::from_str(table).expect("faults table");
        let mut caps = caps(true);
        caps.faults = cfg.to_plan("faults").expect("valid faults");
        let mut s = Stream::new(caps);
        assert_eq!(s.set_params(&params(640, 160, 1, true)), Ok(()));
        assert_eq!(s.prepare(), Ok(()));
        assert_eq!(s.start(0), Ok(()));
        for id in 0..4 {
            assert!(s.post(id, 160).is_ok());
        }
        s
    }

    #[test]
    fn dropped_periods_are_lost_counted_and_announced_like_overruns() {
        let mut s = with_faults("drop_every = 3");
        s.produce(60_000_000);
        let done = drain(&mut s);
        let firsts: Vec<u16> = done.iter().map(|d| d.1[0]).collect();
        assert_eq!(firsts, [0, 80, 240, 320], "periods 2 and 5 were dropped");
        assert_eq!(done[2].2.xruns_before, 1, "announced before the period after the gap");
        let st = s.stats();
        assert_eq!((st.xruns, st.frames_lost, st.faults.dropped), (2, 160, 2));
    }

    #[test]
    fn error_completions_carry_no_frames_and_count_them_lost() {
        let mut s = with_faults("error_every = 2");
        s.produce(40_000_000);
        let done = drain(&mut s);
        let statuses: Vec<u32> = done.iter().map(|d| d.2.status).collect();
        assert_eq!(statuses, [code::S_OK, code::S_IO_ERR, code::S_OK, code::S_IO_ERR]);
        assert!(done[1].1.is_empty(), "an error completion carries no frames");
        assert_eq!(done[2].1[0], 160, "the next buffer goes on after the lost period");
        let st = s.stats();
        assert_eq!((st.buffers_completed, st.frames_lost, st.faults.errors), (2, 160, 2));
    }

    #[test]
    fn withheld_completions_still_complete_in_order() {
        let mut s = with_faults("withhold_every = 2");
        s.produce(40_000_000);
        let done = drain(&mut s);
        let notify: Vec<bool> = done.iter().map(|d| d.2.notify).collect();
        assert_eq!(notify, [true, false, true, false]);
        assert_eq!(done.iter().map(|d| d.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(s.stats().faults.withheld, 2);
    }

    #[test]
    fn delayed_periods_complete_at_their_release_time_and_say_when() {
        let mut s = with_faults("delay_ms = 25");
        s.produce(10_000_000);
        assert!(!s.has_ready(), "the first period is held until 35 ms");
        assert_eq!(s.next_deadline_ns(), Some(20_000_000), "the clock's next period comes first");
        s.produce(20_000_000);
        s.produce(30_000_000);
        assert!(!s.has_ready());
        assert_eq!(s.next_deadline_ns(), Some(35_000_000), "then the held period's release");
        s.produce(35_000_000);
        let done = drain(&mut s);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].1[0], 0);
        s.produce(55_000_000);
        assert_eq!(drain(&mut s).len(), 2, "released at 45 and 55 ms");
    }

    #[test]
    fn a_stall_completes_nothing_for_its_length_then_catches_up() {
        let mut s = with_faults("stall_at_ms = 15\nstall_ms = 30");
        s.produce(10_000_000);
        assert_eq!(drain(&mut s).len(), 1);
        s.produce(40_000_000);
        assert!(!s.has_ready(), "stalled from 15 to 45 ms");
        assert_eq!(s.next_deadline_ns(), Some(45_000_000), "a timer for the stall's end");
        s.produce(45_000_000);
        let done = drain(&mut s);
        assert_eq!(done.iter().map(|d| d.1[0]).collect::<Vec<_>>(), [80, 160, 240]);
        assert_eq!(s.stats().faults.stalls, 1);
    }

    #[test]
    fn xrun_events_only_when_selected() {
        let mut s = running(false);
        assert_eq!(s.start(0), Ok(()));
        s.produce(60_000_000);
        assert_eq!(s.stats().xruns, 2);
        for id in 0..5 {
            assert!(s.post(id, 160).is_ok());
        }
        let mut done = drain(&mut s);
        s.produce(70_000_000);
        done.extend(drain(&mut s));
        assert_eq!(done.len(), 5);
        assert_eq!(done[4].1[0], 480, "after the gap");
        assert!(done.iter().all(|d| d.2.xruns_before == 0));
        assert_eq!(s.stats().xrun_events, 0);
    }

    #[test]
    fn losses_not_yet_announced_at_release_are_owed_as_events() {
        let mut s = running(true);
        // No buffer posted: every period the clock produces past the FIFO's room is lost.
        assert_eq!(s.start(0), Ok(()));
        s.produce(100_000_000);
        let lost = s.stats().xruns;
        assert!(lost > 0);
        assert_eq!(s.stats().xrun_events, 0, "nothing completed after the gap yet");
        assert_eq!(s.stop(), Ok(()));
        assert_eq!(s.release(), Ok(()));
        assert_eq!(s.take_unannounced_xruns(), lost);
        assert_eq!(s.take_unannounced_xruns(), 0);
        assert_eq!(s.stats().xrun_events, s.stats().xruns, "every loss announced");
    }

    #[test]
    fn release_returns_every_posted_buffer() {
        let mut s = running(false);
        for id in 0..3 {
            assert!(s.post(id, 160).is_ok());
        }
        assert_eq!(s.start(0), Ok(()));
        s.produce(10_000_000);
        assert_eq!(drain(&mut s).len(), 1);
        assert_eq!(s.stop(), Ok(()));
        assert_eq!(s.release(), Ok(()));
        assert_eq!(s.take_flushed(), vec![1, 2]);
        assert_eq!(s.posted(), 0);
        assert_eq!(s.fifo_level(), 0);
        assert_eq!(s.prepare(), Ok(()));
        assert!(s.post(9, 160).is_ok());
        assert_eq!(s.start(100), Ok(()));
        s.produce(10_000_100);
        assert_eq!(drain(&mut s)[0].1[0], 0, "the clock restarts at frame 0 after prepare");
    }

    #[test]
    fn stop_pauses_the_clock_without_a_gap() {
        let mut s = running(false);
        assert_eq!(s.start(0), Ok(()));
        s.produce(20_000_000);
        assert_eq!(s.stop(), Ok(()));
        s.produce(500_000_000);
        assert_eq!(s.fifo_level(), 320, "nothing is produced while stopped");
        assert_eq!(s.start(1_000_000_000), Ok(()));
        s.produce(1_010_000_000);
        for id in 0..3 {
            assert!(s.post(id, 160).is_ok());
        }
        let done = drain(&mut s);
        assert_eq!(done.len(), 3);
        assert_eq!(done[2].1[0], 160);
    }

    #[test]
    fn bad_buffers_are_refused_with_bad_msg() {
        let mut s: Stream<u32> = Stream::new(caps(true));
        assert_eq!(s.post(1, 160), Err((1, Status::BadMsg)), "no parameters");
        let mut s = running(false);
        assert_eq!(s.post(2, 0), Err((2, Status::BadMsg)), "empty");
        assert_eq!(s.post(3, 161), Err((3, Status::BadMsg)), "not frame-aligned");
        assert_eq!(s.post(4, 642), Err((4, Status::BadMsg)), "larger than the buffer");
        assert_eq!(s.stats().bad_buffers, 3);
        assert!(s.post(5, 640).is_ok(), "a whole-buffer message is fine");
    }

    /// A paced 8 kHz stereo stream (counter, sine) with a 4-period FIFO of 80-frame periods.
    fn two_signals() -> Stream<u32> {
        use crate::source::{ChannelSignal, Units, Waveform};
        let sine = ChannelSignal {
            waveform: Waveform::Sine,
            amplitude: 20_000.0,
            offset: 0.0,
            frequency: 300.0,
            phase_deg: 10.0,
        };
        let mut caps = caps(true);
        caps.signal =
            StreamSignal { channels: vec![ChannelSignal::counter(), sine], units: Units::Codes };
        let mut s = Stream::new(caps);
        assert_eq!(s.set_params(&params(1280, 320, 2, false)), Ok(()));
        assert_eq!(s.prepare(), Ok(()));
        assert_eq!(s.start(0), Ok(()));
        s
    }

    fn drain_bytes(s: &mut Stream<u32>) -> Vec<u8> {
        let mut out = Vec::new();
        s.complete_ready(|_, frames, _| {
            out.extend(frames.to_vec());
            true
        });
        out
    }

    #[test]
    fn frames_through_the_fifo_and_straight_into_waiting_buffers_are_the_same_bytes() {
        // Waiting buffers: each period goes straight into the buffer posted for it.
        let mut direct = two_signals();
        let mut a = Vec::new();
        for k in 1..=6u64 {
            assert!(direct.post(k as u32, 320).is_ok());
            direct.produce(k * 10_000_000);
            a.extend(drain_bytes(&mut direct));
        }
        // No buffer for 30 ms: three periods wait in the FIFO, then buffers of other sizes
        // (half and one and a half periods) take them.
        let mut queued = two_signals();
        queued.produce(30_000_000);
        assert_eq!(queued.fifo_level(), 960);
        let mut b = Vec::new();
        for (id, bytes) in [160, 480, 320].into_iter().enumerate() {
            assert!(queued.post(id as u32, bytes).is_ok());
        }
        b.extend(drain_bytes(&mut queued));
        queued.produce(60_000_000);
        assert!(queued.post(9, 960).is_ok());
        b.extend(drain_bytes(&mut queued));
        // Both are the signal's first 480 frames.
        let mut want = vec![0u8; 480 * 4];
        let signal = &queued.caps().signal;
        Generator::new(signal, SampleFormat::S16, 2, 8_000).render(0, &mut want);
        assert_eq!(a, want);
        assert_eq!(b, want);
    }

    #[test]
    fn frames_that_cannot_be_written_are_counted_lost_and_the_next_buffer_goes_on() {
        let mut s = running(false);
        assert_eq!(s.start(0), Ok(()));
        for id in 0..2 {
            assert!(s.post(id, 160).is_ok());
        }
        s.produce(20_000_000);
        let mut firsts = Vec::new();
        s.complete_ready(|id, frames, _| {
            firsts.push(counters(&frames.to_vec())[0]);
            id != 0
        });
        assert_eq!(firsts, [0, 80], "the failed buffer's frames are not written again");
        let st = s.stats();
        assert_eq!((st.buffers_completed, st.frames_delivered), (1, 80));
        assert_eq!((st.write_errors, st.frames_lost, st.xruns), (1, 80, 0));
    }

    #[test]
    fn free_run_fills_buffers_as_fast_as_they_come() {
        let mut s = Stream::new(caps(false));
        assert_eq!(s.set_params(&params(640, 160, 1, false)), Ok(()));
        assert_eq!(s.prepare(), Ok(()));
        assert_eq!(s.start(0), Ok(()));
        assert_eq!(s.next_deadline_ns(), None);
        let mut seen = Vec::new();
        for round in 0..3u32 {
            for id in 0..6 {
                assert!(s.post(round * 10 + id, 160).is_ok());
            }
            while s.posted() > 0 {
                s.produce(0);
                seen.extend(drain(&mut s).into_iter().flat_map(|d| d.1));
            }
        }
        assert_eq!(seen, (0..18 * 80).collect::<Vec<u16>>());
        assert_eq!(s.stats().xruns, 0);
    }
}
