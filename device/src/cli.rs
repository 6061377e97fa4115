//! Command line of the vdaq-device daemon: flags over an optional TOML file.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{self, ChannelConfig, FileConfig, StreamConfig};
use crate::stream::StreamCaps;

/// A vhost-user backend emulating a data-acquisition card over the virtio-sound capture
/// protocol. QEMU connects with `-device vhost-user-snd-pci`; each capture stream delivers
/// frames at the rate the guest driver sets, paced by CLOCK_MONOTONIC, from a signal source
/// per channel.
///
/// Settings come from --config FILE (TOML, see the README) and then from flags, which win.
/// SIGUSR1 prints the statistics; SIGINT and SIGTERM stop the daemon cleanly.
/// It follows QEMU's vhost-user backend program conventions (--socket-path, --fd,
/// --print-capabilities; the descriptor 50-vdaq-device.json).
///
/// Environment:
///   RUST_LOG   what is logged (env_logger's filter; to standard error): error, warn,
///              info (the default), debug or trace, or per module, e.g.
///              RUST_LOG=vdaq_device=debug,vhost_user_backend=warn
///
/// Examples:
///   vdaq-device --socket-path /tmp/vdaq.sock --stats-interval 1
///   vdaq-device --socket-path /tmp/vdaq.sock --signal sine --frequency 1000 \
///       --units volts --full-scale 10 --amplitude 5
///   vdaq-device --config daq.toml --channels-max 32
///
/// and QEMU:
///   qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=512M,share=on \
///       -machine q35,memory-backend=mem -chardev socket,id=c0,path=/tmp/vdaq.sock \
///       -device vhost-user-snd-pci,chardev=c0
#[derive(Debug, Parser)]
#[command(version, verbatim_doc_comment)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Unix socket to listen on for QEMU's vhost-user connection.
    #[arg(short = 's', long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Option<PathBuf>,
    /// Listen on the socket the parent process passed as this descriptor instead of
    /// creating one (a listening Unix socket; it is never removed). Excludes --socket-path.
    #[arg(long, value_name = "FDNUM", conflicts_with = "connect")]
    pub fd: Option<RawFd>,
    /// Print the backend's capabilities (JSON, as vhost-user.json describes them) and exit;
    /// every other argument is ignored.
    #[arg(long)]
    pub print_capabilities: bool,
    /// Number of capture streams (default: the file's, else 1); extra streams repeat the last.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub streams: Option<u8>,
    /// Sample formats offered (comma-separated: u8, s16, s32, float, float64; default: all).
    #[arg(long, value_delimiter = ',')]
    pub formats: Option<Vec<String>>,
    /// Frame rates offered in Hz (comma-separated, from the virtio-snd table; default: all).
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<i64>>,
    /// Fewest channels a stream accepts (default 1).
    #[arg(long)]
    pub channels_min: Option<i64>,
    /// Most channels a stream accepts (default 8, at most 255).
    #[arg(long)]
    pub channels_max: Option<i64>,
    /// Signal on every channel: counter, sine, square, triangle, sawtooth, dc, noise, replay.
    /// The flags below up to --file describe it and need it.
    #[arg(long)]
    pub signal: Option<String>,
    /// Frequency in Hz of --signal.
    #[arg(long, requires = "signal")]
    pub frequency: Option<f64>,
    /// Amplitude of --signal.
    #[arg(long, allow_hyphen_values = true, requires = "signal")]
    pub amplitude: Option<f64>,
    /// Offset of --signal.
    #[arg(long, allow_hyphen_values = true, requires = "signal")]
    pub offset: Option<f64>,
    /// Phase of --signal in degrees.
    #[arg(long, allow_hyphen_values = true, requires = "signal")]
    pub phase: Option<f64>,
    /// Duty cycle of --signal square (0 to 1).
    #[arg(long, requires = "signal")]
    pub duty: Option<f64>,
    /// Seed of --signal noise.
    #[arg(long, requires = "signal")]
    pub seed: Option<u64>,
    /// Distribution of --signal noise: uniform or gaussian.
    #[arg(long, requires = "signal")]
    pub distribution: Option<String>,
    /// Recording for --signal replay (wav, csv or raw by extension).
    #[arg(long, requires = "signal")]
    pub file: Option<PathBuf>,
    /// Units of the values: codes (of the format) or volts (with --full-scale).
    #[arg(long)]
    pub units: Option<String>,
    /// Volts at full scale with --units volts (default 10).
    #[arg(long)]
    pub full_scale: Option<f64>,
    /// Deliver frames as fast as the guest posts buffers instead of at the sample rate
    /// (throughput benchmarks).
    #[arg(long)]
    pub free_run: bool,
    /// Log a statistics line every this many seconds (0: never).
    #[arg(long, value_name = "SECONDS")]
    pub stats_interval: Option<f64>,
    /// Fault injection, every stream: lose every Nth period produced (a forced overrun).
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub fault_drop_every: Option<i64>,
    /// Complete every Nth buffer with VIRTIO_SND_S_IO_ERR and no frames.
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub fault_error_every: Option<i64>,
    /// Complete every Nth buffer without notifying the driver.
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub fault_withhold_every: Option<i64>,
    /// Hold each period this long before completing it.
    #[arg(long, value_name = "MS", help_heading = "Fault injection")]
    pub fault_delay_ms: Option<f64>,
    /// Plus a random delay below this (from --fault-seed).
    #[arg(long, value_name = "MS", help_heading = "Fault injection")]
    pub fault_jitter_ms: Option<f64>,
    /// Seed of --fault-jitter-ms (default 0).
    #[arg(long, value_name = "SEED", help_heading = "Fault injection")]
    pub fault_seed: Option<u64>,
    /// Complete nothing for --fault-stall-ms from this long after each START (default 0).
    #[arg(long, value_name = "MS", help_heading = "Fault injection")]
    pub fault_stall_at_ms: Option<f64>,
    /// Length of the stall.
    #[arg(long, value_name = "MS", help_heading = "Fault injection")]
    pub fault_stall_ms: Option<f64>,
    /// Status of --fault-error-every's completions: io_err (default), bad_msg, not_supp or
    /// any number (e.g. 0x1234, not a status the spec has).
    #[arg(long, value_name = "STATUS", help_heading = "Fault injection")]
    pub fault_status: Option<String>,
    /// A lying device: report used lengths N bytes (1 to 16 MiB) past what was written, on rx
    /// completions and control responses (nothing is written past the buffer).
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub fault_used_len_extra: Option<i64>,
    /// A lying device: report used lengths of L bytes (0 to 7), shorter than the status
    /// written (control responses: at most 3).
    #[arg(long, value_name = "L", help_heading = "Fault injection")]
    pub fault_used_len_short: Option<i64>,
    /// Lie about the used length on every Nth rx completion and control response (default 1).
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub fault_lie_every: Option<i64>,
    /// With each completed period, up to N (1 to 64) spurious events while event buffers
    /// wait: XRUNs for this stream and for one that does not exist, an unknown event code,
    /// PCM_PERIOD_ELAPSED.
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub fault_event_flood: Option<i64>,
    /// With each completed period, N (1 to 64) extra notifications on the rx and control
    /// queues with nothing new in their used rings.
    #[arg(long, value_name = "N", help_heading = "Fault injection")]
    pub fault_spurious_notify: Option<i64>,
    /// Serve one connection, then exit (default: serve connections until stopped).
    #[arg(long)]
    pub once: bool,
    /// Connect to QEMU listening on --socket-path (`-chardev socket,...,server=on`) instead of
    /// listening; after QEMU hangs up, connect again (unless --once).
    #[arg(long)]
    pub connect: bool,
}

