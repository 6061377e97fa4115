//! vdaq-device: serves the vdaq capture device to QEMU over vhost-user.

use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use clap::Parser;
use log::{error, info};
use vdaq_device::backend::{DeviceStats, VdaqBackend};
use vdaq_device::cli::Cli;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

fn stats_line(stats: &DeviceStats, prev: &DeviceStats, secs: f64) -> String {
    let mut parts = Vec::new();
    for (i, s) in stats.streams.iter().enumerate() {
        let before = prev.streams.get(i).map_or(0, |p| p.frames_delivered);
        let fps = (s.frames_delivered - before) as f64 / secs.max(1e-9);
        parts.push(format!(
            "stream {i}: {fps:.0} frames/s, {} frames, {} buffers, fifo {} B, xruns {} ({} frames lost)",
            s.frames_delivered, s.buffers_completed, stats.fifo_levels.get(i).copied().unwrap_or(0),
            s.xruns, s.frames_lost
        ));
    }
    format!("{}; rx interrupts {}", parts.join("; "), stats.rx_interrupts)
}

fn serve_one(cli: &Cli) -> Result<DeviceStats, String> {
    let caps = cli.stream_caps()?;
    let backend = VdaqBackend::new(caps).map_err(|e| format!("cannot create the device: {e}"))?;
    let timers = backend.timer_events();
    let stats = backend.stats_handle();
    let backend = Arc::new(RwLock::new(backend));
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon = VhostUserDaemon::new("vdaq-device".into(), backend, mem)
        .map_err(|e| format!("cannot create the vhost-user daemon: {e}"))?;
    let handler =
        daemon.get_epoll_handlers().into_iter().next().ok_or("the daemon has no worker thread")?;
    for (fd, data) in timers {
        handler
            .register_listener(fd, EventSet::IN, data)
            .map_err(|e| format!("cannot register a stream timer: {e}"))?;
    }
    let interval = (cli.stats_interval > 0.0).then(|| Duration::from_secs_f64(cli.stats_interval));
    let reporter = interval.map(|every| {
        let stats = Arc::clone(&stats);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut prev = DeviceStats::default();
            let mut last = Instant::now();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
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
    info!("listening on {}", cli.socket_path.display());
    let result =
        daemon.serve(&cli.socket_path).map_err(|e| format!("vhost-user connection failed: {e}"));
    if let Some((stop, thread)) = reporter {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = thread.join();
    }
    let _ = std::fs::remove_file(&cli.socket_path);
    result?;
    let final_stats = stats.lock().map(|s| s.clone()).unwrap_or_default();
    Ok(final_stats)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    if let Err(e) = cli.stream_caps() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    loop {
        match serve_one(&cli) {
            Ok(stats) => info!(
                "connection closed: {}",
                stats_line(&stats, &DeviceStats::default(), f64::INFINITY)
            ),
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        }
        if cli.once {
            return ExitCode::SUCCESS;
        }
    }
}
