// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq`: the vdaq guest app.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vdaq_proto::format::SampleFormat;

mod analyze;
mod bench;
mod capture;
mod checkspeed;
mod feed;
mod histogram;
mod mmap;
mod mmaphold;
mod output;
mod report;
mod selftest;
mod stress;
mod sys;
mod verify;

/// Capture tool for the vdaq virtual data-acquisition card (/dev/vdaqN, the vdaq.ko driver).
///
/// Examples:
///   vdaq info                                 what /dev/vdaq0 offers
///   vdaq capture -d 10 run.wav                10 s to a WAV file (counter checked)
///   vdaq capture -s 48000 -r 48000 -c 8 -f S32_LE run.csv
///   vdaq capture -D /dev/vdaq1 - | sox ...    frames to standard output, until Ctrl-C
///   vdaq monitor                              live rates, losses and latency until Ctrl-C
///   vdaq bench -d 5                           latency by SIGIO, SIGRTMIN+1, poll, read, mmap
///
/// Shell completions and man pages: `vdaq completions bash|zsh|fish`, `vdaq man [--dir DIR]`.
#[derive(Debug, Parser)]
#[command(name = "vdaq", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what the device offers and the current parameters (VDAQ_IOC_INFO) as JSON.
    Info {
        /// Device node.
        #[arg(short = 'D', long, default_value = "/dev/vdaq0")]
        device: String,
    },
    /// Capture from a vdaq device, by default asynchronously: the driver raises SIGIO (or,
    /// with --rt-signal, a queued realtime signal carrying si_fd and si_band) for each
    /// interrupt that completed periods, and the handler drains every ready period. Optionally
    /// writes the frames to a file. Checks the counter channel and prints a summary (--json:
    /// one line of JSON); exits 1 on an error, lost (unannounced), repeated or corrupt frames,
    /// 2 when it cannot start (no device, busy, bad parameters).
    Capture {
        #[command(flatten)]
        opts: capture::Options,
        /// Name of the device's interrupt line in /proc/interrupts (e.g. virtio1), to report
        /// its increase.
        #[arg(long)]
        irq_name: Option<String>,
    },
    /// Capture until Ctrl-C (or --seconds/--frames), printing each second the frames/s,
    /// periods, signals, lost frames, the driver's ring fill and the latency; then the summary.
    Monitor {
        #[command(flatten)]
        opts: capture::Options,
    },
    /// Compare the ways of being told that periods are ready: a capture each by SIGIO,
    /// SIGRTMIN+1 (F_SETSIG), poll(), blocking reads and SIGIO with the ring mapped (mmap, zero
    /// copy), with the same parameters; prints the latency (interrupt timestamp to read) and
    /// its log2 histogram for each.
    Bench {
        #[command(flatten)]
        opts: capture::Options,
    },
    /// Print the stream's driver statistics since the device was bound (VDAQ_IOC_STATS) as
    /// JSON.
    Stats {
        /// Device node.
        #[arg(short = 'D', long, default_value = "/dev/vdaq0")]
        device: String,
    },
    /// Check the /dev/vdaqN user API (errors, states, poll, read rules); prints TAP and exits 1
    /// on any failure. Needs the device to itself.
    Selftest {
        /// Device node.
        #[arg(short = 'D', long, default_value = "/dev/vdaq0")]
        device: String,
    },
    /// Use one stream from several threads at once for --seconds. `threads` (default): a
    /// started stream with blocking reads (counter checked), O_ASYNC on and off, STATS and INFO
    /// ioctls, poll(), and second opens (EBUSY each). `async-race`: threads set and clear
    /// O_ASYNC at once, then every signal the driver counts as sent must arrive. `start-stop`:
    /// START and STOP as fast as they go. Prints JSON; exits 1 on an unexpected error, an
    /// unannounced loss or a lost signal.
    Stress {
        /// Device node.
        #[arg(short = 'D', long, default_value = "/dev/vdaq0")]
        device: String,
        /// How long.
        #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
        seconds: f64,
        /// What to do to the stream.
        #[arg(long, value_enum, default_value_t = stress::Mode::Threads)]
        mode: stress::Mode,
    },
    /// Check a raw capture of the counter source: every channel carries the frame index, which
    /// grows by one per frame. Prints a JSON report; exits 1 when the capture is not clean.
    Verify {
        /// Sample format of the capture.
        #[arg(short, long, value_enum, ignore_case = true)]
        format: FormatArg,
        /// Channels per frame.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=255))]
        channels: u16,
        /// Fail unless the capture holds exactly this many frames.
        #[arg(long)]
        frames: Option<u64>,
        /// Fail unless the first frame carries this counter value.
        #[arg(long)]
        first: Option<u64>,
        /// Recoveries announced during the capture (e.g. arecord's `overrun!!!` lines): up to
        /// this many restarts of the counter at 0 (each PREPARE starts a new acquisition) are
        /// clean; any other break still fails.
        #[arg(long, visible_alias = "allow-restarts", default_value_t = 0)]
        restarts_allowed: u64,
        /// Raw capture file (interleaved frames).
        file: PathBuf,
    },
    /// Analyse one channel of a raw capture: frequency (by crossings of the mean), range and
    /// mean, as JSON.
    Analyze {
        /// Sample format of the capture.
        #[arg(short, long, value_enum, ignore_case = true)]
        format: FormatArg,
        /// Channels per frame.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=255))]
        channels: u16,
        /// The channel to analyse (0 first).
        #[arg(long, default_value_t = 0)]
        channel: u16,
        /// Frame rate of the capture in Hz.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// Raw capture file.
        file: PathBuf,
    },
    /// Measure this machine's memory copy bandwidth (64 MiB buffers, about a second) and print
    /// it as JSON: the limit of any read() path, for the benchmarks.
    CopyBandwidth,
    /// Measure the counter check's throughput beside a memory copy of the same buffer, for
    /// every format with 1, 2, 8 and 32 channels (and the frame-by-frame check it replaced),
    /// in MB/s: a table, or one line of JSON.
    #[command(hide = true)]
    CheckBandwidth {
        /// Bytes per buffer.
        #[arg(long, default_value_t = 4 << 20)]
        bytes: usize,
        /// Frames per period (the check runs period by period, as in a capture).
        #[arg(long, default_value_t = 1024)]
        period_frames: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 0.3, value_parser = parse_seconds)]
        seconds: f64,
        /// Channel counts to measure.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 8, 32])]
        channels: Vec<usize>,
        /// Print one line of JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print this machine's TSC frequency in kHz, measured against CLOCK_MONOTONIC over
    /// 200 ms (host side: a TCG guest reads the host's TSC, and is told its frequency so that
    /// it does not calibrate it under load).
    #[command(hide = true)]
    TscKhz,
    /// Write the counter signal for a backend that reads samples from a file (the benchmarks'
    /// peer, vhost-device-sound through ALSA's file plugin): --frames of it into a regular
    /// file, or, into a FIFO, one period per period time until the parent process ends.
    #[command(hide = true)]
    Feed {
        /// Sample format.
        #[arg(short, long, value_enum, ignore_case = true)]
        format: FormatArg,
        /// Channels per frame.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=255))]
        channels: u16,
        /// Frame rate in Hz (the FIFO's pace).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=768_000))]
        rate: u32,
        /// Frames per write into a FIFO: the reader's period, so that it reads whole writes.
        #[arg(long, default_value_t = 4800, value_parser = clap::value_parser!(u32).range(1..=262_144))]
        period_frames: u32,
        /// Write this many frames into a regular file instead, at once.
        #[arg(long)]
        frames: Option<u64>,
        /// The FIFO (or, with --frames, the file) to write.
        path: PathBuf,
    },
    /// Device removal while the ring is mapped: map it, start, wait for --periods periods,
    /// write 1 to --remove-path (/sys/bus/pci/devices/<bdf>/remove), then read every page of
    /// the mapping and check the periods still published there (counter exact) and that the
    /// ioctls give ENODEV. Prints JSON; exits 0 when all held, 1 otherwise.
    #[command(hide = true)]
    MmapHold {
        /// Device node.
        #[arg(short = 'D', long, default_value = "/dev/vdaq0")]
        device: String,
        /// The sysfs file that removes the device.
        #[arg(long)]
        remove_path: PathBuf,
        /// Periods to wait for before the removal (at most the ring's).
        #[arg(long, default_value_t = 4)]
        periods: u64,
    },
    /// Print a shell completion script for SHELL (bash, zsh, fish, elvish, powershell) to
    /// standard output, from these definitions: e.g. `vdaq completions bash
    /// >/etc/bash_completion.d/vdaq`.
    #[command(hide = true)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page vdaq(1) to standard output, or with --dir write vdaq.1 and a
    /// vdaq-COMMAND.1 per command there (e.g. /usr/local/share/man/man1).
    #[command(hide = true)]
    Man {
        /// Write every page into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

/// A duration flag: seconds, more than 0 and below a million.
pub fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1e6 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds (below a million)")),
    }
}