/// The capabilities `--print-capabilities` prints (QEMU's docs/interop/vhost-user.json,
/// `VHostUserBackendCapabilities`): the virtio device type (`VIRTIO_ID_SOUND`'s name in
/// lower case, as the conventions name backends), no type-specific features.
pub const CAPABILITIES: &str = r#"{"type": "sound", "features": []}"#;

/// Whether the arguments ask for `--print-capabilities`, which the conventions want obeyed
/// whatever else is given (so it is looked for before the other arguments are parsed).
pub fn wants_capabilities<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(args: I) -> bool {
    args.into_iter()
        .skip(1)
        .take_while(|a| a.as_ref() != "--")
        .any(|a| a.as_ref() == "--print-capabilities")
}

/// Where the daemon meets QEMU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Socket {
    /// Listen on this path (created, and removed on exit).
    Listen(PathBuf),
    /// Connect to QEMU listening on this path.
    Connect(PathBuf),
    /// Listen on the socket the parent passed as this descriptor.
    Fd(RawFd),
}

/// Everything the daemon needs, validated.
#[derive(Debug)]
pub struct Settings {
    /// The vhost-user socket.
    pub socket: Socket,
    /// Streams.
    pub streams: Vec<StreamCaps>,
    /// Statistics line period.
    pub stats_every: Option<Duration>,
    /// Serve one connection only.
    pub once: bool,
}

