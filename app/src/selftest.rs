// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq selftest`: the /dev/vdaqN user API checked from user space, one TAP line per rule,
//! for the in-guest test suite (and for anyone checking a driver build).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use vdaq_proto::format::SampleFormat;
use vdaq_proto::uapi::{
    Info, MmapLayout, Params, PeriodHeader, PERIOD_MAGIC, VDAQ_IOC_INFO, VDAQ_IOC_MMAP_LAYOUT,
    VDAQ_IOC_SET_PARAMS, VDAQ_IOC_START, VDAQ_IOC_STOP,
};
use vdaq_proto::wire::Pod;

use crate::mmap::{Ring, RingMemory};
use crate::sys;
use crate::verify::CounterChecker;

struct Tap {
    n: u32,
    failed: u32,
}

impl Tap {
    fn check(&mut self, name: &str, result: Result<(), String>) {
        self.n += 1;
        match result {
            Ok(()) => println!("ok {} - {name}", self.n),
            Err(why) => {
                self.failed += 1;
                println!("not ok {} - {name}: {why}", self.n);
            }
        }
    }
}

fn errno(r: io::Result<impl std::fmt::Debug>, want: i32, what: &str) -> Result<(), String> {
    match r {
        Err(e) if e.raw_os_error() == Some(want) => Ok(()),
        other => Err(format!("{what}: expected errno {want}, got {other:?}")),
    }
}

fn open(device: &str, nonblock: bool) -> io::Result<File> {
    let flags = if nonblock { libc::O_NONBLOCK } else { 0 };
    OpenOptions::new().read(true).custom_flags(flags).open(device)
}

fn read_records(f: &File, buf: &mut [u8]) -> io::Result<Vec<(PeriodHeader, Vec<u8>)>> {
    let n = sys::read(f.as_raw_fd(), buf)?;
    let mut out = Vec::new();
    let mut at = 0;
    let h = std::mem::size_of::<PeriodHeader>();
    while at + h <= n {
        let hdr = PeriodHeader::from_prefix(&buf[at..]).ok_or_else(|| io::Error::other("short"))?;
        let end = at + h + hdr.bytes as usize;
        out.push((hdr, buf[at + h..end.min(n)].to_vec()));
        at = end;
    }
    Ok(out)
}

