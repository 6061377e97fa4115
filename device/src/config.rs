//! The configuration file (TOML) and its validation into stream capabilities.
//!
//! Every value is checked; an error names the field, the value and what is allowed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use vdaq_proto::format::SampleFormat;
use vdaq_proto::virtio_snd::RATES;

use crate::faults::FaultsConfig;
use crate::recording::{self, FileFormat};
use crate::source::{ChannelSignal, StreamSignal, Units, Waveform};
use crate::stream::StreamCaps;

/// The file's top level.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Unix socket path.
    pub socket_path: Option<PathBuf>,
    /// Seconds between statistics lines (0: never).
    pub stats_interval: Option<f64>,
    /// Deliver as fast as buffers come.
    pub free_run: Option<bool>,
    /// The capture streams (`[[stream]]`), stream 0 first.
    #[serde(default, rename = "stream")]
    pub streams: Vec<StreamConfig>,
}

/// One `[[stream]]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Formats offered.
    pub formats: Option<Vec<String>>,
    /// Rates offered (Hz).
    pub rates: Option<Vec<i64>>,
    /// Fewest channels.
    pub channels_min: Option<i64>,
    /// Most channels.
    pub channels_max: Option<i64>,
    /// `volts` or `codes`.
    pub units: Option<String>,
    /// Volts at full scale (with `units = "volts"`).
    pub full_scale: Option<f64>,
    /// Per-channel signals (`[[stream.channel]]`); later channels repeat the last.
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
    /// Faults to inject (`[stream.faults]`, see the `faults` module).
    pub faults: Option<FaultsConfig>,
}

/// One `[[stream.channel]]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// counter, sine, square, triangle, sawtooth, dc, noise or replay.
    pub source: String,
    /// Hz.
    pub frequency: Option<f64>,
    /// Peak amplitude (noise: half-range or standard deviation).
    pub amplitude: Option<f64>,
    /// Added to every value.
    pub offset: Option<f64>,
    /// Degrees.
    pub phase: Option<f64>,
    /// Square wave duty cycle, 0 to 1.
    pub duty: Option<f64>,
    /// Noise seed.
    pub seed: Option<u64>,
    /// Noise distribution: uniform or gaussian.
    pub distribution: Option<String>,
    /// Replay: the file.
    pub file: Option<PathBuf>,
    /// Replay: wav, csv or raw (default: from the file name's extension).
    pub file_format: Option<String>,
    /// Replay, raw files: the sample format.
    pub raw_format: Option<String>,
    /// Replay, raw files: channels per frame.
    pub raw_channels: Option<i64>,
    /// Replay: the recording's channel this channel plays (default: the same index).
    pub column: Option<i64>,
    /// Replay: start again at the end (default true).
    #[serde(rename = "loop")]
    pub looped: Option<bool>,
}

/// Reads and parses a configuration file.
pub fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn in_range(field: &str, v: i64, min: i64, max: i64) -> Result<i64, String> {
    if (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{field} = {v} is out of range ({min} to {max})"))
    }
}

fn finite(field: &str, v: f64, min: f64, max: f64) -> Result<f64, String> {
    if v.is_finite() && (min..=max).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{field} = {v} is out of range ({min} to {max})"))
    }
}

/// Parses a format name.
pub fn parse_format(field: &str, s: &str) -> Result<SampleFormat, String> {
    SampleFormat::from_name(s).ok_or_else(|| {
        let names: Vec<_> = SampleFormat::ALL.iter().map(|f| f.name()).collect();
        format!("{field} = \"{s}\" is not a format (one of {})", names.join(", "))
    })
}

/// Checks a rate.
pub fn check_rate(field: &str, hz: i64) -> Result<u32, String> {
    u32::try_from(hz)
        .ok()
        .filter(|r| RATES.contains(r))
        .ok_or_else(|| format!("{field} = {hz} is not a virtio-snd rate (one of {RATES:?})"))
}

