// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Loading recordings to replay: WAV (PCM 8/16/24/32-bit, IEEE float 32/64), CSV (one column
//! per channel; a first line that is not numeric is a header, and a first header column named
//! `frame`, as `vdaq capture` writes, is a frame index, not a channel) and raw interleaved
//! samples of a stated format. Integer samples are read as codes, floats as values: replaying a
//! recording in `codes` units into the same format gives back the same samples.

use std::path::{Path, PathBuf};

use vdaq_proto::format::SampleFormat;

use crate::source::Recording;

/// The container of a recording.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// RIFF WAVE.
    Wav,
    /// Comma-separated values.
    Csv,
    /// Raw interleaved samples.
    Raw {
        /// Sample format.
        format: SampleFormat,
        /// Channels per frame.
        channels: usize,
    },
}

/// Why a recording cannot be loaded; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Its contents are not a recording of the stated kind.
    #[error("{}: {source}", path.display())]
    Contents {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: BadRecording,
    },
    /// It holds no whole frame.
    #[error("{}: the recording holds no frame", path.display())]
    NoFrame {
        /// The file.
        path: PathBuf,
    },
}

/// What is wrong with a recording's bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRecording {
    /// Raw, with 0 channels per frame.
    #[error("a raw recording needs at least one channel")]
    NoChannels,
    /// Raw, with a partial frame at the end.
    #[error("{len} bytes is not a whole number of {frame}-byte frames")]
    PartialFrame {
        /// The file's length.
        len: usize,
        /// Bytes per frame.
        frame: usize,
    },
    /// No RIFF WAVE header.
    #[error("not a RIFF WAVE file")]
    NotWave,
    /// A chunk's length runs past the end of the file.
    #[error("a chunk runs past the end of the file")]
    ChunkPastEnd,
    /// The data chunk comes before the fmt chunk.
    #[error("the data chunk comes before the fmt chunk")]
    DataBeforeFmt,
    /// The fmt chunk says 0 channels.
    #[error("the fmt chunk says 0 channels")]
    NoWavChannels,
    /// A WAV encoding that is not read.
    #[error("unsupported WAV encoding (format tag {tag}, {bits} bits)")]
    UnsupportedWav {
        /// The format tag (1 PCM, 3 float; the sub-format's for WAVE_FORMAT_EXTENSIBLE).
        tag: u16,
        /// Bits per sample.
        bits: u16,
    },
    /// A WAV file without a data chunk.
    #[error("no data chunk")]
    NoData,
    /// A CSV line past the header that is not numbers.
    #[error("line {line}: not numbers: {text}")]
    NotNumbers {
        /// Line number (from 1).
        line: usize,
        /// The line.
        text: String,
    },
    /// A CSV line with another number of columns than the first.
    #[error("line {line}: {got} columns, expected {expected}")]
    Columns {
        /// Line number (from 1).
        line: usize,
        /// Its columns.
        got: usize,
        /// The first line's.
        expected: usize,
    },
}

/// Loads a recording; errors name the file and what is wrong.
pub fn load(path: &Path, format: FileFormat) -> Result<Recording, RecordingError> {
    let bytes = std::fs::read(path)
        .map_err(|source| RecordingError::Read { path: path.to_path_buf(), source })?;
    let r = match format {
        FileFormat::Wav => parse_wav(&bytes),
        FileFormat::Csv => parse_csv(&String::from_utf8_lossy(&bytes)),
        FileFormat::Raw { format, channels } => parse_raw(&bytes, format, channels),
    };
    let rec = r.map_err(|source| RecordingError::Contents { path: path.to_path_buf(), source })?;
    if rec.frames() == 0 {
        return Err(RecordingError::NoFrame { path: path.to_path_buf() });
    }
    Ok(rec)
}

fn sample(bytes: &[u8], format: SampleFormat) -> f64 {
    let b = |i: usize| bytes.get(i).copied().unwrap_or(0);
    match format {
        SampleFormat::U8 => f64::from(b(0)) - 128.0,
        SampleFormat::S16 => f64::from(i16::from_le_bytes([b(0), b(1)])),
        SampleFormat::S32 => f64::from(i32::from_le_bytes([b(0), b(1), b(2), b(3)])),
        SampleFormat::Float => f64::from(f32::from_le_bytes([b(0), b(1), b(2), b(3)])),
        SampleFormat::Float64 => {
            f64::from_le_bytes([b(0), b(1), b(2), b(3), b(4), b(5), b(6), b(7)])
        }
    }
}

/// Parses raw interleaved samples.
pub fn parse_raw(
    bytes: &[u8],
    format: SampleFormat,
    channels: usize,
) -> Result<Recording, BadRecording> {
    if channels == 0 {
        return Err(BadRecording::NoChannels);
    }
    let frame = format.width() * channels;
    if !bytes.len().is_multiple_of(frame) {
        return Err(BadRecording::PartialFrame { len: bytes.len(), frame });
    }
    let values = bytes.chunks_exact(format.width()).map(|s| sample(s, format)).collect();
    Ok(Recording { values, channels })
}

