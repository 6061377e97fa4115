// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The device FIFO: the intermediate buffer between the sample clock and the guest's buffers.
//!
//! Like a hardware FIFO it holds at most `capacity` bytes; the producer pushes whole periods,
//! the consumer takes whole guest buffers. Every signal source is a function of the frame's
//! sample-clock index, so the FIFO holds which frames it has, not their samples: runs of
//! consecutive sample-clock indices (a new run starts only after a gap, a lost period). The
//! samples are rendered once, straight into the guest buffer that takes them
//! (see [`crate::frames`]): the same bytes a FIFO of samples would have held, without the copy.

use std::collections::VecDeque;

/// Consecutive frames `first..first + frames` of the sample clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// Sample-clock index of the first frame.
    pub first: u64,
    /// Number of frames.
    pub frames: u64,
}

/// A FIFO of frames, with the fill level and capacity of the bytes they stand for.
#[derive(Debug, Default)]
pub struct Fifo {
    capacity: usize,
    frame_bytes: usize,
    runs: VecDeque<Run>,
    /// Frames held (the sum of the runs).
    frames: u64,
}

impl Fifo {
    /// An empty FIFO holding up to `capacity` bytes of frames of `frame_bytes` bytes.
    pub fn new(capacity: usize, frame_bytes: usize) -> Self {
        Self { capacity, frame_bytes: frame_bytes.max(1), runs: VecDeque::new(), frames: 0 }
    }

    /// Maximum fill level in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.frame_bytes
    }

    /// Current fill level in bytes.
    pub fn len(&self) -> usize {
        self.frames as usize * self.frame_bytes
    }

    /// Number of runs held (one per gap in the frames, plus one).
    pub fn runs(&self) -> usize {
        self.runs.len()
    }

    /// True when the FIFO holds no frames.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Bytes that can still be pushed.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.len())
    }

    /// Discards the content.
    pub fn clear(&mut self) {
        self.runs.clear();
        self.frames = 0;
    }

    /// Appends frames `first..first + frames`. Returns false, changing nothing, when their
    /// bytes do not fit.
    pub fn push(&mut self, first: u64, frames: u64) -> bool {
        let bytes = (frames as usize).saturating_mul(self.frame_bytes);
        if bytes > self.free() {
            return false;
        }
        if frames == 0 {
            return true;
        }
        match self.runs.back_mut() {
            Some(last) if last.first.wrapping_add(last.frames) == first => last.frames += frames,
            _ => self.runs.push_back(Run { first, frames }),
        }
        self.frames += frames;
        true
    }

    /// The oldest `bytes` (rounded down to whole frames) as runs, without removing them, or
    /// `None` when fewer are held.
    pub fn peek(&self, bytes: usize) -> Option<Runs<'_>> {
        let frames = (bytes / self.frame_bytes) as u64;
        (frames <= self.frames).then(|| Runs { runs: self.runs.iter(), left: frames })
    }

    /// Removes the oldest `bytes` (rounded down to whole frames; at most the fill level).
    pub fn consume(&mut self, bytes: usize) {
        let mut left = ((bytes / self.frame_bytes) as u64).min(self.frames);
        self.frames -= left;
        while left > 0 {
            let Some(front) = self.runs.front_mut() else { break };
            if front.frames > left {
                front.first = front.first.wrapping_add(left);
                front.frames -= left;
                break;
            }
            left -= front.frames;
            self.runs.pop_front();
        }
    }
}

/// The runs covering the oldest frames of a [`Fifo`], the last one cut to size.
#[derive(Clone, Debug)]
pub struct Runs<'a> {
    runs: std::collections::vec_deque::Iter<'a, Run>,
    left: u64,
}

impl Iterator for Runs<'_> {
    type Item = Run;

    fn next(&mut self) -> Option<Run> {
        if self.left == 0 {
            return None;
        }
        let run = self.runs.next()?;
        let frames = run.frames.min(self.left);
        self.left -= frames;
        Some(Run { first: run.first, frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(f: &Fifo, bytes: usize) -> Vec<(u64, u64)> {
        f.peek(bytes).expect("enough bytes").map(|r| (r.first, r.frames)).collect()
    }

    #[test]
    fn refuses_a_push_that_does_not_fit_and_keeps_content() {
        let mut f = Fifo::new(16, 2);
        assert!(f.push(0, 6));
        assert!(!f.push(6, 3), "6 more bytes do not fit in the 4 left");
        assert_eq!(f.len(), 12);
        assert_eq!(f.free(), 4);
        assert_eq!(runs(&f, 12), vec![(0, 6)]);
        assert!(f.peek(14).is_none());
    }

    #[test]
    fn consecutive_frames_make_one_run_and_a_gap_starts_another() {
        let mut f = Fifo::new(100, 1);
        assert!(f.push(0, 10));
        assert!(f.push(10, 10));
        assert!(f.push(40, 10), "frames 20..40 were lost");
        assert_eq!(runs(&f, 30), vec![(0, 20), (40, 10)]);
        assert_eq!(runs(&f, 25), vec![(0, 20), (40, 5)], "the last run is cut to size");
        assert_eq!(runs(&f, 0), vec![]);
    }

    #[test]
    fn consume_takes_from_the_front_across_runs() {
        let mut f = Fifo::new(100, 4);
        assert!(f.push(0, 5));
        assert!(f.push(10, 5));
        f.consume(7 * 4);
        assert_eq!(f.len(), 3 * 4);
        assert_eq!(runs(&f, 12), vec![(12, 3)]);
        f.consume(1000);
        assert!(f.is_empty());
        assert_eq!(f.free(), 100);
        assert!(f.push(50, 1));
        f.clear();
        assert!(f.is_empty());
    }
}