fn poll_in(f: &File, timeout_ms: i32) -> io::Result<i16> {
    let mut p = libc::pollfd { fd: f.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(p.revents)
}

/// Runs the checks; returns the number of failures.
pub fn run(device: &str) -> u32 {
    let mut t = Tap { n: 0, failed: 0 };
    let f = match open(device, true) {
        Ok(f) => f,
        Err(e) => {
            println!("not ok 1 - open {device}: {e}");
            return 1;
        }
    };
    let fd = f.as_raw_fd();
    let info: Info = match sys::ioctl_read(fd, VDAQ_IOC_INFO) {
        Ok(i) => i,
        Err(e) => {
            println!("not ok 1 - VDAQ_IOC_INFO: {e}");
            return 1;
        }
    };
    parameter_rules(&mut t, device, fd, &info);
    streaming_rules(&mut t, &f, fd, &info);
    let blocking = open_blocking_after_close(device, f);
    t.check("a blocking read of a stopped stream starts it and returns periods", blocking);
    t.check(
        "close with signals pending: they stay deliverable, none comes after, the stream stops",
        close_with_signals_pending(device),
    );
    mmap_tests(&mut t, device, &info);
    println!("1..{}", t.n);
    println!("selftest: {} passed, {} failed", t.n - t.failed, t.failed);
    t.failed
}

/// The rules of INFO, the exclusive open and SET_PARAMS on a stopped stream: every invalid
/// parameter set gives EINVAL.
fn parameter_rules(t: &mut Tap, device: &str, fd: RawFd, info: &Info) {
    t.check("INFO reports a stopped stream with valid parameters", {
        let p = info.params;
        if info.started == 0 && p.periods >= 2 && p.period_bytes > 0 && info.rates != 0 {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    });
    t.check("a second open is refused with EBUSY", errno(open(device, false), libc::EBUSY, "open"));
    t.check(
        "INFO offers at most 64 periods (at most 64 MiB of buffers)",
        if (2..=64).contains(&info.max_periods) {
            Ok(())
        } else {
            Err(format!("max_periods {}", info.max_periods))
        },
    );
    let base = info.params;
    let bad = |mutate: fn(&mut Params)| {
        let mut p = base;
        mutate(&mut p);
        sys::ioctl_write(fd, VDAQ_IOC_SET_PARAMS, &p)
    };
    type Mutation = fn(&mut Params);
    let einval: [(&str, Mutation); 11] = [
        ("a rate not in the table", |p| p.rate = 44_000),
        ("an unknown format", |p| p.format = 99),
        ("zero channels", |p| p.channels = 0),
        ("256 channels", |p| p.channels = 256),
        ("a period that is not whole frames", |p| p.period_bytes += 1),
        ("one period", |p| p.periods = 1),
        ("more periods than the ring holds", |p| p.periods = 100_000),
        ("a non-zero reserved field", |p| p.reserved[1] = 1),
        // The buffer size (period_bytes x periods) goes to the device as 32 bits: these
        // products are 4 GiB and 4 GiB + 1 MiB, which wrap to 0 and to 1 MiB.
        ("1 MiB periods x 4096 (a 4 GiB buffer)", |p| {
            (p.period_bytes, p.periods) = (1 << 20, 4096)
        }),
        ("1 MiB periods x 4097 (a buffer wrapping 32 bits)", |p| {
            (p.period_bytes, p.periods) = (1 << 20, 4097)
        }),
        ("65 periods (more than MAX_PERIODS, 64)", |p| p.periods = 65),
    ];
    for (what, m) in einval {
        t.check(&format!("SET_PARAMS with {what} gives EINVAL"), errno(bad(m), libc::EINVAL, what));
    }
    t.check(
        "STOP of a stopped stream gives EBADFD",
        errno(sys::ioctl_none(fd, VDAQ_IOC_STOP), libc::EBADFD, "stop"),
    );
}

/// START, STOP, poll and read on a stream with 100 ms periods: records whole, counted from
/// sequence 0 after every START.
fn streaming_rules(t: &mut Tap, f: &File, fd: RawFd, info: &Info) {
    let base = info.params;
    // Long periods (100 ms at 48 kHz): right after START nothing can be ready yet.
    let mut small = base;
    let width = SampleFormat::from_wire(base.format as u8).map_or(2, |f| f.width()) as u32;
    small.period_bytes = (base.rate / 10) * width * base.channels;
    small.periods = 4.min(info.max_periods);
    t.check(
        "SET_PARAMS with valid values",
        sys::ioctl_write(fd, VDAQ_IOC_SET_PARAMS, &small).map_err(|e| e.to_string()),
    );
    let record = std::mem::size_of::<PeriodHeader>() + small.period_bytes as usize;
    let mut buf = vec![0u8; record * 8];
    t.check(
        "poll times out while stopped",
        match poll_in(f, 50) {
            Ok(0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    t.check(
        "a buffer smaller than one record gives EINVAL",
        errno(sys::read(fd, &mut buf[..record - 1]), libc::EINVAL, "read"),
    );
    t.check("START", sys::ioctl_none(fd, VDAQ_IOC_START).map_err(|e| e.to_string()));
    t.check(
        "START twice gives EBUSY",
        errno(sys::ioctl_none(fd, VDAQ_IOC_START), libc::EBUSY, "start"),
    );
    t.check(
        "SET_PARAMS while started gives EBUSY",
        errno(sys::ioctl_write(fd, VDAQ_IOC_SET_PARAMS, &small), libc::EBUSY, "set"),
    );
    t.check(
        "a non-blocking read with nothing ready gives EAGAIN",
        errno(sys::read(fd, &mut buf), libc::EAGAIN, "read"),
    );
    t.check(
        "poll reports POLLIN within a few periods",
        match poll_in(f, 2000) {
            Ok(r) if r & libc::POLLIN != 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let first = read_records(f, &mut buf);
    t.check(
        "read returns whole periods with headers, counting from frame 0",
        match &first {
            Ok(recs)
                if !recs.is_empty()
                    && recs.iter().all(|(h, d)| {
                        h.magic == PERIOD_MAGIC && d.len() == small.period_bytes as usize
                    })
                    && recs[0].0.sequence == 0 =>
            {
                Ok(())
            }
            other => Err(format!(
                "{:?}",
                other.as_ref().map(|r| r.iter().map(|x| x.0).collect::<Vec<_>>())
            )),
        },
    );
    t.check("STOP", sys::ioctl_none(fd, VDAQ_IOC_STOP).map_err(|e| e.to_string()));
    // Start again: a fresh PREPARE, so sequence and sample clock start at 0 again.
    t.check("START after STOP", sys::ioctl_none(fd, VDAQ_IOC_START).map_err(|e| e.to_string()));
    let deadline = Instant::now() + Duration::from_secs(3);
    let again = loop {
        match read_records(f, &mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other,
        }
    };
    t.check(
        "readv: one record across two buffers (header, frames)",
        readv_split(f, fd, small.period_bytes as usize),
    );
    t.check(
        "after STOP and START the stream restarts at sequence 0",
        match &again {
            Ok(recs) if recs.first().is_some_and(|r| r.0.sequence == 0) => Ok(()),
            other => Err(format!(
                "{:?}",
                other.as_ref().map(|r| r.iter().map(|x| x.0.sequence).collect::<Vec<_>>())
            )),
        },
    );
}

/// readv() with a period's header and its frames in two buffers: vdaq.ko reads through
/// `read_iter`, so one record may span the buffers (the sizes of the whole vector count, as
/// for read()).
fn readv_split(f: &File, fd: RawFd, period_bytes: usize) -> Result<(), String> {
    match poll_in(f, 2000) {
        Ok(r) if r & libc::POLLIN != 0 => {}
        other => return Err(format!("no period ready: {other:?}")),
    }
    let mut header = PeriodHeader::default();
    let mut frames = vec![0u8; period_bytes];
    let got = sys::readv(fd, &mut [header.as_bytes_mut(), &mut frames]);
    match got {
        Ok(n) if n == std::mem::size_of::<PeriodHeader>() + period_bytes => {
            if header.magic == PERIOD_MAGIC && header.bytes as usize == period_bytes {
                Ok(())
            } else {
                Err(format!("a bad header across the buffers: {header:?}"))
            }
        }
        other => Err(format!("{other:?}")),
    }
}

/// Closes `f` (stopping the stream), reopens blocking and reads once.
fn open_blocking_after_close(device: &str, f: File) -> Result<(), String> {
    drop(f);
    let f = open(device, false).map_err(|e| format!("reopen: {e}"))?;
    let info: Info = sys::ioctl_read(f.as_raw_fd(), VDAQ_IOC_INFO).map_err(|e| e.to_string())?;
    if info.started != 0 {
        return Err("the stream was still started after the last close".into());
    }
    let record = std::mem::size_of::<PeriodHeader>() + info.params.period_bytes as usize;
    let mut buf = vec![0u8; record];
    let recs = read_records(&f, &mut buf).map_err(|e| e.to_string())?;
    if recs.len() == 1 && recs[0].0.magic == PERIOD_MAGIC {
        Ok(())
    } else {
        Err(format!("{} records", recs.len()))
    }
}

/// Streams with a realtime signal blocked so that signals queue, closes the file with them
/// pending, then takes them: each carries the closed descriptor and POLLIN; their number is
/// the driver's count of signals sent; none arrives after the close; the stream was stopped.
fn close_with_signals_pending(device: &str) -> Result<(), String> {
    let signal = sys::sigrtmin(2);
    sys::mask_signal(signal, true);
    while sys::take_pending(signal).is_some() {}
    let result = (|| {
        let f = open(device, true).map_err(|e| format!("open: {e}"))?;
        let fd = f.as_raw_fd();
        let before = sys::driver_stats(fd).map_err(|e| e.to_string())?;
        sys::set_async(fd, true, Some(signal)).map_err(|e| format!("O_ASYNC: {e}"))?;
        sys::ioctl_none(fd, VDAQ_IOC_START).map_err(|e| format!("START: {e}"))?;
        std::thread::sleep(Duration::from_millis(300));
        drop(f);
        let mut pending = 0u64;
        while let Some((sig_fd, band)) = sys::take_pending(signal) {
            pending += 1;
            if sig_fd != fd || band & i64::from(libc::POLLIN) == 0 {
                return Err(format!("a pending signal had fd {sig_fd} band {band:#x}"));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        if sys::take_pending(signal).is_some() {
            return Err("a signal arrived after the close".into());
        }
        let f = open(device, true).map_err(|e| format!("reopen: {e}"))?;
        // The statistics outlive the file: every signal the driver sent is one we hold.
        let sent = sys::driver_stats(f.as_raw_fd()).map_err(|e| e.to_string())?.signals_sent
            - before.signals_sent;
        if sent == 0 || pending != sent {
            return Err(format!("{pending} signals pending, the driver sent {sent}"));
        }
        let info: Info =
            sys::ioctl_read(f.as_raw_fd(), VDAQ_IOC_INFO).map_err(|e| e.to_string())?;
        if info.started != 0 {
            return Err("the stream was still started after the close".into());
        }
        Ok(())
    })();
    sys::mask_signal(signal, false);
    result
}

/// A file of the device set to `p`, its layout, and (`map`) the whole ring mapped. The
/// mapping is declared first: it is unmapped before the file closes.
struct Mapped {
    map: Option<sys::Mapping>,
    ring: Ring,
    layout: MmapLayout,
    file: File,
}

impl Mapped {
    fn open(device: &str, p: &Params, map: bool) -> Result<Self, String> {
        let file = open(device, true).map_err(|e| format!("open: {e}"))?;
        let fd = file.as_raw_fd();
        sys::ioctl_write(fd, VDAQ_IOC_SET_PARAMS, p).map_err(|e| format!("SET_PARAMS: {e}"))?;
        let layout: MmapLayout =
            sys::ioctl_read(fd, VDAQ_IOC_MMAP_LAYOUT).map_err(|e| format!("MMAP_LAYOUT: {e}"))?;
        let ring = Ring::new(&layout, p, sys::page_size())?;
        let map = if map {
            let m = sys::Mapping::new(fd, ring.mapping_bytes).map_err(|e| format!("mmap: {e}"))?;
            ring.check_status(&m)?;
            Some(m)
        } else {
            None
        };
        Ok(Self { map, ring, layout, file })
    }

    fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    fn map(&self) -> Result<&sys::Mapping, String> {
        self.map.as_ref().ok_or_else(|| "not mapped".to_string())
    }

    fn start(&self) -> Result<(), String> {
        sys::ioctl_none(self.fd(), VDAQ_IOC_START).map_err(|e| format!("START: {e}"))
    }
}

/// Waits until the mapping's head reaches `n` (at most 5 s); returns the head.
fn wait_head(map: &sys::Mapping, n: u64) -> Result<u64, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let head = map.head();
        if head >= n {
            return Ok(head);
        }
        if Instant::now() > deadline {
            return Err(format!("head {head} after 5 s, waiting for {n}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Checks periods `range` of the mapping in order with `checker`: records right, no loss
/// announced or seen.
fn check_mapped(
    m: &Mapped,
    range: std::ops::Range<u64>,
    checker: &mut CounterChecker,
) -> Result<(), String> {
    let map = m.map()?;
    for seq in range {
        let p = m.ring.period(map, seq).map_err(|e| e.to_string())?;
        if p.frames.len() != m.ring.period_bytes || p.header.frames_lost != 0 {
            return Err(format!("period {seq} (buffer {}): {:?}", p.buffer, p.header));
        }
        if checker.check(p.frames) != 0 {
            return Err(format!("period {seq}: frames lost"));
        }
    }
    Ok(())
}

/// The counter check's verdict with the first frame it must have started at.
fn counter_from(checker: CounterChecker, first: u64) -> Result<(), String> {
    let r = checker.finish(0);
    if r.is_clean() && r.first == Some(first) {
        Ok(())
    } else {
        Err(format!("counter from {first} expected: {r:?}"))
    }
}

/// The mmap rules of /dev/vdaqN, one TAP line each.
fn mmap_tests(t: &mut Tap, device: &str, info: &Info) {
    let mut p = info.params;
    let width = SampleFormat::from_wire(p.format as u8).map_or(2, |f| f.width()) as u32;
    // 50 ms periods, a ring of 400 ms (or what it holds).
    let period_frames = (p.rate / 20).max(1);
    p.period_bytes = period_frames * width * p.channels;
    p.periods = 8.min(info.max_periods);
    let page = sys::page_size();

    t.check("mmap: MMAP_LAYOUT fits the parameters (page-aligned sizes and offsets, records before the buffers, every buffer inside)", {
        Mapped::open(device, &p, false).and_then(|m| {
            let l = m.layout;
            let min = (64 + u64::from(l.periods) * 48).div_ceil(page as u64) * page as u64
                + u64::from(l.periods) * u64::from(l.period_bytes).div_ceil(page as u64) * page as u64;
            if l.mapping_bytes < min {
                Err(format!("{l:?}: mapping_bytes below {min}"))
            } else {
                Ok(())
            }
        })
    });
    t.check("mmap: the whole layout maps read-only and shared; status magic and version, head = tail = 0", {
        Mapped::open(device, &p, true).and_then(|m| {
            let map = m.map()?;
            match (map.head(), map.tail()) {
                (0, 0) => Ok(()),
                other => Err(format!("head, tail {other:?} before START")),
            }
        })
    });
    let refused = |len: Option<usize>, offset: u64, prot: i32, flags: i32, rw: bool, want: i32| {
        let f = OpenOptions::new()
            .read(true)
            .write(rw)
            .custom_flags(libc::O_NONBLOCK)
            .open(device)
            .map_err(|e| format!("open (read-write: {rw}): {e}"))?;
        sys::ioctl_write(f.as_raw_fd(), VDAQ_IOC_SET_PARAMS, &p)
            .map_err(|e| format!("SET_PARAMS: {e}"))?;
        let layout: MmapLayout = sys::ioctl_read(f.as_raw_fd(), VDAQ_IOC_MMAP_LAYOUT)
            .map_err(|e| format!("MMAP_LAYOUT: {e}"))?;
        let len = len.unwrap_or(layout.mapping_bytes as usize);
        errno(sys::Mapping::with(f.as_raw_fd(), len, prot, flags, offset), want, "mmap")
    };
    let (ro, sh) = (libc::PROT_READ, libc::MAP_SHARED);
    let total = Mapped::open(device, &p, false).map_or(0, |m| m.ring.mapping_bytes);
    t.check(
        "mmap: a length past mapping_bytes gives EINVAL",
        refused(Some(total + page), 0, ro, sh, false, libc::EINVAL),
    );
    t.check(
        "mmap: an offset whose range ends past mapping_bytes gives EINVAL",
        refused(Some(2 * page), (total - page) as u64, ro, sh, false, libc::EINVAL),
    );
    t.check(
        "mmap: an offset at mapping_bytes gives EINVAL",
        refused(Some(page), total as u64, ro, sh, false, libc::EINVAL),
    );
    t.check(
        "mmap: PROT_WRITE (file open read-write) gives EPERM",
        refused(None, 0, ro | libc::PROT_WRITE, sh, true, libc::EPERM),
    );
    t.check(
        "mmap: MAP_PRIVATE gives EINVAL",
        refused(None, 0, ro, libc::MAP_PRIVATE, false, libc::EINVAL),
    );
    t.check("mmap: mprotect(PROT_WRITE) of the mapping fails (file open read-write)", {
        (|| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(device)
                .map_err(|e| format!("open read-write: {e}"))?;
            sys::ioctl_write(f.as_raw_fd(), VDAQ_IOC_SET_PARAMS, &p)
                .map_err(|e| format!("SET_PARAMS: {e}"))?;
            let map = sys::Mapping::new(f.as_raw_fd(), total).map_err(|e| format!("mmap: {e}"))?;
            match map.protect(libc::PROT_READ | libc::PROT_WRITE) {
                Err(_) => Ok(()),
                Ok(()) => Err("mprotect(PROT_READ | PROT_WRITE) succeeded".into()),
            }
        })()
    });
    t.check("mmap: a page-aligned sub-range (the last period buffer) maps", {
        Mapped::open(device, &p, false).and_then(|m| {
            let off = m.ring.buffers_offset + (m.ring.periods as usize - 1) * m.ring.stride;
            sys::Mapping::with(m.fd(), m.ring.stride, ro, sh, off as u64)
                .map(drop)
                .map_err(|e| format!("mmap at {off}: {e}"))
        })
    });
    t.check("mmap: SET_PARAMS while mapped gives EBUSY, and works after munmap", {
        Mapped::open(device, &p, true).and_then(|mut m| {
            errno(sys::ioctl_write(m.fd(), VDAQ_IOC_SET_PARAMS, &p), libc::EBUSY, "mapped")?;
            m.map = None;
            sys::ioctl_write(m.fd(), VDAQ_IOC_SET_PARAMS, &p)
                .map_err(|e| format!("after munmap: {e}"))
        })
    });
    t.check("mmap: MMAP_ACK above head gives EINVAL (stopped: head = tail = 0)", {
        Mapped::open(device, &p, true)
            .and_then(|m| errno(sys::mmap_ack(m.fd(), 1), libc::EINVAL, "ack 1"))
    });
    t.check("mmap: periods read through the mapping carry the exact counter from frame 0, each record's sequence its own", {
        Mapped::open(device, &p, true).and_then(|m| {
            m.start()?;
            let head = wait_head(m.map()?, 3)?;
            let mut c = CounterChecker::new(SampleFormat::from_wire(p.format as u8).unwrap_or(SampleFormat::S16), p.channels as usize);
            check_mapped(&m, 0..head, &mut c)?;
            counter_from(c, 0)
        })
    });
    t.check("mmap: MMAP_ACK below tail or above what head can be gives EINVAL, within tail..=head works", {
        Mapped::open(device, &p, true).and_then(|m| {
            m.start()?;
            let map = m.map()?;
            wait_head(map, 2)?;
            sys::mmap_ack(m.fd(), 2).map_err(|e| format!("ack 2: {e}"))?;
            sys::mmap_ack(m.fd(), 2).map_err(|e| format!("ack 2 again (= tail): {e}"))?;
            if map.tail() != 2 {
                return Err(format!("tail {} after ack 2", map.tail()));
            }
            errno(sys::mmap_ack(m.fd(), 1), libc::EINVAL, "ack 1 (below tail)")?;
            let beyond = map.tail() + m.ring.periods + 1;
            errno(sys::mmap_ack(m.fd(), beyond), libc::EINVAL, "ack past head")?;
            errno(sys::mmap_ack(m.fd(), u64::MAX), libc::EINVAL, "ack u64::MAX")
        })
    });
    let format = SampleFormat::from_wire(p.format as u8).unwrap_or(SampleFormat::S16);
    let channels = p.channels as usize;
    t.check("mmap: read() and MMAP_ACK mix: read() takes the oldest period and moves tail, the mapping has the next", {
        Mapped::open(device, &p, true).and_then(|m| {
            m.start()?;
            let map = m.map()?;
            wait_head(map, 3)?;
            let mut c = CounterChecker::new(format, channels);
            let mut buf = vec![0u8; std::mem::size_of::<PeriodHeader>() + p.period_bytes as usize];
            let first = read_records(&m.file, &mut buf).map_err(|e| format!("read: {e}"))?;
            match first.as_slice() {
                [(h, d)] if h.sequence == 0 => c.check(d),
                other => return Err(format!("read gave {:?}", other.iter().map(|r| r.0).collect::<Vec<_>>())),
            };
            if map.tail() != 1 {
                return Err(format!("tail {} after reading period 0", map.tail()));
            }
            check_mapped(&m, 1..2, &mut c)?;
            sys::mmap_ack(m.fd(), 2).map_err(|e| format!("ack 2: {e}"))?;
            let next = read_records(&m.file, &mut buf).map_err(|e| format!("read: {e}"))?;
            match next.as_slice() {
                [(h, d)] if h.sequence == 2 => c.check(d),
                other => return Err(format!("read after ack gave {:?}", other.iter().map(|r| r.0).collect::<Vec<_>>())),
            };
            counter_from(c, 0)
        })
    });
    t.check("mmap: STOP discards unread periods (tail = head, no POLLIN); START restarts head and tail at 0", {
        Mapped::open(device, &p, true).and_then(|m| {
            m.start()?;
            let map = m.map()?;
            wait_head(map, 2)?;
            match poll_in(&m.file, 0) {
                Ok(r) if r & libc::POLLIN != 0 => {}
                other => return Err(format!("poll with periods ready: {other:?}")),
            }
            sys::ioctl_none(m.fd(), VDAQ_IOC_STOP).map_err(|e| format!("STOP: {e}"))?;
            if map.tail() != map.head() {
                return Err(format!("after STOP head {} tail {}", map.head(), map.tail()));
            }
            match poll_in(&m.file, 0) {
                Ok(0) => {}
                other => return Err(format!("poll after STOP: {other:?}")),
            }
            m.start()?;
            if map.tail() != 0 {
                return Err(format!("tail {} after START", map.tail()));
            }
            let head = wait_head(map, 1)?;
            let mut c = CounterChecker::new(format, channels);
            check_mapped(&m, 0..head, &mut c)?;
            counter_from(c, 0)
        })
    });
    t.check("mmap: munmap while streaming, then read() continues from the tail with the counter unbroken", {
        Mapped::open(device, &p, true).and_then(|mut m| {
            m.start()?;
            let map = m.map()?;
            wait_head(map, 2)?;
            let mut c = CounterChecker::new(format, channels);
            check_mapped(&m, 0..2, &mut c)?;
            sys::mmap_ack(m.fd(), 2).map_err(|e| format!("ack 2: {e}"))?;
            m.map = None;
            let mut buf = vec![0u8; std::mem::size_of::<PeriodHeader>() + p.period_bytes as usize];
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut want = 2;
            while want < 5 {
                match read_records(&m.file, &mut buf) {
                    Ok(recs) => {
                        for (h, d) in recs {
                            if h.sequence != want {
                                return Err(format!("read period {} after munmap, expected {want}", h.sequence));
                            }
                            c.check(&d);
                            want += 1;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(format!("read after munmap: {e}")),
                }
            }
            counter_from(c, 0)
        })
    });
    t.check("mmap: close while mapped: the stream runs on, records arrive through the mapping, the device stays busy until munmap", {
        Mapped::open(device, &p, true).and_then(|m| {
            m.start()?;
            let Mapped { map, ring, file, .. } = m;
            let map = map.ok_or("not mapped")?;
            let at_close = map.head();
            drop(file);
            let head = wait_head(&map, (at_close + 3).min(ring.periods))?;
            if head <= at_close {
                return Err(format!("head {head} did not move after the close (was {at_close})"));
            }
            errno(open(device, true), libc::EBUSY, "open while the mapping holds the file")?;
            let mut c = CounterChecker::new(format, channels);
            for seq in 0..head {
                let period = ring.period(&map, seq).map_err(|e| e.to_string())?;
                c.check(period.frames);
            }
            counter_from(c, 0)?;
            drop(map);
            let f = open(device, true).map_err(|e| format!("open after munmap: {e}"))?;
            let i: Info = sys::ioctl_read(f.as_raw_fd(), VDAQ_IOC_INFO).map_err(|e| e.to_string())?;
            if i.started != 0 {
                return Err("still started after munmap of the closed file".into());
            }
            Ok(())
        })
    });
}
