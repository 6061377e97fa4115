//! vdaq-device: serves the vdaq capture device to QEMU over vhost-user.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use log::{error, info};
use vdaq_device::backend::DeviceStats;
use vdaq_device::cli::Cli;
use vdaq_device::daemon::{serve_connection, stats_line};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let caps = match cli.stream_caps() {
        Ok(caps) => caps,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let stats_every =
        (cli.stats_interval > 0.0).then(|| Duration::from_secs_f64(cli.stats_interval));
    loop {
        match serve_connection(&cli.socket_path, caps.clone(), stats_every) {
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
