// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Serving one vhost-user connection: the daemon, the stream timers and the statistics
//! reporter, shared by the binary and the tests.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::{info, warn};
use vhost::vhost_user::Listener;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::backend::{DeviceStats, VdaqBackend};
use crate::faults::FaultStats;
use crate::statsfile;
use crate::stream::StreamCaps;

/// Where the statistics go while the device runs: a log line every `every`, and the statistics
/// file (`--stats-json`), rewritten at each line, on SIGUSR1, and when a connection ends or the
/// device stops.
#[derive(Clone, Debug, Default)]
pub struct Reporting {
    /// Statistics line period.
    pub every: Option<Duration>,
    /// The statistics file.
    pub json: Option<PathBuf>,
}

impl Reporting {
    /// Rewrites the statistics file, if there is one. A failure is logged and the device goes
    /// on: the file's directory was writable when the device started.
    pub fn write_json(&self, stats: &DeviceStats) {
        if let Some(path) = &self.json {
            if let Err(e) = statsfile::write(path, stats) {
                warn!("cannot write the statistics file {}: {e}", path.display());
            }
        }
    }
}

/// One line of statistics; frames/s over `secs` since `prev`.
/// With `secs` infinite (totals), frames/s is left out.
pub fn stats_line(stats: &DeviceStats, prev: &DeviceStats, secs: f64) -> String {
    let mut parts = Vec::new();
    for (i, s) in stats.streams.iter().enumerate() {
        let before = prev.streams.get(i).map_or(0, |p| p.frames_delivered);
        let fps = s.frames_delivered.saturating_sub(before) as f64 / secs.max(1e-9);
        let rate = if secs.is_finite() { format!("{fps:.0} frames/s, ") } else { String::new() };
        parts.push(format!(
            "stream {i}: {rate}{} frames, {} buffers, fifo {} B, xruns {} ({} frames lost)",
            s.frames_delivered,
            s.buffers_completed,
            stats.fifo_levels.get(i).copied().unwrap_or(0),
            s.xruns,
            s.frames_lost
        ));
        if s.write_errors > 0 {
            parts.push(format!(
                "stream {i}: {} buffers failed to write into guest memory",
                s.write_errors
            ));
        }
        let f = s.faults;
        if f != FaultStats::default() {
            parts.push(format!(
                "stream {i} faults: {} dropped, {} errors, {} withheld, {} delayed, {} stalls, {} lies, \
                 {} storm events",
                f.dropped, f.errors, f.withheld, f.delayed, f.stalls, f.lies, f.storm_events
            ));
        }
    }
    if stats.spurious_events > 0 || stats.spurious_notifications > 0 {
        parts.push(format!(
            "spurious events {}, spurious notifications {}",
            stats.spurious_events, stats.spurious_notifications
        ));
    }
    if let Some(e) = stats.broken {
        parts.push(format!("BROKEN until reset: {e}"));
    }
    format!(
        "{}; rx interrupts {}; control requests {} ({} refused); bad chains {}",
        parts.join("; "),
        stats.rx_interrupts,
        stats.control_requests,
        stats.control_errors,
        stats.bad_chains
    )
}

/// Listens on `socket`, serves one connection with fresh device state, and returns the final
/// statistics. With `stats_every`, logs a statistics line that often.
pub fn serve_connection(
    socket: &Path,
    caps: Vec<StreamCaps>,
    stats_every: Option<Duration>,
) -> Result<DeviceStats, String> {
    serve_connection_with_stats(socket, caps, stats_every, Arc::default())
}

/// As [`serve_connection`], publishing the statistics into `stats` while the device runs.
pub fn serve_connection_with_stats(
    socket: &Path,
    caps: Vec<StreamCaps>,
    stats_every: Option<Duration>,
    stats: Arc<Mutex<DeviceStats>>,
) -> Result<DeviceStats, String> {
    let reporting = Reporting { every: stats_every, json: None };
    run_connection(Endpoint::Listen(socket), caps, &reporting, stats)
}

