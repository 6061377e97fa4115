//! Capture files: raw interleaved frames, WAV (PCM, or IEEE float for the float formats) and
//! CSV (a line per frame: its index, then one value per channel).

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use vdaq_proto::format::SampleFormat;

/// The kind of capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileType {
    /// Interleaved frames as the device sends them.
    Raw,
    /// RIFF WAVE.
    Wav,
    /// Comma-separated values, a line per frame.
    Csv,
}

impl FileType {
    /// From the file name's extension: .wav and .csv, anything else raw.
    pub fn from_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("wav") => FileType::Wav,
            Some("csv") => FileType::Csv,
            _ => FileType::Raw,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FileType::Raw => "raw",
            FileType::Wav => "WAV",
            FileType::Csv => "CSV",
        }
    }
}

const WAV_HEADER_BYTES: usize = 44;

/// A 44-byte WAV header for `data_bytes` of frames.
pub fn wav_header(format: SampleFormat, channels: u16, rate: u32, data_bytes: u32) -> [u8; 44] {
    let width = format.width() as u16;
    // WAVE_FORMAT_PCM, or WAVE_FORMAT_IEEE_FLOAT for the float formats.
    let tag: u16 =
        if matches!(format, SampleFormat::Float | SampleFormat::Float64) { 3 } else { 1 };
    let block = width * channels;
    let mut h = [0u8; WAV_HEADER_BYTES];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        h[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    put(b"RIFF");
    put(&(36u32.saturating_add(data_bytes)).to_le_bytes());
    put(b"WAVEfmt ");
    put(&16u32.to_le_bytes());
    put(&tag.to_le_bytes());
    put(&channels.to_le_bytes());
    put(&rate.to_le_bytes());
    put(&(rate * u32::from(block)).to_le_bytes());
    put(&block.to_le_bytes());
    put(&(width * 8).to_le_bytes());
    put(b"data");
    put(&data_bytes.to_le_bytes());
    h
}

/// One sample as CSV text: integer codes as stored (u8 unsigned), floats as values.
fn sample_text(s: &[u8], format: SampleFormat, out: &mut String) {
    use std::fmt::Write as _;
    let _ = match (format, s) {
        (SampleFormat::U8, [a, ..]) => write!(out, "{a}"),
        (SampleFormat::S16, [a, b, ..]) => write!(out, "{}", i16::from_le_bytes([*a, *b])),
        (SampleFormat::S32, [a, b, c, d, ..]) => {
            write!(out, "{}", i32::from_le_bytes([*a, *b, *c, *d]))
        }
        (SampleFormat::Float, [a, b, c, d, ..]) => {
            write!(out, "{}", f32::from_le_bytes([*a, *b, *c, *d]))
        }
        (SampleFormat::Float64, [a, b, c, d, e, f, g, h, ..]) => {
            write!(out, "{}", f64::from_le_bytes([*a, *b, *c, *d, *e, *f, *g, *h]))
        }
        _ => Ok(()),
    };
}

/// Where the frames go: a file, or standard output (`-`), which cannot seek back to complete
/// a header.
enum Dest {
    File(File),
    Stdout(io::Stdout),
}

impl Write for Dest {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Dest::File(f) => f.write(buf),
            Dest::Stdout(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Dest::File(f) => f.flush(),
            Dest::Stdout(s) => s.flush(),
        }
    }
}

/// A capture file being written.
pub struct Output {
    file: BufWriter<Dest>,
    kind: FileType,
    format: SampleFormat,
    channels: usize,
    rate: u32,
    data_bytes: u64,
    frame: u64,
    line: String,
}

