// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! vdaq-device: serves the vdaq capture device to QEMU over vhost-user.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use log::{error, info, warn};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::geteuid;
use vdaq_device::backend::DeviceStats;
use vdaq_device::cli::{wants_capabilities, Cli, Socket, CAPABILITIES};
use vdaq_device::daemon::{listener_from_fd, run_connection, stats_line, Endpoint, Reporting};

/// Handles SIGUSR1 (statistics now) and SIGINT/SIGTERM (final summary, our socket removed, exit)
/// on a thread of its own; the signals are blocked everywhere else. Both rewrite the statistics
/// file, if there is one.
fn handle_signals(
    stats: Arc<Mutex<DeviceStats>>,
    reporting: Reporting,
    own_socket: Option<std::path::PathBuf>,
) -> Result<(), String> {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR1] {
        set.add(s);
    }
    set.thread_block().map_err(|e| format!("cannot block signals: {e}"))?;
    std::thread::spawn(move || loop {
        let Ok(sig) = set.wait() else { continue };
        let now = stats.lock().map(|s| s.clone()).unwrap_or_default();
        let line = stats_line(&now, &DeviceStats::default(), f64::INFINITY);
        // The line first: tests mark the log around a SIGUSR1 and expect it at once.
        if sig == Signal::SIGUSR1 {
            info!("statistics: {line}");
            reporting.write_json(&now);
            continue;
        }
        info!("{sig}: stopping; totals: {line}");
        reporting.write_json(&now);
        if let Some(socket) = &own_socket {
            let _ = std::fs::remove_file(socket);
        }
        std::process::exit(0);
    });
    Ok(())
}

fn main() -> ExitCode {
    // QEMU's backend program conventions: print the capabilities and exit, whatever else the
    // arguments say.
    if wants_capabilities(std::env::args_os()) {
        println!("{CAPABILITIES}");
        return ExitCode::SUCCESS;
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Whoever connects to the socket hands the device guest memory and gets its frames: the
    // socket (created with this mask) is for this user only.
    umask(Mode::from_bits_truncate(0o077));
    let cli = Cli::parse();
    if geteuid().is_root() {
        warn!("running as root: vdaq-device needs no privileges; an unprivileged user will do");
    }
    let settings = match cli.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let stats: Arc<Mutex<DeviceStats>> = Arc::default();
    let reporting = Reporting { every: settings.stats_every, json: settings.stats_json.clone() };
    // The statistics file exists from the start (zeros until a driver connects), and a path
    // that cannot be written is refused now rather than warned about later.
    if let Some(path) = &reporting.json {
        if let Err(e) = vdaq_device::statsfile::write(path, &DeviceStats::default()) {
            eprintln!("error: --stats-json {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    // The socket is ours to remove only when we created it.
    let own_socket = match &settings.socket {
        Socket::Listen(path) => Some(path.clone()),
        Socket::Connect(_) | Socket::Fd(_) => None,
    };
    let mut inherited = match settings.socket {
        // SAFETY: the descriptor is the one the parent passed for this purpose (--fd); nothing
        // in this process opened or owns it, and it is taken once, here.
        Socket::Fd(fd) => match unsafe { listener_from_fd(fd) } {
            Ok(listener) => Some(listener),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    if let Err(e) = handle_signals(Arc::clone(&stats), reporting.clone(), own_socket) {
        error!("{e}");
        return ExitCode::FAILURE;
    }
    loop {
        // Each connection gets a fresh device (QEMU restarted or reconnected).
        if let Ok(mut s) = stats.lock() {
            *s = DeviceStats::default();
        }
        let endpoint = match (&settings.socket, inherited.as_mut()) {
            (Socket::Listen(path), _) => Endpoint::Listen(path),
            (Socket::Connect(path), _) => Endpoint::Connect(path),
            (Socket::Fd(_), Some(listener)) => Endpoint::Inherited(listener),
            (Socket::Fd(fd), None) => {
                error!("--fd {fd}: the socket was not taken");
                return ExitCode::FAILURE;
            }
        };
        match run_connection(endpoint, settings.streams.clone(), &reporting, Arc::clone(&stats)) {
            Ok(stats) => info!(
                "connection closed: {}",
                stats_line(&stats, &DeviceStats::default(), f64::INFINITY)
            ),
            Err(e) => {
                error!("{e}");
                return ExitCode::FAILURE;
            }
        }
        if settings.once {
            return ExitCode::SUCCESS;
        }
    }
}
