// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Capture: by default asynchronous, the driver signals each completed period (kill_fasync);
//! the signal handler drains every ready period with non-blocking reads until EAGAIN, checks
//! the counter and measures interrupt-to-handler latency, while the main flow only reports
//! progress. `--mode poll` and `--mode read` consume the same way from poll() or blocking
//! reads, for comparison. A read error (EIO: the device stalled; ENODEV: it is gone) ends the
//! capture at once and is reported.
//!
//! Why the handler drains (not a self-pipe): plain SIGIO does not queue, so several interrupts
//! can arrive as one signal; draining until EAGAIN in the handler guarantees no period waits
//! for a signal that will never come, with the least latency. The handler only reads into
//! memory allocated beforehand and updates counters: no allocation, no locks, no stdio.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vdaq_proto::format::SampleFormat;
use vdaq_proto::uapi::{
    Info, MmapLayout, Params, PeriodHeader, Stats, PERIOD_FLAG_ERROR, PERIOD_MAGIC, VDAQ_IOC_INFO,
    VDAQ_IOC_MMAP_LAYOUT, VDAQ_IOC_SET_PARAMS, VDAQ_IOC_START,
};
use vdaq_proto::wire::Pod;

use crate::histogram::Histogram;
use crate::mmap::{Ring, RingError};
use crate::output::{FileType, Output};
use crate::report;
use crate::sys;
use crate::verify::{CounterChecker, CounterReport};

/// Latency histogram buckets: bucket i counts latencies in [2^i, 2^(i+1)) microseconds.
const LATENCY_BUCKETS: usize = 24;

/// How the app learns that periods are ready.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// A signal per interrupt (O_ASYNC), drained in the handler.
    #[default]
    Sigio,
    /// poll() then non-blocking reads.
    Poll,
    /// Blocking reads.
    Read,
    /// A signal per interrupt, as sigio, but the handler checks the periods where the device
    /// put them, in a read-only mapping of the driver's ring (zero copy), then acknowledges
    /// them (VDAQ_IOC_MMAP_ACK).
    Mmap,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sigio => "sigio",
            Mode::Poll => "poll",
            Mode::Read => "read",
            Mode::Mmap => "mmap",
        }
    }
}

/// What the capture is asked to do (the `capture` command's flags; arecord's where they fit).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Device node.
    #[arg(short = 'D', long, default_value = "/dev/vdaq0")]
    pub device: String,
    /// Seconds of frames to capture, at the stream's rate (default: until interrupted; `bench`:
    /// 3 s).
    #[arg(short = 'd', long = "duration", visible_alias = "seconds", value_name = "SECONDS",
          conflicts_with = "frames", value_parser = crate::parse_seconds)]
    pub seconds: Option<f64>,
    /// Frames to capture (arecord's samples: one per channel set).
    #[arg(short = 's', long = "frames", visible_alias = "samples", value_name = "FRAMES",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub frames: Option<u64>,
    /// Write the frames to this file (raw, WAV or CSV: see --file-type); `-`: standard output
    /// (the summary then goes to standard error).
    #[arg(short, long, value_name = "FILE", conflicts_with = "file")]
    pub output: Option<std::path::PathBuf>,
    /// The output file, as arecord takes it (the same as -o FILE).
    #[arg(value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Type of the output file (default: from its extension, .wav, .csv, else raw).
    #[arg(short = 't', long, value_enum, ignore_case = true)]
    pub file_type: Option<crate::output::FileType>,
    /// Print the summary as one line of JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not check the counter (for other signals than the counter source).
    #[arg(long)]
    pub no_verify: bool,
    /// Set the frame rate (Hz); unset parameters keep the driver's.
    #[arg(short, long)]
    pub rate: Option<u32>,
    /// Set the sample format (vdaq's or ALSA's names).
    #[arg(short, long, value_enum, ignore_case = true)]
    pub format: Option<crate::FormatArg>,
    /// Set the channels.
    #[arg(short, long)]
    pub channels: Option<u32>,
    /// Set the frames per period (default with other settings: 1024).
    #[arg(long, value_name = "FRAMES", conflicts_with = "period_bytes",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub period_size: Option<u32>,
    /// Set the bytes per period (whole frames; --period-size in frames).
    #[arg(long, value_name = "BYTES")]
    pub period_bytes: Option<u32>,
    /// Set the frames of the ring (a whole number of periods; --periods in periods).
    #[arg(long, value_name = "FRAMES", conflicts_with = "periods",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub buffer_size: Option<u32>,
    /// Set the periods in the ring.
    #[arg(long)]
    pub periods: Option<u32>,
    /// How to wait for periods.
    #[arg(long, value_enum, default_value = "sigio")]
    pub mode: Mode,
    /// Use F_SETSIG with SIGRTMIN+N instead of plain SIGIO (mode sigio).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..=15))]
    pub rt_signal: Option<i32>,
    /// Print a progress line each second.
    #[arg(long)]
    pub live: bool,
    /// Read every this many milliseconds instead of on signals: a deliberately slow reader,
    /// to see the device's overruns reported in the period headers.
    #[arg(long, value_name = "MS")]
    pub slow_read_ms: Option<u64>,
}

impl Options {
    /// The output file, from -o or the positional argument.
    pub fn output_path(&self) -> Option<&std::path::Path> {
        self.output.as_deref().or(self.file.as_deref())
    }

    /// The frames go to standard output.
    pub fn to_stdout(&self) -> bool {
        self.output_path().is_some_and(|p| p.as_os_str() == "-")
    }
}

/// The parameters to ask for: `current` changed by what `opts` sets (None when it sets
/// nothing). Period and buffer sizes in frames become bytes and periods.
pub fn requested_params(opts: &Options, current: &Params) -> Result<Option<Params>, String> {
    if opts.rate.is_none()
        && opts.format.is_none()
        && opts.channels.is_none()
        && opts.period_bytes.is_none()
        && opts.period_size.is_none()
        && opts.periods.is_none()
        && opts.buffer_size.is_none()
    {
        return Ok(None);
    }
    let mut p = *current;
    p.rate = opts.rate.unwrap_or(p.rate);
    p.format = opts.format.map_or(p.format, |f| u32::from(SampleFormat::from(f).wire_code()));
    p.channels = opts.channels.unwrap_or(p.channels);
    let width = SampleFormat::from_wire(p.format as u8).map_or(1, |f| f.width()) as u32;
    let frame_bytes = width.saturating_mul(p.channels);
    let period_frames = match (opts.period_bytes, opts.period_size) {
        (Some(bytes), _) => {
            p.period_bytes = bytes;
            bytes / frame_bytes.max(1)
        }
        (None, frames) => {
            let frames = frames.unwrap_or(1024);
            p.period_bytes = frames
                .checked_mul(frame_bytes)
                .ok_or_else(|| format!("--period-size {frames}: too many bytes per period"))?;
            frames
        }
    };
    p.periods = match (opts.periods, opts.buffer_size) {
        (Some(n), _) => n,
        (None, Some(frames)) => {
            if period_frames == 0 || frames % period_frames != 0 {
                return Err(format!(
                    "--buffer-size {frames} is not a whole number of {period_frames}-frame periods"
                ));
            }
            frames / period_frames
        }
        (None, None) => p.periods,
    };
    Ok(Some(p))
}

