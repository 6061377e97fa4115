// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Integrity check of counter-source captures: every channel of a frame carries the frame's
//! sample-clock index, and the index grows by one per frame (modulo the format's range).
//!
//! The device's counter rule: each PCM_PREPARE starts a new acquisition at frame 0; within a
//! START..STOP run, periods lost in the device leave a gap of exactly their frames; STOP then
//! START continues without a gap. A recovery (Linux's virtio_snd sends STOP, RELEASE, PREPARE,
//! START on every capture overrun) therefore shows as a jump to 0: a *restart*. The caller
//! says how many recoveries were announced ([`CounterChecker::allow_restarts`]); while some
//! are left, a jump to 0 is counted as a restart before any other classification; past them it
//! is classified as any other jump (a gap or a step back), so that a capture with more
//! restarts than announced fails, and a gap of whole periods that ends on a wrap to 0 in a
//! narrow format stays a gap.

use vdaq_proto::format::SampleFormat;

/// What a counter capture looked like.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterReport {
    /// Frames checked.
    pub frames: u64,
    /// Counter value of the first frame.
    pub first: Option<u64>,
    /// Places where the counter jumped forward (frames lost in between).
    pub gaps: u64,
    /// Frames missing across all gaps.
    pub missing_frames: u64,
    /// Places where the counter went backwards or repeated.
    pub reorders: u64,
    /// Frames whose channels disagree, or whose samples are not counter values.
    pub corrupt_frames: u64,
    /// Places where the counter started again at 0 (a new acquisition: a recovery).
    pub restarts: u64,
    /// Restarts the caller announced (recoveries it knows of): up to this many are clean.
    pub restarts_allowed: u64,
    /// Bytes after the last whole frame.
    pub trailing_bytes: usize,
    /// The first problem, if any.
    pub first_problem: Option<Problem>,
}

/// A problem in a counter capture (recorded without allocating: the checker runs in signal
/// handlers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A sample that is not a counter value.
    NotCounter { frame: u64 },
    /// Channels of one frame carry different values.
    ChannelsDisagree { frame: u64 },
    /// The counter jumped forward.
    Gap { frame: u64, value: u64, expected: u64 },
    /// The counter went back or repeated.
    Back { frame: u64, value: u64, expected: u64 },
    /// Bytes after the last whole frame.
    Trailing { bytes: usize },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::NotCounter { frame } => write!(f, "frame {frame}: not a counter value"),
            Self::ChannelsDisagree { frame } => write!(f, "frame {frame}: channels disagree"),
            Self::Gap { frame, value, expected } => {
                write!(f, "frame {frame}: counter {value}, expected {expected} (frames missing)")
            }
            Self::Back { frame, value, expected } => {
                write!(f, "frame {frame}: counter {value}, expected {expected} (went back)")
            }
            Self::Trailing { bytes } => write!(f, "{bytes} bytes after the last whole frame"),
        }
    }
}

impl CounterReport {
    /// True when the capture is unbroken runs of counter frames, each after the first
    /// starting at 0 (at most as many restarts as announced).
    pub fn is_clean(&self) -> bool {
        self.gaps == 0 && self.reorders == 0 && self.corrupt_frames == 0 && self.trailing_bytes == 0
    }

    /// One-line JSON rendering.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The report as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(crate::report::CounterJson::from(self)).unwrap_or_default()
    }
}

/// Samples per block of the fast path: a block is compared at once against the expected
/// pattern (its template stays in the L1 cache beside the data).
const BLOCK_SAMPLES: usize = 2048;