/// Which end of the vhost-user socket the device is.
pub enum Endpoint<'a> {
    /// Listen on this path; QEMU connects (`-chardev socket,path=...`).
    Listen(&'a Path),
    /// Connect to QEMU listening on this path (`-chardev socket,path=...,server=on`).
    Connect(&'a Path),
    /// Accept the next connection on a socket that already listens (`--fd`, passed by the
    /// parent process); it stays open for the next connection.
    Inherited(&'a mut Listener),
}

impl std::fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Listen(p) => f.debug_tuple("Listen").field(p).finish(),
            Self::Connect(p) => f.debug_tuple("Connect").field(p).finish(),
            Self::Inherited(l) => f.debug_tuple("Inherited").field(&l.as_raw_fd()).finish(),
        }
    }
}

/// Why the socket named by `--fd` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FdError {
    /// 0, 1 and 2 are standard input, output and error (the backend program conventions).
    #[error(
        "--fd {0}: 0, 1 and 2 are standard input, output and error, not the vhost-user socket"
    )]
    Stdio(RawFd),
    /// No such descriptor is open.
    #[error("--fd {0}: no such file descriptor is open in this process")]
    NotOpen(RawFd),
    /// Not a Unix domain socket.
    #[error("--fd {0}: not a Unix domain socket")]
    NotUnixSocket(RawFd),
    /// A connected socket, not a listening one.
    #[error(
        "--fd {0}: a connected socket; vdaq-device takes a listening one (vhost-user-backend's \
         daemon accepts its connection from a listener) and serves each connection made to it"
    )]
    Connected(RawFd),
}

/// Takes the listening Unix socket `fd` that the parent process passed (`--fd`), after checking
/// that it is one.
///
/// # Safety
///
/// `fd` must be owned by no one else in this process: on success (and on the errors after
/// the descriptor was found open) it is closed when the returned listener drops.
pub unsafe fn listener_from_fd(fd: RawFd) -> Result<Listener, FdError> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, UnixAddr};
    if (0..=2).contains(&fd) {
        return Err(FdError::Stdio(fd));
    }
    // Checked by its /proc entry, so that no number is taken that is not open.
    if fd < 0 || std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(FdError::NotOpen(fd));
    }
    // SAFETY: `fd` is open (checked above) and, by this function's contract, owned by nothing
    // else in this process, so this OwnedFd is its only owner and closes it once.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if getsockname::<UnixAddr>(owned.as_raw_fd()).is_err() {
        return Err(FdError::NotUnixSocket(fd));
    }
    match getsockopt(&owned, sockopt::AcceptConn) {
        Ok(true) => Ok(Listener::from(UnixListener::from(owned))),
        Ok(false) => Err(FdError::Connected(fd)),
        Err(_) => Err(FdError::NotUnixSocket(fd)),
    }
}

/// Serves one connection at `endpoint` with fresh device state, publishing the statistics
/// into `stats` and as `reporting` says, and returns the final statistics.
pub fn run_connection(
    endpoint: Endpoint<'_>,
    caps: Vec<StreamCaps>,
    reporting: &Reporting,
    stats: Arc<Mutex<DeviceStats>>,
) -> Result<DeviceStats, String> {
    let backend = VdaqBackend::with_stats(caps, Arc::clone(&stats))
        .map_err(|e| format!("cannot create the device: {e}"))?;
    let listeners = backend.epoll_listeners();
    let backend = Arc::new(RwLock::new(backend));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = VhostUserDaemon::new("vdaq-device".into(), Arc::clone(&backend), mem)
        .map_err(|e| format!("cannot create the vhost-user daemon: {e}"))?;
    let handler =
        daemon.get_epoll_handlers().into_iter().next().ok_or("the daemon has no worker thread")?;
    for (fd, data) in listeners {
        handler
            .register_listener(fd, EventSet::IN, data)
            .map_err(|e| format!("cannot register a stream timer: {e}"))?;
    }
    let reporter = reporting.every.map(|every| {
        let json = Reporting { every: None, json: reporting.json.clone() };
        Reporter::spawn(Arc::clone(&stats), every, json)
    });
    let result = match endpoint {
        Endpoint::Listen(socket) => {
            info!("listening on {}", socket.display());
            let r = daemon.serve(socket);
            let _ = std::fs::remove_file(socket);
            r.map_err(|e| format!("vhost-user connection failed: {e}"))
        }
        Endpoint::Connect(socket) => match socket.to_str() {
            None => Err(format!("{}: the socket path is not UTF-8", socket.display())),
            Some(path) => {
                info!("connecting to {path}");
                let r = connect_and_wait(&mut daemon, path);
                // serve() ends the worker threads itself; here it is ours to do.
                if let Some((_, exit)) = backend.read().ok().and_then(|b| b.exit_event(0)) {
                    let _ = exit.notify();
                }
                r.map_err(|e| format!("vhost-user connection failed: {e}"))
            }
        },
        Endpoint::Inherited(listener) => {
            info!("listening on the socket passed as descriptor {}", listener.as_raw_fd());
            let r = accept_and_wait(&mut daemon, listener);
            if let Some((_, exit)) = backend.read().ok().and_then(|b| b.exit_event(0)) {
                let _ = exit.notify();
            }
            r.map_err(|e| format!("vhost-user connection failed: {e}"))
        }
    };
    if let Some(reporter) = reporter {
        reporter.stop();
    }
    let final_stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
    reporting.write_json(&final_stats);
    result?;
    Ok(final_stats)
}