/// A sample format on the command line: vdaq's names or ALSA's (as arecord takes them), in any
/// case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// Unsigned 8-bit (ALSA: U8).
    U8,
    /// Signed 16-bit little-endian (ALSA: S16_LE).
    #[value(alias = "s16_le")]
    S16,
    /// Signed 32-bit little-endian (ALSA: S32_LE).
    #[value(alias = "s32_le")]
    S32,
    /// IEEE 754 single precision (ALSA: FLOAT_LE).
    #[value(alias = "float_le")]
    Float,
    /// IEEE 754 double precision (ALSA: FLOAT64_LE).
    #[value(alias = "float64_le")]
    Float64,
}

impl From<FormatArg> for SampleFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::U8 => SampleFormat::U8,
            FormatArg::S16 => SampleFormat::S16,
            FormatArg::S32 => SampleFormat::S32,
            FormatArg::Float => SampleFormat::Float,
            FormatArg::Float64 => SampleFormat::Float64,
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "vdaq", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man { dir } => match man_pages(dir.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vdaq man: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Analyze { format, channels, channel, rate, file } => {
            if channel >= channels {
                eprintln!("vdaq: --channel {channel} is not below --channels {channels}");
                return ExitCode::from(2);
            }
            match std::fs::read(&file) {
                Ok(bytes) => {
                    let a = analyze::analyze(
                        &bytes,
                        format.into(),
                        usize::from(channels),
                        usize::from(channel),
                        rate,
                    );
                    match a.map(|a| serde_json::to_string(&a)) {
                        Some(Ok(json)) => {
                            println!("{json}");
                            ExitCode::SUCCESS
                        }
                        Some(Err(e)) => {
                            eprintln!("vdaq: {e}");
                            ExitCode::FAILURE
                        }
                        None => {
                            eprintln!("vdaq: {}: no whole frame to analyse", file.display());
                            ExitCode::FAILURE
                        }
                    }
                }
                Err(e) => {
                    eprintln!("vdaq: cannot read {}: {e}", file.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::Stress { device, seconds, mode } => {
            ExitCode::from(stress::run(&device, seconds, mode))
        }
        Command::Feed { format, channels, rate, period_frames, frames, path } => {
            let signal =
                feed::Signal { format: format.into(), channels: usize::from(channels), rate };
            let result = match frames {
                Some(n) => feed::to_file(&path, signal, n),
                None => feed::to_fifo(&path, signal, period_frames as usize),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vdaq feed: {}: {e}", path.display());
                    ExitCode::from(2)
                }
            }
        }
        Command::CopyBandwidth => {
            let (bytes_per_s, seconds) = copy_bandwidth();
            println!(
                "{}",
                serde_json::json!({"copy_bytes_per_s": bytes_per_s, "seconds": seconds})
            );
            ExitCode::SUCCESS
        }
        Command::CheckBandwidth { bytes, period_frames, seconds, channels, json } => {
            let channels: Vec<usize> = channels.into_iter().map(|c| c.clamp(1, 255)).collect();
            match checkspeed::measure(bytes.max(1), seconds, period_frames, &channels) {
                Ok(speeds) if json => {
                    println!("{}", checkspeed::to_json(&speeds, bytes, period_frames));
                    ExitCode::SUCCESS
                }
                Ok(speeds) => {
                    print!("{}", checkspeed::table(&speeds));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vdaq check-bandwidth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::TscKhz => match sys::tsc_khz() {
            Some(khz) => {
                println!("{khz}");
                ExitCode::SUCCESS
            }
            None => {
                eprintln!("vdaq: no TSC on this architecture");
                ExitCode::FAILURE
            }
        },
        Command::MmapHold { device, remove_path, periods } => {
            match mmaphold::run(&device, &remove_path, periods) {
                Ok(json) => {
                    println!("{json}");
                    ExitCode::SUCCESS
                }
                Err(why) => {
                    println!("{why}");
                    eprintln!("vdaq mmap-hold: failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Selftest { device } => {
            if selftest::run(&device) == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Command::Stats { device } => {
            let stats = std::fs::File::open(&device)
                .map_err(|e| capture::open_error(&device, e))
                .and_then(|f| {
                    use std::os::fd::AsRawFd;
                    sys::driver_stats(f.as_raw_fd())
                });
            match stats {
                Ok(s) => {
                    println!("{}", capture::stats_json(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vdaq: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Info { device } => match info(&device) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vdaq: {e}");
                ExitCode::from(2)
            }
        },
        Command::Capture { opts, irq_name } => capture_command(&opts, irq_name.as_deref(), true),
        Command::Monitor { mut opts } => {
            opts.live = true;
            capture_command(&opts, None, true)
        }
        Command::Bench { opts } => bench::run(&opts),
        Command::Verify { format, channels, frames, first, restarts_allowed, file } => {
            let bytes = match std::fs::read(&file) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("vdaq: cannot read {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let report = verify::verify_counter_with_restarts(
                &bytes,
                format.into(),
                usize::from(channels),
                restarts_allowed,
            );
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

/// The man pages from the clap definitions: vdaq(1) to standard output, or every page
/// (vdaq.1, vdaq-capture.1, ...) into `dir`.
fn man_pages(dir: Option<&std::path::Path>) -> std::io::Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout()),
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            clap_mangen::generate_to(cmd, dir)
        }
    }
}

/// Copies 64 MiB buffers for about a second; returns bytes per second and the time taken.
/// One copy before the clock starts maps the destination's pages: a fresh allocation's first
/// touch costs a page fault per page, which is not copying.
fn copy_bandwidth() -> (f64, f64) {
    const SIZE: usize = 64 << 20;
    let src: Vec<u8> = (0..SIZE).map(|i| i as u8).collect();
    let mut dst = vec![0u8; SIZE];
    dst.copy_from_slice(&src);
    let start = std::time::Instant::now();
    let mut bytes = 0u64;
    while start.elapsed() < std::time::Duration::from_secs(1) {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        bytes += SIZE as u64;
    }
    let seconds = start.elapsed().as_secs_f64();
    (bytes as f64 / seconds, seconds)
}

/// Runs a capture and prints its summary; the exit status says whether it did what was asked.
fn capture_command(
    opts: &capture::Options,
    irq_name: Option<&str>,
    until_interrupted: bool,
) -> ExitCode {
    if opts.frames == Some(0) {
        eprintln!("vdaq: --frames must be at least 1");
        return ExitCode::from(2);
    }
    match capture::run(opts, irq_name, until_interrupted) {
        Ok(s) => {
            // With the frames on standard output, the summary goes to standard error.
            let summary = if opts.json { format!("{}\n", s.to_json()) } else { s.to_text() };
            if opts.to_stdout() {
                eprint!("{summary}");
            } else {
                print!("{summary}");
            }
            if let Some(p) = &s.counter.first_problem {
                eprintln!("vdaq: first problem: {p}");
            }
            if let Some(e) = &s.error {
                eprintln!("vdaq: {}: {e}", opts.device);
            }
            if s.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vdaq: {e}");
            ExitCode::from(2)
        }
    }
}

/// VDAQ_IOC_INFO as JSON.
fn info(device: &str) -> std::io::Result<String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(device).map_err(|e| capture::open_error(device, e))?;
    let i: vdaq_proto::uapi::Info =
        sys::ioctl_read(file.as_raw_fd(), vdaq_proto::uapi::VDAQ_IOC_INFO)?;
    let (rates, formats) = capture::offered(&i);
    let info = report::InfoJson {
        streams: i.streams,
        stream: i.stream,
        formats,
        rates,
        channels_min: i.channels_min,
        channels_max: i.channels_max,
        max_periods: i.max_periods,
        max_period_bytes: i.max_period_bytes,
        params: report::ParamsJson::from(&i.params),
        started: i.started != 0,
    };
    serde_json::to_string(&info).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture_opts(args: &[&str]) -> capture::Options {
        let mut argv = vec!["vdaq", "capture"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|c| c.command) {
            Ok(Command::Capture { opts, .. }) => opts,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn capture_takes_arecord_flags() {
        let o = capture_opts(&["-D", "/dev/vdaq1", "-r", "48000", "-c", "2", "-f", "S16_LE"]);
        assert_eq!(o.device, "/dev/vdaq1");
        assert_eq!((o.rate, o.channels, o.format), (Some(48000), Some(2), Some(FormatArg::S16)));
        let o = capture_opts(&["-d", "2.5", "-t", "wav", "out.wav"]);
        assert_eq!(o.seconds, Some(2.5));
        assert_eq!(o.output_path(), Some(std::path::Path::new("out.wav")));
        let o = capture_opts(&["-s", "4800", "-"]);
        assert_eq!(o.frames, Some(4800));
        assert!(o.to_stdout());
        for (name, want) in [
            ("U8", FormatArg::U8),
            ("s32_le", FormatArg::S32),
            ("FLOAT_LE", FormatArg::Float),
            ("FLOAT64_LE", FormatArg::Float64),
            ("float64", FormatArg::Float64),
        ] {
            assert_eq!(capture_opts(&["-f", name]).format, Some(want), "{name}");
        }
    }

    #[test]
    fn capture_keeps_its_long_flags() {
        let o = capture_opts(&[
            "--device",
            "/dev/vdaq2",
            "--seconds",
            "1",
            "--json",
            "--format",
            "s32",
            "--rate",
            "8000",
            "--channels",
            "3",
            "--period-bytes",
            "1200",
            "--periods",
            "4",
            "-o",
            "x.raw",
        ]);
        assert_eq!(o.device, "/dev/vdaq2");
        assert_eq!(o.seconds, Some(1.0));
        assert!(o.json);
        assert_eq!(o.output_path(), Some(std::path::Path::new("x.raw")));
        assert_eq!(capture_opts(&["--frames", "10"]).frames, Some(10));
        assert_eq!(capture_opts(&["--duration", "3"]).seconds, Some(3.0));
        assert!(Cli::try_parse_from(["vdaq", "capture", "--frames", "0"]).is_err());
        assert!(Cli::try_parse_from(["vdaq", "capture", "-o", "a", "b"]).is_err());
        assert!(Cli::try_parse_from(["vdaq", "capture", "-d", "1", "-s", "2"]).is_err());
    }

    #[test]
    fn sizes_in_frames_become_bytes_and_periods() {
        let current = vdaq_proto::uapi::Params {
            rate: 48000,
            channels: 2,
            format: u32::from(SampleFormat::S16.wire_code()),
            period_bytes: 4096,
            periods: 16,
            ..Default::default()
        };
        let o = capture_opts(&["--period-size", "256", "--buffer-size", "2048", "-c", "4"]);
        let p = capture::requested_params(&o, &current).unwrap().unwrap();
        assert_eq!((p.period_bytes, p.periods, p.channels), (256 * 4 * 2, 8, 4));
        let o = capture_opts(&["--period-size", "256", "--buffer-size", "1000"]);
        assert!(capture::requested_params(&o, &current).is_err());
        assert!(capture::requested_params(&capture_opts(&[]), &current).unwrap().is_none());
        let o = capture_opts(&["--period-bytes", "400", "--buffer-size", "1000"]);
        assert_eq!(capture::requested_params(&o, &current).unwrap().unwrap().periods, 10);
    }

    #[test]
    fn version_is_the_workspace_version() {
        use clap::CommandFactory;
        let version = Cli::command().render_version();
        assert_eq!(version, format!("vdaq {}\n", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn commands_come_in_the_order_a_user_needs_them() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let shown: Vec<&str> =
            cmd.get_subcommands().filter(|c| !c.is_hide_set()).map(|c| c.get_name()).collect();
        assert_eq!(
            shown,
            [
                "info",
                "capture",
                "monitor",
                "bench",
                "stats",
                "selftest",
                "stress",
                "verify",
                "analyze",
                "copy-bandwidth"
            ]
        );
    }

    #[test]
    fn completions_and_man_pages_come_from_the_definitions() {
        use clap::CommandFactory;
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "vdaq", &mut out);
        let bash = String::from_utf8(out).unwrap();
        assert!(bash.contains("--period-size") && bash.contains("capture"));
        let mut page = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.contains("vdaq") && page.contains("capture"));
        let dir = std::env::temp_dir().join(format!("vdaq-man-{}", std::process::id()));
        man_pages(Some(&dir)).unwrap();
        assert!(dir.join("vdaq-capture.1").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