/// The outcome, as the JSON summary reports it.
#[derive(Debug, Default)]
pub struct Summary {
    pub mode: Mode,
    pub signal: String,
    pub signals: u64,
    /// Signals whose si_band carried POLLERR (the driver found the stream stalled).
    pub error_signals: u64,
    /// The read error that ended the capture, if one did.
    pub error: Option<String>,
    /// Queued signals whose si_fd was not the device's or whose si_band lacked POLLIN.
    pub signals_with_wrong_fd: u64,
    pub handler_runs_without_data: u64,
    pub periods: u64,
    pub frames: u64,
    pub frames_lost_reported: u64,
    /// Periods the device completed with an error status (their frames are lost, announced).
    pub error_periods: u64,
    pub loss_mismatches: u64,
    pub unreported_frames: u64,
    pub bad_records: u64,
    pub read_errors: u64,
    pub unread_at_stop: u64,
    pub stream_seconds: f64,
    pub rate_hz: f64,
    pub wall_seconds: f64,
    pub latency_us: [u64; 4],
    pub latency_histogram: Vec<u64>,
    /// Period timing: |interval - nominal| log2 histogram (us) and the largest.
    pub jitter_histogram: Vec<u64>,
    pub jitter_max_us: u64,
    pub counter: CounterReport,
    pub driver: Stats,
    pub irq_delta: Option<u64>,
    pub frames_wanted: u64,
    pub params: Params,
    pub device: String,
    /// The counter was checked.
    pub verified: bool,
    /// Ended by SIGINT or SIGTERM.
    pub interrupted: bool,
    pub file: Option<FileSummary>,
}

/// The output file of a capture.
#[derive(Debug)]
pub struct FileSummary {
    pub path: std::path::PathBuf,
    pub kind: FileType,
    /// Bytes of frames written (headers not counted).
    pub bytes: u64,
    pub frames: u64,
    /// Frames that did not fit the spool (the main flow fell behind): lost to the file.
    pub frames_dropped: u64,
}

/// The output file as the main flow writes it.
struct FileSink {
    out: Output,
    path: std::path::PathBuf,
    kind: FileType,
    /// Frames written so far.
    frames: u64,
    frame_bytes: usize,
    /// The first write error: later writes are skipped, `finish` reports it.
    error: Option<io::Error>,
}

impl FileSink {
    /// Writes the whole frames of `buf`, up to `frames_wanted` in all.
    fn write(&mut self, buf: &[u8], frames_wanted: u64) {
        if self.error.is_some() {
            return;
        }
        let room = usize::try_from(frames_wanted.saturating_sub(self.frames)).unwrap_or(usize::MAX);
        let take = (buf.len() / self.frame_bytes.max(1)).min(room);
        match self.out.write_frames(&buf[..take * self.frame_bytes]) {
            Ok(()) => self.frames += take as u64,
            Err(e) => self.error = Some(e),
        }
    }

    /// Completes the file.
    fn finish(self, frames_dropped: u64) -> io::Result<FileSummary> {
        let written = self.out.finish();
        let what = |e: io::Error| {
            io::Error::new(e.kind(), format!("writing {}: {e}", self.path.display()))
        };
        if let Some(e) = self.error {
            return Err(what(e));
        }
        let bytes = written.map_err(what)?;
        Ok(FileSummary {
            path: self.path.clone(),
            kind: self.kind,
            bytes,
            frames: self.frames,
            frames_dropped,
        })
    }
}

/// State owned by the signal handler.
struct Consumer {
    fd: RawFd,
    buf: Vec<u8>,
    checker: CounterChecker,
    expect_fd: bool,
    first_ts: Option<u64>,
    /// Frames asked for: draining stops there (a free-running device never lets a read see
    /// EAGAIN).
    frames_wanted: u64,
    /// Nominal time between periods (ns), for the jitter histogram.
    period_ns: u64,
    /// |interval between consecutive period timestamps - nominal period|: log2 histogram in
    /// microseconds (bucket 0: under 2 us), and the largest.
    jitter: [u64; LATENCY_BUCKETS],
    jitter_max_us: u64,
    first_frames: u64,
    last_ts: u64,
    /// The loss accounting.
    losses: Losses,
    bad_records: u64,
    read_errors: u64,
    /// The first read error.
    error: Option<io::ErrorKind>,
    error_errno: Option<i32>,
    wrong_fd: u64,
    error_signals: u64,
    empty_runs: u64,
    latency: [u64; LATENCY_BUCKETS],
    /// Every period's latency (us), for the percentiles: fixed memory, any run length.
    latencies: Histogram,
    /// The same since the last progress line (`--live`), emptied by the main flow.
    recent_latencies: Histogram,
    /// Check the counter.
    verify: bool,
    /// Frames for the output file, taken out by the main flow.
    spool: Option<Spool>,
    /// Mode mmap: the mapping and where the consumer is in it.
    mmap: Option<MmapState>,
    /// Mode mmap: the ring's indexes could not be right (the capture ended).
    ring_error: Option<RingError>,
}

/// The loss accounting: what the period headers announce against what the counter check finds.
///
/// Every gap must have been announced, in its period's header or an earlier one: the driver
/// attributes the device's XRUN events to the first period of the interrupt that brought them,
/// which can be a period or two before the gap. Announced frames not yet matched by a gap are
/// carried forward; a gap larger than what is carried is unreported (a loss nobody admitted).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Losses {
    /// Frames the headers announced as lost.
    reported: u64,
    /// Periods the device completed with an error status.
    error_periods: u64,
    /// Periods whose found loss differed from their own header's.
    mismatches: u64,
    /// Announced frames not yet matched by a gap.
    carried: u64,
    /// Frames missing without an announcement.
    unreported: u64,
}

impl Losses {
    /// One period: `found` frames missing just before it (the counter check; the header's own
    /// figure without it), its header `h`; `first`: the stream's first period, with nothing
    /// before it to have lost.
    fn period(&mut self, found: u64, h: &PeriodHeader, first: bool) {
        self.carried = self.carried.saturating_add(h.frames_lost);
        if !first {
            self.mismatches += u64::from(found != h.frames_lost);
            let covered = found.min(self.carried);
            self.carried -= covered;
            self.unreported += found - covered;
        }
        self.reported = self.reported.saturating_add(h.frames_lost);
        self.error_periods += u64::from(h.flags & PERIOD_FLAG_ERROR != 0);
    }
}

/// Frames on their way to the output file: filled by the consumer (in the signal handler:
/// no allocation, so a full spool drops frames, counted), emptied by the main flow.
struct Spool {
    buf: Vec<u8>,
    frames_dropped: u64,
    frame_bytes: usize,
}

impl Spool {
    fn take(&mut self, frames: &[u8]) {
        if self.buf.len() + frames.len() <= self.buf.capacity() {
            self.buf.extend_from_slice(frames);
        } else {
            self.frames_dropped += (frames.len() / self.frame_bytes.max(1)) as u64;
        }
    }
}

/// The handler's state. Only the handler touches it while it is installed and the signal is
/// unblocked; the main flow touches it only with the signal blocked (see `with_consumer`).
struct HandlerCell(UnsafeCell<Option<Consumer>>);
// SAFETY: access is serialised by signal masking as described above; the app has one thread.
unsafe impl Sync for HandlerCell {}
static CONSUMER: HandlerCell = HandlerCell(UnsafeCell::new(None));