/// The statistics reporter: a thread that logs a line every interval and stops at once when
/// asked (it waits on a condition variable, not in a sleep it cannot leave).
#[derive(Debug)]
pub struct Reporter {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl Reporter {
    /// Logs a statistics line from `stats` every `every` (and rewrites `json`'s statistics
    /// file) until [`Reporter::stop`].
    pub fn spawn(stats: Arc<Mutex<DeviceStats>>, every: Duration, json: Reporting) -> Self {
        Self::spawn_with(every, move |prev, secs| {
            let now = stats.lock().map(|s| s.clone()).unwrap_or_default();
            if !now.streams.is_empty() {
                info!("{}", stats_line(&now, prev, secs));
                json.write_json(&now);
                *prev = now;
                return true;
            }
            false
        })
    }

    /// As [`Reporter::spawn`], calling `tick(previous, seconds since the last line)` each
    /// interval; `tick` returns whether it logged a line.
    fn spawn_with<F>(every: Duration, mut tick: F) -> Self
    where
        F: FnMut(&mut DeviceStats, f64) -> bool + Send + 'static,
    {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut prev = DeviceStats::default();
            let mut last = Instant::now();
            let (lock, wake) = &*stop2;
            let Ok(mut stopped) = lock.lock() else { return };
            let mut due = Instant::now() + every;
            loop {
                // Spurious wake-ups and early returns wait again for what is left.
                let left = due.saturating_duration_since(Instant::now());
                if !*stopped && !left.is_zero() {
                    match wake.wait_timeout(stopped, left) {
                        Ok((guard, _)) => stopped = guard,
                        Err(_) => return,
                    }
                    continue;
                }
                if *stopped {
                    return;
                }
                due += every;
                if due < Instant::now() {
                    due = Instant::now() + every; // behind (a slow tick): no burst to catch up
                }
                if tick(&mut prev, last.elapsed().as_secs_f64()) {
                    last = Instant::now();
                }
            }
        });
        Self { stop, thread }
    }

    /// Stops the thread at once (even in the middle of an interval) and waits for it.
    pub fn stop(self) {
        let (lock, wake) = &*self.stop;
        if let Ok(mut stopped) = lock.lock() {
            *stopped = true;
        }
        wake.notify_all();
        let _ = self.thread.join();
    }
}

/// Serves the connection made to `path` until QEMU hangs up (a hang-up is the normal end, as
/// with [`VhostUserDaemon::serve`]).
fn connect_and_wait(
    daemon: &mut VhostUserDaemon<Arc<RwLock<VdaqBackend>>>,
    path: &str,
) -> vhost_user_backend::Result<()> {
    use vhost::vhost_user::Error as VuError;
    use vhost_user_backend::Error;
    daemon.start_client(path)?;
    match daemon.wait() {
        Err(Error::HandleRequest(VuError::Disconnected | VuError::PartialMessage)) => Ok(()),
        other => other,
    }
}

