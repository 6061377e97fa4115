//! Signal sources: what a stream's channels carry.

use vdaq_proto::format::SampleFormat;

/// The signal on a stream's channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Source {
    /// The sample-clock index of each frame, on every channel (for integrity checks).
    #[default]
    Counter,
}

/// Renders frames of a source in a negotiated format.
#[derive(Debug)]
pub struct Generator {
    source: Source,
    format: SampleFormat,
    channels: usize,
}

impl Generator {
    /// A generator of interleaved frames with `channels` samples of `format`.
    pub fn new(source: Source, format: SampleFormat, channels: usize) -> Self {
        Self { source, format, channels: channels.max(1) }
    }

    /// Bytes per frame.
    pub fn frame_bytes(&self) -> usize {
        self.format.width() * self.channels
    }

    /// Writes frames `first_frame..` into `out`, whose length is a multiple of the frame size.
    pub fn render(&mut self, first_frame: u64, out: &mut [u8]) {
        let width = self.format.width();
        let frame_bytes = self.frame_bytes();
        match self.source {
            Source::Counter => {
                for (i, frame) in out.chunks_exact_mut(frame_bytes).enumerate() {
                    let (first, rest) = frame.split_at_mut(width);
                    self.format.encode_counter(first_frame + i as u64, first);
                    for sample in rest.chunks_exact_mut(width) {
                        sample.copy_from_slice(first);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_puts_the_frame_index_on_every_channel() {
        let mut g = Generator::new(Source::Counter, SampleFormat::S16, 3);
        let mut out = vec![0u8; 2 * 6];
        g.render(0xfffe, &mut out);
        assert_eq!(
            out,
            vec![0xfe, 0xff, 0xfe, 0xff, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }
}
