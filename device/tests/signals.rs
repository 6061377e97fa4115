// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Every source in every format, checked through the harness against an oracle computed here
//! from the definitions: exact for the counter, DC and replay, within a stated tolerance for
//! waveforms. Also: up to 255 channels, and streams with clocks of their own.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::f64::consts::TAU;
use std::path::PathBuf;
use std::sync::Arc;

use support::{caps, Harness};
use vdaq_device::source::{ChannelSignal, StreamSignal, Units, Waveform};
use vdaq_device::stream::StreamCaps;
use vdaq_proto::format::SampleFormat;

/// A paced stream offering every format, with `signal` on its channels.
fn stream(signal: StreamSignal, channels_max: u8) -> StreamCaps {
    StreamCaps {
        formats: SampleFormat::ALL.to_vec(),
        rates: vec![8_000, 48_000],
        channels_max,
        signal,
        ..caps(true)
    }
}

fn one(
    waveform: Waveform,
    amplitude: f64,
    offset: f64,
    frequency: f64,
    phase_deg: f64,
    units: Units,
) -> StreamSignal {
    StreamSignal {
        channels: vec![ChannelSignal { waveform, amplitude, offset, frequency, phase_deg }],
        units,
    }
}

/// Decodes samples: integer formats as codes (U8 as offset binary, centred on 0), floats as
/// values.
fn decode(bytes: &[u8], format: SampleFormat) -> Vec<f64> {
    bytes
        .chunks_exact(format.width())
        .map(|s| match format {
            SampleFormat::U8 => f64::from(s[0]) - 128.0,
            SampleFormat::S16 => f64::from(i16::from_le_bytes([s[0], s[1]])),
            SampleFormat::S32 => f64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])),
            SampleFormat::Float => f64::from(f32::from_le_bytes([s[0], s[1], s[2], s[3]])),
            SampleFormat::Float64 => f64::from_le_bytes(s.try_into().unwrap()),
        })
        .collect()
}

/// The oracle's code for a value: volts scale by full scale to the format's largest code,
/// integers round half away from zero and clip.
fn expected_code(v: f64, units: Units, format: SampleFormat) -> f64 {
    let (max, min) = match format {
        SampleFormat::U8 => (127.0, -128.0),
        SampleFormat::S16 => (32767.0, -32768.0),
        SampleFormat::S32 => (2_147_483_647.0, -2_147_483_648.0),
        SampleFormat::Float | SampleFormat::Float64 => {
            return match units {
                Units::Volts { full_scale } => v / full_scale,
                Units::Codes => v,
            }
        }
    };
    let code = match units {
        Units::Volts { full_scale } => v / full_scale * max,
        Units::Codes => v,
    };
    code.round().clamp(min, max)
}

/// Captures `frames` frames (whole 10 ms periods at 8 kHz) of one channel in `format`.
fn capture(signal: StreamSignal, format: SampleFormat, rate: u32, frames: usize) -> Vec<f64> {
    let mut h = Harness::start(vec![stream(signal, 2)], false);
    let frame = format.width() as u32;
    let period_frames = rate / 100;
    let periods = frames.div_ceil(period_frames as usize);
    let bytes = h.capture(0, format, rate, 1, period_frames * frame, periods);
    h.finish().expect("clean disconnect");
    decode(&bytes, format)
}

#[test]
fn counter_is_exact_in_every_format() {
    for format in SampleFormat::ALL {
        let mut h = Harness::start(vec![stream(StreamSignal::default(), 2)], false);
        let period = 80 * 2 * format.width() as u32;
        let bytes = h.capture(0, format, 8_000, 2, period, 5);
        h.finish().expect("clean disconnect");
        let values = decode(&bytes, format);
        let m = format.counter_modulus() as f64;
        for (i, pair) in values.chunks_exact(2).enumerate() {
            let want = match format {
                // Integer counters carry the index's low bits, read back as two's complement.
                SampleFormat::U8 => ((i as f64) % m) - 128.0,
                SampleFormat::S16 => f64::from((i as u16) as i16),
                SampleFormat::S32 => f64::from((i as u32) as i32),
                _ => i as f64 % m,
            };
            assert_eq!(pair, [want, want], "{format:?} frame {i}");
        }
    }
}