/// The integer ranges of one float binade within `frames` consecutive counter values from
/// `first`: `(offset, length, exponent)` with every value `first + offset + i` (`i < length`)
/// in [2^exponent, 2^(exponent + 1)), or `exponent` `None` for the value 0.
fn binades(first: u64, frames: u64) -> impl Iterator<Item = (u64, u64, Option<u32>)> {
    let mut offset = 0;
    std::iter::from_fn(move || {
        if offset >= frames {
            return None;
        }
        let n = first + offset;
        let segment = if n == 0 {
            (offset, 1, None)
        } else {
            let exponent = n.ilog2();
            let binade_end = 1u64 << (exponent + 1);
            (offset, (binade_end - n).min(frames - offset), Some(exponent))
        };
        offset += segment.1;
        Some(segment)
    })
}

/// The bit pattern of the float holding the integer `n`, and the step between consecutive
/// integers of its binade, for a float of `mantissa_bits` and exponent `bias`. Within
/// [2^e, 2^(e+1)) the pattern of n is `((bias - 1 + e) << mantissa_bits) + (n << shift)` with
/// `shift = mantissa_bits - e`: an arithmetic progression, so a block is checked with integer
/// adds and shifts (under TCG, float conversions run in software).
fn float_pattern(n: u64, exponent: Option<u32>, mantissa_bits: u32, bias: u64) -> (u64, u32) {
    match exponent {
        None => (0, 0),
        Some(e) => {
            let shift = mantissa_bits - e;
            (((bias - 1 + u64::from(e)) << mantissa_bits) + (n << shift), shift)
        }
    }
}

/// The expected pattern of one block of `channels`-sample frames in `format`, relative to its
/// first frame's counter value: word `s` is the frame of sample `s` (`s / channels`).
#[derive(Debug)]
struct Template {
    format: SampleFormat,
    channels: usize,
    words: Words,
}

/// A [`Template`]'s words, in the sample's word type.
#[derive(Debug)]
enum Words {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
}

impl Template {
    fn new(format: SampleFormat, channels: usize, block_frames: usize) -> Self {
        let offsets = (0..block_frames * channels).map(|s| (s / channels) as u64);
        let words = match format.width() {
            1 => Words::U8(offsets.map(|o| o as u8).collect()),
            2 => Words::U16(offsets.map(|o| o as u16).collect()),
            4 => Words::U32(offsets.map(|o| o as u32).collect()),
            _ => Words::U64(offsets.collect()),
        };
        Self { format, channels, words }
    }
}

/// True when `data` (whole frames) is exactly the canonical encoding of the counter values
/// `first`, `first + 1`, ... on every channel (the fast path: words XORed with the pattern,
/// no per-sample decode, no branch per sample). `template` covers at least `data`. Blocks that
/// cross a float format's wrap point return false: the caller's exact path takes them. Float
/// blocks are checked binade by binade in integers ([`float_pattern`]).
#[inline(always)]
fn block_matches(template: &Template, data: &[u8], first: u64) -> bool {
    let (format, channels) = (template.format, template.channels);
    let frames = (data.len() / (format.width() * channels)) as u64;
    match (format, &template.words) {
        (SampleFormat::U8, Words::U8(t)) => {
            let v = first as u8;
            data.iter().zip(t).fold(0u8, |acc, (&d, &o)| acc | (d ^ v.wrapping_add(o))) == 0
        }
        (SampleFormat::S16, Words::U16(t)) => {
            let v = first as u16;
            data.chunks_exact(2).zip(t).fold(0u16, |acc, (d, &o)| {
                acc | (u16::from_le_bytes([d[0], d[1]]) ^ v.wrapping_add(o))
            }) == 0
        }
        (SampleFormat::S32, Words::U32(t)) => {
            let v = first as u32;
            data.chunks_exact(4).zip(t).fold(0u32, |acc, (d, &o)| {
                acc | (u32::from_le_bytes([d[0], d[1], d[2], d[3]]) ^ v.wrapping_add(o))
            }) == 0
        }
        (SampleFormat::Float, Words::U32(t)) => {
            // Every value of the block below 2^24: exact in an f32.
            if first + frames > 1 << 24 {
                return false;
            }
            binades(first, frames).all(|(offset, length, exponent)| {
                let (base, shift) = float_pattern(first + offset, exponent, 23, 127);
                let (base, samples) = (base as u32, offset as usize * channels);
                data[samples * 4..(samples + length as usize * channels) * 4]
                    .chunks_exact(4)
                    .zip(t)
                    .fold(0u32, |acc, (d, &o)| {
                        acc | (u32::from_le_bytes([d[0], d[1], d[2], d[3]])
                            ^ base.wrapping_add(o << shift))
                    })
                    == 0
            })
        }
        (SampleFormat::Float64, Words::U64(t)) => {
            if first + frames > 1 << 53 {
                return false;
            }
            binades(first, frames).all(|(offset, length, exponent)| {
                let (base, shift) = float_pattern(first + offset, exponent, 52, 1023);
                let samples = offset as usize * channels;
                data[samples * 8..(samples + length as usize * channels) * 8]
                    .chunks_exact(8)
                    .zip(t)
                    .fold(0u64, |acc, (d, &o)| {
                        acc | (u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
                            ^ base.wrapping_add(o << shift))
                    })
                    == 0
            })
        }
        _ => false,
    }
}

