// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! `vdaq feed`: the counter signal for a backend that reads its samples from a file: the
//! benchmarks' peer, rust-vmm's vhost-device-sound, whose ALSA backend reads through ALSA's
//! `file` plugin (`infile`).
//!
//! Into a regular file it writes a given length of counter frames at once. Into a FIFO it
//! writes one period per period time, forever: ALSA's `null` slave behind the `file` plugin
//! has no clock, so the FIFO is what paces the backend. A period is written only when it fits
//! in the pipe whole, so that a reader never gets part of one (the `file` plugin does not
//! retry short reads: it would pass zeros on), and the pipe holds about one period, so that a
//! reader that was idle gets at most one period of old frames. Frames not written while the
//! reader is idle are not counted as sent: the counter continues from the last frame written,
//! so every capture is one unbroken run.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vdaq_proto::format::SampleFormat;

use crate::sys;

/// What to write.
#[derive(Clone, Copy, Debug)]
pub struct Signal {
    pub format: SampleFormat,
    pub channels: usize,
    pub rate: u32,
}

impl Signal {
    fn frame_bytes(&self) -> usize {
        self.format.width() * self.channels
    }

    /// Fills `out` (whole frames) with counter frames from index `first` on.
    fn fill(&self, first: u64, out: &mut [u8]) {
        let width = self.format.width();
        for (i, frame) in out.chunks_exact_mut(self.frame_bytes()).enumerate() {
            for sample in frame.chunks_exact_mut(width) {
                self.format.encode_counter(first + i as u64, sample);
            }
        }
    }
}

/// Writes `frames` counter frames (from 0) into the regular file `path`.
pub fn to_file(path: &Path, signal: Signal, frames: u64) -> io::Result<()> {
    let mut out = io::BufWriter::new(File::create(path)?);
    let mut block = vec![0; signal.frame_bytes() * 4096];
    let mut next = 0;
    while next < frames {
        let n = (frames - next).min(4096) as usize;
        let bytes = &mut block[..n * signal.frame_bytes()];
        signal.fill(next, bytes);
        out.write_all(bytes)?;
        next += n as u64;
    }
    out.flush()
}

/// Feeds the FIFO `path` one period of `period_frames` per period time until killed (or until
/// the parent process ends: the feeder belongs to the backend it serves). A reader that goes
/// away is waited for again.
pub fn to_fifo(path: &Path, signal: Signal, period_frames: usize) -> io::Result<()> {
    if !std::fs::metadata(path)?.file_type().is_fifo() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a FIFO"));
    }
    sys::end_with_parent()?;
    let period =
        Duration::from_nanos(period_frames as u64 * 1_000_000_000 / u64::from(signal.rate));
    let mut chunk = vec![0; period_frames * signal.frame_bytes()];
    let mut next_frame = 0u64;
    loop {
        // Blocks until a reader opens the FIFO.
        let mut fifo = OpenOptions::new().write(true).open(path)?;
        let capacity = sys::set_pipe_size(fifo.as_raw_fd(), chunk.len())?;
        if capacity < chunk.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a period of {} bytes exceeds the pipe's {capacity}", chunk.len()),
            ));
        }
        let (mut written, mut skipped) = (0u64, 0u64);
        let mut due = Instant::now();
        let gone = loop {
            if sys::pipe_queued(fifo.as_raw_fd())? + chunk.len() <= capacity {
                signal.fill(next_frame, &mut chunk);
                // Fits whole: one write, which a reader sees all at once.
                match fifo.write_all(&chunk) {
                    Ok(()) => {
                        next_frame += period_frames as u64;
                        written += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break true,
                    Err(e) => return Err(e),
                }
            } else {
                skipped += 1;
            }
            due += period;
            let now = Instant::now();
            match due.checked_duration_since(now) {
                Some(wait) => std::thread::sleep(wait),
                // Late (a stopped process, a busy host): start the schedule again rather than
                // catch up with a burst.
                None => due = now,
            }
        };
        if gone {
            eprintln!(
                "vdaq feed: reader gone after {written} periods ({skipped} not sent while it was idle)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::verify_counter;

    #[test]
    fn a_file_holds_one_unbroken_counter_run() {
        let dir = std::env::temp_dir().join(format!("vdaq-feed-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("counter.raw");
        let signal = Signal { format: SampleFormat::S16, channels: 3, rate: 48000 };
        to_file(&path, signal, 10_000).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let report = verify_counter(&bytes, SampleFormat::S16, 3);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!((report.frames, report.first), (10_000, Some(0)));
    }

    #[test]
    fn fill_continues_from_the_first_index() {
        let signal = Signal { format: SampleFormat::S32, channels: 2, rate: 8000 };
        let mut out = vec![0; 4 * signal.frame_bytes()];
        signal.fill(70_000, &mut out);
        let report = verify_counter(&out, SampleFormat::S32, 2);
        assert!(report.is_clean());
        assert_eq!(report.first, Some(70_000));
    }

    #[test]
    fn a_fifo_is_fed_whole_periods_in_order() {
        let dir = std::env::temp_dir().join(format!("vdaq-fifo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fifo");
        make_fifo(&path);
        let signal = Signal { format: SampleFormat::S16, channels: 2, rate: 48000 };
        let feeder_path = path.clone();
        // The feeder never returns; the test process's exit ends it.
        std::thread::spawn(move || to_fifo(&feeder_path, signal, 480));
        let mut reader = File::open(&path).unwrap();
        let mut got = vec![0; 3 * 480 * 4];
        io::Read::read_exact(&mut reader, &mut got).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let report = verify_counter(&got, SampleFormat::S16, 2);
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(report.frames, 1440);
    }

    fn make_fifo(path: &Path) {
        let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
        assert!(status.success());
    }
}
