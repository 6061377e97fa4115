// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The configuration file (TOML) and its validation into stream capabilities.
//!
//! Every value is checked; an error names the field, the value and what is allowed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::builder::PossibleValue;
use clap::ValueEnum;
use serde::Deserialize;
use vdaq_proto::format::SampleFormat;
use vdaq_proto::virtio_snd::RATES;

use crate::faults::{FaultsConfig, FaultsError};
use crate::recording::{self, FileFormat, RecordingError};
use crate::source::{ChannelSignal, StreamSignal, Units, Waveform};
use crate::stream::StreamCaps;

// One definition per setting: each struct below is both the TOML table (serde) and the flags
// (clap) that set the same thing on the command line for every stream or channel; the flags are
// merged into the file's values once, by `override_with`.

/// The file's top level; its flags are the daemon's own.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Unix socket to listen on for QEMU's vhost-user connection.
    #[arg(short = 's', long, value_name = "PATH", conflicts_with = "fd")]
    pub socket_path: Option<PathBuf>,
    /// Log a statistics line every this many seconds (0: never).
    #[arg(long, value_name = "SECONDS")]
    pub stats_interval: Option<f64>,
    /// Keep the statistics in this file as JSON: rewritten whole at each statistics line, on
    /// SIGUSR1, and when a connection ends or the device stops.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Deliver frames as fast as the guest posts buffers instead of at the sample rate
    /// (throughput benchmarks).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub free_run: Option<bool>,
    /// The capture streams (`[[stream]]`), stream 0 first.
    #[arg(skip)]
    #[serde(default, rename = "stream")]
    pub streams: Vec<StreamConfig>,
}

/// One `[[stream]]`; its flags set every stream.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(next_help_heading = STREAMS_HEADING)]
pub struct StreamConfig {
    /// Sample formats offered (default: all).
    #[arg(long, value_delimiter = ',', ignore_case = true)]
    pub formats: Option<Vec<Format>>,
    /// Frame rates offered in Hz (from the virtio-snd table; default: all).
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<i64>>,
    /// Fewest channels a stream accepts (default 1).
    #[arg(long)]
    pub channels_min: Option<i64>,
    /// Most channels a stream accepts (default 8, at most 255).
    #[arg(long)]
    pub channels_max: Option<i64>,
    /// Units of the values (default codes).
    #[arg(long)]
    pub units: Option<UnitKind>,
    /// Volts at full scale with units volts (default 10).
    #[arg(long)]
    pub full_scale: Option<f64>,
    /// Per-channel signals (`[[stream.channel]]`); later channels repeat the last.
    #[arg(skip)]
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
    /// Faults to inject (`[stream.faults]`, see the `faults` module).
    #[command(flatten)]
    #[serde(default)]
    pub faults: FaultsConfig,
}

/// The help heading of the flags that set every stream.
pub const STREAMS_HEADING: &str = "Streams (every stream; [[stream]] in the file)";

/// One `[[stream.channel]]`; its flags (from --signal on) set every channel of every stream
/// and need --signal.
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
#[command(
    next_help_heading = "Signal (every channel of every stream; [[stream.channel]] in the file)"
)]
pub struct ChannelConfig {
    /// Signal on every channel (`source` in the file); the flags after it need it.
    #[arg(id = "signal", long = "signal", value_name = "SOURCE")]
    pub source: Option<Source>,
    /// Frequency in Hz (default 1000).
    #[arg(long, requires = "signal")]
    pub frequency: Option<f64>,
    /// Peak amplitude (noise: half-range or standard deviation; default 1; replay: a scale,
    /// default the values as recorded). 0 is 0.
    #[arg(long, allow_hyphen_values = true, requires = "signal")]
    pub amplitude: Option<f64>,
    /// Added to every value (default 0).
    #[arg(long, allow_hyphen_values = true, requires = "signal")]
    pub offset: Option<f64>,
    /// Phase in degrees (default 0).
    #[arg(long, allow_hyphen_values = true, requires = "signal")]
    pub phase: Option<f64>,
    /// Duty cycle of square, 0 to 1 (default 0.5).
    #[arg(long, requires = "signal")]
    pub duty: Option<f64>,
    /// Seed of noise (default 1).
    #[arg(long, requires = "signal")]
    pub seed: Option<u64>,
    /// Distribution of noise (default uniform).
    #[arg(long, requires = "signal")]
    pub distribution: Option<Distribution>,
    /// Recording for replay; the flags after it need it.
    #[arg(long, requires = "signal")]
    pub file: Option<PathBuf>,
    /// Container of the recording (default: from the file name's extension).
    #[arg(long, requires = "file")]
    pub file_format: Option<RecordingKind>,
    /// Sample format of a raw recording (default s16).
    #[arg(long, requires = "file", ignore_case = true)]
    pub raw_format: Option<Format>,
    /// Channels per frame of a raw recording (default 1).
    #[arg(long, requires = "file")]
    pub raw_channels: Option<i64>,
    /// The recording's channel this channel plays (default: the channel's own index).
    #[arg(long, requires = "file")]
    pub column: Option<i64>,
    /// Start the recording again at its end (default true; false: 0 after the end).
    #[arg(id = "loop", long = "loop", value_name = "BOOL", requires = "file")]
    #[serde(rename = "loop")]
    pub looped: Option<bool>,
}