static SIGNALS: AtomicU64 = AtomicU64::new(0);
static PERIODS: AtomicU64 = AtomicU64::new(0);
static FRAMES: AtomicU64 = AtomicU64::new(0);
static LOST: AtomicU64 = AtomicU64::new(0);
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// A read failed: the capture ends.
static FAILED: AtomicBool = AtomicBool::new(false);

fn with_consumer<R>(signal: i32, f: impl FnOnce(&mut Option<Consumer>) -> R) -> R {
    sys::mask_signal(signal, true);
    // SAFETY: the signal is blocked, so the handler cannot run while we hold the reference.
    let r = f(unsafe { &mut *CONSUMER.0.get() });
    sys::mask_signal(signal, false);
    r
}

extern "C" fn on_signal(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let now = sys::monotonic_ns();
    SIGNALS.fetch_add(1, Ordering::Relaxed);
    if !ACTIVE.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: this handler does not nest (its signal is blocked while it runs) and the main
    // flow only touches the state with the signal blocked.
    let Some(c) = (unsafe { &mut *CONSUMER.0.get() }) else { return };
    if c.expect_fd {
        if let Some((fd, band)) = sys::siginfo_fd_band(info) {
            // kill_fasync(POLL_IN) carries the band POLLIN | POLLRDNORM; POLL_ERR (a stall)
            // carries POLLERR.
            let want = i64::from(libc::POLLIN | libc::POLLRDNORM);
            if band & i64::from(libc::POLLERR) != 0 {
                c.error_signals += 1;
            } else if fd != c.fd || band & want != want {
                c.wrong_fd += 1;
            }
        }
    }
    if c.drain(now) == 0 {
        c.empty_runs += 1;
    }
}

impl Consumer {
    /// A consumer of `fd` reading into `buf` (empty for mode mmap), checking `format` x
    /// `channels` frames, up to `frames_wanted`, periods `period_ns` apart. Counter check on,
    /// no spool, no mapping, signals without si_fd: the caller sets those.
    fn new(
        fd: RawFd,
        buf: Vec<u8>,
        (format, channels): (SampleFormat, usize),
        frames_wanted: u64,
        period_ns: u64,
    ) -> Self {
        Consumer {
            fd,
            buf,
            checker: CounterChecker::new(format, channels),
            expect_fd: false,
            first_ts: None,
            frames_wanted,
            period_ns,
            jitter: [0; LATENCY_BUCKETS],
            jitter_max_us: 0,
            first_frames: 0,
            last_ts: 0,
            losses: Losses::default(),
            bad_records: 0,
            read_errors: 0,
            error: None,
            error_errno: None,
            wrong_fd: 0,
            error_signals: 0,
            empty_runs: 0,
            latency: [0; LATENCY_BUCKETS],
            latencies: Histogram::new(),
            recent_latencies: Histogram::new(),
            verify: true,
            spool: None,
            mmap: None,
            ring_error: None,
        }
    }

    /// One blocking read (mode read); returns the periods it brought.
    fn read_once(&mut self) -> u64 {
        match sys::read(self.fd, &mut self.buf) {
            // The time the read returned: the reader's latency includes its sleep's wake-up.
            Ok(n) => self.take_records(n, sys::monotonic_ns()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                self.read_errors += 1;
                self.error.get_or_insert(e.kind());
                self.error_errno = self.error_errno.or(e.raw_os_error());
                FAILED.store(true, Ordering::Release);
                0
            }
        }
    }

    /// Reads every ready period; returns how many.
    fn drain(&mut self, now: u64) -> u64 {
        if self.mmap.is_some() {
            return self.drain_mmap(now);
        }
        let mut periods = 0;
        while FRAMES.load(Ordering::Relaxed) < self.frames_wanted {
            let n = match sys::read(self.fd, &mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.read_errors += 1;
                    if self.error.is_none() {
                        self.error = Some(e.kind());
                        self.error_errno = e.raw_os_error();
                    }
                    FAILED.store(true, Ordering::Release);
                    break;
                }
            };
            if n == 0 {
                break;
            }
            periods += self.take_records(n, now);
        }
        periods
    }

    fn take_records(&mut self, n: usize, now: u64) -> u64 {
        let hdr_len = std::mem::size_of::<PeriodHeader>();
        // Out of `self` while its periods are taken (moving a Vec allocates nothing).
        let buf = std::mem::take(&mut self.buf);
        let mut at = 0;
        let mut periods = 0;
        while at + hdr_len <= n.min(buf.len()) {
            let Some(h) = PeriodHeader::from_prefix(&buf[at..n]) else { break };
            let end = at + hdr_len + h.bytes as usize;
            if h.magic != PERIOD_MAGIC || end > n {
                self.bad_records += 1;
                break;
            }
            self.take_period(&h, &buf[at + hdr_len..end], now);
            periods += 1;
            at = end;
        }
        self.buf = buf;
        periods
    }

    /// Takes one period (from read() or the mapping): spools, checks and accounts it.
    fn take_period(&mut self, h: &PeriodHeader, frames: &[u8], now: u64) {
        if let Some(spool) = self.spool.as_mut() {
            spool.take(frames);
        }
        let lost = if self.verify { self.checker.check(frames) } else { h.frames_lost };
        self.losses.period(lost, h, self.first_ts.is_none());
        if self.first_ts.is_none() {
            self.first_ts = Some(h.timestamp_ns);
            self.first_frames = u64::from(h.frames);
        }
        if self.first_ts.is_some() && self.last_ts > 0 && h.frames_lost == 0 {
            let interval = h.timestamp_ns.saturating_sub(self.last_ts);
            let us = interval.abs_diff(self.period_ns) / 1000;
            let bucket = (64 - us.max(1).leading_zeros() as usize - 1).min(LATENCY_BUCKETS - 1);
            self.jitter[bucket] += 1;
            self.jitter_max_us = self.jitter_max_us.max(us);
        }
        self.last_ts = h.timestamp_ns;
        let us = now.saturating_sub(h.timestamp_ns) / 1000;
        let bucket = (64 - us.max(1).leading_zeros() as usize - 1).min(LATENCY_BUCKETS - 1);
        self.latency[bucket] += 1;
        self.latencies.record(us);
        self.recent_latencies.record(us);
        FRAMES.fetch_add(u64::from(h.frames), Ordering::Relaxed);
        LOST.fetch_add(h.frames_lost, Ordering::Relaxed);
        PERIODS.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes every ready period of the mapping (up to the frames wanted), checking each in
    /// place, then gives them back; returns how many. A ring that cannot be right ends the
    /// capture like a read error.
    fn drain_mmap(&mut self, now: u64) -> u64 {
        let Some(m) = self.mmap.take() else { return 0 };
        let mut periods = 0;
        let drained = m.ring.drain(&m.map, m.next, |_, period| {
            if FRAMES.load(Ordering::Relaxed) >= self.frames_wanted {
                return false;
            }
            match period {
                Ok(p) => {
                    self.take_period(&p.header, p.frames, now);
                    periods += 1;
                }
                Err(_) => self.bad_records += 1,
            }
            true
        });
        let mut m = m;
        match drained {
            Ok(next) if next > m.next => {
                m.next = next;
                if let Err(e) = sys::mmap_ack(self.fd, next) {
                    self.read_error(&e);
                }
            }
            Ok(_) => {}
            Err(e) => {
                self.ring_error.get_or_insert(e);
                FAILED.store(true, Ordering::Release);
            }
        }
        self.mmap = Some(m);
        periods
    }

    fn read_error(&mut self, e: &io::Error) {
        self.read_errors += 1;
        if self.error.is_none() {
            self.error = Some(e.kind());
            self.error_errno = e.raw_os_error();
        }
        FAILED.store(true, Ordering::Release);
    }
}

