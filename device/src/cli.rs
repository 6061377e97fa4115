// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Command line of the vdaq-device daemon: flags over an optional TOML file.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::config::{self, ChannelConfig, ConfigError, FileConfig, StreamConfig};
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
    /// The daemon's settings (-s/--socket-path, --stats-interval, --free-run).
    #[command(flatten)]
    pub daemon: FileConfig,
    /// Listen on the socket the parent process passed as this descriptor instead of
    /// creating one (a listening Unix socket; it is never removed). Excludes --socket-path.
    #[arg(long, value_name = "FDNUM", conflicts_with = "connect")]
    pub fd: Option<RawFd>,
    /// Print the backend's capabilities (JSON, as vhost-user.json describes them) and exit;
    /// every other argument is ignored.
    #[arg(long)]
    pub print_capabilities: bool,
    /// Serve one connection, then exit (default: serve connections until stopped).
    #[arg(long)]
    pub once: bool,
    /// Connect to QEMU listening on --socket-path (`-chardev socket,...,server=on`) instead of
    /// listening; after QEMU hangs up, connect again (unless --once).
    #[arg(long)]
    pub connect: bool,
    /// Number of capture streams (default: the file's, else 1); extra streams repeat the last.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=16),
          help_heading = config::STREAMS_HEADING)]
    pub streams: Option<u8>,
    /// What every stream offers (`[[stream]]` in the file).
    #[command(flatten)]
    pub stream: StreamConfig,
    /// The signal of every channel of every stream (`[[stream.channel]]` in the file).
    #[command(flatten)]
    pub signal: ChannelConfig,
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
    /// The statistics file (`--stats-json`).
    pub stats_json: Option<PathBuf>,
    /// Serve one connection only.
    pub once: bool,
}

