//! `vdaq selftest`: the /dev/vdaqN user API checked from user space, one TAP line per rule,
//! for the in-guest test suite (and for anyone checking a driver build).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use vdaq_proto::format::SampleFormat;
use vdaq_proto::uapi::{
    Info, Params, PeriodHeader, PERIOD_MAGIC, VDAQ_IOC_INFO, VDAQ_IOC_SET_PARAMS, VDAQ_IOC_START,
    VDAQ_IOC_STOP,
};
use vdaq_proto::wire::Pod;

use crate::sys;

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
    t.check("INFO reports a stopped stream with valid parameters", {
        let p = info.params;
        if info.started == 0 && p.periods >= 2 && p.period_bytes > 0 && info.rates != 0 {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    });
    t.check("a second open is refused with EBUSY", errno(open(device, false), libc::EBUSY, "open"));
    let base = info.params;
    let bad = |mutate: fn(&mut Params)| {
        let mut p = base;
        mutate(&mut p);
        sys::ioctl_write(fd, VDAQ_IOC_SET_PARAMS, &p)
    };
    type Mutation = fn(&mut Params);
    let einval: [(&str, Mutation); 8] = [
        ("a rate not in the table", |p| p.rate = 44_000),
        ("an unknown format", |p| p.format = 99),
        ("zero channels", |p| p.channels = 0),
        ("256 channels", |p| p.channels = 256),
        ("a period that is not whole frames", |p| p.period_bytes += 1),
        ("one period", |p| p.periods = 1),
        ("more periods than the ring holds", |p| p.periods = 100_000),
        ("a non-zero reserved field", |p| p.reserved[1] = 1),
    ];
    for (what, m) in einval {
        t.check(&format!("SET_PARAMS with {what} gives EINVAL"), errno(bad(m), libc::EINVAL, what));
    }
    t.check(
        "STOP of a stopped stream gives EBADFD",
        errno(sys::ioctl_none(fd, VDAQ_IOC_STOP), libc::EBADFD, "stop"),
    );
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
        match poll_in(&f, 50) {
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
        match poll_in(&f, 2000) {
            Ok(r) if r & libc::POLLIN != 0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let first = read_records(&f, &mut buf);
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
        match read_records(&f, &mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => break other,
        }
    };
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
    let blocking = open_blocking_after_close(device, f);
    t.check("a blocking read of a stopped stream starts it and returns periods", blocking);
    t.check(
        "close with signals pending: they stay deliverable, none comes after, the stream stops",
        close_with_signals_pending(device),
    );
    println!("1..{}", t.n);
    println!("selftest: {} passed, {} failed", t.n - t.failed, t.failed);
    t.failed
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
