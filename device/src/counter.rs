// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The counter source at memory speed: frames whose every sample is the frame's sample-clock
//! index, encoded in the stream's format.
//!
//! The reference encoding is [`SampleFormat::encode_counter`] (one sample, with the modulo).
//! Here a block is split at the format's wrap points, so that within a run the value is just
//! `start + k` in the sample's own integer type: no division, no per-sample dispatch, a loop
//! that the compiler unrolls per channel count and vectorises, for AVX2 (256-bit stores) when
//! the CPU has it: that doubles the rate of large periods over the baseline's 128-bit stores.
//!
//! The frames are written into a [`VolatileSlice`]: a window of guest memory (the device
//! writes the counter straight into the buffer that waits for it, one pass over the bytes) or
//! a plain byte slice.

use vdaq_proto::format::SampleFormat;
use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

/// Writes frames `first_frame..` of `channels` samples of `format` into `out`, whose length is
/// a multiple of the frame size (a trailing partial frame is left untouched).
pub fn fill(format: SampleFormat, channels: usize, first_frame: u64, out: &mut [u8]) {
    fill_volatile(format, channels, first_frame, &VolatileSlice::from(out));
}

/// [`fill`] into a window of memory the device does not own alone (guest memory): written
/// through raw pointers, never through a reference, and marked dirty for live migration.
pub fn fill_volatile<B: BitmapSlice>(
    format: SampleFormat,
    channels: usize,
    first_frame: u64,
    out: &VolatileSlice<'_, B>,
) {
    fill_runs(format, channels, first_frame, out, fill_run);
}

/// Writes one run of frames (no wrap inside): `(format, channels, first value, at, bytes)`,
/// with the promise of [`fill_run`].
type RunWriter = unsafe fn(SampleFormat, usize, u64, *mut u8, usize);

/// [`fill_volatile`], a run between wrap points at a time, each written by `write_run`.
fn fill_runs<B: BitmapSlice>(
    format: SampleFormat,
    channels: usize,
    first_frame: u64,
    out: &VolatileSlice<'_, B>,
    write_run: RunWriter,
) {
    let channels = channels.max(1);
    let frame_bytes = format.width() * channels;
    let whole = out.len() / frame_bytes * frame_bytes;
    let guard = out.ptr_guard_mut();
    let base = guard.as_ptr();
    let modulus = format.counter_modulus();
    let mut value = first_frame % modulus;
    let mut at = 0;
    while at < whole {
        // Frames up to the next wrap (or the end of `out`).
        let frames = ((whole - at) / frame_bytes) as u64;
        let run = frames.min(modulus - value);
        let bytes = run as usize * frame_bytes;
        // SAFETY: `base` points to `out.len()` bytes valid for writes while `guard` lives
        // (VolatileSlice's invariant), and `at + bytes <= whole <= out.len()`. The run writers
        // write through raw pointers only: no reference to memory another party (the guest)
        // may access at the same time is created, as in vm-memory's own copies into it.
        unsafe { write_run(format, channels, value, base.add(at), bytes) };
        at += bytes;
        value = (value + run) % modulus;
    }
    out.bitmap().mark_dirty(0, whole);
}

/// Frames `value..value + n` (no wrap inside) into the `len` bytes at `out`, with the widest
/// vectors the CPU has.
///
/// # Safety
///
/// `out` must be valid for writes of `len` bytes.
unsafe fn fill_run(format: SampleFormat, channels: usize, value: u64, out: *mut u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; the caller's promise about `out` and `len`.
        unsafe { fill_run_avx2(format, channels, value, out, len) };
        return;
    }
    // SAFETY: the caller's promise.
    unsafe { fill_run_any(format, channels, value, out, len) }
}

/// [`fill_run_any`] compiled for AVX2 (256-bit stores).
///
/// # Safety
///
/// As [`fill_run`], and the CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn fill_run_avx2(
    format: SampleFormat,
    channels: usize,
    value: u64,
    out: *mut u8,
    len: usize,
) {
    // SAFETY: the caller's promise.
    unsafe { fill_run_any(format, channels, value, out, len) }
}