/// Parses a WAV file.
pub fn parse_wav(bytes: &[u8]) -> Result<Recording, BadRecording> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(BadRecording::NotWave);
    }
    let mut at = 12;
    let mut fmt: Option<(u16, usize, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = bytes.get(at + 8..at + 8 + len).ok_or(BadRecording::ChunkPastEnd)?;
        match id {
            b"fmt " if body.len() >= 16 => {
                let tag = u16::from_le_bytes([body[0], body[1]]);
                let channels = usize::from(u16::from_le_bytes([body[2], body[3]]));
                let bits = u16::from_le_bytes([body[14], body[15]]);
                // WAVE_FORMAT_EXTENSIBLE carries the real tag in its sub-format GUID.
                let tag = if tag == 0xfffe && body.len() >= 26 {
                    u16::from_le_bytes([body[24], body[25]])
                } else {
                    tag
                };
                fmt = Some((tag, channels, bits));
            }
            b"data" => {
                let (tag, channels, bits) = fmt.ok_or(BadRecording::DataBeforeFmt)?;
                if channels == 0 {
                    return Err(BadRecording::NoWavChannels);
                }
                let values: Vec<f64> = match (tag, bits) {
                    (1, 8) => body.iter().map(|&b| f64::from(b) - 128.0).collect(),
                    (1, 16) => body.chunks_exact(2).map(|s| sample(s, SampleFormat::S16)).collect(),
                    (1, 24) => body
                        .chunks_exact(3)
                        .map(|s| f64::from(i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8))
                        .collect(),
                    (1, 32) => body.chunks_exact(4).map(|s| sample(s, SampleFormat::S32)).collect(),
                    (3, 32) => {
                        body.chunks_exact(4).map(|s| sample(s, SampleFormat::Float)).collect()
                    }
                    (3, 64) => {
                        body.chunks_exact(8).map(|s| sample(s, SampleFormat::Float64)).collect()
                    }
                    _ => return Err(BadRecording::UnsupportedWav { tag, bits }),
                };
                let whole = values.len() - values.len() % channels;
                return Ok(Recording { values: values[..whole].to_vec(), channels });
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    Err(BadRecording::NoData)
}

/// Parses CSV: one row per frame, one column per channel. A first line that is not numbers is a
/// header; a header whose first column is `frame` names a frame index column, as `vdaq capture`
/// writes it (`frame,ch0,ch1`): that column is not a channel and is left out, so a capture
/// replays as it was captured.
pub fn parse_csv(text: &str) -> Result<Recording, BadRecording> {
    let mut values = Vec::new();
    let mut channels = 0;
    // With a frame column: the columns of the header, which every row then has.
    let mut frame_column: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let row: Result<Vec<f64>, _> = line.split(',').map(|c| c.trim().parse::<f64>()).collect();
        let row = match row {
            Ok(r) => r,
            Err(_) if values.is_empty() && channels == 0 => {
                // A header.
                frame_column = frame_column_header(line);
                continue;
            }
            Err(_) => return Err(BadRecording::NotNumbers { line: n + 1, text: line.to_string() }),
        };
        let row = match frame_column {
            Some(columns) if row.len() != columns => {
                return Err(BadRecording::Columns {
                    line: n + 1,
                    got: row.len(),
                    expected: columns,
                })
            }
            Some(_) => &row[1..],
            None => &row[..],
        };
        if channels == 0 {
            channels = row.len();
        } else if row.len() != channels {
            return Err(BadRecording::Columns { line: n + 1, got: row.len(), expected: channels });
        }
        values.extend_from_slice(row);
    }
    Ok(Recording { values, channels: channels.max(1) })
}

/// The header's column count when its first column is `frame` (any case) and channels follow.
fn frame_column_header(header: &str) -> Option<usize> {
    let columns: Vec<&str> = header.split(',').map(str::trim).collect();
    (columns.len() >= 2 && columns[0].eq_ignore_ascii_case("frame")).then_some(columns.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(tag: u16, channels: u16, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut v = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&48_000u32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&bits.to_le_bytes());
        v.extend_from_slice(b"LIST");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&[1, 2, 3, 0]); // odd chunk with its pad byte
        v.extend_from_slice(b"data");
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn wav_pcm_and_float_samples_are_read_exactly() {
        let data: Vec<u8> = [1i16, -2, 300, -32768].iter().flat_map(|s| s.to_le_bytes()).collect();
        let r = parse_wav(&wav(1, 2, 16, &data)).expect("valid");
        assert_eq!((r.channels, r.values.clone()), (2, vec![1.0, -2.0, 300.0, -32768.0]));
        let data: Vec<u8> = [0.25f32, -1.5].iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(parse_wav(&wav(3, 1, 32, &data)).expect("valid").values, vec![0.25, -1.5]);
        let r = parse_wav(&wav(1, 1, 24, &[0xff, 0xff, 0xff, 0x00, 0x00, 0x80])).expect("valid");
        assert_eq!(r.values, vec![-1.0, -8_388_608.0]);
    }

    #[test]
    fn bad_wav_files_are_refused_with_a_reason() {
        assert_eq!(parse_wav(b"RIFX"), Err(BadRecording::NotWave));
        let e = parse_wav(&wav(2, 1, 4, &[0; 4])).unwrap_err();
        assert_eq!(e, BadRecording::UnsupportedWav { tag: 2, bits: 4 });
        assert_eq!(e.to_string(), "unsupported WAV encoding (format tag 2, 4 bits)");
        assert_eq!(parse_wav(&wav(1, 0, 16, &[0; 4])), Err(BadRecording::NoWavChannels));
        let mut truncated = wav(1, 1, 16, &[0; 8]);
        truncated.truncate(truncated.len() - 4);
        assert_eq!(parse_wav(&truncated), Err(BadRecording::ChunkPastEnd));
        assert_eq!(parse_wav(b"RIFF\0\0\0\0WAVE"), Err(BadRecording::NoData));
    }

    #[test]
    fn csv_has_one_column_per_channel_and_an_optional_header() {
        let r = parse_csv("ch0, ch1\n1, 2\n3.5, -4\n").expect("valid");
        assert_eq!((r.channels, r.values), (2, vec![1.0, 2.0, 3.5, -4.0]));
        let e = parse_csv("1,2\n3\n").unwrap_err();
        assert_eq!(e, BadRecording::Columns { line: 2, got: 1, expected: 2 });
        assert_eq!(e.to_string(), "line 2: 1 columns, expected 2");
        let e = parse_csv("1,2\nx,y\n").unwrap_err();
        assert_eq!(e, BadRecording::NotNumbers { line: 2, text: "x,y".into() });
    }

    #[test]
    fn a_vdaq_capture_replays_its_channels_not_the_frame_column() {
        // Exactly what `vdaq capture -t csv` writes (app/src/output.rs, its test
        // csv_has_a_line_per_frame): a frame column, then a column per channel.
        let r = parse_csv("frame,ch0,ch1\n0,0,0\n1,1,-1\n2,300,7\n").expect("valid");
        assert_eq!((r.channels, r.values), (2, vec![0.0, 0.0, 1.0, -1.0, 300.0, 7.0]));
        let r = parse_csv("frame,ch0\n0,0.5\n1,-0.25\n").expect("valid");
        assert_eq!((r.channels, r.values), (1, vec![0.5, -0.25]));
        let r = parse_csv("Frame , a, b\r\n7,1,2\r\n").expect("valid");
        assert_eq!((r.channels, r.values), (2, vec![1.0, 2.0]));
        // Every row has the header's columns, the frame among them.
        let e = parse_csv("frame,ch0,ch1\n0,1,2\n1,3\n").unwrap_err();
        assert_eq!(e, BadRecording::Columns { line: 3, got: 2, expected: 3 });
        let e = parse_csv("frame,ch0\n0\n").unwrap_err();
        assert_eq!(e, BadRecording::Columns { line: 2, got: 1, expected: 2 });
    }

    #[test]
    fn csv_without_a_frame_header_keeps_every_column() {
        let r = parse_csv("0,10\n1,11\n").expect("valid");
        assert_eq!((r.channels, r.values), (2, vec![0.0, 10.0, 1.0, 11.0]));
        let r = parse_csv("time,ch0\n0,10\n1,11\n").expect("valid");
        assert_eq!((r.channels, r.values), (2, vec![0.0, 10.0, 1.0, 11.0]));
        // A lone `frame` column is a channel of that name.
        let r = parse_csv("frame\n5\n6\n").expect("valid");
        assert_eq!((r.channels, r.values), (1, vec![5.0, 6.0]));
    }

    #[test]
    fn raw_needs_whole_frames() {
        let r = parse_raw(&[1, 0, 2, 0], SampleFormat::S16, 2).expect("valid");
        assert_eq!(r.values, vec![1.0, 2.0]);
        let e = parse_raw(&[1, 0, 2], SampleFormat::S16, 1).unwrap_err();
        assert_eq!(e, BadRecording::PartialFrame { len: 3, frame: 2 });
        assert_eq!(parse_raw(&[], SampleFormat::S16, 0), Err(BadRecording::NoChannels));
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("vdaq-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.wav");
        let e = load(&missing, FileFormat::Wav).unwrap_err();
        assert!(matches!(&e, RecordingError::Read { path, .. } if *path == missing), "{e}");
        assert!(e.to_string().starts_with(&format!("{}: ", missing.display())), "{e}");
        let empty = dir.join("empty.csv");
        std::fs::write(&empty, "header\n").unwrap();
        let e = load(&empty, FileFormat::Csv).unwrap_err();
        assert!(matches!(&e, RecordingError::NoFrame { path } if *path == empty), "{e}");
        let bad = dir.join("bad.wav");
        std::fs::write(&bad, "RIFX").unwrap();
        let e = load(&bad, FileFormat::Wav).unwrap_err();
        assert!(
            matches!(&e, RecordingError::Contents { source: BadRecording::NotWave, .. }),
            "{e}"
        );
        assert_eq!(e.to_string(), format!("{}: not a RIFF WAVE file", bad.display()));
        let _ = std::fs::remove_dir_all(dir);
    }
}