/// The mapping of mode mmap, owned by the consumer.
struct MmapState {
    map: sys::Mapping,
    ring: Ring,
    /// Sequence of the next period to take (everything below it was given back).
    next: u64,
}

impl Consumer {
    /// Mode mmap: periods completed and not given back (head - tail of the mapping).
    fn mapped_ready(&self) -> Option<u64> {
        use crate::mmap::RingMemory;
        self.mmap.as_ref().map(|m| m.map.head().saturating_sub(m.map.tail()))
    }
}

/// Maps the driver's ring for parameters `p`: its layout checked, the whole of it read-only.
fn map_ring(fd: RawFd, p: &Params) -> io::Result<MmapState> {
    let layout: MmapLayout = sys::ioctl_read(fd, VDAQ_IOC_MMAP_LAYOUT).map_err(|e| {
        io::Error::new(e.kind(), format!("VDAQ_IOC_MMAP_LAYOUT: {e} (a driver without mmap?)"))
    })?;
    let ring = Ring::new(&layout, p, sys::page_size()).map_err(io::Error::other)?;
    let map = sys::Mapping::new(fd, ring.mapping_bytes)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot map the ring: {e}")))?;
    ring.check_status(&map).map_err(io::Error::other)?;
    Ok(MmapState { map, ring, next: 0 })
}

/// An open error with what to do about it.
pub fn open_error(device: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::ENOENT) => {
            ": no such node; is vdaq.ko loaded (lsmod) and the device bound (dmesg)?"
        }
        Some(libc::EBUSY) => ": in use (one open file per node at a time)",
        Some(libc::EACCES) | Some(libc::EPERM) => ": permission denied (run as root?)",
        Some(libc::ENODEV) => ": the device is gone",
        _ => "",
    };
    io::Error::new(e.kind(), format!("cannot open {device}: {e}{hint}"))
}

/// The rates (Hz) and format names a stream offers.
pub fn offered(info: &Info) -> (Vec<u32>, Vec<&'static str>) {
    let rates = vdaq_proto::virtio_snd::RATES
        .iter()
        .enumerate()
        .filter(|(n, _)| info.rates & (1 << n) != 0)
        .map(|(_, &r)| r)
        .collect();
    let formats = SampleFormat::ALL
        .iter()
        .filter(|f| info.formats & (1 << f.wire_code()) != 0)
        .map(|f| f.name())
        .collect();
    (rates, formats)
}

/// What a stream accepts, in words.
fn describe_offer(info: &Info) -> String {
    let (rates, formats) = offered(info);
    format!(
        "the stream offers rates {rates:?} Hz, formats {formats:?}, {} to {} channels, 2 to {} \
         periods of whole frames up to {} bytes",
        info.channels_min, info.channels_max, info.max_periods, info.max_period_bytes
    )
}

/// The interrupt count of the vdaq device's line (the IO-APIC line named virtioN of the
/// sound device), from /proc/interrupts.
fn irq_count(name: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/interrupts").ok()?;
    text.lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
}

fn stats_delta(after: &Stats, before: &Stats) -> Stats {
    Stats {
        periods: after.periods.saturating_sub(before.periods),
        frames: after.frames.saturating_sub(before.frames),
        frames_lost: after.frames_lost.saturating_sub(before.frames_lost),
        xruns: after.xruns.saturating_sub(before.xruns),
        rx_interrupts: after.rx_interrupts.saturating_sub(before.rx_interrupts),
        rx_interrupts_with_data: after
            .rx_interrupts_with_data
            .saturating_sub(before.rx_interrupts_with_data),
        signals_sent: after.signals_sent.saturating_sub(before.signals_sent),
        periods_read: after.periods_read.saturating_sub(before.periods_read),
        stalls: after.stalls.saturating_sub(before.stalls),
        stall_signals: after.stall_signals.saturating_sub(before.stall_signals),
        error_periods: after.error_periods.saturating_sub(before.error_periods),
        reserved: [0; 5],
    }
}

/// The driver's statistics (`VDAQ_IOC_STATS`) as JSON.
pub fn stats_json(d: &Stats) -> String {
    serde_json::to_string(&report::DriverStats::from(d)).unwrap_or_default()
}

/// How much to capture: the frames wanted (u64::MAX: until interrupted) and the time after
/// which the capture gives up. By --frames, else --seconds at `rate`, else until interrupted
/// (`until_interrupted`) or 3 s.
fn capture_length(opts: &Options, rate: u32, until_interrupted: bool) -> (u64, Duration) {
    let seconds = match (opts.frames, opts.seconds) {
        (Some(n), _) => n as f64 / f64::from(rate.max(1)),
        (None, Some(s)) => s,
        (None, None) if until_interrupted => f64::INFINITY,
        (None, None) => 3.0,
    };
    let frames_wanted = opts.frames.unwrap_or_else(|| {
        if seconds.is_finite() {
            (f64::from(rate) * seconds).ceil() as u64
        } else {
            u64::MAX
        }
    });
    let timeout = if seconds.is_finite() {
        Duration::from_secs_f64(seconds * 3.0 + 10.0)
    } else {
        Duration::MAX
    };
    (frames_wanted, timeout)
}

/// The error that ended a capture, in words: what it means for the device, then the errno.
fn read_error_text(kind: io::ErrorKind, errno: Option<i32>) -> String {
    let what = match errno {
        Some(libc::EIO) => "EIO: the device stopped completing periods (stalled)",
        Some(libc::ENODEV) => "ENODEV: the device is gone",
        _ => "read failed",
    };
    let why = errno.map_or_else(
        || io::Error::from(kind).to_string(),
        |errno| io::Error::from_raw_os_error(errno).to_string(),
    );
    format!("{what}: {why}")
}

