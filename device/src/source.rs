//! Signal sources: what each channel of a stream carries, and the rendering of frames in a
//! negotiated format.
//!
//! Every source is a function of the frame's sample-clock index, so a lost period leaves
//! exactly its gap and rendering needs no per-sample state: waveforms take their phase from the
//! index (no drift), noise hashes (seed, index), replay indexes the recording.

use std::sync::Arc;

use vdaq_proto::format::SampleFormat;

/// Size of the sine table (one period); linear interpolation between entries keeps the error
/// below 1.2e-6 of full scale.
const SINE_TABLE: usize = 4096;

/// A recorded signal for replay: frames of per-channel values, in the stream's units.
#[derive(Clone, Debug, PartialEq)]
pub struct Recording {
    /// Interleaved values, `channels` per frame.
    pub values: Vec<f64>,
    /// Channels per frame in the recording.
    pub channels: usize,
}

impl Recording {
    /// Number of frames.
    pub fn frames(&self) -> u64 {
        (self.values.len() / self.channels.max(1)) as u64
    }

    /// Value of `channel` (modulo the recording's channels) at `frame`.
    fn value(&self, frame: u64, channel: usize) -> f64 {
        let ch = channel % self.channels.max(1);
        self.values.get(frame as usize * self.channels + ch).copied().unwrap_or(0.0)
    }
}

/// The waveform of a channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Waveform {
    /// The sample-clock index of the frame, as an exact code (integrity checks; amplitude and
    /// offset do not apply).
    Counter,
    /// Sine.
    Sine,
    /// Square wave, high for `duty` of each period (0 to 1).
    Square {
        /// Fraction of the period at the high level.
        duty: f64,
    },
    /// Triangle: -1 to 1 and back over one period.
    Triangle,
    /// Sawtooth: -1 rising to 1 over one period.
    Sawtooth,
    /// Constant `offset`.
    Dc,
    /// Noise from a seed: the same seed gives the same samples.
    Noise {
        /// Seed.
        seed: u64,
        /// Gaussian (standard deviation `amplitude`) or uniform (in ±`amplitude`).
        gaussian: bool,
    },
    /// Replay of a recording.
    Replay {
        /// The recording.
        recording: Arc<Recording>,
        /// Start again at the end (else the channel reads 0 after the end).
        looped: bool,
        /// The recording's channel (column) this channel plays.
        column: usize,
    },
}

/// How a channel's values map to sample codes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Units {
    /// Values are volts; `full_scale` volts is the format's largest code (floats: 1.0).
    Volts {
        /// Volts at full scale.
        full_scale: f64,
    },
    /// Values are codes of the format (floats: the value itself).
    Codes,
}

/// One channel's signal.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelSignal {
    /// The waveform.
    pub waveform: Waveform,
    /// Peak amplitude (noise: see [`Waveform::Noise`]).
    pub amplitude: f64,
    /// Added to every value.
    pub offset: f64,
    /// Frequency in Hz (periodic waveforms).
    pub frequency: f64,
    /// Phase at frame 0, in degrees.
    pub phase_deg: f64,
}

impl ChannelSignal {
    /// The counter channel.
    pub fn counter() -> Self {
        Self {
            waveform: Waveform::Counter,
            amplitude: 0.0,
            offset: 0.0,
            frequency: 0.0,
            phase_deg: 0.0,
        }
    }

    /// The signal's value (in its units) at frame `index` of a `rate` Hz stream; `None` for
    /// the counter, which is not a value but a code.
    pub fn value(&self, index: u64, rate: u32, table: &SineTable) -> Option<f64> {
        let cycles = || {
            // The phase of frame `index`, from the index itself: no accumulated drift.
            let per_frame = self.frequency / f64::from(rate.max(1));
            let whole = (index as f64 * per_frame).fract();
            (whole + self.phase_deg / 360.0).rem_euclid(1.0)
        };
        let unit = match &self.waveform {
            Waveform::Counter => return None,
            Waveform::Sine => table.sin_cycles(cycles()),
            Waveform::Square { duty } => {
                if cycles() < *duty {
                    1.0
                } else {
                    -1.0
                }
            }
            Waveform::Triangle => {
                let c = cycles();
                if c < 0.5 {
                    4.0 * c - 1.0
                } else {
                    3.0 - 4.0 * c
                }
            }
            Waveform::Sawtooth => 2.0 * cycles() - 1.0,
            Waveform::Dc => 0.0,
            Waveform::Noise { seed, gaussian } => {
                if *gaussian {
                    normal(*seed, index)
                } else {
                    2.0 * uniform(*seed, index, 0) - 1.0
                }
            }
            Waveform::Replay { recording, looped, column } => {
                let n = recording.frames();
                if n == 0 || (!looped && index >= n) {
                    return Some(0.0);
                }
                let v = recording.value(index % n, *column);
                return Some(v * self.amplitude_scale() + self.offset);
            }
        };
        Some(self.offset + self.amplitude * unit)
    }

    fn amplitude_scale(&self) -> f64 {
        // Replay values are taken as recorded; amplitude 0 (unset) means "as is".
        if self.amplitude == 0.0 {
            1.0
        } else {
            self.amplitude
        }
    }
}