/// Sets each field given in `flags` (a `Some`) over `into`'s.
macro_rules! override_fields {
    ($into:expr, $flags:expr, $($field:ident),+ $(,)?) => {
        $(if $flags.$field.is_some() {
            $into.$field.clone_from(&$flags.$field);
        })+
    };
}
pub(crate) use override_fields;

impl FileConfig {
    /// The flags given win over the file.
    pub fn override_with(&mut self, flags: &Self) {
        override_fields!(self, flags, socket_path, stats_interval, stats_json, free_run);
    }
}

impl StreamConfig {
    /// The flags given win over the file (the channel list is not a flag).
    pub fn override_with(&mut self, flags: &Self) {
        override_fields!(
            self,
            flags,
            formats,
            rates,
            channels_min,
            channels_max,
            units,
            full_scale
        );
        self.faults.override_with(&flags.faults);
    }
}

/// A channel's source (`source` in the file, `--signal` on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The frame index as an exact code on every channel.
    Counter,
    /// Sine.
    Sine,
    /// Square wave (duty).
    Square,
    /// Triangle.
    Triangle,
    /// Sawtooth.
    Sawtooth,
    /// The offset.
    Dc,
    /// Seeded noise (distribution).
    Noise,
    /// A recording (file).
    Replay,
}

/// The distribution of noise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Uniform in offset ± amplitude.
    #[default]
    Uniform,
    /// Gaussian with standard deviation amplitude.
    Gaussian,
}

/// What a stream's values are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnitKind {
    /// Codes of the negotiated format (floats: the value itself).
    #[default]
    Codes,
    /// Volts, full_scale volts at the format's largest code.
    Volts,
}

/// The container of a recording to replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RecordingKind {
    /// RIFF WAVE.
    Wav,
    /// Comma-separated values.
    Csv,
    /// Raw interleaved samples (raw_format, raw_channels).
    Raw,
}

impl RecordingKind {
    /// The kind a file name's extension names, if any.
    pub fn from_extension(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?;
        Self::value_variants()
            .iter()
            .copied()
            .find(|k| k.to_possible_value().is_some_and(|v| v.get_name().eq_ignore_ascii_case(ext)))
    }
}

/// A sample format by its name (`s16`, any case), for the file and the flags. The formats are
/// `vdaq_proto`'s [`SampleFormat`], which has neither clap nor serde: the guest driver compiles
/// its file too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Format(pub SampleFormat);

/// The formats, as clap lists them.
const FORMATS: [Format; 5] = [
    Format(SampleFormat::ALL[0]),
    Format(SampleFormat::ALL[1]),
    Format(SampleFormat::ALL[2]),
    Format(SampleFormat::ALL[3]),
    Format(SampleFormat::ALL[4]),
];

impl ValueEnum for Format {
    fn value_variants<'a>() -> &'a [Self] {
        &FORMATS
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.0.name()))
    }
}

/// A name that is no sample format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a format (one of {names})", names = format_names())]
pub struct UnknownFormat(pub String);