#[test]
fn dc_is_exact_in_codes_and_volts() {
    let v = capture(
        one(Waveform::Dc, 0.0, 1234.0, 0.0, 0.0, Units::Codes),
        SampleFormat::S16,
        8_000,
        160,
    );
    assert!(v.iter().all(|&x| x == 1234.0));
    let volts = Units::Volts { full_scale: 10.0 };
    let v = capture(one(Waveform::Dc, 0.0, 2.5, 0.0, 0.0, volts), SampleFormat::S32, 8_000, 160);
    assert!(v.iter().all(|&x| x == (0.25f64 * 2_147_483_647.0).round()), "{}", v[0]);
    let v = capture(one(Waveform::Dc, 0.0, -99.0, 0.0, 0.0, volts), SampleFormat::U8, 8_000, 160);
    assert!(v.iter().all(|&x| x == -128.0), "clipped at the bottom");
}

/// Tolerance of the sine: the table's interpolation error is below 1.2e-6 of the amplitude,
/// so 2e-6 of full scale, plus one code of rounding (for S16 that is one code; S32, 4296).
fn sine_tolerance(format: SampleFormat) -> f64 {
    let full_scale = match format {
        SampleFormat::U8 => 127.0,
        SampleFormat::S16 => 32767.0,
        SampleFormat::S32 => 2_147_483_647.0,
        SampleFormat::Float | SampleFormat::Float64 => return 2e-6,
    };
    2e-6 * full_scale + 1.0
}

#[test]
fn sine_matches_its_formula_in_every_format() {
    let volts = Units::Volts { full_scale: 10.0 };
    for format in SampleFormat::ALL {
        let (a, off, f, ph) = (4.0, 0.5, 1000.0, 30.0);
        let got = capture(one(Waveform::Sine, a, off, f, ph, volts), format, 48_000, 960);
        let tol = sine_tolerance(format);
        for (i, &g) in got.iter().enumerate() {
            let v = off + a * (TAU * (f * i as f64 / 48_000.0 + ph / 360.0)).sin();
            let want = expected_code(v, volts, format);
            assert!((g - want).abs() <= tol, "{format:?} frame {i}: {g} vs {want}");
        }
    }
}

#[test]
fn square_triangle_and_sawtooth_match_their_definitions() {
    // 1 kHz at 8 kHz: eight frames per period, phases exact in binary.
    let per = |i: usize| (i % 8) as f64 / 8.0;
    type Definition = Box<dyn Fn(f64) -> f64>;
    let cases: Vec<(Waveform, Definition)> = vec![
        (Waveform::Square { duty: 0.25 }, Box::new(|c| if c < 0.25 { 1.0 } else { -1.0 })),
        (Waveform::Triangle, Box::new(|c| if c < 0.5 { 4.0 * c - 1.0 } else { 3.0 - 4.0 * c })),
        (Waveform::Sawtooth, Box::new(|c| 2.0 * c - 1.0)),
    ];
    for (w, def) in cases {
        let got = capture(
            one(w.clone(), 1000.0, 10.0, 1000.0, 0.0, Units::Codes),
            SampleFormat::S16,
            8_000,
            160,
        );
        for (i, &g) in got.iter().enumerate() {
            assert_eq!(g, 10.0 + 1000.0 * def(per(i)), "{w:?} frame {i}");
        }
    }
}

