// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq stress`: one started stream used from several threads at once, as a careless program
//! would: blocking reads (the counter checked), O_ASYNC switched on and off (fasync), STATS and
//! INFO ioctls, poll(), and opens of the same node from elsewhere (each must get EBUSY). Prints
//! a JSON report; exits 1 on any unexpected error or on frames lost without announcement.
//!
//! Two more modes aim at races in the driver. `async-race`: three threads set and clear
//! O_ASYNC on the one file as fast as they can (the VFS does not serialise a file's fasync
//! calls), then, with nobody toggling, the stream runs for a moment: every signal the driver
//! counts as sent (`signals_sent`, counted where it calls kill_fasync) must reach the process,
//! as a queued realtime signal. A driver whose fasync list and its own "async on" flag came
//! apart in the storm counts signals it never sends. `start-stop`: START and STOP in a loop,
//! so the stall watchdog is started from process context again and again while it may be
//! firing on another CPU (run it beside a stream that stalls).

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

/// What `vdaq stress` does to the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// One started stream used from five threads.
    Threads,
    /// O_ASYNC set and cleared by threads at once; then every signal counted must arrive.
    AsyncRace,
    /// START and STOP in a loop (the stall watchdog is armed at each START).
    StartStop,
}

/// Runs for `seconds`; returns the process exit status.
pub fn run(device: &str, seconds: f64, mode: Mode) -> u8 {
    let result = match mode {
        Mode::Threads => stress(device, seconds),
        Mode::AsyncRace => async_race(device, seconds),
        Mode::StartStop => start_stop(device, seconds),
    };
    match result {
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

/// Signals that arrived in `async_race` (the queued realtime one, and SIGIO should the queue
/// overflow).
static RACE_SIGNALS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_race_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    RACE_SIGNALS.fetch_add(1, Ordering::Relaxed);
}

/// Threads setting and clearing O_ASYNC at once in each storm.
const TOGGLERS: usize = 3;
/// Flag changes per thread and storm.
const TOGGLES_PER_STORM: u32 = 300;

/// Sets (`on`) or clears O_ASYNC on `fd`, nothing else.
fn set_o_async(fd: i32, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller keeps open, with integer arguments.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = if on { flags | libc::O_ASYNC } else { flags & !libc::O_ASYNC };
        if libc::fcntl(fd, libc::F_SETFL, flags) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Storms of O_ASYNC changes, each followed by a short run of the stream in which the signals
/// the driver counts as sent must all arrive.
fn async_race(device: &str, seconds: f64) -> io::Result<(serde_json::Value, bool)> {
    let file = OpenOptions::new().read(true).open(device)?;
    let fd = file.as_raw_fd();
    let signal = sys::sigrtmin(1);
    sys::install_handler(signal, count_race_signal)?;
    sys::install_handler(libc::SIGIO, count_race_signal)?;
    // Owner and signal once; the storms only change O_ASYNC.
    sys::set_async(fd, false, Some(signal))?;
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let (mut rounds, mut signalled, mut toggles) = (0u64, 0u64, 0u64);
    let mut errors = Vec::<String>::new();
    while Instant::now() < until && errors.len() < 20 {
        rounds += 1;
        let failed = std::thread::scope(|s| {
            let workers: Vec<_> = (0..TOGGLERS)
                .map(|t| {
                    s.spawn(move || {
                        // Half the threads begin by setting, half by clearing.
                        let mut on = t % 2 == 0;
                        for _ in 0..TOGGLES_PER_STORM {
                            set_o_async(fd, on)?;
                            on = !on;
                        }
                        Ok::<(), io::Error>(())
                    })
                })
                .collect();
            workers
                .into_iter()
                .filter_map(|w| match w.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("fcntl O_ASYNC: {e}")),
                    Err(_) => Some("a toggling thread panicked".to_string()),
                })
                .next()
        });
        if let Some(e) = failed {
            errors.push(e);
            break;
        }
        toggles += (TOGGLERS as u64) * u64::from(TOGGLES_PER_STORM);
        // Nobody changes O_ASYNC now: whatever the storm left, what the driver counts as
        // sent must arrive.
        let sent_before = sys::driver_stats(fd)?.signals_sent;
        let got_before = RACE_SIGNALS.load(Ordering::Relaxed);
        sys::ioctl_none(fd, VDAQ_IOC_START)?;
        std::thread::sleep(Duration::from_millis(120));
        sys::ioctl_none(fd, VDAQ_IOC_STOP)?;
        // Queued signals are delivered at the latest when this thread wakes.
        std::thread::sleep(Duration::from_millis(20));
        // Every signal counted before this ioctl read the statistics was queued before it
        // returned, and so handled before the next line runs (no other thread is left).
        let sent = sys::driver_stats(fd)?.signals_sent.saturating_sub(sent_before);
        let got = RACE_SIGNALS.load(Ordering::Relaxed) - got_before;
        if sent > 0 {
            signalled += 1;
        }
        // More arrived than counted only when a late completion came after the statistics.
        if got < sent {
            let flag = {
                // SAFETY: fcntl F_GETFL on our open descriptor.
                let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                if flags >= 0 && flags & libc::O_ASYNC != 0 {
                    "set"
                } else {
                    "clear"
                }
            };
            errors.push(format!(
                "round {rounds}: the driver counted {sent} signals sent, {got} arrived \
                 (O_ASYNC {flag} after the storm)"
            ));
        }
    }
    let clean = errors.is_empty();
    let report = serde_json::json!({
        "mode": "async-race", "seconds": seconds, "rounds": rounds, "async_toggles": toggles,
        "rounds_signalled": signalled, "signals": RACE_SIGNALS.load(Ordering::Relaxed),
        "errors": errors,
    });
    Ok((report, clean))
}

/// START and STOP in a loop, each start held for 0 to 3 ms.
fn start_stop(device: &str, seconds: f64) -> io::Result<(serde_json::Value, bool)> {
    let file = OpenOptions::new().read(true).open(device)?;
    let fd = file.as_raw_fd();
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let mut starts = 0u64;
    let mut errors = Vec::<String>::new();
    // A small generator of hold times (the same sequence every run).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    while Instant::now() < until {
        if let Err(e) = sys::ioctl_none(fd, VDAQ_IOC_START) {
            errors.push(format!("START {}: {e}", starts + 1));
            break;
        }
        starts += 1;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 3000));
        if let Err(e) = sys::ioctl_none(fd, VDAQ_IOC_STOP) {
            errors.push(format!("STOP {starts}: {e}"));
            break;
        }
    }
    let clean = errors.is_empty();
    let report = serde_json::json!({
        "mode": "start-stop", "seconds": seconds, "starts": starts, "errors": errors,
    });
    Ok((report, clean))
}
