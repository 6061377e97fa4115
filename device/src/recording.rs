//! Loading recordings to replay: WAV (PCM 8/16/24/32-bit, IEEE float 32/64), CSV (one column
//! per channel; a first line that is not numeric is a header) and raw interleaved samples of a
//! stated format. Integer samples are read as codes, floats as values: replaying a recording in
//! `codes` units into the same format gives back the same samples.

use std::path::Path;

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

/// Loads a recording; errors name the file and what is wrong.
pub fn load(path: &Path, format: FileFormat) -> Result<Recording, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r = match format {
        FileFormat::Wav => parse_wav(&bytes),
        FileFormat::Csv => parse_csv(&String::from_utf8_lossy(&bytes)),
        FileFormat::Raw { format, channels } => parse_raw(&bytes, format, channels),
    };
    let rec = r.map_err(|e| format!("{}: {e}", path.display()))?;
    if rec.frames() == 0 {
        return Err(format!("{}: the recording holds no frame", path.display()));
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
pub fn parse_raw(bytes: &[u8], format: SampleFormat, channels: usize) -> Result<Recording, String> {
    if channels == 0 {
        return Err("a raw recording needs at least one channel".into());
    }
    let frame = format.width() * channels;
    if !bytes.len().is_multiple_of(frame) {
        return Err(format!("{} bytes is not a whole number of {frame}-byte frames", bytes.len()));
    }
    let values = bytes.chunks_exact(format.width()).map(|s| sample(s, format)).collect();
    Ok(Recording { values, channels })
}

/// Parses a WAV file.
pub fn parse_wav(bytes: &[u8]) -> Result<Recording, String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF WAVE file".into());
    }
    let mut at = 12;
    let mut fmt: Option<(u16, usize, u16)> = None;
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body =
            bytes.get(at + 8..at + 8 + len).ok_or("a chunk runs past the end of the file")?;
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
                let (tag, channels, bits) =
                    fmt.ok_or("the data chunk comes before the fmt chunk")?;
                if channels == 0 {
                    return Err("the fmt chunk says 0 channels".into());
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
                    _ => {
                        return Err(format!(
                            "unsupported WAV encoding (format tag {tag}, {bits} bits)"
                        ))
                    }
                };
                let whole = values.len() - values.len() % channels;
                return Ok(Recording { values: values[..whole].to_vec(), channels });
            }
            _ => {}
        }
        at += 8 + len + (len & 1);
    }
    Err("no data chunk".into())
}

/// Parses CSV: one row per frame, one column per channel.
pub fn parse_csv(text: &str) -> Result<Recording, String> {
    let mut values = Vec::new();
    let mut channels = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let row: Result<Vec<f64>, _> = line.split(',').map(|c| c.trim().parse::<f64>()).collect();
        let row = match row {
            Ok(r) => r,
            Err(_) if values.is_empty() && channels == 0 => continue, // a header
            Err(_) => return Err(format!("line {}: not numbers: {line}", n + 1)),
        };
        if channels == 0 {
            channels = row.len();
        } else if row.len() != channels {
            return Err(format!("line {}: {} columns, expected {channels}", n + 1, row.len()));
        }
        values.extend(row);
    }
    Ok(Recording { values, channels: channels.max(1) })
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
        assert!(parse_wav(b"RIFX").unwrap_err().contains("not a RIFF"));
        assert!(parse_wav(&wav(2, 1, 4, &[0; 4])).unwrap_err().contains("unsupported"));
        let mut truncated = wav(1, 1, 16, &[0; 8]);
        truncated.truncate(truncated.len() - 4);
        assert!(parse_wav(&truncated).unwrap_err().contains("past the end"));
    }

    #[test]
    fn csv_has_one_column_per_channel_and_an_optional_header() {
        let r = parse_csv("ch0, ch1\n1, 2\n3.5, -4\n").expect("valid");
        assert_eq!((r.channels, r.values), (2, vec![1.0, 2.0, 3.5, -4.0]));
        assert!(parse_csv("1,2\n3\n").unwrap_err().contains("line 2: 1 columns"));
        assert!(parse_csv("1,2\nx,y\n").unwrap_err().contains("not numbers"));
    }

    #[test]
    fn raw_needs_whole_frames() {
        let r = parse_raw(&[1, 0, 2, 0], SampleFormat::S16, 2).expect("valid");
        assert_eq!(r.values, vec![1.0, 2.0]);
        assert!(parse_raw(&[1, 0, 2], SampleFormat::S16, 1).is_err());
    }
}