#[test]
fn noise_is_reproducible_and_has_the_stated_distribution() {
    let noise = |seed, gaussian| {
        one(Waveform::Noise { seed, gaussian }, 1000.0, 0.0, 0.0, 0.0, Units::Codes)
    };
    let a = capture(noise(42, false), SampleFormat::S16, 48_000, 4800);
    let b = capture(noise(42, false), SampleFormat::S16, 48_000, 4800);
    let c = capture(noise(43, false), SampleFormat::S16, 48_000, 4800);
    assert_eq!(a, b, "same seed, same samples");
    assert_ne!(a, c);
    assert!(a.iter().all(|v| (-1000.0..=1000.0).contains(v)));
    let mean = a.iter().sum::<f64>() / a.len() as f64;
    let sd = (a.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
    // Uniform on ±1000: sd = 1000/sqrt(3) = 577; 4800 samples: within 5%.
    assert!(mean.abs() < 30.0 && (sd - 577.35).abs() < 0.05 * 577.35, "mean {mean}, sd {sd}");
    let g = capture(noise(1, true), SampleFormat::S16, 48_000, 4800);
    let mean = g.iter().sum::<f64>() / g.len() as f64;
    let sd = (g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
    assert!(mean.abs() < 50.0 && (sd - 1000.0).abs() < 50.0, "gaussian: mean {mean}, sd {sd}");
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vdaq-signals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Replays `rec`'s two columns, looped and as recorded, into 8 kHz stereo S16; the values.
fn replay_stereo_s16(rec: vdaq_device::source::Recording) -> Vec<f64> {
    let rec = Arc::new(rec);
    let ch = |column| ChannelSignal {
        waveform: Waveform::Replay { recording: rec.clone(), looped: true, column },
        amplitude: 1.0, // the values as recorded
        offset: 0.0,
        frequency: 0.0,
        phase_deg: 0.0,
    };
    let signal = StreamSignal { channels: vec![ch(0), ch(1)], units: Units::Codes };
    let mut h = Harness::start(vec![stream(signal, 2)], false);
    let bytes = h.capture(0, SampleFormat::S16, 8_000, 2, 320, 2);
    h.finish().expect("clean disconnect");
    decode(&bytes, SampleFormat::S16)
}

#[test]
fn a_vdaq_csv_capture_replays_as_it_was_captured() {
    // `vdaq capture -t csv` writes a frame column, then a column per channel
    // (app/src/output.rs): the frame column is not replayed as a channel.
    let path = temp("capture.csv");
    std::fs::write(&path, "frame,ch0,ch1\n0,100,-100\n1,200,-200\n2,300,-300\n").unwrap();
    let rec = vdaq_device::recording::load(&path, vdaq_device::recording::FileFormat::Csv).unwrap();
    assert_eq!(rec.channels, 2);
    let got = replay_stereo_s16(rec);
    assert!(!got.is_empty());
    for (i, frame) in got.chunks_exact(2).enumerate() {
        let v = 100.0 * (i % 3 + 1) as f64;
        assert_eq!(frame, [v, -v], "frame {i}");
    }
}

#[test]
fn replay_plays_wav_csv_and_raw_recordings_exactly() {
    // A 3-frame stereo WAV, looped.
    let samples: [i16; 6] = [100, -100, 200, -200, 300, -300];
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut wav = b"RIFF\0\0\0\0WAVEfmt ".to_vec();
    for v in [
        16u32.to_le_bytes().to_vec(),
        1u16.to_le_bytes().to_vec(),
        2u16.to_le_bytes().to_vec(),
        8000u32.to_le_bytes().to_vec(),
        0u32.to_le_bytes().to_vec(),
        4u16.to_le_bytes().to_vec(),
        16u16.to_le_bytes().to_vec(),
        b"data".to_vec(),
        (data.len() as u32).to_le_bytes().to_vec(),
        data,
    ] {
        wav.extend(v);
    }
    let path = temp("rec.wav");
    std::fs::write(&path, wav).unwrap();
    let rec = vdaq_device::recording::load(&path, vdaq_device::recording::FileFormat::Wav).unwrap();
    let got = replay_stereo_s16(rec);
    for (i, frame) in got.chunks_exact(2).enumerate() {
        let k = i % 3;
        assert_eq!(frame, [f64::from(samples[2 * k]), f64::from(samples[2 * k + 1])], "frame {i}");
    }
    // CSV, stopping at the end: zeros afterwards.
    let path = temp("rec.csv");
    std::fs::write(&path, "v\n7\n8\n9\n").unwrap();
    let rec = vdaq_device::recording::load(&path, vdaq_device::recording::FileFormat::Csv).unwrap();
    let signal = one(
        Waveform::Replay { recording: Arc::new(rec), looped: false, column: 0 },
        1.0, // as recorded
        0.0,
        0.0,
        0.0,
        Units::Codes,
    );
    let got = capture(signal, SampleFormat::S32, 8_000, 80);
    assert_eq!(&got[..5], &[7.0, 8.0, 9.0, 0.0, 0.0]);
    // Raw float64 into float64: bit-exact.
    let values = [0.125f64, -0.5, 1e-3];
    let path = temp("rec.raw");
    std::fs::write(&path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>())
        .unwrap();
    let rec = vdaq_device::recording::load(
        &path,
        vdaq_device::recording::FileFormat::Raw { format: SampleFormat::Float64, channels: 1 },
    )
    .unwrap();
    let signal = one(
        Waveform::Replay { recording: Arc::new(rec), looped: true, column: 0 },
        1.0, // as recorded
        0.0,
        0.0,
        0.0,
        Units::Codes,
    );
    let got = capture(signal, SampleFormat::Float64, 8_000, 80);
    assert_eq!(&got[..6], &[0.125, -0.5, 1e-3, 0.125, -0.5, 1e-3]);
}

#[test]
fn a_stream_of_255_channels_carries_the_counter_on_each() {
    let mut h = Harness::start(vec![stream(StreamSignal::default(), 255)], true);
    let frame = 255 * 2;
    let bytes = h.capture(0, SampleFormat::S16, 8_000, 255, 8 * frame, 3);
    h.finish().expect("clean disconnect");
    for (i, f) in bytes.chunks_exact(frame as usize).enumerate() {
        let v = decode(f, SampleFormat::S16);
        assert!(v.iter().all(|&x| x == i as f64), "frame {i}");
    }
}

#[test]
fn streams_have_clocks_of_their_own() {
    let sine = one(Waveform::Sine, 1000.0, 0.0, 100.0, 0.0, Units::Codes);
    let mut h = Harness::start(vec![stream(StreamSignal::default(), 2), stream(sine, 2)], false);
    // Stream 1 starts first and runs at 48 kHz; stream 0 at 8 kHz starts later from frame 0.
    let p1 = support::set_params_in(1, SampleFormat::S16, 48_000, 1, 1920, 960, false);
    assert_eq!(
        h.control_status(vdaq_proto::wire::Pod::as_bytes(&p1)),
        vdaq_proto::virtio_snd::code::S_OK
    );
    assert_eq!(
        h.pcm(vdaq_proto::virtio_snd::code::R_PCM_PREPARE, 1),
        vdaq_proto::virtio_snd::code::S_OK
    );
    assert_eq!(
        h.pcm(vdaq_proto::virtio_snd::code::R_PCM_START, 1),
        vdaq_proto::virtio_snd::code::S_OK
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    let bytes = h.capture(0, SampleFormat::S16, 8_000, 1, 160, 10);
    let counters = decode(&bytes, SampleFormat::S16);
    assert_eq!(counters, (0..800).map(f64::from).collect::<Vec<_>>());
    let st = h.stats();
    let s1 = st.streams[1];
    assert!(s1.periods_produced >= 10, "stream 1 ran on its own clock: {s1:?}");
    assert_eq!(s1.xruns, s1.periods_produced - 2, "its 2-period FIFO filled, the rest was lost");
    h.finish().expect("clean disconnect");
}