/// Runs an asynchronous capture.
///
/// `until_interrupted`: without --seconds or --frames, run until SIGINT or SIGTERM (`monitor`).
pub fn run(opts: &Options, irq_name: Option<&str>, until_interrupted: bool) -> io::Result<Summary> {
    for counter in [&SIGNALS, &PERIODS, &FRAMES, &LOST] {
        counter.store(0, Ordering::Relaxed);
    }
    FAILED.store(false, Ordering::Relaxed);
    sys::catch_interrupts()?;
    if opts.mode == Mode::Read && opts.slow_read_ms.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--slow-read-ms drains with non-blocking reads: use it with --mode sigio or poll",
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&opts.device)
        .map_err(|e| open_error(&opts.device, e))?;
    let fd = file.as_raw_fd();
    let p = configure(fd, opts)?;
    let format = SampleFormat::from_wire(p.format as u8)
        .ok_or_else(|| io::Error::other(format!("unknown format code {}", p.format)))?;
    let channels = p.channels as usize;
    let (frames_wanted, timeout) = capture_length(opts, p.rate, until_interrupted);
    let frame_bytes = format.width() * channels;
    let mut output = match opts.output_path() {
        Some(path) => {
            let kind = opts.file_type.unwrap_or_else(|| FileType::from_path(path));
            let out = Output::create(path, kind, format, channels, p.rate)?;
            Some(FileSink {
                out,
                path: path.to_path_buf(),
                kind,
                frames: 0,
                frame_bytes,
                error: None,
            })
        }
        None => None,
    };
    let spool_bytes = spool_capacity(&p, frame_bytes);
    let mut spare_spool = output.as_ref().map(|_| Vec::with_capacity(spool_bytes));
    let signal = opts.rt_signal.map(sys::sigrtmin).unwrap_or(libc::SIGIO);
    // Room for the whole ring per read (the driver returns whole records only).
    let record = std::mem::size_of::<PeriodHeader>() + p.period_bytes as usize;
    let mmap = if opts.mode == Mode::Mmap { Some(map_ring(fd, &p)?) } else { None };
    // Mode mmap reads nothing: the periods stay where the device put them.
    let buf = if mmap.is_some() { Vec::new() } else { vec![0u8; record * p.periods as usize] };
    let period_ns = nominal_period_ns(&p, frame_bytes);
    let mut consumer = Consumer::new(fd, buf, (format, channels), frames_wanted, period_ns);
    consumer.expect_fd = opts.rt_signal.is_some();
    consumer.verify = !opts.no_verify;
    consumer.spool = output.as_ref().map(|_| Spool {
        buf: Vec::with_capacity(spool_bytes),
        frames_dropped: 0,
        frame_bytes,
    });
    consumer.mmap = mmap;
    with_consumer(signal, |slot| *slot = Some(consumer));
    sys::install_handler(signal, on_signal)?;
    // The driver's counters are since binding: the run's are the differences.
    let driver_before = sys::driver_stats(fd)?;
    let irq_before = irq_name.and_then(irq_count);
    let signalled = matches!(opts.mode, Mode::Sigio | Mode::Mmap);
    let use_signals = signalled && opts.slow_read_ms.is_none();
    if use_signals {
        ACTIVE.store(true, Ordering::Release);
        sys::set_async(fd, true, opts.rt_signal.map(|_| signal))?;
    }
    if opts.mode == Mode::Read {
        sys::set_nonblocking(fd, false)?;
    }
    // From before START: with signals on, the handler may run as the ioctl returns.
    let start = Instant::now();
    sys::ioctl_none(fd, VDAQ_IOC_START)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the stream: {e}")))?;
    // Periods that were ready before O_ASYNC was set raised their signal already: drain once
    // (not with blocking reads, which never run dry).
    if opts.mode != Mode::Read {
        with_consumer(signal, |c| c.as_mut().map(|c| c.drain(sys::monotonic_ns())));
    }

    let mut live = Live { last_print: Instant::now(), last_frames: 0 };
    // Writes what the consumer spooled (swapping spools with the signal blocked only briefly).
    let mut flush = |output: &mut Option<FileSink>| {
        let (Some(sink), Some(spare)) = (output.as_mut(), spare_spool.as_mut()) else {
            return;
        };
        spare.clear();
        with_consumer(signal, |c| {
            if let Some(spool) = c.as_mut().and_then(|c| c.spool.as_mut()) {
                std::mem::swap(&mut spool.buf, spare);
            }
        });
        sink.write(spare, frames_wanted);
    };
    while FRAMES.load(Ordering::Relaxed) < frames_wanted
        && start.elapsed() < timeout
        && !FAILED.load(Ordering::Acquire)
        && !sys::interrupted()
    {
        let drain = || with_consumer(signal, |c| c.as_mut().map(|c| c.drain(sys::monotonic_ns())));
        if let Some(ms) = opts.slow_read_ms {
            std::thread::sleep(Duration::from_millis(ms));
            drain();
            continue;
        }
        match opts.mode {
            // The "other work" of the main flow: here, sleeping; signals interrupt it.
            Mode::Sigio | Mode::Mmap => std::thread::sleep(Duration::from_millis(50)),
            Mode::Poll => {
                // No time-out of our own beyond the run's: the driver wakes us, with POLLERR
                // if the device stalls.
                let left = timeout.saturating_sub(start.elapsed());
                if sys::poll_in(fd, left)? {
                    drain();
                }
            }
            // Drains one blocking read's worth (then the non-blocking rest would be EAGAIN:
            // the file is blocking here, so read once).
            Mode::Read => {
                with_consumer(signal, |c| c.as_mut().map(|c| c.read_once()));
            }
        }
        flush(&mut output);
        if opts.live && live.last_print.elapsed() >= Duration::from_secs(1) {
            println!("{}", live.line(signal, fd, &driver_before, &p, start));
        }
    }
    let wall = start.elapsed().as_secs_f64();
    // Leave the async queue first: from here the driver counts no signal for this file.
    if use_signals {
        sys::set_async(fd, false, None)?;
    }
    let driver = stats_delta(&sys::driver_stats(fd)?, &driver_before);
    // Signals already queued are delivered now (before the next instruction, if unblocked);
    // wait a moment for any in flight, then stop the handler.
    std::thread::sleep(Duration::from_millis(20));
    let irq_after = irq_name.and_then(irq_count);
    let mut consumer = with_consumer(signal, |c| {
        ACTIVE.store(false, Ordering::Release);
        c.take()
    })
    .ok_or_else(|| io::Error::other("capture state vanished"))?;
    // Mode mmap: the periods left in the ring; then unmap, so that closing the file stops
    // the stream (the mapping would hold it open).
    let mapped_unread = consumer.mapped_ready();
    consumer.mmap = None;
    // The last spooled frames, then the file is complete.
    let spool_dropped = consumer.spool.as_ref().map_or(0, |s| s.frames_dropped);
    let file_summary = match output.take() {
        Some(mut sink) => {
            if let Some(spool) = consumer.spool.as_ref() {
                sink.write(&spool.buf, frames_wanted);
            }
            Some(sink.finish(spool_dropped)?)
        }
        None => None,
    };
    drop(file);
    let end = RunEnd {
        signals: SIGNALS.load(Ordering::Relaxed),
        periods: PERIODS.load(Ordering::Relaxed),
        frames: FRAMES.load(Ordering::Relaxed),
        wall_seconds: wall,
        driver,
        irq_delta: irq_before.zip(irq_after).map(|(b, a)| a.saturating_sub(b)),
        mapped_unread,
        frames_wanted,
        params: p,
        interrupted: sys::interrupted(),
        file: file_summary,
    };
    Ok(summarize(opts, consumer, end))
}

/// Reads the node's parameters and sets the ones `opts` asks for; returns those in force.
fn configure(fd: RawFd, opts: &Options) -> io::Result<Params> {
    let info: Info = sys::ioctl_read(fd, VDAQ_IOC_INFO)?;
    let Some(p) = requested_params(opts, &info.params)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
    else {
        return Ok(info.params);
    };
    sys::ioctl_write(fd, VDAQ_IOC_SET_PARAMS, &p).map_err(|e| {
        let format = SampleFormat::from_wire(p.format as u8).map_or("?", |f| f.name());
        io::Error::new(
            e.kind(),
            format!(
                "the driver refused {} Hz, {format}, {} channels, {} periods of {} bytes ({e}); {}",
                p.rate,
                p.channels,
                p.periods,
                p.period_bytes,
                describe_offer(&info)
            ),
        )
    })?;
    Ok(p)
}