/// [`block_matches`], compiled for AVX2: the same code with twice SSE2's vector width.
///
/// # Safety
///
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_matches_avx2(template: &Template, data: &[u8], first: u64) -> bool {
    block_matches(template, data, first)
}

/// Whether this CPU runs [`block_matches_avx2`] (QEMU's TCG with `-cpu max` emulates AVX2, as
/// current x86 hosts have it).
fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Checks interleaved counter frames incrementally (captures arrive in pieces).
///
/// Fast path: once the next counter value is known, blocks of frames are compared whole
/// against the pattern they must hold ([`block_matches`]); a block that differs in any way is
/// checked again frame by frame ([`Self::check_exact`]), which locates and describes the
/// problem. A matching block is exactly what the frame-by-frame check accepts without a
/// problem, so the report is the same as checking every frame.
#[derive(Debug)]
pub struct CounterChecker {
    format: SampleFormat,
    channels: usize,
    expected: Option<u64>,
    report: CounterReport,
    template: Template,
    block_frames: usize,
    /// The CPU has AVX2: [`block_matches_avx2`] is safe to call.
    avx2: bool,
}

impl CounterChecker {
    /// A checker for frames of `channels` samples in `format`.
    pub fn new(format: SampleFormat, channels: usize) -> Self {
        let channels = channels.max(1);
        let block_frames = (BLOCK_SAMPLES / channels).max(1);
        Self {
            format,
            channels,
            expected: None,
            report: CounterReport::default(),
            template: Template::new(format, channels, block_frames),
            block_frames,
            avx2: has_avx2(),
        }
    }

    /// Allows `announced` restarts (recoveries the caller knows of, e.g. arecord's
    /// `overrun!!!` messages): a jump to 0 is then clean, up to that many times.
    pub fn allow_restarts(mut self, announced: u64) -> Self {
        self.report.restarts_allowed = announced;
        self
    }