/// [`fill_run`] for any x86-64 CPU (or another architecture).
///
/// # Safety
///
/// As [`fill_run`].
#[inline(always)]
unsafe fn fill_run_any(
    format: SampleFormat,
    channels: usize,
    value: u64,
    out: *mut u8,
    len: usize,
) {
    // Within a run the value fits the sample's type and `value + k` does not wrap, so the
    // truncating casts below are the modulo.
    // SAFETY: every arm passes on the caller's promise about `out` and `len`.
    unsafe {
        match format {
            SampleFormat::U8 => {
                let v = value as u8;
                by_channels(out, len, channels, |k| [v.wrapping_add(k as u8)]);
            }
            SampleFormat::S16 => {
                let v = value as u16;
                by_channels(out, len, channels, |k| v.wrapping_add(k as u16).to_le_bytes());
            }
            SampleFormat::S32 => {
                let v = value as u32;
                by_channels(out, len, channels, |k| v.wrapping_add(k as u32).to_le_bytes());
            }
            SampleFormat::Float => {
                // Below 2^24: exact in f32, and in u32 arithmetic.
                let v = value as u32;
                by_channels(out, len, channels, |k| {
                    (v.wrapping_add(k as u32) as f32).to_le_bytes()
                });
            }
            SampleFormat::Float64 => {
                // Below 2^53: exact in f64, and positive in i64 (a cheaper conversion than u64).
                let v = value as i64;
                by_channels(out, len, channels, |k| {
                    (v.wrapping_add(k as i64) as f64).to_le_bytes()
                });
            }
        }
    }
}

/// Calls [`frames`] with the channel count as a constant for the common counts, so that each
/// gets its own unrolled, vectorised loop.
///
/// # Safety
///
/// As [`fill_run`].
#[inline(always)]
unsafe fn by_channels<const W: usize>(
    out: *mut u8,
    len: usize,
    channels: usize,
    code: impl Fn(usize) -> [u8; W],
) {
    // SAFETY: every arm passes on the caller's promise about `out` and `len`.
    unsafe {
        match channels {
            1 => frames(out, len, 1, code),
            2 => frames(out, len, 2, code),
            4 => frames(out, len, 4, code),
            8 => frames(out, len, 8, code),
            n => frames(out, len, n, code),
        }
    }
}

/// Frame `k` of the `len` bytes at `out` gets `code(k)` on each of its `channels` samples.
///
/// # Safety
///
/// As [`fill_run`].
#[inline(always)]
unsafe fn frames<const W: usize>(
    out: *mut u8,
    len: usize,
    channels: usize,
    code: impl Fn(usize) -> [u8; W],
) {
    let frame_bytes = W * channels;
    for k in 0..len / frame_bytes {
        let sample = code(k);
        for c in 0..channels {
            // SAFETY: `(k * channels + c + 1) * W <= len`, and the caller's promise: the
            // sample lies within the `len` writable bytes at `out`.
            unsafe { out.add((k * channels + c) * W).cast::<[u8; W]>().write_unaligned(sample) };
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

    /// Every way of writing a run: the one this CPU takes, and the baseline (on a CPU with
    /// AVX2, the only test of the code every other CPU runs).
    const WRITERS: [(&str, RunWriter); 2] = [("dispatched", fill_run), ("baseline", fill_run_any)];

    fn check(format: SampleFormat, channels: usize, first: u64, frames: usize) {
        let want = reference(format, channels, first, frames);
        for (name, writer) in WRITERS {
            let mut got = vec![0xa5u8; frames * channels * format.width()];
            fill_runs(format, channels, first, &VolatileSlice::from(&mut got[..]), writer);
            assert_eq!(got, want, "{name}: {format:?} x{channels} from {first} for {frames}");
        }
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