impl Cli {
    /// Merges the file (if any) and the flags; errors name the field or flag.
    pub fn settings(&self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => config::read_file(path)?,
            None => FileConfig::default(),
        };
        let base =
            self.config.as_ref().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default();
        // --fd wins over the file's socket_path as the flags win over the file.
        let socket = match (self.fd, self.socket_path.clone().or(file.socket_path.clone())) {
            (Some(fd), _) => Socket::Fd(fd),
            (None, Some(path)) if self.connect => Socket::Connect(path),
            (None, Some(path)) => Socket::Listen(path),
            (None, None) => {
                return Err("--socket-path (or socket_path in the file) or --fd is required".into())
            }
        };
        let stats = self.stats_interval.or(file.stats_interval).unwrap_or(0.0);
        if !stats.is_finite() || stats < 0.0 {
            return Err(format!("--stats-interval {stats} must be 0 or more seconds"));
        }
        let mut streams =
            if file.streams.is_empty() { vec![StreamConfig::default()] } else { file.streams };
        if let Some(n) = self.streams {
            let last = streams.last().cloned().unwrap_or_default();
            streams.resize(usize::from(n), last);
        }
        for s in &mut streams {
            if self.formats.is_some() {
                s.formats.clone_from(&self.formats);
            }
            if self.rates.is_some() {
                s.rates.clone_from(&self.rates);
            }
            s.channels_min = self.channels_min.or(s.channels_min);
            s.channels_max = self.channels_max.or(s.channels_max);
            s.units = self.units.clone().or(s.units.take());
            s.full_scale = self.full_scale.or(s.full_scale);
            let f = s.faults.get_or_insert_with(Default::default);
            f.drop_every = self.fault_drop_every.or(f.drop_every);
            f.error_every = self.fault_error_every.or(f.error_every);
            f.withhold_every = self.fault_withhold_every.or(f.withhold_every);
            f.delay_ms = self.fault_delay_ms.or(f.delay_ms);
            f.jitter_ms = self.fault_jitter_ms.or(f.jitter_ms);
            f.seed = self.fault_seed.or(f.seed);
            f.stall_at_ms = self.fault_stall_at_ms.or(f.stall_at_ms);
            f.stall_ms = self.fault_stall_ms.or(f.stall_ms);
            if let Some(status) = &self.fault_status {
                f.status = Some(crate::faults::StatusConfig::Name(status.clone()));
            }
            f.used_len_extra = self.fault_used_len_extra.or(f.used_len_extra);
            f.used_len_short = self.fault_used_len_short.or(f.used_len_short);
            f.lie_every = self.fault_lie_every.or(f.lie_every);
            f.event_flood = self.fault_event_flood.or(f.event_flood);
            f.spurious_notify = self.fault_spurious_notify.or(f.spurious_notify);
            if let Some(source) = &self.signal {
                s.channels = vec![ChannelConfig {
                    source: source.clone(),
                    frequency: self.frequency,
                    amplitude: self.amplitude,
                    offset: self.offset,
                    phase: self.phase,
                    duty: self.duty,
                    seed: self.seed,
                    distribution: self.distribution.clone(),
                    file: self.file.clone(),
                    ..ChannelConfig::default()
                }];
            }
        }
        let paced = !(self.free_run || file.free_run.unwrap_or(false));
        let streams = streams
            .iter()
            .enumerate()
            .map(|(i, s)| s.to_caps(&format!("stream[{i}]"), paced, &base))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            socket,
            streams,
            stats_every: (stats > 0.0).then(|| Duration::from_secs_f64(stats)),
            once: self.once,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Waveform;
    use vdaq_proto::format::SampleFormat;
    use vdaq_proto::virtio_snd::RATES;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        Cli::try_parse_from(["vdaq-device"].iter().chain(args))
            .map_err(|e| e.to_string())?
            .settings()
    }

    #[test]
    fn defaults_offer_every_spec_rate_and_format_with_the_counter() {
        let s = parse(&["--socket-path", "/tmp/s"]).expect("defaults");
        assert_eq!(s.streams.len(), 1);
        let c = &s.streams[0];
        assert_eq!(c.rates, RATES.to_vec());
        assert_eq!(c.formats, SampleFormat::ALL.to_vec());
        assert_eq!((c.channels_min, c.channels_max), (1, 8));
        assert!(c.paced);
        assert_eq!(c.signal.channel(0).waveform, Waveform::Counter);
        assert!(parse(&[]).expect_err("no socket").contains("--socket-path"));
    }

    #[test]
    fn the_socket_comes_from_s_socket_path_fd_or_the_file() {
        let socket = |args: &[&str]| parse(args).map(|s| s.socket);
        assert_eq!(socket(&["-s", "/tmp/a"]), Ok(Socket::Listen("/tmp/a".into())));
        assert_eq!(socket(&["--socket-path=/tmp/a"]), Ok(Socket::Listen("/tmp/a".into())));
        assert_eq!(
            socket(&["--socket-path", "/tmp/a", "--connect"]),
            Ok(Socket::Connect("/tmp/a".into()))
        );
        assert_eq!(socket(&["--fd", "3"]), Ok(Socket::Fd(3)));
        assert_eq!(socket(&["--fd=7", "--once"]), Ok(Socket::Fd(7)));
        let e = socket(&["--fd", "3", "--socket-path", "/tmp/a"]).expect_err("both");
        assert!(e.contains("cannot be used with"), "{e}");
        let e = socket(&["--fd", "3", "--connect"]).expect_err("fd and connect");
        assert!(e.contains("cannot be used with"), "{e}");
        let e = socket(&["--fd", "three"]).expect_err("not a number");
        assert!(e.contains("three"), "{e}");
    }

    #[test]
    fn print_capabilities_is_found_among_any_arguments_and_prints_json() {
        assert!(wants_capabilities(["vdaq-device", "--print-capabilities"]));
        assert!(wants_capabilities(["vdaq-device", "--bogus", "x", "--print-capabilities"]));
        assert!(!wants_capabilities(["vdaq-device", "-s", "/tmp/a"]));
        assert!(
            !wants_capabilities(["--print-capabilities"]),
            "the program name is not an argument"
        );
        assert!(!wants_capabilities(["vdaq-device", "--", "--print-capabilities"]));
        let caps: serde_json::Value = serde_json::from_str(CAPABILITIES).expect("JSON");
        assert_eq!(caps["type"], "sound");
        assert_eq!(caps["features"], serde_json::json!([]));
    }

    #[test]
    fn the_backend_descriptor_names_this_type_and_an_absolute_binary() {
        let text = include_str!("../50-vdaq-device.json");
        let d: serde_json::Value = serde_json::from_str(text).expect("JSON");
        let caps: serde_json::Value = serde_json::from_str(CAPABILITIES).expect("JSON");
        assert_eq!(d["type"], caps["type"]);
        assert!(d["description"].as_str().is_some_and(|s| !s.is_empty()), "{d}");
        let binary = d["binary"].as_str().expect("binary");
        assert!(binary.starts_with('/') && binary.ends_with("/vdaq-device"), "{binary}");
        let keys: Vec<_> = d.as_object().expect("object").keys().cloned().collect();
        for k in &keys {
            assert!(["description", "type", "binary", "tags"].contains(&k.as_str()), "{k}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("vdaq-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("daq.toml");
        std::fs::write(
            &file,
            "socket_path = \"/tmp/f.sock\"\n[[stream]]\nchannels_max = 4\nrates = [8000]\n",
        )
        .expect("write");
        let f = file.to_string_lossy().to_string();
        let s = parse(&["--config", &f]).expect("file");
        assert_eq!(s.socket, Socket::Listen("/tmp/f.sock".into()));
        assert_eq!((s.streams[0].channels_max, s.streams[0].rates.clone()), (4, vec![8000]));
        let s = parse(&[
            "--config",
            &f,
            "--channels-max",
            "32",
            "--socket-path",
            "/tmp/x",
            "--streams",
            "2",
            "--signal",
            "sine",
            "--frequency",
            "440",
        ])
        .expect("flags");
        assert_eq!(s.socket, Socket::Listen("/tmp/x".into()));
        let fd = parse(&["--config", &f, "--fd", "5"]).expect("fd over the file's path");
        assert_eq!(fd.socket, Socket::Fd(5));
        assert_eq!(s.streams.len(), 2);
        assert_eq!(s.streams[1].channels_max, 32);
        assert_eq!(s.streams[1].rates, vec![8000], "from the file");
        assert_eq!(s.streams[0].signal.channel(0).frequency, 440.0);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn signal_parameters_need_signal() {
        for flag in [
            "--frequency=440",
            "--amplitude=2",
            "--offset=-1",
            "--phase=90",
            "--duty=0.2",
            "--seed=4",
            "--distribution=gaussian",
            "--file=rec.wav",
        ] {
            let e = parse(&["--socket-path", "/s", flag]).expect_err(flag);
            assert!(e.contains("--signal"), "{flag}: {e}");
        }
        let s = parse(&["--socket-path", "/s", "--signal", "sine", "--amplitude", "0"])
            .expect("amplitude 0");
        assert_eq!(s.streams[0].signal.channel(0).amplitude, 0.0, "zero, not the default");
        let s = parse(&["--socket-path", "/s", "--signal", "sine"]).expect("default amplitude");
        assert_eq!(s.streams[0].signal.channel(0).amplitude, 1.0);
    }

    #[test]
    fn lying_device_flags_reach_every_stream() {
        use crate::faults::{FaultStatus, UsedLenLie};
        let s = parse(&[
            "--socket-path",
            "/s",
            "--streams",
            "2",
            "--fault-error-every",
            "3",
            "--fault-status",
            "0x1234",
            "--fault-used-len-extra",
            "4096",
            "--fault-lie-every",
            "2",
            "--fault-event-flood",
            "4",
            "--fault-spurious-notify",
            "2",
        ])
        .expect("flags");
        for c in &s.streams {
            let f = c.faults;
            assert_eq!((f.error_every, f.error_status), (3, FaultStatus::Code(0x1234)));
            assert_eq!((f.used_len, f.lie_every), (Some(UsedLenLie::Extra(4096)), 2));
            assert_eq!((f.event_flood, f.spurious_notify), (4, 2));
        }
    }

    #[test]
    fn bad_flags_are_refused_with_the_value_named() {
        let e = parse(&["--socket-path", "/s", "--rates", "48000,44000"]).expect_err("rate");
        assert!(e.contains("44000 is not a virtio-snd rate"), "{e}");
        let e = parse(&["--socket-path", "/s", "--formats", "s24"]).expect_err("format");
        assert!(e.contains("\"s24\" is not a format"), "{e}");
        let e = parse(&["--socket-path", "/s", "--channels-max", "256"]).expect_err("channels");
        assert!(e.contains("channels_max = 256 is out of range (1 to 255)"), "{e}");
        let e = parse(&["--socket-path", "/s", "--channels-min", "4", "--channels-max", "2"])
            .expect_err("min>max");
        assert!(e.contains("channels_min = 4"), "{e}");
        let e = parse(&["--socket-path", "/s", "--signal", "sine", "--frequency", "nan"])
            .expect_err("nan");
        assert!(e.contains("frequency = NaN is out of range"), "{e}");
        let e = parse(&["--socket-path", "/s", "--stats-interval=-1"]).expect_err("stats");
        assert!(e.contains("--stats-interval"), "{e}");
        let e = parse(&["--socket-path", "/s", "--fault-status", "loud"]).expect_err("status");
        assert!(e.contains("stream[0].faults.status = \"loud\" is not a status"), "{e}");
        let e = parse(&["--socket-path", "/s", "--fault-used-len-short", "9"]).expect_err("short");
        assert!(e.contains("used_len_short = 9 is out of range"), "{e}");
        let e = parse(&["--config", "/nonexistent/daq.toml"]).expect_err("file");
        assert!(e.contains("/nonexistent/daq.toml"), "{e}");
    }
}