/// Bytes of each of the two spools: two seconds of frames, at least two rings, at most 64 MiB
/// (or two rings, if those are more). One fills while the main flow writes the other.
fn spool_capacity(p: &Params, frame_bytes: usize) -> usize {
    let ring_bytes = p.period_bytes as usize * p.periods as usize;
    (p.rate as usize * frame_bytes * 2).clamp(2 * ring_bytes, (64 << 20).max(2 * ring_bytes))
}

/// The nominal duration of a period, in nanoseconds.
fn nominal_period_ns(p: &Params, frame_bytes: usize) -> u64 {
    u64::from(p.period_bytes / (frame_bytes.max(1) as u32)) * 1_000_000_000
        / u64::from(p.rate.max(1))
}

/// The signal a capture took its periods by, as the summary names it.
fn signal_name(mode: Mode, rt_signal: Option<i32>) -> String {
    match (mode, rt_signal) {
        (Mode::Read | Mode::Poll, _) => "none".into(),
        (Mode::Sigio | Mode::Mmap, Some(n)) => format!("SIGRTMIN+{n}"),
        (Mode::Sigio | Mode::Mmap, None) => "SIGIO".into(),
    }
}

/// The `--live` line's state: when the last line was printed, and the frames then.
struct Live {
    last_print: Instant,
    last_frames: u64,
}

impl Live {
    /// The line for the time since the last one: frame rate, totals, the driver's ring (periods
    /// completed and not read yet) and the latency of the periods since the last line.
    fn line(
        &mut self,
        signal: libc::c_int,
        fd: RawFd,
        driver_before: &Stats,
        p: &Params,
        start: Instant,
    ) -> String {
        let frames = FRAMES.load(Ordering::Relaxed);
        let fps = (frames - self.last_frames) as f64 / self.last_print.elapsed().as_secs_f64();
        let recent = with_consumer(signal, |c| {
            c.as_mut().map_or_else(Histogram::new, |c| {
                let recent = c.recent_latencies.clone();
                c.recent_latencies.clear();
                recent
            })
        });
        let ring = match with_consumer(signal, |c| c.as_ref().and_then(Consumer::mapped_ready)) {
            Some(ready) => ready,
            None => sys::driver_stats(fd).map_or(0, |d| {
                let d = stats_delta(&d, driver_before);
                d.periods.saturating_sub(d.periods_read)
            }),
        };
        self.last_frames = frames;
        self.last_print = Instant::now();
        format!(
            "vdaq: {:6.1} s {:9.0} frames/s {:7} periods {:7} signals {:6} lost  ring {}/{}  latency p50 {} us max {} us",
            start.elapsed().as_secs_f64(),
            fps,
            PERIODS.load(Ordering::Relaxed),
            SIGNALS.load(Ordering::Relaxed),
            LOST.load(Ordering::Relaxed),
            ring,
            p.periods,
            recent.percentile(0.5),
            recent.max(),
        )
    }
}

/// What a capture measured around its consumer, once it stopped.
struct RunEnd {
    signals: u64,
    periods: u64,
    frames: u64,
    wall_seconds: f64,
    /// The driver's statistics over the run.
    driver: Stats,
    irq_delta: Option<u64>,
    /// Mode mmap: the periods left in the ring.
    mapped_unread: Option<u64>,
    frames_wanted: u64,
    params: Params,
    interrupted: bool,
    file: Option<FileSummary>,
}

/// The capture's summary from its consumer's state and what the run measured.
fn summarize(opts: &Options, consumer: Consumer, end: RunEnd) -> Summary {
    // Periods completed but not read when signals stopped: at most the one whose signal was
    // still on its way. More means a signal was lost without its periods being drained.
    let unread_at_stop = end
        .mapped_unread
        .unwrap_or_else(|| end.driver.periods.saturating_sub(end.driver.periods_read));
    let stream_ns = consumer.last_ts.saturating_sub(consumer.first_ts.unwrap_or(0));
    let stream_seconds = stream_ns as f64 / 1e9;
    let rate_hz = if stream_ns > 0 {
        end.frames.saturating_sub(consumer.first_frames) as f64 / stream_seconds
    } else {
        0.0
    };
    let lat = &consumer.latencies;
    // A broken ring says more than the read error it caused.
    let error = consumer
        .ring_error
        .map(|e| e.to_string())
        .or_else(|| consumer.error.map(|kind| read_error_text(kind, consumer.error_errno)));
    Summary {
        mode: opts.mode,
        error_signals: consumer.error_signals,
        error,
        signal: signal_name(opts.mode, opts.rt_signal),
        signals: end.signals,
        signals_with_wrong_fd: consumer.wrong_fd,
        handler_runs_without_data: consumer.empty_runs,
        periods: end.periods,
        frames: end.frames,
        frames_lost_reported: consumer.losses.reported,
        error_periods: consumer.losses.error_periods,
        loss_mismatches: consumer.losses.mismatches,
        unreported_frames: consumer.losses.unreported,
        bad_records: consumer.bad_records,
        read_errors: consumer.read_errors,
        unread_at_stop,
        stream_seconds,
        rate_hz,
        wall_seconds: end.wall_seconds,
        latency_us: [lat.percentile(0.5), lat.percentile(0.9), lat.percentile(0.99), lat.max()],
        latency_histogram: consumer.latency.to_vec(),
        jitter_histogram: consumer.jitter.to_vec(),
        jitter_max_us: consumer.jitter_max_us,
        counter: consumer.checker.finish(0),
        driver: end.driver,
        irq_delta: end.irq_delta,
        frames_wanted: end.frames_wanted,
        params: end.params,
        device: opts.device.clone(),
        verified: !opts.no_verify,
        interrupted: end.interrupted,
        file: end.file,
    }
}