impl Cli {
    /// Merges the file (if any) and the flags; errors name the field or flag.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let mut file = match &self.config {
            Some(path) => config::read_file(path)?,
            None => FileConfig::default(),
        };
        let base =
            self.config.as_ref().and_then(|p| p.parent().map(PathBuf::from)).unwrap_or_default();
        file.override_with(&self.daemon);
        // --fd wins over the file's socket_path as the flags win over the file.
        let socket = match (self.fd, file.socket_path.clone()) {
            (Some(fd), _) => Socket::Fd(fd),
            (None, Some(path)) if self.connect => Socket::Connect(path),
            (None, Some(path)) => Socket::Listen(path),
            (None, None) => return Err(ConfigError::NoSocket),
        };
        let stats = file.stats_interval.unwrap_or(0.0);
        if !stats.is_finite() || stats < 0.0 {
            return Err(ConfigError::StatsInterval(stats));
        }
        let mut streams =
            if file.streams.is_empty() { vec![StreamConfig::default()] } else { file.streams };
        if let Some(n) = self.streams {
            let last = streams.last().cloned().unwrap_or_default();
            streams.resize(usize::from(n), last);
        }
        for s in &mut streams {
            s.override_with(&self.stream);
            if self.signal.source.is_some() {
                s.channels = vec![self.signal.clone()];
            }
        }
        let paced = !file.free_run.unwrap_or(false);
        let streams = streams
            .iter()
            .enumerate()
            .map(|(i, s)| s.to_caps(&format!("stream[{i}]"), paced, &base))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Settings {
            socket,
            streams,
            stats_every: (stats > 0.0).then(|| Duration::from_secs_f64(stats)),
            stats_json: file.stats_json.clone(),
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
            .map_err(|e| e.to_string())
    }

    fn refusal(args: &[&str]) -> ConfigError {
        let cli = Cli::try_parse_from(["vdaq-device"].iter().chain(args)).expect("flags parse");
        cli.settings().expect_err("refused")
    }

    #[test]
    fn refusals_are_told_apart_by_variant() {
        use crate::faults::FaultsError;
        assert!(matches!(refusal(&[]), ConfigError::NoSocket));
        assert!(
            matches!(refusal(&["-s", "/s", "--stats-interval=-1"]), ConfigError::StatsInterval(v) if v == -1.0)
        );
        assert!(matches!(
            refusal(&["-s", "/s", "--rates", "44000"]),
            ConfigError::NotARate { field, value: 44000 } if field == "stream[0].rates"
        ));
        assert!(matches!(
            refusal(&["-s", "/s", "--channels-max", "256"]),
            ConfigError::IntOutOfRange { field, value: 256, min: 1, max: 255 }
                if field == "stream[0].channels_max"
        ));
        assert!(matches!(
            refusal(&["-s", "/s", "--channels-min", "4", "--channels-max", "2"]),
            ConfigError::ChannelsMinAboveMax { min: 4, max: 2, .. }
        ));
        assert!(matches!(
            refusal(&["-s", "/s", "--signal", "sine", "--frequency", "nan"]),
            ConfigError::OutOfRange { field, .. } if field == "stream[0].channel[0].frequency"
        ));
        assert!(matches!(
            refusal(&["-s", "/s", "--signal", "replay"]),
            ConfigError::ReplayWithoutFile { at } if at == "stream[0].channel[0]"
        ));
        assert!(matches!(
            refusal(&["-s", "/s", "--signal", "replay", "--file", "/nonexistent.wav"]),
            ConfigError::Recording { source: crate::recording::RecordingError::Read { .. }, .. }
        ));
        assert!(matches!(
            refusal(&["-s", "/s", "--fault-drop-every", "0"]),
            ConfigError::Faults(FaultsError::NotPositive { value: 0, .. })
        ));
        assert!(matches!(
            refusal(&["--config", "/nonexistent/daq.toml"]),
            ConfigError::Read { path, .. } if path == std::path::Path::new("/nonexistent/daq.toml")
        ));
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
    fn enum_flags_take_the_names_the_file_takes() {
        use crate::config::{Distribution, RecordingKind, Source, UnitKind};
        use clap::ValueEnum;
        fn names<T: ValueEnum>() -> Vec<String> {
            T::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
                .collect()
        }
        let all = [
            names::<Source>(),
            names::<Distribution>(),
            names::<UnitKind>(),
            names::<RecordingKind>(),
        ];
        assert_eq!(
            all[0],
            ["counter", "sine", "square", "triangle", "sawtooth", "dc", "noise", "replay"]
        );
        assert_eq!(
            (all[1].clone(), all[2].clone()),
            (vec!["uniform".into(), "gaussian".into()], vec!["codes".into(), "volts".into()])
        );
        assert_eq!(all[3], ["wav", "csv", "raw"]);
        for source in &all[0] {
            let text = format!("[[stream]]\n[[stream.channel]]\nsource = \"{source}\"\n");
            let file: FileConfig = toml::from_str(&text).expect(source);
            let flags = Cli::try_parse_from(["vdaq-device", "--signal", source]).expect(source);
            assert_eq!(file.streams[0].channels[0].source, flags.signal.source, "{source}");
        }
        for d in &all[1] {
            let text = format!(
                "[[stream]]\n[[stream.channel]]\nsource = \"noise\"\ndistribution = \"{d}\"\n"
            );
            let file: FileConfig = toml::from_str(&text).expect(d);
            let flags = Cli::try_parse_from(["vdaq-device", "--signal=noise", "--distribution", d])
                .expect(d);
            assert_eq!(file.streams[0].channels[0].distribution, flags.signal.distribution);
        }
        for u in &all[2] {
            let file: FileConfig =
                toml::from_str(&format!("[[stream]]\nunits = \"{u}\"\n")).expect(u);
            let flags = Cli::try_parse_from(["vdaq-device", "--units", u]).expect(u);
            assert_eq!(file.streams[0].units, flags.stream.units);
        }
        let file: FileConfig =
            toml::from_str("[[stream]]\nformats = [\"S16\", \"float64\"]\n").expect("formats");
        let flags =
            Cli::try_parse_from(["vdaq-device", "--formats", "S16,float64"]).expect("formats");
        assert_eq!(file.streams[0].formats, flags.stream.formats);
    }

    #[test]
    fn free_run_is_a_flag_that_may_also_say_false() {
        let paced = |args: &[&str]| parse(args).map(|s| s.streams[0].paced);
        assert_eq!(paced(&["-s", "/s"]), Ok(true));
        assert_eq!(paced(&["-s", "/s", "--free-run"]), Ok(false));
        assert_eq!(paced(&["--free-run", "-s", "/s"]), Ok(false));
        assert_eq!(paced(&["-s", "/s", "--free-run=false"]), Ok(true));
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
        assert!(e.contains("invalid value 's24' for '--formats"), "{e}");
        assert!(e.contains("u8, s16, s32, float, float64"), "{e}");
        let e = parse(&["--socket-path", "/s", "--signal", "pulse"]).expect_err("signal");
        assert!(e.contains("invalid value 'pulse' for '--signal"), "{e}");
        let e = parse(&["--socket-path", "/s", "--units", "amps"]).expect_err("units");
        assert!(e.contains("invalid value 'amps' for '--units"), "{e}");
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