fn format_names() -> String {
    SampleFormat::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

impl TryFrom<String> for Format {
    type Error = UnknownFormat;

    fn try_from(name: String) -> Result<Self, UnknownFormat> {
        SampleFormat::from_name(&name).map(Format).ok_or(UnknownFormat(name))
    }
}

/// Why the settings (the file, the flags, or both) are refused. Each message names the field
/// (`stream[0].channels_max`) or the flag, the value and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not TOML, or has a key or a value of the wrong kind or name.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml found (with the line).
        source: Box<toml::de::Error>,
    },
    /// A number outside its range.
    #[error("{field} = {value} is out of range ({min} to {max})")]
    OutOfRange {
        /// The field.
        field: String,
        /// The value.
        value: f64,
        /// The least allowed.
        min: f64,
        /// The most allowed.
        max: f64,
    },
    /// An integer outside its range.
    #[error("{field} = {value} is out of range ({min} to {max})")]
    IntOutOfRange {
        /// The field.
        field: String,
        /// The value.
        value: i64,
        /// The least allowed.
        min: i64,
        /// The most allowed.
        max: i64,
    },
    /// A rate that is not in virtio-snd's table.
    #[error("{field} = {value} is not a virtio-snd rate (one of {RATES:?})")]
    NotARate {
        /// The field.
        field: String,
        /// The value.
        value: i64,
    },
    /// An empty list.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: String,
    },
    /// channels_min above channels_max.
    #[error("{at}.channels_min = {min} is larger than channels_max = {max}")]
    ChannelsMinAboveMax {
        /// The stream.
        at: String,
        /// channels_min.
        min: u8,
        /// channels_max.
        max: u8,
    },
    /// A channel without a source.
    #[error("{at}.source is required")]
    NoSource {
        /// The channel.
        at: String,
    },
    /// A replay channel without a file.
    #[error("{at}.file is required with source = \"replay\"")]
    ReplayWithoutFile {
        /// The channel.
        at: String,
    },
    /// A recording whose kind neither file_format nor the name says.
    #[error("{at}.file_format is needed: the name {} does not say wav, csv or raw", path.display())]
    UnknownRecordingKind {
        /// The channel.
        at: String,
        /// The recording.
        path: PathBuf,
    },
    /// A recording that cannot be loaded.
    #[error("{at}.file: {source}")]
    Recording {
        /// The channel.
        at: String,
        /// Why.
        source: RecordingError,
    },
    /// A fault setting.
    #[error(transparent)]
    Faults(#[from] FaultsError),
    /// Neither a socket path nor a descriptor.
    #[error("--socket-path (or socket_path in the file) or --fd is required")]
    NoSocket,
    /// A negative or not finite statistics interval.
    #[error("--stats-interval {0} must be 0 or more seconds")]
    StatsInterval(f64),
}

/// Reads and parses a configuration file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text)
        .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), source: Box::new(e) })
}

fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<i64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::IntOutOfRange { field: field.to_string(), value, min, max })
    }
}

fn finite(field: &str, value: f64, min: f64, max: f64) -> Result<f64, ConfigError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange { field: field.to_string(), value, min, max })
    }
}

/// Checks a rate.
pub fn check_rate(field: &str, hz: i64) -> Result<u32, ConfigError> {
    u32::try_from(hz)
        .ok()
        .filter(|r| RATES.contains(r))
        .ok_or_else(|| ConfigError::NotARate { field: field.to_string(), value: hz })
}

impl StreamConfig {
    /// Validates into stream capabilities; `at` names the stream (e.g. `stream[0]`), `base`
    /// resolves relative replay file names.
    pub fn to_caps(&self, at: &str, paced: bool, base: &Path) -> Result<StreamCaps, ConfigError> {
        let formats = match &self.formats {
            None => SampleFormat::ALL.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(ConfigError::Empty { field: format!("{at}.formats") })
            }
            Some(list) => list.iter().map(|f| f.0).collect::<Vec<_>>(),
        };
        let rates = match &self.rates {
            None => RATES.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(ConfigError::Empty { field: format!("{at}.rates") })
            }
            Some(list) => list
                .iter()
                .map(|&r| check_rate(&format!("{at}.rates"), r))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let cmin =
            in_range(&format!("{at}.channels_min"), self.channels_min.unwrap_or(1), 1, 255)? as u8;
        let cmax =
            in_range(&format!("{at}.channels_max"), self.channels_max.unwrap_or(8), 1, 255)? as u8;
        if cmin > cmax {
            return Err(ConfigError::ChannelsMinAboveMax {
                at: at.to_string(),
                min: cmin,
                max: cmax,
            });
        }
        let units = match self.units.unwrap_or_default() {
            UnitKind::Codes => Units::Codes,
            UnitKind::Volts => Units::Volts {
                full_scale: finite(
                    &format!("{at}.full_scale"),
                    self.full_scale.unwrap_or(10.0),
                    1e-9,
                    1e9,
                )?,
            },
        };
        let channels = self
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| c.to_signal(&format!("{at}.channel[{i}]"), i, base))
            .collect::<Result<Vec<_>, _>>()?;
        let mut formats = formats;
        formats.sort_by_key(|f| f.wire_code());
        formats.dedup();
        let mut rates = rates;
        rates.sort_unstable();
        rates.dedup();
        let signal = if channels.is_empty() {
            StreamSignal { units, ..StreamSignal::default() }
        } else {
            StreamSignal { channels, units }
        };
        let faults = self.faults.to_plan(&format!("{at}.faults"))?;
        Ok(StreamCaps {
            formats,
            rates,
            channels_min: cmin,
            channels_max: cmax,
            signal,
            paced,
            faults,
        })
    }
}

