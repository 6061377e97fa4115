//! `vdaq`: the vdaq guest app.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vdaq_proto::format::SampleFormat;

mod verify;

/// Capture tool for the vdaq virtual data-acquisition card.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a raw capture of the counter source: every channel carries the frame index, which
    /// grows by one per frame. Prints a JSON report; exits 1 when the capture is not clean.
    Verify {
        /// Sample format of the capture (u8, s16, s32, float, float64).
        #[arg(long, value_parser = parse_format)]
        format: SampleFormat,
        /// Channels per frame.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=255))]
        channels: u16,
        /// Fail unless the capture holds exactly this many frames.
        #[arg(long)]
        frames: Option<u64>,
        /// Fail unless the first frame carries this counter value.
        #[arg(long)]
        first: Option<u64>,
        /// Raw capture file (interleaved frames).
        file: PathBuf,
    },
}

fn parse_format(s: &str) -> Result<SampleFormat, String> {
    SampleFormat::from_name(s)
        .ok_or_else(|| format!("unknown format '{s}' (u8, s16, s32, float, float64)"))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Verify { format, channels, frames, first, file } => {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("vdaq: cannot read {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let report = verify::verify_counter(&bytes, format, usize::from(channels));
            println!("{}", report.to_json());
            let mut ok = report.is_clean();
            if let Some(p) = &report.first_problem {
                eprintln!("vdaq: {}: {p}", file.display());
            }
            if let Some(want) = frames.filter(|&n| n != report.frames) {
                eprintln!("vdaq: {}: {} frames, expected {want}", file.display(), report.frames);
                ok = false;
            }
            if let Some(want) = first.filter(|&v| Some(v) != report.first) {
                eprintln!(
                    "vdaq: {}: first counter {:?}, expected {want}",
                    file.display(),
                    report.first
                );
                ok = false;
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
