// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A completed buffer's frames on their way into guest memory: the FIFO's runs of sample-clock
//! indices, rendered a chunk at a time into a small buffer that stays in the L1 cache, each
//! chunk handed to the caller, which copies it into the guest buffer. Rendering is the only
//! pass over the samples before the copy into guest memory.

use crate::fifo::Runs;
use crate::source::Generator;

/// Bytes rendered per chunk (rounded down to whole frames): small enough to stay in L1 between
/// rendering and the copy, large enough that the per-chunk cost vanishes.
pub const CHUNK_BYTES: usize = 16 << 10;

/// The render buffer of a stream: [`CHUNK_BYTES`] rounded down to whole frames, at least one.
pub fn chunk_buffer(frame_bytes: usize) -> Vec<u8> {
    let frame_bytes = frame_bytes.max(1);
    vec![0; (CHUNK_BYTES / frame_bytes).max(1) * frame_bytes]
}

/// The frames of one completed buffer (none for an error completion).
#[derive(Debug)]
pub struct Frames<'a> {
    runs: Option<Runs<'a>>,
    generator: Option<&'a mut Generator>,
    chunk: &'a mut [u8],
    frame_bytes: usize,
    bytes: usize,
}

impl<'a> Frames<'a> {
    /// `bytes` bytes of frames from `runs`, rendered by `generator` through `chunk` (whole
    /// frames of `frame_bytes`).
    pub fn new(
        runs: Runs<'a>,
        bytes: usize,
        generator: Option<&'a mut Generator>,
        chunk: &'a mut [u8],
        frame_bytes: usize,
    ) -> Self {
        Self { runs: Some(runs), generator, chunk, frame_bytes: frame_bytes.max(1), bytes }
    }

    /// No frames.
    pub fn none(chunk: &'a mut [u8]) -> Self {
        Self { runs: None, generator: None, chunk, frame_bytes: 1, bytes: 0 }
    }

    /// Bytes of frames.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// True when there are no frames.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Renders the frames in order and hands them to `sink` in pieces of whole frames;
    /// stops at the first error.
    pub fn write_to<E>(self, mut sink: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        let Frames { runs, mut generator, chunk, frame_bytes, .. } = self;
        let chunk_frames = (chunk.len() / frame_bytes) as u64;
        if chunk_frames == 0 {
            return Ok(());
        }
        for run in runs.into_iter().flatten() {
            let mut first = run.first;
            let mut left = run.frames;
            while left > 0 {
                let n = left.min(chunk_frames);
                let out = &mut chunk[..n as usize * frame_bytes];
                match generator.as_deref_mut() {
                    Some(g) => g.render(first, out),
                    None => out.fill(0),
                }
                sink(out)?;
                first = first.wrapping_add(n);
                left -= n;
            }
        }
        Ok(())
    }

    /// Renders the frames into a new vector (tests and tools).
    pub fn to_vec(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes);
        let _ = self.write_to(|piece| {
            out.extend_from_slice(piece);
            Ok::<(), ()>(())
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fifo::Fifo;
    use crate::source::{ChannelSignal, StreamSignal, Units, Waveform};
    use vdaq_proto::format::SampleFormat;

    fn signal() -> StreamSignal {
        let sine = ChannelSignal {
            waveform: Waveform::Sine,
            amplitude: 9000.0,
            offset: 0.0,
            frequency: 440.0,
            phase_deg: 0.0,
        };
        StreamSignal { channels: vec![ChannelSignal::counter(), sine], units: Units::Codes }
    }

    #[test]
    fn chunked_rendering_equals_one_block_across_runs_and_chunk_edges() {
        // 3 channels of S16: 6-byte frames, so chunks do not divide evenly into periods.
        let mut g = Generator::new(&signal(), SampleFormat::S16, 3, 48_000);
        let fb = g.frame_bytes();
        let mut fifo = Fifo::new(1 << 20, fb);
        assert!(fifo.push(100, 5000));
        assert!(fifo.push(9000, 4000), "a gap: frames 5100..9000 were lost");
        let bytes = 8000 * fb;
        let mut chunk = chunk_buffer(fb);
        assert_eq!(chunk.len() % fb, 0);
        let runs = fifo.peek(bytes).expect("held");
        let got = Frames::new(runs, bytes, Some(&mut g), &mut chunk, fb).to_vec();

        let mut want = vec![0u8; bytes];
        let (a, b) = want.split_at_mut(5000 * fb);
        g.render(100, a);
        g.render(9000, b);
        assert_eq!(got, want);
    }

    #[test]
    fn a_sink_error_stops_the_write() {
        let mut g = Generator::new(&StreamSignal::default(), SampleFormat::S32, 8, 48_000);
        let fb = g.frame_bytes();
        let mut fifo = Fifo::new(1 << 20, fb);
        assert!(fifo.push(0, 10_000));
        let mut chunk = chunk_buffer(fb);
        let frames = Frames::new(
            fifo.peek(10_000 * fb).expect("held"),
            10_000 * fb,
            Some(&mut g),
            &mut chunk,
            fb,
        );
        let mut calls = 0;
        assert_eq!(
            frames.write_to(|_| {
                calls += 1;
                Err("full")
            }),
            Err("full")
        );
        assert_eq!(calls, 1);
        assert!(Frames::none(&mut chunk).to_vec().is_empty());
    }
}