    /// [`block_matches`] with the widest vectors this CPU has.
    fn block_matches(&self, block: &[u8], first: u64) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is true only when the CPU reported AVX2 (`has_avx2`).
            return unsafe { block_matches_avx2(&self.template, block, first) };
        }
        block_matches(&self.template, block, first)
    }

    fn problem(&mut self, what: Problem) {
        if self.report.first_problem.is_none() {
            self.report.first_problem = Some(what);
        }
    }

    /// Checks whole frames; `bytes` must hold a whole number of frames (a partial last frame
    /// is ignored). Returns the number of frames lost before the first frame of `bytes` (0
    /// when none).
    pub fn check(&mut self, bytes: &[u8]) -> u64 {
        let frame_bytes = self.format.width() * self.channels;
        let mut rest = &bytes[..bytes.len() - bytes.len() % frame_bytes];
        let mut lost = 0;
        while !rest.is_empty() {
            let Some(expected) = self.expected else {
                // The first frame (or, after corrupt ones, the next) sets the expectation.
                let (frame, tail) = rest.split_at(frame_bytes);
                lost += self.check_exact(frame);
                rest = tail;
                continue;
            };
            let take = (rest.len() / frame_bytes).min(self.block_frames);
            let (block, tail) = rest.split_at(take * frame_bytes);
            if self.block_matches(block, expected) {
                self.report.frames += take as u64;
                self.expected = Some((expected + take as u64) % self.format.counter_modulus());
            } else {
                lost += self.check_exact(block);
            }
            rest = tail;
        }
        lost
    }

    /// The frame-by-frame check (every sample decoded): the reference the fast path must
    /// agree with, and the path that describes problems. Same contract as [`Self::check`].
    pub fn check_exact(&mut self, bytes: &[u8]) -> u64 {
        let width = self.format.width();
        let modulus = self.format.counter_modulus();
        let mut lost_here = 0;
        for frame in bytes.chunks_exact(width * self.channels) {
            let index = self.report.frames;
            self.report.frames += 1;
            let mut samples = frame.chunks_exact(width).map(|s| self.format.decode_counter(s));
            let Some(Some(value)) = samples.next() else {
                self.report.corrupt_frames += 1;
                self.problem(Problem::NotCounter { frame: index });
                continue;
            };
            let agree = !samples.any(|s| s != Some(value));
            if !agree {
                self.report.corrupt_frames += 1;
                self.problem(Problem::ChannelsDisagree { frame: index });
            }
            if self.report.first.is_none() {
                self.report.first = Some(value);
            }
            if let Some(expected) = self.expected {
                // Frame 0 on every channel where another value was due, while announced
                // recoveries are left: a new acquisition, whatever the distance (from above
                // half the range it would read as a gap). With none left it is classified as
                // any other jump: in the narrow formats a gap of whole periods can end on a
                // wrap to 0, and a capture announces its gaps.
                if value == 0
                    && agree
                    && expected != 0
                    && self.report.restarts < self.report.restarts_allowed
                {
                    self.report.restarts += 1;
                } else if value != expected {
                    let ahead = (value + modulus - expected) % modulus;
                    // A jump of more than half the range is a step back, not a gap.
                    if ahead < modulus / 2 {
                        self.report.gaps += 1;
                        self.report.missing_frames += ahead;
                        lost_here += ahead;
                        self.problem(Problem::Gap { frame: index, value, expected });
                    } else {
                        self.report.reorders += 1;
                        self.problem(Problem::Back { frame: index, value, expected });
                    }
                }
            }
            self.expected = Some((value + 1) % modulus);
        }
        lost_here
    }

    /// The report so far, with `trailing` bytes that did not make a whole frame.
    pub fn finish(mut self, trailing: usize) -> CounterReport {
        self.report.trailing_bytes = trailing;
        if trailing > 0 {
            self.problem(Problem::Trailing { bytes: trailing });
        }
        self.report
    }
}

/// Checks a whole capture (no restart announced).
#[cfg(test)]
pub fn verify_counter(bytes: &[u8], format: SampleFormat, channels: usize) -> CounterReport {
    verify_counter_with_restarts(bytes, format, channels, 0)
}