impl Summary {
    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.to_report()).unwrap_or_default()
    }

    /// The summary as its JSON type.
    pub fn to_report(&self) -> report::CaptureJson {
        let p = &self.params;
        report::CaptureJson {
            device: self.device.clone(),
            mode: self.mode.name(),
            error: self.error.clone(),
            interrupted: self.interrupted,
            signal: self.signal.clone(),
            signals: self.signals,
            error_signals: self.error_signals,
            signals_with_wrong_fd: self.signals_with_wrong_fd,
            handler_runs_without_data: self.handler_runs_without_data,
            periods: self.periods,
            frames: self.frames,
            frames_wanted: self.frames_wanted,
            frames_lost_reported: self.frames_lost_reported,
            error_periods: self.error_periods,
            loss_mismatches: self.loss_mismatches,
            unreported_frames: self.unreported_frames,
            bad_records: self.bad_records,
            read_errors: self.read_errors,
            unread_at_stop: self.unread_at_stop,
            stream_seconds: self.stream_seconds,
            rate_hz: self.rate_hz,
            wall_seconds: self.wall_seconds,
            latency_us: report::Percentiles {
                p50: self.latency_us[0],
                p90: self.latency_us[1],
                p99: self.latency_us[2],
                max: self.latency_us[3],
            },
            latency_log2_us_histogram: self.latency_histogram.clone(),
            period_jitter: report::JitterJson {
                nominal_us: u64::from(p.period_bytes) * 1_000_000
                    / (u64::from(p.rate.max(1)) * self.frame_bytes().max(1)),
                max_us: self.jitter_max_us,
                log2_us_histogram: self.jitter_histogram.clone(),
            },
            verified: self.verified,
            counter: report::CounterJson::from(&self.counter),
            driver: report::DriverStats::from(&self.driver),
            irq_delta: self.irq_delta,
            params: report::ParamsJson::from(p),
            file: self.file.as_ref().map(|f| report::FileJson {
                path: f.path.display().to_string(),
                kind: f.kind.name(),
                bytes: f.bytes,
                frames: f.frames,
                frames_dropped: f.frames_dropped,
            }),
        }
    }

    /// The summary for people: a few lines.
    pub fn to_text(&self) -> String {
        let p = &self.params;
        let format = SampleFormat::from_wire(p.format as u8).map_or("?", |f| f.name());
        let mut out = format!(
            "{}: {} frames in {:.2} s ({:.1} frames/s; {} Hz {} x{}, {} periods of {} bytes)\n",
            self.device,
            self.frames,
            self.stream_seconds,
            self.rate_hz,
            p.rate,
            format,
            p.channels,
            p.periods,
            p.period_bytes,
        );
        out += &format!(
            "  periods {}, lost frames {} (reported by the device{}), read by {}{}\n",
            self.periods,
            self.frames_lost_reported,
            if self.error_periods > 0 {
                format!("; {} periods failed with an error status", self.error_periods)
            } else {
                String::new()
            },
            self.mode.name(),
            if matches!(self.mode, Mode::Sigio | Mode::Mmap) {
                format!(
                    " ({} signals {}, the driver sent {})",
                    self.signals, self.signal, self.driver.signals_sent
                )
            } else {
                String::new()
            },
        );
        out += &format!(
            "  latency (interrupt to read) p50 {} us, p90 {} us, p99 {} us, max {} us\n",
            self.latency_us[0], self.latency_us[1], self.latency_us[2], self.latency_us[3]
        );
        if self.verified {
            let c = &self.counter;
            if self.counter_ok() {
                out += &format!("  counter: exact ({} gaps, all announced)\n", c.gaps);
            } else {
                out += &format!(
                    "  counter: {} gaps ({} frames, {} not announced), {} reorders, {} corrupt frames, {} restarts ({} announced)\n",
                    c.gaps,
                    c.missing_frames,
                    self.unreported_frames,
                    c.reorders,
                    c.corrupt_frames,
                    c.restarts,
                    c.restarts_allowed
                );
            }
        }
        if let Some(f) = &self.file {
            out += &format!(
                "  wrote {} ({}, {} frames, {} bytes of frames{})\n",
                f.path.display(),
                f.kind.name(),
                f.frames,
                f.bytes,
                if f.frames_dropped > 0 {
                    format!(", {} frames DROPPED", f.frames_dropped)
                } else {
                    String::new()
                }
            );
        }
        if let Some(e) = &self.error {
            out += &format!("  error: {e}\n");
        }
        out
    }

    fn frame_bytes(&self) -> u64 {
        let width = SampleFormat::from_wire(self.params.format as u8).map_or(1, |f| f.width());
        (width * self.params.channels as usize) as u64
    }

    fn counter_ok(&self) -> bool {
        let c = &self.counter;
        self.unreported_frames == 0 && c.reorders == 0 && c.corrupt_frames == 0
    }

    /// Whether the capture did what was asked: no error, every frame (or until interrupted),
    /// nothing lost unannounced or corrupt, nothing dropped from the file.
    pub fn ok(&self) -> bool {
        self.error.is_none()
            && self.bad_records == 0
            && self.read_errors == 0
            && (self.frames >= self.frames_wanted || self.interrupted)
            && (!self.verified || self.counter_ok())
            && self.file.as_ref().is_none_or(|f| f.frames_dropped == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sequence: u64, frames: u32, frames_lost: u64, flags: u32) -> PeriodHeader {
        PeriodHeader {
            magic: PERIOD_MAGIC,
            flags,
            sequence,
            timestamp_ns: 1_000_000 * (sequence + 1),
            frames,
            bytes: frames * 4,
            frames_lost,
        }
    }

    #[test]
    fn losses_announced_in_the_header_are_reported_not_unreported() {
        let mut l = Losses::default();
        l.period(0, &header(0, 8, 0, 0), true);
        l.period(5, &header(1, 8, 5, 0), false);
        assert_eq!((l.reported, l.unreported, l.mismatches, l.carried), (5, 0, 0, 0));
    }

    #[test]
    fn a_loss_announced_a_period_early_is_covered() {
        // The driver puts the XRUN on the interrupt's first period; the gap shows a period
        // later: one mismatch each, nothing unreported.
        let mut l = Losses::default();
        l.period(0, &header(0, 8, 0, 0), true);
        l.period(0, &header(1, 8, 7, 0), false);
        assert_eq!(l.carried, 7);
        l.period(7, &header(2, 8, 0, 0), false);
        assert_eq!((l.reported, l.unreported, l.mismatches, l.carried), (7, 0, 2, 0));
    }

    #[test]
    fn a_gap_beyond_the_announcements_is_unreported() {
        let mut l = Losses::default();
        l.period(0, &header(0, 8, 0, 0), true);
        l.period(10, &header(1, 8, 4, 0), false);
        assert_eq!((l.reported, l.unreported, l.mismatches, l.carried), (4, 6, 1, 0));
        // A later announcement does not excuse an earlier gap: it is carried instead.
        l.period(0, &header(2, 8, 3, 0), false);
        assert_eq!((l.unreported, l.carried), (6, 3));
    }

    #[test]
    fn the_first_period_cannot_have_missed_anything() {
        // Its header's loss (before the capture began) is carried, not held against it.
        let mut l = Losses::default();
        l.period(0, &header(0, 8, 9, 0), true);
        assert_eq!((l.reported, l.unreported, l.mismatches, l.carried), (9, 0, 0, 9));
    }

    #[test]
    fn error_periods_are_counted() {
        let mut l = Losses::default();
        l.period(0, &header(0, 8, 0, 0), true);
        l.period(0, &header(1, 8, 8, PERIOD_FLAG_ERROR), false);
        l.period(8, &header(2, 8, 0, 0), false);
        assert_eq!((l.error_periods, l.reported, l.unreported), (1, 8, 0));
    }

    /// Records as read() returns them: header then counter frames (S16 x 2) from `first`.
    fn records(periods: &[(u64, u32, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, &(first, frames, lost)) in periods.iter().enumerate() {
            let h = header(seq as u64, frames, lost, 0);
            out.extend_from_slice(vdaq_proto::wire::Pod::as_bytes(&h));
            for i in 0..u64::from(frames) {
                for _ in 0..2 {
                    let mut s = [0u8; 2];
                    SampleFormat::S16.encode_counter(first + i, &mut s);
                    out.extend_from_slice(&s);
                }
            }
        }
        out
    }

    fn consumer(buf: Vec<u8>) -> Consumer {
        Consumer::new(-1, buf, (SampleFormat::S16, 2), u64::MAX, 1_000_000)
    }

    #[test]
    fn take_records_accounts_every_period_of_a_read() {
        let buf = records(&[(0, 8, 0), (8, 8, 0), (20, 8, 4), (28, 8, 0)]);
        let n = buf.len();
        let mut c = consumer(buf);
        assert_eq!(c.take_records(n, 5_000_000), 4);
        assert_eq!(c.losses.reported, 4);
        assert_eq!(c.losses.unreported, 0);
        assert_eq!(c.bad_records, 0);
        assert_eq!(c.latencies.len(), 4);
        assert_eq!(c.checker.finish(0).gaps, 1);
    }

    #[test]
    fn take_records_finds_an_unannounced_gap() {
        let buf = records(&[(0, 8, 0), (8, 8, 0), (30, 8, 0)]);
        let n = buf.len();
        let mut c = consumer(buf);
        assert_eq!(c.take_records(n, 5_000_000), 3);
        assert_eq!((c.losses.reported, c.losses.unreported, c.losses.mismatches), (0, 14, 1));
    }

    #[test]
    fn take_records_stops_at_a_bad_or_cut_record() {
        let mut buf = records(&[(0, 8, 0), (8, 8, 0)]);
        let second = buf.len() / 2;
        buf[second] ^= 0xff; // the second record's magic
        let n = buf.len();
        let mut c = consumer(buf.clone());
        assert_eq!(c.take_records(n, 0), 1);
        assert_eq!(c.bad_records, 1);
        // A read that ends inside a record: the whole ones are taken, the cut one is bad.
        let good = records(&[(0, 8, 0), (8, 8, 0)]);
        let mut c = consumer(good.clone());
        assert_eq!(c.take_records(good.len() - 1, 0), 1);
        assert_eq!(c.bad_records, 1);
        // Less than a header: nothing, and nothing bad.
        let mut c = consumer(good);
        assert_eq!(c.take_records(10, 0), 0);
        assert_eq!(c.bad_records, 0);
    }

    #[test]
    fn without_the_counter_check_the_headers_are_believed() {
        let buf = records(&[(0, 8, 0), (100, 8, 3)]);
        let n = buf.len();
        let mut c = consumer(buf);
        c.verify = false;
        assert_eq!(c.take_records(n, 0), 2);
        assert_eq!((c.losses.reported, c.losses.unreported, c.losses.mismatches), (3, 0, 0));
    }

    fn opts(args: &[&str]) -> Options {
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            o: Options,
        }
        let mut argv = vec!["t"];
        argv.extend_from_slice(args);
        <T as clap::Parser>::parse_from(argv).o
    }

    #[test]
    fn the_length_comes_from_frames_seconds_or_the_interrupt() {
        assert_eq!(capture_length(&opts(&["-s", "100"]), 48_000, true).0, 100);
        let (frames, timeout) = capture_length(&opts(&["-d", "2"]), 48_000, true);
        assert_eq!((frames, timeout), (96_000, Duration::from_secs(16)));
        assert_eq!(capture_length(&opts(&[]), 48_000, true), (u64::MAX, Duration::MAX));
        assert_eq!(capture_length(&opts(&[]), 48_000, false).0, 144_000);
    }

    #[test]
    fn read_errors_say_what_they_mean() {
        let t = read_error_text(io::ErrorKind::Other, Some(libc::EIO));
        assert!(t.starts_with("EIO: the device stopped completing periods"), "{t}");
        assert!(read_error_text(io::ErrorKind::Other, Some(libc::ENODEV)).contains("gone"));
    }

    fn params(rate: u32, period_bytes: u32, periods: u32) -> Params {
        Params { rate, channels: 2, format: 0, period_bytes, periods, ..Default::default() }
    }

    #[test]
    fn spools_hold_two_seconds_within_two_rings_and_64_mib() {
        // 48 kHz stereo S16: 2 s are 384,000 bytes, more than two 64 KiB rings of 4.
        assert_eq!(spool_capacity(&params(48_000, 4096, 4), 4), 384_000);
        // Two rings when they are more than two seconds.
        assert_eq!(spool_capacity(&params(8_000, 1 << 20, 64), 4), 2 << 26);
        // 64 MiB at most otherwise: 384 kHz x 32 x S32 is 98 MB a second.
        assert_eq!(spool_capacity(&params(384_000, 4096, 4), 128), 64 << 20);
    }

    #[test]
    fn the_nominal_period_follows_frames_per_period_and_rate() {
        assert_eq!(nominal_period_ns(&params(48_000, 4096, 4), 4), 21_333_333);
        assert_eq!(nominal_period_ns(&params(8_000, 160, 4), 2), 10_000_000);
        // A zero rate or frame size gives no division by zero.
        assert_eq!(nominal_period_ns(&params(0, 160, 4), 0), 160_000_000_000);
    }

    #[test]
    fn the_signal_is_named_as_the_mode_takes_it() {
        assert_eq!(signal_name(Mode::Sigio, None), "SIGIO");
        assert_eq!(signal_name(Mode::Mmap, Some(1)), "SIGRTMIN+1");
        assert_eq!(signal_name(Mode::Poll, Some(1)), "none");
        assert_eq!(signal_name(Mode::Read, None), "none");
    }

    fn run_end(frames: u64, driver: Stats, mapped_unread: Option<u64>) -> RunEnd {
        RunEnd {
            signals: 3,
            periods: 4,
            frames,
            wall_seconds: 0.5,
            driver,
            irq_delta: Some(5),
            mapped_unread,
            frames_wanted: 32,
            params: params(8_000, 32, 4),
            interrupted: false,
            file: None,
        }
    }

    #[test]
    fn the_summary_measures_the_rate_from_the_first_period_to_the_last() {
        // Four periods of 8 frames, 1 ms apart: 24 frames after the first in 3 ms.
        let buf = records(&[(0, 8, 0), (8, 8, 0), (16, 8, 0), (24, 8, 0)]);
        let n = buf.len();
        let mut c = consumer(buf);
        assert_eq!(c.take_records(n, 5_000_000), 4);
        let driver = Stats { periods: 6, periods_read: 4, ..Default::default() };
        let s = summarize(&opts(&["--mode", "poll"]), c, run_end(32, driver, None));
        assert!((s.stream_seconds - 0.003).abs() < 1e-9, "{}", s.stream_seconds);
        assert!((s.rate_hz - 8_000.0).abs() < 1e-6, "{}", s.rate_hz);
        assert_eq!((s.frames, s.periods, s.signals, s.signal.as_str()), (32, 4, 3, "none"));
        // Completed and not read when the capture stopped, by the driver's counts.
        assert_eq!(s.unread_at_stop, 2);
        assert!(s.counter.is_clean() && s.counter.gaps == 0, "{:?}", s.counter);
        assert_eq!((s.error, s.irq_delta, s.verified), (None, Some(5), true));
    }

    #[test]
    fn the_summary_takes_unread_periods_from_the_ring_in_mode_mmap() {
        let c = consumer(Vec::new());
        let driver = Stats { periods: 6, periods_read: 0, ..Default::default() };
        let s = summarize(&opts(&["--mode", "mmap"]), c, run_end(0, driver, Some(1)));
        assert_eq!((s.unread_at_stop, s.signal.as_str()), (1, "SIGIO"));
        assert_eq!((s.rate_hz, s.stream_seconds), (0.0, 0.0), "no period: no rate");
    }

    #[test]
    fn the_summary_names_a_read_error() {
        let mut c = consumer(Vec::new());
        c.error = Some(io::ErrorKind::Other);
        c.error_errno = Some(libc::EIO);
        let s = summarize(&opts(&[]), c, run_end(0, Stats::default(), None));
        assert!(s.error.is_some_and(|e| e.starts_with("EIO")));
    }
}