impl ChannelConfig {
    /// Validates one channel's signal.
    pub fn to_signal(
        &self,
        at: &str,
        index: usize,
        base: &Path,
    ) -> Result<ChannelSignal, ConfigError> {
        let f = |name: &str, v: Option<f64>, default: f64, min: f64, max: f64| {
            finite(&format!("{at}.{name}"), v.unwrap_or(default), min, max)
        };
        let frequency = f("frequency", self.frequency, 1000.0, 0.0, 192_000.0)?;
        // An amplitude given is the amplitude, 0 included; unset, it is 1 (for replay: the
        // values as recorded).
        let amplitude = f("amplitude", self.amplitude, 1.0, -1e12, 1e12)?;
        let offset = f("offset", self.offset, 0.0, -1e12, 1e12)?;
        let phase_deg = f("phase", self.phase, 0.0, -360.0, 360.0)?;
        let source = self.source.ok_or_else(|| ConfigError::NoSource { at: at.to_string() })?;
        let waveform = match source {
            Source::Counter => Waveform::Counter,
            Source::Sine => Waveform::Sine,
            Source::Square => Waveform::Square { duty: f("duty", self.duty, 0.5, 0.0, 1.0)? },
            Source::Triangle => Waveform::Triangle,
            Source::Sawtooth => Waveform::Sawtooth,
            Source::Dc => Waveform::Dc,
            Source::Noise => Waveform::Noise {
                seed: self.seed.unwrap_or(1),
                gaussian: self.distribution.unwrap_or_default() == Distribution::Gaussian,
            },
            Source::Replay => {
                let file = self
                    .file
                    .as_ref()
                    .ok_or_else(|| ConfigError::ReplayWithoutFile { at: at.to_string() })?;
                let path = if file.is_absolute() { file.clone() } else { base.join(file) };
                let kind = self.file_format.or_else(|| RecordingKind::from_extension(&path));
                let kind = match kind {
                    Some(RecordingKind::Wav) => FileFormat::Wav,
                    Some(RecordingKind::Csv) => FileFormat::Csv,
                    Some(RecordingKind::Raw) => FileFormat::Raw {
                        format: self.raw_format.map_or(SampleFormat::S16, |f| f.0),
                        channels: in_range(
                            &format!("{at}.raw_channels"),
                            self.raw_channels.unwrap_or(1),
                            1,
                            255,
                        )? as usize,
                    },
                    None => {
                        return Err(ConfigError::UnknownRecordingKind { at: at.to_string(), path })
                    }
                };
                let recording = recording::load(&path, kind)
                    .map_err(|source| ConfigError::Recording { at: at.to_string(), source })?;
                let column =
                    in_range(&format!("{at}.column"), self.column.unwrap_or(index as i64), 0, 254)?
                        as usize;
                Waveform::Replay {
                    recording: Arc::new(recording),
                    looped: self.looped.unwrap_or(true),
                    column,
                }
            }
        };
        Ok(ChannelSignal { waveform, amplitude, offset, frequency, phase_deg })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(text: &str) -> Result<Vec<StreamCaps>, String> {
        let cfg: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.streams
            .iter()
            .enumerate()
            .map(|(i, s)| s.to_caps(&format!("stream[{i}]"), true, Path::new(".")))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn file_refusals_are_told_apart_by_variant() {
        let dir = std::env::temp_dir().join(format!("vdaq-cfgerr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("bad.toml");
        std::fs::write(&file, "[[stream]]\nunits = \"amps\"\n").expect("write");
        let e = read_file(&file).expect_err("bad units");
        assert!(matches!(&e, ConfigError::Parse { path, .. } if *path == file), "{e}");
        let text = e.to_string();
        assert!(text.contains("units = \"amps\""), "the line is shown: {text}");
        assert!(text.contains("unknown variant `amps`, expected `codes` or `volts`"), "{text}");
        let e = read_file(&dir.join("none.toml")).expect_err("missing");
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
        let cfg: FileConfig =
            toml::from_str("[[stream]]\nformats = []\n[[stream.channel]]\nduty = 0.5\n")
                .expect("toml");
        let e = cfg.streams[0].to_caps("stream[0]", true, &dir).expect_err("empty formats");
        assert!(matches!(&e, ConfigError::Empty { field } if field == "stream[0].formats"), "{e}");
        let e = cfg.streams[0].channels[0].to_signal("stream[0].channel[0]", 0, &dir);
        assert!(matches!(e, Err(ConfigError::NoSource { .. })));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_full_file_parses_into_streams_and_channels() {
        let c = caps(
            r#"
            socket_path = "/tmp/x.sock"
            [[stream]]
            formats = ["s16", "float"]
            rates = [48000, 8000]
            channels_max = 4
            units = "volts"
            full_scale = 5.0
            [[stream.channel]]
            source = "sine"
            frequency = 440.0
            amplitude = 2.5
            [[stream.channel]]
            source = "noise"
            distribution = "gaussian"
            seed = 9
            [[stream]]
            channels_max = 32
            "#,
        )
        .expect("valid");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].rates, vec![8000, 48000]);
        assert_eq!(c[0].formats, vec![SampleFormat::S16, SampleFormat::Float]);
        assert_eq!(c[0].signal.units, Units::Volts { full_scale: 5.0 });
        assert_eq!(c[0].signal.channel(0).waveform, Waveform::Sine);
        assert_eq!(c[0].signal.channel(3).waveform, Waveform::Noise { seed: 9, gaussian: true });
        assert_eq!(c[1].signal.channel(5).waveform, Waveform::Counter);
    }

    #[test]
    fn an_explicit_amplitude_of_zero_is_zero() {
        let dir = std::env::temp_dir().join(format!("vdaq-amp0-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let csv = dir.join("rec.csv");
        std::fs::write(&csv, "100\n200\n").expect("write");
        let text = format!(
            "[[stream]]\n[[stream.channel]]\nsource = \"sine\"\namplitude = 0\n\
             [[stream.channel]]\nsource = \"replay\"\nfile = {csv:?}\namplitude = 0.0\n\
             [[stream.channel]]\nsource = \"replay\"\nfile = {csv:?}\n"
        );
        let c = caps(&text).expect("valid");
        let t = crate::source::SineTable::default();
        let (sine, silent, as_recorded) =
            (c[0].signal.channel(0), c[0].signal.channel(1), c[0].signal.channel(2));
        assert_eq!(sine.amplitude, 0.0);
        assert_eq!(sine.value(2, 8000, &t), Some(0.0));
        assert_eq!(silent.value(1, 8000, &t), Some(0.0), "replay with amplitude = 0");
        assert_eq!(as_recorded.value(1, 8000, &t), Some(200.0), "replay as recorded");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_values_name_the_field_the_value_and_the_range() {
        let cases = [
            (
                "[[stream]]\nchannels_max = 256",
                "stream[0].channels_max = 256 is out of range (1 to 255)",
            ),
            ("[[stream]]\nrates = [44000]", "stream[0].rates = 44000 is not a virtio-snd rate"),
            ("[[stream]]\nformats = [\"s24\"]", "\"s24\" is not a format (one of u8, s16"),
            (
                "[[stream]]\nchannels_min = 4\nchannels_max = 2",
                "channels_min = 4 is larger than channels_max = 2",
            ),
            ("[[stream]]\nunits = \"amps\"", "unknown variant `amps`, expected `codes` or `volts`"),
            (
                "[[stream]]\n[[stream.channel]]\nsource = \"sine\"\nfrequency = -1.0",
                "stream[0].channel[0].frequency = -1 is out of range",
            ),
            (
                "[[stream]]\n[[stream.channel]]\nsource = \"square\"\nduty = 1.5",
                "stream[0].channel[0].duty = 1.5 is out of range (0 to 1)",
            ),
            (
                "[[stream]]\n[[stream.channel]]\nsource = \"pulse\"",
                "unknown variant `pulse`, expected one of `counter`, `sine`",
            ),
            (
                "[[stream]]\n[[stream.channel]]\nsource = \"replay\"",
                "stream[0].channel[0].file is required",
            ),
            (
                "[[stream]]\n[[stream.channel]]\nsource = \"replay\"\nfile = \"/nonexistent.wav\"",
                "stream[0].channel[0].file: /nonexistent.wav",
            ),
            ("[[stream]]\nchanels_max = 2", "unknown field `chanels_max`"),
            (
                "[[stream]]\n[[stream.channel]]\nfrequency = 5.0",
                "stream[0].channel[0].source is required",
            ),
            (
                "[[stream]]\n[[stream.channel]]\nsource = \"replay\"\nfile = \"x.flac\"",
                "stream[0].channel[0].file_format is needed",
            ),
        ];
        for (text, want) in cases {
            let e = caps(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
