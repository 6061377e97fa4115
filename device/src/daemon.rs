//! Serving one vhost-user connection: the daemon, the stream timers and the statistics
//! reporter, shared by the binary and the tests.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use log::info;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::backend::{DeviceStats, VdaqBackend};
use crate::faults::FaultStats;
use crate::stream::StreamCaps;

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
                "stream {i} faults: {} dropped, {} errors, {} withheld, {} delayed, {} stalls, {} lies",
                f.dropped, f.errors, f.withheld, f.delayed, f.stalls, f.lies
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
    run_connection(Endpoint::Listen(socket), caps, stats_every, stats)
}

/// Which end of the vhost-user socket the device is.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    /// Listen on this path; QEMU connects (`-chardev socket,path=...`).
    Listen(&'a Path),
    /// Connect to QEMU listening on this path (`-chardev socket,path=...,server=on`).
    Connect(&'a Path),
}

/// Serves one connection at `endpoint` with fresh device state, publishing the statistics
/// into `stats`, and returns the final statistics.
pub fn run_connection(
    endpoint: Endpoint<'_>,
    caps: Vec<StreamCaps>,
    stats_every: Option<Duration>,
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
    let reporter = stats_every.map(|every| {
        let stats = Arc::clone(&stats);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut prev = DeviceStats::default();
            let mut last = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                std::thread::sleep(every);
                let now = stats.lock().map(|s| s.clone()).unwrap_or_default();
                if now.streams.is_empty() {
                    continue;
                }
                info!("{}", stats_line(&now, &prev, last.elapsed().as_secs_f64()));
                last = Instant::now();
                prev = now;
            }
        });
        (stop, thread)
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
    };
    if let Some((stop, thread)) = reporter {
        stop.store(true, Ordering::Relaxed);
        let _ = thread.join();
    }
    result?;
    let final_stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(final_stats)
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