impl Output {
    /// Creates `path` (a WAV header is written now and completed by [`Output::finish`]).
    pub fn create(
        path: &Path,
        kind: FileType,
        format: SampleFormat,
        channels: usize,
        rate: u32,
    ) -> io::Result<Self> {
        let dest = if path.as_os_str() == "-" {
            Dest::Stdout(io::stdout())
        } else {
            Dest::File(File::create(path).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display()))
            })?)
        };
        let mut out = Output {
            file: BufWriter::with_capacity(1 << 20, dest),
            kind,
            format,
            channels: channels.max(1),
            rate,
            data_bytes: 0,
            frame: 0,
            line: String::new(),
        };
        match kind {
            FileType::Wav => {
                // Standard output cannot seek back: the sizes say "as long as it goes", as
                // arecord and sox write them to a pipe.
                let size = if out.seekable() { 0 } else { u32::MAX - 36 };
                out.file.write_all(&wav_header(format, channels as u16, rate, size))?
            }
            FileType::Csv => {
                let names: Vec<String> = (0..out.channels).map(|c| format!("ch{c}")).collect();
                writeln!(out.file, "frame,{}", names.join(","))?;
            }
            FileType::Raw => {}
        }
        Ok(out)
    }

    /// Appends whole interleaved frames.
    pub fn write_frames(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.data_bytes += bytes.len() as u64;
        if self.kind != FileType::Csv {
            return self.file.write_all(bytes);
        }
        let width = self.format.width();
        for frame in bytes.chunks_exact(width * self.channels) {
            self.line.clear();
            self.line.push_str(&self.frame.to_string());
            for s in frame.chunks_exact(width) {
                self.line.push(',');
                sample_text(s, self.format, &mut self.line);
            }
            self.line.push('\n');
            self.file.write_all(self.line.as_bytes())?;
            self.frame += 1;
        }
        Ok(())
    }

    /// Completes the file; returns the bytes of frames written. A WAV file larger than 4 GiB
    /// cannot say its size: an error.
    pub fn finish(mut self) -> io::Result<u64> {
        if self.kind == FileType::Wav && self.seekable() {
            let size = u32::try_from(self.data_bytes)
                .ok()
                .filter(|&n| n <= u32::MAX - 36)
                .ok_or_else(|| io::Error::other("more than 4 GiB of frames: too large for WAV"))?;
            self.file.flush()?;
            if let Dest::File(f) = self.file.get_mut() {
                f.seek(SeekFrom::Start(0))?;
                f.write_all(&wav_header(self.format, self.channels as u16, self.rate, size))?;
            }
        }
        self.file.flush()?;
        if let Dest::File(f) = self.file.get_ref() {
            f.sync_all()?;
        }
        Ok(self.data_bytes)
    }

    fn seekable(&self) -> bool {
        matches!(self.file.get_ref(), Dest::File(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("vdaq-output-{}-{name}", std::process::id()))
    }

    #[test]
    fn file_type_follows_the_extension() {
        assert_eq!(FileType::from_path(Path::new("a.WAV")), FileType::Wav);
        assert_eq!(FileType::from_path(Path::new("a.csv")), FileType::Csv);
        assert_eq!(FileType::from_path(Path::new("a.bin")), FileType::Raw);
        assert_eq!(FileType::from_path(Path::new("a")), FileType::Raw);
    }

    #[test]
    fn wav_header_describes_the_frames() {
        let h = wav_header(SampleFormat::S16, 2, 48_000, 400);
        assert_eq!(&h[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 436);
        assert_eq!(u16::from_le_bytes([h[20], h[21]]), 1, "PCM");
        assert_eq!(u16::from_le_bytes([h[22], h[23]]), 2, "channels");
        assert_eq!(u32::from_le_bytes([h[24], h[25], h[26], h[27]]), 48_000);
        assert_eq!(u32::from_le_bytes([h[28], h[29], h[30], h[31]]), 192_000, "bytes/s");
        assert_eq!(u16::from_le_bytes([h[32], h[33]]), 4, "block align");
        assert_eq!(u16::from_le_bytes([h[34], h[35]]), 16, "bits");
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), 400);
        let f = wav_header(SampleFormat::Float, 1, 8_000, 0);
        assert_eq!(u16::from_le_bytes([f[20], f[21]]), 3, "IEEE float");
    }

    #[test]
    fn wav_file_gets_its_sizes_at_the_end() {
        let path = temp("t.wav");
        let mut out = Output::create(&path, FileType::Wav, SampleFormat::S16, 2, 48_000).unwrap();
        out.write_frames(&[1, 0, 2, 0, 3, 0, 4, 0]).unwrap();
        assert_eq!(out.finish().unwrap(), 8);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes.len(), 44 + 8);
        assert_eq!(&bytes[..44], &wav_header(SampleFormat::S16, 2, 48_000, 8));
        assert_eq!(&bytes[44..], &[1, 0, 2, 0, 3, 0, 4, 0]);
    }

    #[test]
    fn csv_has_a_line_per_frame() {
        let path = temp("t.csv");
        let mut out = Output::create(&path, FileType::Csv, SampleFormat::S16, 2, 48_000).unwrap();
        let mut frames = Vec::new();
        for v in [0i16, 0, 1, -1, 300, 7] {
            frames.extend_from_slice(&v.to_le_bytes());
        }
        out.write_frames(&frames).unwrap();
        out.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "frame,ch0,ch1\n0,0,0\n1,1,-1\n2,300,7\n");
    }

    #[test]
    fn raw_is_the_frames_as_sent() {
        let path = temp("t.raw");
        let mut out = Output::create(&path, FileType::Raw, SampleFormat::U8, 1, 8_000).unwrap();
        out.write_frames(&[9, 8, 7]).unwrap();
        out.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes, vec![9, 8, 7]);
    }
}
