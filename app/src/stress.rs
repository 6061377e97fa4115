//! `vdaq stress`: one started stream used from several threads at once, as a careless program
//! would: blocking reads (the counter checked), O_ASYNC switched on and off (fasync), STATS and
//! INFO ioctls, poll(), and opens of the same node from elsewhere (each must get EBUSY). Prints
//! a JSON report; exits 1 on any unexpected error or on frames lost without announcement.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vdaq_proto::format::SampleFormat;
use vdaq_proto::uapi::{Info, PeriodHeader, VDAQ_IOC_INFO, VDAQ_IOC_START, VDAQ_IOC_STOP};
use vdaq_proto::wire::Pod;

use crate::sys;
use crate::verify::CounterChecker;

static SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// What the threads did.
#[derive(Debug, Default)]
struct Counts {
    reads: AtomicU64,
    periods: AtomicU64,
    async_toggles: AtomicU64,
    ioctls: AtomicU64,
    polls: AtomicU64,
    busy_opens: AtomicU64,
}

/// Runs for `seconds`; returns the process exit status.
pub fn run(device: &str, seconds: f64) -> u8 {
    match stress(device, seconds) {
        Ok((report, clean)) => {
            println!("{report}");
            u8::from(!clean)
        }
        Err(e) => {
            eprintln!("vdaq stress: {device}: {e}");
            2
        }
    }
}

/// The JSON report, and whether nothing went wrong.
fn stress(device: &str, seconds: f64) -> io::Result<(serde_json::Value, bool)> {
    let file = OpenOptions::new().read(true).open(device)?;
    let fd = file.as_raw_fd();
    let info: Info = sys::ioctl_read(fd, VDAQ_IOC_INFO)?;
    let p = info.params;
    let format = SampleFormat::from_wire(p.format as u8)
        .ok_or_else(|| io::Error::other(format!("unknown format {}", p.format)))?;
    sys::install_handler(libc::SIGIO, count_signal)?;
    sys::ioctl_none(fd, VDAQ_IOC_START)?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let done = AtomicBool::new(false);
    let counts = Counts::default();
    let errors = std::sync::Mutex::new(Vec::<String>::new());
    let fail = |what: &str, e: io::Error| {
        if let Ok(mut list) = errors.lock() {
            if list.len() < 20 {
                list.push(format!("{what}: {e}"));
            }
        }
    };
    let mut checker = CounterChecker::new(format, p.channels as usize);
    let mut announced = 0u64;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut on = false;
            while !done.load(Ordering::Relaxed) {
                on = !on;
                match sys::set_async(fd, on, None) {
                    Ok(()) => counts.async_toggles.fetch_add(1, Ordering::Relaxed),
                    Err(e) => return fail("fcntl O_ASYNC", e),
                };
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let stats = sys::driver_stats(fd).map(|_| ());
                let info = sys::ioctl_read::<Info>(fd, VDAQ_IOC_INFO).map(|_| ());
                match stats.and(info) {
                    Ok(()) => counts.ioctls.fetch_add(2, Ordering::Relaxed),
                    Err(e) => return fail("ioctl", e),
                };
            }
        });
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                match sys::poll_in(fd, Duration::from_millis(5)) {
                    Ok(_) => counts.polls.fetch_add(1, Ordering::Relaxed),
                    Err(e) => return fail("poll", e),
                };
            }
        });
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                match File::open(device) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        counts.busy_opens.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => return fail("second open", e),
                    Ok(_) => return fail("second open", io::Error::other("succeeded")),
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        // This thread reads until the time is up.
        let mut buf = vec![0u8; 64 * (p.period_bytes as usize + size_of::<PeriodHeader>())];
        while Instant::now() < until {
            let n = match sys::read(fd, &mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    fail("read", e);
                    break;
                }
            };
            counts.reads.fetch_add(1, Ordering::Relaxed);
            let mut at = 0;
            while let Some(h) = PeriodHeader::from_prefix(&buf[at..n]) {
                let start = at + size_of::<PeriodHeader>();
                let Some(frames) = buf.get(start..start + h.bytes as usize) else { break };
                let lost = checker.check(frames);
                announced += h.frames_lost;
                if lost > announced {
                    fail("counter", io::Error::other(format!("{lost} frames lost unannounced")));
                }
                announced = announced.saturating_sub(lost);
                counts.periods.fetch_add(1, Ordering::Relaxed);
                at = start + h.bytes as usize;
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    if let Err(e) = sys::ioctl_none(fd, VDAQ_IOC_STOP) {
        fail("STOP", e);
    }
    let report = checker.finish(0);
    if report.corrupt_frames > 0 || report.reorders > 0 {
        fail("counter", io::Error::other(format!("{report:?}")));
    }
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let errors = errors.into_inner().unwrap_or_default();
    let clean = errors.is_empty();
    let report = serde_json::json!({
        "seconds": seconds, "reads": c(&counts.reads), "periods": c(&counts.periods),
        "frames": report.frames, "gaps": report.gaps, "async_toggles": c(&counts.async_toggles),
        "signals": SIGNALS.load(Ordering::Relaxed), "ioctls": c(&counts.ioctls),
        "polls": c(&counts.polls), "busy_opens": c(&counts.busy_opens),
        "errors": errors,
    });
    Ok((report, clean))
}
