// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The counter source at memory speed: frames whose every sample is the frame's sample-clock
//! index, encoded in the stream's format.
//!
//! The reference encoding is [`SampleFormat::encode_counter`] (one sample, with the modulo).
//! Here a block is split at the format's wrap points, so that within a run the value is just
//! `start + k` in the sample's own integer type: no division, no per-sample dispatch, a loop
//! that the compiler unrolls per channel count and vectorises.

use vdaq_proto::format::SampleFormat;

/// Writes frames `first_frame..` of `channels` samples of `format` into `out`, whose length is
/// a multiple of the frame size (a trailing partial frame is left untouched).
pub fn fill(format: SampleFormat, channels: usize, first_frame: u64, out: &mut [u8]) {
    let channels = channels.max(1);
    let frame_bytes = format.width() * channels;
    let modulus = format.counter_modulus();
    let mut value = first_frame % modulus;
    let mut rest = out;
    while rest.len() >= frame_bytes {
        // Frames up to the next wrap (or the end of `out`).
        let frames = (rest.len() / frame_bytes) as u64;
        let run = frames.min(modulus - value);
        let (now, later) = rest.split_at_mut(run as usize * frame_bytes);
        fill_run(format, channels, value, now);
        rest = later;
        value = (value + run) % modulus;
    }
}

/// Frames `value..value + n` (no wrap inside) into `out`.
fn fill_run(format: SampleFormat, channels: usize, value: u64, out: &mut [u8]) {
    // Within a run the value fits the sample's type and `value + k` does not wrap, so the
    // truncating casts below are the modulo.
    match format {
        SampleFormat::U8 => {
            let v = value as u8;
            by_channels(out, channels, |k| [v.wrapping_add(k as u8)]);
        }
        SampleFormat::S16 => {
            let v = value as u16;
            by_channels(out, channels, |k| v.wrapping_add(k as u16).to_le_bytes());
        }
        SampleFormat::S32 => {
            let v = value as u32;
            by_channels(out, channels, |k| v.wrapping_add(k as u32).to_le_bytes());
        }
        SampleFormat::Float => {
            // Below 2^24: exact in f32, and in u32 arithmetic.
            let v = value as u32;
            by_channels(out, channels, |k| (v.wrapping_add(k as u32) as f32).to_le_bytes());
        }
        SampleFormat::Float64 => {
            // Below 2^53: exact in f64, and positive in i64 (a cheaper conversion than u64).
            let v = value as i64;
            by_channels(out, channels, |k| (v.wrapping_add(k as i64) as f64).to_le_bytes());
        }
    }
}

/// Calls [`frames`] with the channel count as a constant for the common counts, so that each
/// gets its own unrolled, vectorised loop.
#[inline(always)]
fn by_channels<const W: usize>(out: &mut [u8], channels: usize, code: impl Fn(usize) -> [u8; W]) {
    match channels {
        1 => frames(out, 1, code),
        2 => frames(out, 2, code),
        4 => frames(out, 4, code),
        8 => frames(out, 8, code),
        n => frames(out, n, code),
    }
}

/// Frame `k` of `out` gets `code(k)` on each of its `channels` samples.
#[inline(always)]
fn frames<const W: usize>(out: &mut [u8], channels: usize, code: impl Fn(usize) -> [u8; W]) {
    for (k, frame) in out.chunks_exact_mut(W * channels).enumerate() {
        let sample = code(k);
        for slot in frame.chunks_exact_mut(W) {
            slot.copy_from_slice(&sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: one `encode_counter` per sample.
    fn reference(format: SampleFormat, channels: usize, first: u64, frames: usize) -> Vec<u8> {
        let w = format.width();
        let mut out = vec![0u8; frames * channels * w];
        for (i, frame) in out.chunks_exact_mut(channels * w).enumerate() {
            for sample in frame.chunks_exact_mut(w) {
                format.encode_counter(first + i as u64, sample);
            }
        }
        out
    }

    fn check(format: SampleFormat, channels: usize, first: u64, frames: usize) {
        let mut got = vec![0xa5u8; frames * channels * format.width()];
        fill(format, channels, first, &mut got);
        assert_eq!(
            got,
            reference(format, channels, first, frames),
            "{format:?} x{channels} from {first} for {frames}"
        );
    }

    #[test]
    fn equals_the_reference_encoding_for_every_format_and_channel_count() {
        for format in SampleFormat::ALL {
            for channels in [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 255] {
                for first in [0, 1, 77, 12_345, 1 << 40] {
                    check(format, channels, first, 300);
                }
            }
        }
    }

    #[test]
    fn equals_the_reference_across_every_wrap_point() {
        for format in SampleFormat::ALL {
            let m = format.counter_modulus();
            for channels in [1, 2, 3, 8] {
                // Starting just before, at and after a wrap, and several moduli in.
                for first in [m - 1, m - 5, m, m + 1, 3 * m - 2, u64::MAX - 700] {
                    check(format, channels, first, 600);
                }
            }
        }
        // U8 wraps every 256 frames: a block spanning several wraps.
        check(SampleFormat::U8, 2, 250, 2000);
    }

    #[test]
    fn a_trailing_partial_frame_is_left_alone() {
        let mut out = vec![0xeeu8; 2 * 2 * 3 + 1];
        fill(SampleFormat::S16, 2, 5, &mut out);
        assert_eq!(&out[..12], &reference(SampleFormat::S16, 2, 5, 3)[..]);
        assert_eq!(out[12], 0xee);
    }

    #[test]
    fn empty_output_is_fine() {
        fill(SampleFormat::S32, 4, 9, &mut []);
    }
}