/// Serves the next connection made to `listener` until QEMU hangs up (as
/// [`VhostUserDaemon::serve`] does, but the listener stays open for the next one).
fn accept_and_wait(
    daemon: &mut VhostUserDaemon<Arc<RwLock<VdaqBackend>>>,
    listener: &mut Listener,
) -> vhost_user_backend::Result<()> {
    use vhost::vhost_user::Error as VuError;
    use vhost_user_backend::Error;
    daemon.start(listener)?;
    match daemon.wait() {
        Err(Error::HandleRequest(VuError::Disconnected | VuError::PartialMessage)) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;

    fn temp_socket(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("vdaq-fd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join("s.sock")
    }

    #[test]
    fn the_reporter_stops_at_once_in_the_middle_of_an_interval() {
        let reporter =
            Reporter::spawn(Arc::default(), Duration::from_secs(3600), Reporting::default());
        std::thread::sleep(Duration::from_millis(20));
        let t = Instant::now();
        reporter.stop();
        assert!(t.elapsed() < Duration::from_millis(500), "stopped after {:?}", t.elapsed());
    }

    #[test]
    fn the_reporter_ticks_each_interval_until_stopped() {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&ticks);
        let start = Instant::now();
        let reporter = Reporter::spawn_with(Duration::from_millis(30), move |_, _| {
            if let Ok(mut t) = seen.lock() {
                t.push(start.elapsed());
            }
            true
        });
        std::thread::sleep(Duration::from_millis(200));
        reporter.stop();
        let n = ticks.lock().map(|t| t.len()).unwrap_or(0);
        assert!((3..=8).contains(&n), "{n} ticks in 200 ms at 30 ms");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(ticks.lock().map(|t| t.len()).unwrap_or(0), n, "none after stop");
        let first = ticks.lock().map(|t| t[0]).unwrap_or_default();
        assert!(first >= Duration::from_millis(30), "the first after one interval: {first:?}");
    }

    #[test]
    fn a_listening_unix_socket_is_taken_and_accepts() {
        let path = temp_socket("listen");
        let fd = UnixListener::bind(&path).expect("bind").into_raw_fd();
        // SAFETY: `fd` was just released by its only owner.
        let listener = unsafe { listener_from_fd(fd) }.expect("a listener");
        assert_eq!(listener.as_raw_fd(), fd);
        let _client = UnixStream::connect(&path).expect("connect");
        assert!(listener.accept().expect("accept").is_some());
        drop(listener);
        assert!(path.exists(), "an inherited socket's path is not removed");
        let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
    }

    #[test]
    fn other_descriptors_are_refused_by_kind() {
        // SAFETY: 0 to 2 are refused before anything is taken.
        assert!(matches!(unsafe { listener_from_fd(1) }, Err(FdError::Stdio(1))));
        // SAFETY: a negative number is refused before anything is taken.
        assert!(matches!(unsafe { listener_from_fd(-4) }, Err(FdError::NotOpen(-4))));
        let (a, _b) = UnixStream::pair().expect("pair");
        let fd = a.into_raw_fd();
        // SAFETY: `fd` was just released by its only owner.
        let e = unsafe { listener_from_fd(fd) }.err().expect("a connected socket is refused");
        assert!(matches!(e, FdError::Connected(n) if n == fd), "{e}");
        assert!(e.to_string().contains("a connected socket"), "{e}");
        let file = std::fs::File::open("/proc/self/status").expect("a file").into_raw_fd();
        // SAFETY: `file` was just released by its only owner.
        let e = unsafe { listener_from_fd(file) }.err().expect("a file is refused");
        assert!(matches!(e, FdError::NotUnixSocket(n) if n == file), "{e}");
        // Both were closed by the refusals: the numbers can be checked again as not open,
        // unless another test's thread reused them meanwhile, which a large number avoids.
        // SAFETY: nothing in this process has ~a million descriptors open.
        assert!(matches!(unsafe { listener_from_fd(999_999) }, Err(FdError::NotOpen(_))));
    }
}