/// splitmix64: a well-mixed 64-bit hash of (seed, index, lane).
fn mix(seed: u64, index: u64, lane: u64) -> u64 {
    let mut z = seed
        .wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(lane.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in [0, 1).
fn uniform(seed: u64, index: u64, lane: u64) -> f64 {
    (mix(seed, index, lane) >> 11) as f64 / (1u64 << 53) as f64
}

/// Standard normal (Box-Muller).
fn normal(seed: u64, index: u64) -> f64 {
    let u1 = 1.0 - uniform(seed, index, 1); // (0, 1]
    let u2 = uniform(seed, index, 2);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A sine table with linear interpolation.
#[derive(Debug)]
pub struct SineTable(Vec<f64>);

impl Default for SineTable {
    fn default() -> Self {
        Self(
            (0..=SINE_TABLE)
                .map(|i| (std::f64::consts::TAU * i as f64 / SINE_TABLE as f64).sin())
                .collect(),
        )
    }
}

impl SineTable {
    /// sin(2π·c) for c in [0, 1).
    pub fn sin_cycles(&self, c: f64) -> f64 {
        let x = c * SINE_TABLE as f64;
        let i = (x as usize).min(SINE_TABLE - 1);
        let f = x - i as f64;
        self.0[i] + (self.0[i + 1] - self.0[i]) * f
    }
}

/// Converts a value to the format's code: volts scale to full scale; integers round to nearest
/// and clip to the format's range; floats are normalised but not clipped.
pub fn encode_value(value: f64, units: Units, format: SampleFormat, out: &mut [u8]) {
    let normalised = match units {
        Units::Volts { full_scale } => Some(value / full_scale),
        Units::Codes => None,
    };
    let int = |max: f64, min: f64| -> f64 {
        let code = normalised.map_or(value, |n| n * max);
        if code.is_nan() {
            0.0
        } else {
            code.round().clamp(min, max)
        }
    };
    match format {
        SampleFormat::U8 => out[0] = (int(127.0, -128.0) as i16 + 128) as u8,
        SampleFormat::S16 => {
            out.copy_from_slice(&(int(32767.0, -32768.0) as i16).to_le_bytes());
        }
        SampleFormat::S32 => {
            out.copy_from_slice(&(int(2_147_483_647.0, -2_147_483_648.0) as i32).to_le_bytes());
        }
        SampleFormat::Float => {
            out.copy_from_slice(&(normalised.unwrap_or(value) as f32).to_le_bytes())
        }
        SampleFormat::Float64 => out.copy_from_slice(&normalised.unwrap_or(value).to_le_bytes()),
    }
}

/// What a stream's channels carry.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamSignal {
    /// Per-channel signals; channels past the end use the last entry (an empty list: counter).
    pub channels: Vec<ChannelSignal>,
    /// Units of the values.
    pub units: Units,
}

impl Default for StreamSignal {
    fn default() -> Self {
        Self { channels: vec![ChannelSignal::counter()], units: Units::Codes }
    }
}

impl StreamSignal {
    /// The signal of channel `ch`.
    pub fn channel(&self, ch: usize) -> ChannelSignal {
        self.channels
            .get(ch)
            .or(self.channels.last())
            .cloned()
            .unwrap_or_else(ChannelSignal::counter)
    }
}

/// Renders frames of a stream's signal in a negotiated format.
#[derive(Debug)]
pub struct Generator {
    channels: Vec<ChannelSignal>,
    units: Units,
    format: SampleFormat,
    rate: u32,
    table: SineTable,
    all_counter: bool,
}

impl Generator {
    /// A generator of interleaved frames of `channels` samples of `format` at `rate` Hz.
    pub fn new(signal: &StreamSignal, format: SampleFormat, channels: usize, rate: u32) -> Self {
        let channels: Vec<ChannelSignal> =
            (0..channels.max(1)).map(|c| signal.channel(c)).collect();
        let all_counter = channels.iter().all(|c| c.waveform == Waveform::Counter);
        Self {
            channels,
            units: signal.units,
            format,
            rate,
            table: SineTable::default(),
            all_counter,
        }
    }

    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.format.width() * self.channels.len()
    }

    /// Writes frames `first_frame..` into `out`, whose length is a multiple of the frame size.
    pub fn render(&mut self, first_frame: u64, out: &mut [u8]) {
        let width = self.format.width();
        let frame_bytes = self.frame_bytes();
        if self.all_counter {
            // The integrity-check fast path: one encode per frame, copied to every channel.
            for (i, frame) in out.chunks_exact_mut(frame_bytes).enumerate() {
                let (first, rest) = frame.split_at_mut(width);
                self.format.encode_counter(first_frame + i as u64, first);
                for sample in rest.chunks_exact_mut(width) {
                    sample.copy_from_slice(first);
                }
            }
            return;
        }
        for (i, frame) in out.chunks_exact_mut(frame_bytes).enumerate() {
            let index = first_frame + i as u64;
            for (signal, sample) in self.channels.iter().zip(frame.chunks_exact_mut(width)) {
                match signal.value(index, self.rate, &self.table) {
                    Some(v) => encode_value(v, self.units, self.format, sample),
                    None => self.format.encode_counter(index, sample),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(waveform: Waveform) -> ChannelSignal {
        ChannelSignal { waveform, amplitude: 1.0, offset: 0.0, frequency: 1000.0, phase_deg: 0.0 }
    }

    #[test]
    fn counter_puts_the_frame_index_on_every_channel() {
        let mut g = Generator::new(&StreamSignal::default(), SampleFormat::S16, 3, 48_000);
        let mut out = vec![0u8; 2 * 6];
        g.render(0xfffe, &mut out);
        assert_eq!(
            out,
            vec![0xfe, 0xff, 0xfe, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn sine_table_matches_sin_within_its_stated_error() {
        let t = SineTable::default();
        for i in 0..10_000 {
            let c = i as f64 / 10_000.0;
            assert!((t.sin_cycles(c) - (std::f64::consts::TAU * c).sin()).abs() < 1.2e-6);
        }
    }

    #[test]
    fn waveforms_follow_their_definitions() {
        let t = SineTable::default();
        let rate = 8000; // 1 kHz: 8 frames per period
        let v = |w: Waveform, i| sig(w).value(i, rate, &t).unwrap_or(f64::NAN);
        assert_eq!(v(Waveform::Square { duty: 0.25 }, 0), 1.0);
        assert_eq!(v(Waveform::Square { duty: 0.25 }, 2), -1.0);
        assert_eq!(v(Waveform::Triangle, 0), -1.0);
        assert_eq!(v(Waveform::Triangle, 4), 1.0);
        assert_eq!(v(Waveform::Triangle, 2), 0.0);
        assert_eq!(v(Waveform::Sawtooth, 0), -1.0);
        assert_eq!(v(Waveform::Sawtooth, 4), 0.0);
        assert_eq!(v(Waveform::Dc, 3), 0.0);
        assert!((v(Waveform::Sine, 2) - 1.0).abs() < 1e-6);
        let mut s = sig(Waveform::Sine);
        s.phase_deg = 90.0;
        assert!((s.value(0, rate, &t).unwrap_or(0.0) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn noise_is_reproducible_from_its_seed_and_has_the_stated_spread() {
        let t = SineTable::default();
        let n = |seed, gaussian| sig(Waveform::Noise { seed, gaussian });
        let a: Vec<f64> = (0..1000).filter_map(|i| n(7, false).value(i, 8000, &t)).collect();
        let b: Vec<f64> = (0..1000).filter_map(|i| n(7, false).value(i, 8000, &t)).collect();
        let c: Vec<f64> = (0..1000).filter_map(|i| n(8, false).value(i, 8000, &t)).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        let g: Vec<f64> = (0..100_000).filter_map(|i| n(1, true).value(i, 8000, &t)).collect();
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        let var = g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / g.len() as f64;
        assert!(
            mean.abs() < 0.02 && (var.sqrt() - 1.0).abs() < 0.02,
            "mean {mean}, sd {}",
            var.sqrt()
        );
    }

    #[test]
    fn values_clip_and_round_in_every_format() {
        let mut b = [0u8; 8];
        let volts = Units::Volts { full_scale: 10.0 };
        encode_value(10.0, volts, SampleFormat::S16, &mut b[..2]);
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), 32767);
        encode_value(-20.0, volts, SampleFormat::S16, &mut b[..2]);
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), -32768, "clipped");
        encode_value(0.5, Units::Codes, SampleFormat::S16, &mut b[..2]);
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), 1, "round half away from zero");
        encode_value(0.0, volts, SampleFormat::U8, &mut b[..1]);
        assert_eq!(b[0], 128);
        encode_value(1e9, Units::Codes, SampleFormat::U8, &mut b[..1]);
        assert_eq!(b[0], 255);
        encode_value(5.0, volts, SampleFormat::S32, &mut b[..4]);
        assert_eq!(i32::from_le_bytes([b[0], b[1], b[2], b[3]]), 1_073_741_824);
        encode_value(5.0, volts, SampleFormat::Float, &mut b[..4]);
        assert_eq!(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), 0.5);
        encode_value(-25.0, volts, SampleFormat::Float64, &mut b);
        assert_eq!(f64::from_le_bytes(b), -2.5, "floats are not clipped");
        encode_value(f64::NAN, Units::Codes, SampleFormat::S16, &mut b[..2]);
        assert_eq!(i16::from_le_bytes([b[0], b[1]]), 0);
    }

    #[test]
    fn replay_loops_or_stops() {
        let t = SineTable::default();
        let rec = Arc::new(Recording { values: vec![1.0, 2.0, 3.0], channels: 1 });
        let mut s = sig(Waveform::Replay { recording: rec.clone(), looped: true, column: 0 });
        s.amplitude = 0.0;
        assert_eq!(s.value(4, 8000, &t), Some(2.0));
        s.waveform = Waveform::Replay { recording: rec, looped: false, column: 0 };
        assert_eq!(s.value(4, 8000, &t), Some(0.0));
        assert_eq!(s.value(2, 8000, &t), Some(3.0));
    }
}
