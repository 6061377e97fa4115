// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Signal analysis of a capture: frequency by zero crossings, range and mean.

use vdaq_proto::format::SampleFormat;

/// What a channel of a capture looks like.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Analysis {
    /// Frames analysed.
    pub frames: usize,
    /// Smallest value (integer formats: codes; floats: values).
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// Frequency from the rising crossings of the mean, over the time between the first and
    /// the last (0 when fewer than two).
    pub frequency_hz: f64,
}

fn value(s: &[u8], format: SampleFormat) -> f64 {
    match format {
        SampleFormat::U8 => f64::from(s[0]) - 128.0,
        SampleFormat::S16 => f64::from(i16::from_le_bytes([s[0], s[1]])),
        SampleFormat::S32 => f64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        SampleFormat::Float => f64::from(f32::from_le_bytes([s[0], s[1], s[2], s[3]])),
        SampleFormat::Float64 => {
            f64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]])
        }
    }
}

/// Analyses `channel` of interleaved frames at `rate` Hz; None without a whole frame (no
/// range or mean to give).
pub fn analyze(
    bytes: &[u8],
    format: SampleFormat,
    channels: usize,
    channel: usize,
    rate: u32,
) -> Option<Analysis> {
    let w = format.width();
    let xs: Vec<f64> = bytes
        .chunks_exact(w * channels.max(1))
        .filter_map(|f| f.get(channel * w..(channel + 1) * w).map(|s| value(s, format)))
        .collect();
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    // Rising crossings of the mean, located between samples by linear interpolation.
    let mut crossings = Vec::new();
    for i in 1..n {
        let (a, b) = (xs[i - 1] - mean, xs[i] - mean);
        if a < 0.0 && b >= 0.0 {
            crossings.push((i - 1) as f64 + a / (a - b));
        }
    }
    let frequency_hz = match (crossings.first(), crossings.last()) {
        (Some(first), Some(last)) if crossings.len() >= 2 && last > first => {
            (crossings.len() - 1) as f64 * f64::from(rate) / (last - first)
        }
        _ => 0.0,
    };
    Some(Analysis { frames: n, min, max, mean, frequency_hz })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_frequency_of_a_sine() {
        let rate = 48_000;
        let bytes: Vec<u8> = (0..48_000)
            .flat_map(|i| {
                let v =
                    (10_000.0 * (std::f64::consts::TAU * 997.0 * i as f64 / 48_000.0).sin()) as i16;
                [v.to_le_bytes(), 0i16.to_le_bytes()].concat()
            })
            .collect();
        let a = analyze(&bytes, SampleFormat::S16, 2, 0, rate).unwrap();
        assert!((a.frequency_hz - 997.0).abs() < 0.1, "{a:?}");
        assert_eq!(a.frames, 48_000);
        assert!(a.max <= 10_000.0 && a.max > 9_999.0);
        let flat = analyze(&bytes, SampleFormat::S16, 2, 1, rate).unwrap();
        assert_eq!(flat.frequency_hz, 0.0);
    }

    #[test]
    fn nothing_to_analyse_is_none() {
        assert_eq!(analyze(&[], SampleFormat::S16, 2, 0, 48_000), None);
        assert_eq!(analyze(&[1, 2, 3], SampleFormat::S16, 2, 0, 48_000), None);
    }
}
