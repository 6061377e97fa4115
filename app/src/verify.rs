//! Integrity check of counter-source captures: every channel of a frame carries the frame's
//! sample-clock index, and the index grows by one per frame (modulo the format's range).

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
    /// True when the capture is one unbroken run of counter frames.
    pub fn is_clean(&self) -> bool {
        self.gaps == 0 && self.reorders == 0 && self.corrupt_frames == 0 && self.trailing_bytes == 0
    }

    /// One-line JSON rendering.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The report as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::json!({
            "frames": self.frames, "first": self.first, "gaps": self.gaps,
            "missing_frames": self.missing_frames, "reorders": self.reorders,
            "corrupt_frames": self.corrupt_frames, "trailing_bytes": self.trailing_bytes,
            "clean": self.is_clean(),
        })
    }
}

/// Checks interleaved counter frames incrementally (captures arrive in pieces).
#[derive(Debug)]
pub struct CounterChecker {
    format: SampleFormat,
    channels: usize,
    expected: Option<u64>,
    report: CounterReport,
}

impl CounterChecker {
    /// A checker for frames of `channels` samples in `format`.
    pub fn new(format: SampleFormat, channels: usize) -> Self {
        Self { format, channels: channels.max(1), expected: None, report: CounterReport::default() }
    }

    fn problem(&mut self, what: Problem) {
        if self.report.first_problem.is_none() {
            self.report.first_problem = Some(what);
        }
    }

    /// Checks whole frames; `bytes` must hold a whole number of frames. Returns the number of
    /// frames lost before the first frame of `bytes` (0 when none).
    pub fn check(&mut self, bytes: &[u8]) -> u64 {
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
            if samples.any(|s| s != Some(value)) {
                self.report.corrupt_frames += 1;
                self.problem(Problem::ChannelsDisagree { frame: index });
            }
            if self.report.first.is_none() {
                self.report.first = Some(value);
            }
            if let Some(expected) = self.expected {
                if value != expected {
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

/// Checks a whole capture.
pub fn verify_counter(bytes: &[u8], format: SampleFormat, channels: usize) -> CounterReport {
    let frame = format.width() * channels.max(1);
    let whole = bytes.len() - bytes.len() % frame;
    let mut c = CounterChecker::new(format, channels);
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
}
