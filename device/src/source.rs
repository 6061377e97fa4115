// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
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
        let mut v = [0.0];
        self.fill(index, rate, table, &mut v).then_some(v[0])
    }

    /// The phase (in cycles, 0 to 1) of frame `index`, from the index itself: no accumulated
    /// drift.
    #[inline]
    fn cycles(&self, index: u64, per_frame: f64, phase: f64) -> f64 {
        ((index as f64 * per_frame).fract() + phase).rem_euclid(1.0)
    }

    /// Writes the values of frames `first..first + out.len()` into `out`; false (and nothing
    /// written) for the counter. The waveform is matched once per block, not per sample.
    pub fn fill(&self, first: u64, rate: u32, table: &SineTable, out: &mut [f64]) -> bool {
        let per_frame = self.frequency / f64::from(rate.max(1));
        let phase = self.phase_deg / 360.0;
        let (a, off) = (self.amplitude, self.offset);
        let frames = out.iter_mut().zip(first..);
        match &self.waveform {
            Waveform::Counter => return false,
            Waveform::Sine => {
                for (o, i) in frames {
                    *o = off + a * table.sin_cycles(self.cycles(i, per_frame, phase));
                }
            }
            Waveform::Square { duty } => {
                for (o, i) in frames {
                    let high = self.cycles(i, per_frame, phase) < *duty;
                    *o = off + if high { a } else { -a };
                }
            }
            Waveform::Triangle => {
                for (o, i) in frames {
                    let c = self.cycles(i, per_frame, phase);
                    *o = off + a * if c < 0.5 { 4.0 * c - 1.0 } else { 3.0 - 4.0 * c };
                }
            }
            Waveform::Sawtooth => {
                for (o, i) in frames {
                    *o = off + a * (2.0 * self.cycles(i, per_frame, phase) - 1.0);
                }
            }
            Waveform::Dc => out.fill(off),
            Waveform::Noise { seed, gaussian: false } => {
                for (o, i) in frames {
                    *o = off + a * (2.0 * uniform(*seed, i, 0) - 1.0);
                }
            }
            Waveform::Noise { seed, gaussian: true } => {
                for (o, i) in frames {
                    *o = off + a * normal(*seed, i);
                }
            }
            Waveform::Replay { recording, looped, column } => {
                let n = recording.frames();
                for (o, i) in frames {
                    *o = if n == 0 || (!looped && i >= n) {
                        0.0
                    } else {
                        recording.value(i % n, *column) * a + off
                    };
                }
            }
        }
        true
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
    encode_block(&[value], units, format, out, 0, out.len());
}

/// Encodes `values` into every `stride`-th sample slot of `out` starting at byte `at`: the
/// block form of [`encode_value`] (format and units matched once). Float-to-integer casts
/// saturate (and map NaN to 0), which is the clipping.
fn encode_block(
    values: &[f64],
    units: Units,
    format: SampleFormat,
    out: &mut [u8],
    at: usize,
    stride: usize,
) {
    let scale = |max: f64| match units {
        Units::Volts { full_scale } => max / full_scale,
        Units::Codes => 1.0,
    };
    let w = format.width();
    let slots = out[at..].chunks_mut(stride).map(|c| &mut c[..w]);
    match format {
        SampleFormat::U8 => {
            let k = scale(127.0);
            for (o, v) in slots.zip(values) {
                o[0] = ((v * k).round() as i8 as i16 + 128) as u8;
            }
        }
        SampleFormat::S16 => {
            let k = scale(32767.0);
            for (o, v) in slots.zip(values) {
                o.copy_from_slice(&((v * k).round() as i16).to_le_bytes());
            }
        }
        SampleFormat::S32 => {
            let k = scale(2_147_483_647.0);
            for (o, v) in slots.zip(values) {
                o.copy_from_slice(&((v * k).round() as i32).to_le_bytes());
            }
        }
        SampleFormat::Float => {
            let k = scale(1.0);
            for (o, v) in slots.zip(values) {
                o.copy_from_slice(&((v * k) as f32).to_le_bytes());
            }
        }
        SampleFormat::Float64 => {
            let k = scale(1.0);
            for (o, v) in slots.zip(values) {
                o.copy_from_slice(&(v * k).to_le_bytes());
            }
        }
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
    /// One channel's values for the block being rendered.
    scratch: Vec<f64>,
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
            scratch: Vec::new(),
        }
    }

    /// The format and channel count when every channel is the counter: such frames need no
    /// rendering buffer ([`crate::counter::fill_volatile`] writes them where they go).
    pub fn counter_only(&self) -> Option<(SampleFormat, usize)> {
        self.all_counter.then_some((self.format, self.channels.len()))
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
            // The integrity-check fast path, at memory speed.
            crate::counter::fill(self.format, self.channels.len(), first_frame, out);
            return;
        }
        let frames = out.len() / frame_bytes;
        self.scratch.resize(frames, 0.0);
        for (c, signal) in self.channels.iter().enumerate() {
            let at = c * width;
            if signal.fill(first_frame, self.rate, &self.table, &mut self.scratch[..frames]) {
                encode_block(
                    &self.scratch[..frames],
                    self.units,
                    self.format,
                    out,
                    at,
                    frame_bytes,
                );
            } else {
                for (i, frame) in out.chunks_exact_mut(frame_bytes).enumerate() {
                    self.format.encode_counter(first_frame + i as u64, &mut frame[at..at + width]);
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
        assert_eq!(s.value(4, 8000, &t), Some(2.0));
        s.waveform = Waveform::Replay { recording: rec, looped: false, column: 0 };
        assert_eq!(s.value(4, 8000, &t), Some(0.0));
        assert_eq!(s.value(2, 8000, &t), Some(3.0));
    }

    #[test]
    fn amplitude_zero_is_zero_for_every_waveform_and_scales_replay() {
        let t = SineTable::default();
        let rec = Arc::new(Recording { values: vec![1.0, 2.0, 3.0], channels: 1 });
        let replay = Waveform::Replay { recording: rec, looped: true, column: 0 };
        let waves = [
            Waveform::Sine,
            Waveform::Square { duty: 0.5 },
            Waveform::Triangle,
            Waveform::Sawtooth,
            Waveform::Noise { seed: 3, gaussian: true },
            Waveform::Noise { seed: 3, gaussian: false },
            replay.clone(),
        ];
        for w in waves {
            let mut s = sig(w.clone());
            s.amplitude = 0.0;
            s.offset = 0.25;
            for i in 0..16 {
                assert_eq!(s.value(i, 8000, &t), Some(0.25), "{w:?} frame {i}");
            }
        }
        let mut s = sig(replay);
        s.amplitude = -2.0;
        assert_eq!(s.value(1, 8000, &t), Some(-4.0));
    }
}