/// Checks a whole capture in which `restarts` recoveries were announced (see
/// [`CounterChecker::allow_restarts`]).
pub fn verify_counter_with_restarts(
    bytes: &[u8],
    format: SampleFormat,
    channels: usize,
    restarts: u64,
) -> CounterReport {
    let frame = format.width() * channels.max(1);
    let whole = bytes.len() - bytes.len() % frame;
    let mut c = CounterChecker::new(format, channels).allow_restarts(restarts);
    c.check(&bytes[..whole]);
    c.finish(bytes.len() - whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(
        format: SampleFormat,
        channels: usize,
        indices: impl IntoIterator<Item = u64>,
    ) -> Vec<u8> {
        let w = format.width();
        let mut out = Vec::new();
        for i in indices {
            let mut s = vec![0u8; w];
            format.encode_counter(i, &mut s);
            for _ in 0..channels {
                out.extend_from_slice(&s);
            }
        }
        out
    }

    #[test]
    fn an_unbroken_run_across_the_wrap_is_clean() {
        let bytes = capture(SampleFormat::S16, 2, 65_000..67_000);
        let r = verify_counter(&bytes, SampleFormat::S16, 2);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.frames, r.first), (2000, Some(65_000)));
    }

    #[test]
    fn gaps_count_the_missing_frames() {
        let bytes = capture(SampleFormat::S32, 3, (0..100).chain(150..200).chain(201..210));
        let r = verify_counter(&bytes, SampleFormat::S32, 3);
        assert_eq!((r.gaps, r.missing_frames, r.reorders), (2, 51, 0));
        assert!(!r.is_clean());
    }

    #[test]
    fn repeats_disagreeing_channels_and_trailing_bytes_are_caught() {
        let mut bytes = capture(SampleFormat::U8, 2, (0..10).chain(5..8));
        let r = verify_counter(&bytes, SampleFormat::U8, 2);
        assert_eq!(r.reorders, 1);
        bytes[3] ^= 1;
        bytes.push(0);
        let r = verify_counter(&bytes, SampleFormat::U8, 2);
        assert_eq!((r.corrupt_frames, r.trailing_bytes), (1, 1));
        let r = verify_counter(&capture(SampleFormat::Float, 1, [0]), SampleFormat::Float, 1);
        assert!(r.is_clean());
        let r = verify_counter(&0.5f32.to_le_bytes(), SampleFormat::Float, 1);
        assert_eq!(r.corrupt_frames, 1);
    }

    /// A run of `before` frames from 0, then a restart and `after` frames from 0 again.
    fn restarted(format: SampleFormat, channels: usize, before: u64, after: u64) -> Vec<u8> {
        capture(format, channels, (0..before).chain(0..after))
    }

    #[test]
    fn an_announced_restart_above_half_the_range_is_a_restart_not_a_gap() {
        // S16 at 40,000 and U8 at 200: the jump to 0 is less than half the range ahead, which
        // the modulo classification alone read as a gap (the "continued with gaps").
        for (format, before) in [(SampleFormat::S16, 40_000), (SampleFormat::U8, 200)] {
            for channels in [1, 2] {
                let bytes = restarted(format, channels, before, 3000);
                let r = verify_counter_with_restarts(&bytes, format, channels, 1);
                let what = format!("{format:?} x{channels}: {r:?}");
                assert!(r.is_clean(), "{what}");
                assert_eq!(
                    (r.restarts, r.gaps, r.missing_frames, r.reorders),
                    (1, 0, 0, 0),
                    "{what}"
                );
                assert_eq!((r.frames, r.first, r.first_problem), (before + 3000, Some(0), None));
            }
        }
    }

    #[test]
    fn an_announced_s32_restart_is_clean_and_fewer_restarts_than_announced_too() {
        let bytes = capture(SampleFormat::S32, 3, (0..91_200).chain(0..4800).chain(0..100));
        let r = verify_counter_with_restarts(&bytes, SampleFormat::S32, 3, 2);
        assert!(r.is_clean(), "{r:?}");
        assert_eq!((r.restarts, r.reorders, r.gaps), (2, 0, 0));
        let r = verify_counter_with_restarts(&bytes, SampleFormat::S32, 3, 5);
        assert!(r.is_clean(), "announced recoveries may restart nothing in the capture: {r:?}");
        let r = verify_counter_with_restarts(&bytes[..12 * 1000], SampleFormat::S32, 3, 1);
        assert_eq!(r.restarts, 0);
        assert!(r.is_clean());
    }

    #[test]
    fn an_unannounced_restart_fails_at_its_frame() {
        // With no recovery left to account for it, a jump to 0 is classified as any other
        // jump (a gap or a step back), and fails there.
        let at = |r: &CounterReport| match r.first_problem {
            Some(Problem::Gap { frame, value: 0, .. } | Problem::Back { frame, value: 0, .. }) => {
                Some(frame)
            }
            _ => None,
        };
        for (format, before) in [
            (SampleFormat::S16, 40_000),
            (SampleFormat::S16, 1000),
            (SampleFormat::U8, 200),
            (SampleFormat::S32, 91_200),
            (SampleFormat::Float, 5000),
            (SampleFormat::Float64, 5000),
        ] {
            let bytes = restarted(format, 2, before, 500);
            let r = verify_counter(&bytes, format, 2);
            let what = format!("{format:?}: {r:?}");
            assert!(!r.is_clean(), "{what}");
            assert_eq!((r.restarts, r.gaps + r.reorders), (0, 1), "{what}");
            assert_eq!(at(&r), Some(before), "{what}");
            // Two restarts, one announced: the second is the problem.
            let bytes = capture(format, 2, (0..before).chain(0..10).chain(0..10));
            let r = verify_counter_with_restarts(&bytes, format, 2, 1);
            assert!(!r.is_clean(), "{what}");
            assert_eq!(r.restarts, 1, "{what}");
            assert_eq!(at(&r), Some(before + 10), "{what}");
        }
    }

    #[test]
    fn a_gap_that_ends_on_a_wrap_to_0_is_a_gap_when_no_recovery_was_announced() {
        // S16 wraps every 65,536 frames: periods lost across the wrap end on counter 0.
        let bytes = capture(SampleFormat::S16, 2, (60_000..64_000).chain(65_536..66_000));
        let mut c = CounterChecker::new(SampleFormat::S16, 2);
        c.check(&bytes);
        let r = c.finish(0);
        assert_eq!((r.restarts, r.gaps, r.missing_frames), (0, 1, 1536), "{r:?}");
    }

    #[test]
    fn with_restarts_announced_a_repeat_a_reorder_or_a_gap_still_fails() {
        let cases: [(&str, Vec<u64>); 5] = [
            ("repeat", (0..1000).chain(990..1200).collect()),
            ("reorder", (0..500).chain(600..700).chain(500..600).collect()),
            ("gap", (0..1000).chain(1100..1200).collect()),
            ("gap after a restart", (0..1000).chain(0..100).chain(150..200).collect()),
            ("restart to another value", (0..40_000).chain(1..100).collect()),
        ];
        for (what, indices) in cases {
            for format in [SampleFormat::S16, SampleFormat::S32] {
                let bytes = capture(format, 2, indices.iter().copied());
                let r = verify_counter_with_restarts(&bytes, format, 2, 3);
                assert!(!r.is_clean(), "{what} {format:?}: {r:?}");
                assert!(r.gaps + r.reorders >= 1, "{what} {format:?}: {r:?}");
                assert!(
                    matches!(r.first_problem, Some(Problem::Gap { .. } | Problem::Back { .. })),
                    "{what} {format:?}: {r:?}"
                );
            }
        }
        // A frame of 0 on one channel only is corruption, not a restart.
        let mut bytes = restarted(SampleFormat::S16, 2, 1000, 10);
        bytes[1000 * 4 + 2] = 0x55;
        let r = verify_counter_with_restarts(&bytes, SampleFormat::S16, 2, 3);
        assert_eq!((r.restarts, r.corrupt_frames), (0, 1), "{r:?}");
        assert!(!r.is_clean());
    }

    #[test]
    fn restarts_are_the_same_in_the_fast_and_the_frame_by_frame_check() {
        let mut rng = Rng(0x4e57);
        for format in SampleFormat::ALL {
            for channels in [1, 2, 5] {
                let bytes = capture(
                    format,
                    channels,
                    (0..3000).chain(0..2500).chain(0..7).chain(0..4000).chain(4100..4200),
                );
                let r = both_allowing(&bytes, format, channels, 3, &mut rng);
                assert_eq!(
                    (r.restarts, r.gaps, r.missing_frames),
                    (3, 1, 100),
                    "{format:?}: {r:?}"
                );
            }
        }
    }

    /// xorshift64*: reproducible pseudo-random numbers for the property tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    const CHANNELS: [usize; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 32];

    /// Start indices worth trying for `format`: 0, random ones, just before every wrap point
    /// (the format's modulus), and for the float formats just before binade boundaries (where
    /// the fast path's progression changes step).
    fn starts(format: SampleFormat, rng: &mut Rng) -> Vec<u64> {
        let m = format.counter_modulus();
        let mut v =
            vec![0, rng.below(m), rng.below(m), m - 1, m - 3000 % m, m - 1 - rng.below(5000) % m];
        if format == SampleFormat::Float64 {
            v.extend([(1 << 52) - 1, (1 << 52) - 2500, (1 << 52) + 7]);
        }
        if matches!(format, SampleFormat::Float | SampleFormat::Float64) {
            v.extend([(1 << 20) - 1, (1 << 20) - 700, (1 << 23) - 4000]);
        }
        v.into_iter().map(|s| s % m).collect()
    }

    /// Checks `bytes` in random pieces of whole frames with the fast check and with the
    /// frame-by-frame one; they must agree on every returned loss and on the report.
    fn both(bytes: &[u8], format: SampleFormat, channels: usize, rng: &mut Rng) -> CounterReport {
        both_allowing(bytes, format, channels, 0, rng)
    }

    /// `both`, with `restarts` recoveries announced.
    fn both_allowing(
        bytes: &[u8],
        format: SampleFormat,
        channels: usize,
        restarts: u64,
        rng: &mut Rng,
    ) -> CounterReport {
        let frame = format.width() * channels;
        let mut fast = CounterChecker::new(format, channels).allow_restarts(restarts);
        let mut exact = CounterChecker::new(format, channels).allow_restarts(restarts);
        let mut rest = bytes;
        while !rest.is_empty() {
            let frames = 1 + rng.below(3000) as usize;
            let (piece, tail) = rest.split_at((frames * frame).min(rest.len()));
            assert_eq!(fast.check(piece), exact.check_exact(piece), "{format:?} x{channels}");
            rest = tail;
        }
        let (fast, exact) = (fast.finish(0), exact.finish(0));
        assert_eq!(fast, exact, "{format:?} x{channels}");
        fast
    }

    #[test]
    fn clean_runs_from_any_start_are_clean_in_every_format_and_channel_count() {
        let mut rng = Rng(0x5eed);
        for format in SampleFormat::ALL {
            for channels in CHANNELS {
                for start in starts(format, &mut rng) {
                    let n = 1 + rng.below(9000);
                    let bytes = capture(format, channels, start..start + n);
                    let r = both(&bytes, format, channels, &mut rng);
                    assert!(r.is_clean(), "{format:?} x{channels} from {start}: {r:?}");
                    assert_eq!((r.frames, r.first), (n, Some(start)));
                }
            }
        }
    }

    #[test]
    fn the_fast_path_takes_clean_blocks_across_integer_wraps() {
        for format in SampleFormat::ALL {
            for channels in CHANNELS {
                let m = format.counter_modulus();
                let start =
                    if format.width() < 4 || format == SampleFormat::S32 { m - 5 } else { 5 };
                let frames = (BLOCK_SAMPLES / channels).max(1) as u64;
                let block = capture(format, channels, start..start + frames);
                let c = CounterChecker::new(format, channels);
                assert!(block_matches(&c.template, &block, start), "{format:?} x{channels}");
                assert!(!block_matches(&c.template, &block, start + 1));
            }
        }
    }

    /// What to do to an unbroken run at a frame.
    #[derive(Clone, Copy, Debug)]
    enum Fault {
        /// Skip frames.
        Gap(u64),
        /// Go back and repeat frames.
        Repeat(u64),
        /// Flip one byte of one sample.
        Corrupt,
    }

    #[test]
    fn injected_gaps_repeats_and_corruption_are_found_at_their_frame() {
        let mut rng = Rng(0xfa17);
        for format in SampleFormat::ALL {
            for channels in CHANNELS {
                for start in starts(format, &mut rng) {
                    let m = format.counter_modulus();
                    let n = 500 + rng.below(6000);
                    let at = rng.below(n);
                    let fault = match rng.below(3) {
                        0 => Fault::Gap(1 + rng.below(100.min(m / 2 - 1))),
                        1 => Fault::Repeat(1 + rng.below(50.min(m / 2 - 1))),
                        _ => Fault::Corrupt,
                    };
                    let indices: Vec<u64> = (0..n)
                        .map(|i| match fault {
                            Fault::Gap(k) if i >= at => start + i + k,
                            Fault::Repeat(k) if i >= at => start + i + m - k,
                            _ => start + i,
                        })
                        .collect();
                    let mut bytes = capture(format, channels, indices);
                    let w = format.width();
                    if let Fault::Corrupt = fault {
                        let sample = rng.below(channels as u64) as usize;
                        // The top byte: for floats a change of sign or exponent, never the
                        // same value.
                        bytes[(at as usize * channels + sample) * w + w - 1] ^= 0x40;
                    }
                    let r = both(&bytes, format, channels, &mut rng);
                    let what =
                        format!("{format:?} x{channels} from {start}: {fault:?} at {at}: {r:?}");
                    assert_eq!(r.frames, n, "{what}");
                    match fault {
                        Fault::Gap(k) if at > 0 => {
                            assert_eq!((r.gaps, r.missing_frames, r.reorders), (1, k, 0), "{what}");
                            assert!(
                                matches!(r.first_problem, Some(Problem::Gap { frame, .. }) if frame == at),
                                "{what}"
                            );
                        }
                        Fault::Repeat(_) if at > 0 => {
                            assert_eq!((r.gaps, r.reorders), (0, 1), "{what}");
                            assert!(
                                matches!(r.first_problem, Some(Problem::Back { frame, .. }) if frame == at),
                                "{what}"
                            );
                        }
                        Fault::Corrupt => {
                            // One channel: the damaged value may still be a counter value, seen
                            // as a jump; with more, the channels disagree.
                            assert!(!r.is_clean(), "{what}");
                            assert!(channels == 1 || r.corrupt_frames == 1, "{what}");
                            let frame = match r.first_problem {
                                Some(Problem::NotCounter { frame })
                                | Some(Problem::ChannelsDisagree { frame })
                                | Some(Problem::Gap { frame, .. })
                                | Some(Problem::Back { frame, .. }) => frame,
                                other => panic!("{what}: {other:?}"),
                            };
                            assert_eq!(frame, at, "{what}");
                        }
                        _ => assert!(r.is_clean(), "{what}"),
                    }
                }
            }
        }
    }

    #[test]
    fn random_damage_gives_the_same_report_as_the_frame_by_frame_check() {
        let mut rng = Rng(0xbad);
        for format in SampleFormat::ALL {
            for channels in CHANNELS {
                for start in starts(format, &mut rng) {
                    let n = 1 + rng.below(8000);
                    let mut bytes = capture(format, channels, start..start + n);
                    for _ in 0..rng.below(6) {
                        let i = rng.below(bytes.len() as u64) as usize;
                        bytes[i] = rng.next() as u8;
                    }
                    both(&bytes, format, channels, &mut rng);
                }
            }
        }
    }
}