impl StreamConfig {
    /// Validates into stream capabilities; `at` names the stream (e.g. `stream[0]`), `base`
    /// resolves relative replay file names.
    pub fn to_caps(&self, at: &str, paced: bool, base: &Path) -> Result<StreamCaps, String> {
        let formats = match &self.formats {
            None => SampleFormat::ALL.to_vec(),
            Some(list) if list.is_empty() => return Err(format!("{at}.formats is empty")),
            Some(list) => list
                .iter()
                .map(|f| parse_format(&format!("{at}.formats"), f))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let rates = match &self.rates {
            None => RATES.to_vec(),
            Some(list) if list.is_empty() => return Err(format!("{at}.rates is empty")),
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
            return Err(format!("{at}.channels_min = {cmin} is larger than channels_max = {cmax}"));
        }
        let units = match self.units.as_deref().unwrap_or("codes") {
            "codes" => Units::Codes,
            "volts" => Units::Volts {
                full_scale: finite(
                    &format!("{at}.full_scale"),
                    self.full_scale.unwrap_or(10.0),
                    1e-9,
                    1e9,
                )?,
            },
            other => {
                return Err(format!("{at}.units = \"{other}\" is not a unit (volts or codes)"))
            }
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
        let faults = self.faults.clone().unwrap_or_default().to_plan(&format!("{at}.faults"))?;
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
    pub fn to_signal(&self, at: &str, index: usize, base: &Path) -> Result<ChannelSignal, String> {
        let f = |name: &str, v: Option<f64>, default: f64, min: f64, max: f64| {
            finite(&format!("{at}.{name}"), v.unwrap_or(default), min, max)
        };
        let frequency = f("frequency", self.frequency, 1000.0, 0.0, 192_000.0)?;
        // An amplitude given is the amplitude, 0 included; unset, it is 1 (for replay: the
        // values as recorded).
        let amplitude = f("amplitude", self.amplitude, 1.0, -1e12, 1e12)?;
        let offset = f("offset", self.offset, 0.0, -1e12, 1e12)?;
        let phase_deg = f("phase", self.phase, 0.0, -360.0, 360.0)?;
        let waveform = match self.source.as_str() {
            "counter" => Waveform::Counter,
            "sine" => Waveform::Sine,
            "square" => Waveform::Square { duty: f("duty", self.duty, 0.5, 0.0, 1.0)? },
            "triangle" => Waveform::Triangle,
            "sawtooth" => Waveform::Sawtooth,
            "dc" => Waveform::Dc,
            "noise" => Waveform::Noise {
                seed: self.seed.unwrap_or(1),
                gaussian: match self.distribution.as_deref().unwrap_or("uniform") {
                    "uniform" => false,
                    "gaussian" => true,
                    other => {
                        return Err(format!(
                            "{at}.distribution = \"{other}\" is not a distribution (uniform or gaussian)"
                        ))
                    }
                },
            },
            "replay" => {
                let file = self.file.as_ref().ok_or(format!("{at}.file is required with source = \"replay\""))?;
                let path = if file.is_absolute() { file.clone() } else { base.join(file) };
                let kind = match self.file_format.as_deref().or(path.extension().and_then(|e| e.to_str())) {
                    Some("wav") => FileFormat::Wav,
                    Some("csv") => FileFormat::Csv,
                    Some("raw") => FileFormat::Raw {
                        format: parse_format(&format!("{at}.raw_format"), self.raw_format.as_deref().unwrap_or("s16"))?,
                        channels: in_range(&format!("{at}.raw_channels"), self.raw_channels.unwrap_or(1), 1, 255)? as usize,
                    },
                    other => {
                        return Err(format!(
                            "{at}.file_format = {other:?} is not a recording format (wav, csv or raw)"
                        ))
                    }
                };
                let recording = recording::load(&path, kind).map_err(|e| format!("{at}.file: {e}"))?;
                let column = in_range(&format!("{at}.column"), self.column.unwrap_or(index as i64), 0, 254)? as usize;
                Waveform::Replay { recording: Arc::new(recording), looped: self.looped.unwrap_or(true), column }
            }
            other => {
                return Err(format!(
                    "{at}.source = \"{other}\" is not a source (counter, sine, square, triangle, sawtooth, dc, noise, replay)"
                ))
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
            .collect()
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
            ("[[stream]]\nformats = [\"s24\"]", "stream[0].formats = \"s24\" is not a format"),
            (
                "[[stream]]\nchannels_min = 4\nchannels_max = 2",
                "channels_min = 4 is larger than channels_max = 2",
            ),
            ("[[stream]]\nunits = \"amps\"", "stream[0].units = \"amps\" is not a unit"),
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
                "stream[0].channel[0].source = \"pulse\" is not a source",
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
        ];
        for (text, want) in cases {
            let e = caps(text).expect_err(text);
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
