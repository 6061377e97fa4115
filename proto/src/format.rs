// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Sample formats the device produces, and the encoding of one sample into wire bytes.

use crate::virtio_snd::format as wire;

/// A PCM sample format the device can produce (little-endian, as the spec defines them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleFormat {
    /// Unsigned 8-bit, offset binary.
    U8,
    /// Signed 16-bit.
    S16,
    /// Signed 32-bit.
    S32,
    /// IEEE 754 single precision.
    Float,
    /// IEEE 754 double precision.
    Float64,
}

impl SampleFormat {
    /// Every format the device supports, in wire-code order.
    pub const ALL: [SampleFormat; 5] = [Self::U8, Self::S16, Self::S32, Self::Float, Self::Float64];

    /// Decodes a virtio-snd format code.
    pub fn from_wire(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.wire_code() == code)
    }

    /// The virtio-snd format code.
    pub fn wire_code(self) -> u8 {
        match self {
            Self::U8 => wire::U8,
            Self::S16 => wire::S16,
            Self::S32 => wire::S32,
            Self::Float => wire::FLOAT,
            Self::Float64 => wire::FLOAT64,
        }
    }

    /// Parses a user-facing name (`s16`, `float`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The user-facing name.
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::S16 => "s16",
            Self::S32 => "s32",
            Self::Float => "float",
            Self::Float64 => "float64",
        }
    }

    /// Bytes per sample.
    pub fn width(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::S16 => 2,
            Self::Float | Self::S32 => 4,
            Self::Float64 => 8,
        }
    }

    /// The modulus of the counter source in this format: the number of distinct values the
    /// format represents exactly as consecutive integers.
    pub fn counter_modulus(self) -> u64 {
        match self {
            Self::U8 => 1 << 8,
            Self::S16 => 1 << 16,
            Self::S32 => 1 << 32,
            Self::Float => 1 << 24,
            Self::Float64 => 1 << 53,
        }
    }

    /// Writes the counter value `index` (taken modulo [`Self::counter_modulus`]) into `out`,
    /// which is exactly [`Self::width`] bytes long. Integer formats carry the value's low bits
    /// (two's complement for the signed ones); float formats carry it as an exact number.
    pub fn encode_counter(self, index: u64, out: &mut [u8]) {
        let value = index % self.counter_modulus();
        match self {
            Self::U8 => out[0] = value as u8,
            Self::S16 => out.copy_from_slice(&(value as u16).to_le_bytes()),
            Self::S32 => out.copy_from_slice(&(value as u32).to_le_bytes()),
            Self::Float => out.copy_from_slice(&(value as f32).to_le_bytes()),
            Self::Float64 => out.copy_from_slice(&(value as f64).to_le_bytes()),
        }
    }

    /// Reads back a counter value written by [`Self::encode_counter`] from `bytes` (exactly
    /// [`Self::width`] long); `None` when a float sample is not a whole number in range.
    pub fn decode_counter(self, bytes: &[u8]) -> Option<u64> {
        let mut b = [0u8; 8];
        b[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
        let float_index = |v: f64| {
            (v >= 0.0 && v < self.counter_modulus() as f64 && v == (v as u64) as f64)
                .then_some(v as u64)
        };
        match self {
            Self::U8 => Some(u64::from(b[0])),
            Self::S16 => Some(u64::from(u16::from_le_bytes([b[0], b[1]]))),
            Self::S32 => Some(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Self::Float => float_index(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            Self::Float64 => float_index(f64::from_le_bytes(b)),
        }
    }

    /// Bit mask of every supported format, for `virtio_snd_pcm_info::formats`.
    pub fn wire_mask(formats: &[SampleFormat]) -> u64 {
        formats.iter().fold(0, |m, f| m | 1 << f.wire_code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_codes_match_the_spec_table() {
        assert_eq!(SampleFormat::from_wire(4), Some(SampleFormat::U8));
        assert_eq!(SampleFormat::from_wire(5), Some(SampleFormat::S16));
        assert_eq!(SampleFormat::from_wire(17), Some(SampleFormat::S32));
        assert_eq!(SampleFormat::from_wire(19), Some(SampleFormat::Float));
        assert_eq!(SampleFormat::from_wire(20), Some(SampleFormat::Float64));
        assert_eq!(SampleFormat::from_wire(6), None, "U16 is not offered");
        assert_eq!(SampleFormat::from_wire(255), None);
    }

    #[test]
    fn counter_wraps_at_the_format_modulus() {
        let mut b = [0u8; 8];
        SampleFormat::U8.encode_counter(257, &mut b[..1]);
        assert_eq!(b[0], 1);
        SampleFormat::S16.encode_counter(65_536 + 0x1234, &mut b[..2]);
        assert_eq!(&b[..2], &[0x34, 0x12]);
        SampleFormat::S32.encode_counter((1 << 32) + 7, &mut b[..4]);
        assert_eq!(u32::from_le_bytes([b[0], b[1], b[2], b[3]]), 7);
        SampleFormat::Float.encode_counter((1 << 24) + 3, &mut b[..4]);
        assert_eq!(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), 3.0);
        SampleFormat::Float.encode_counter((1 << 24) - 1, &mut b[..4]);
        assert_eq!(f32::from_le_bytes([b[0], b[1], b[2], b[3]]), 16_777_215.0);
        SampleFormat::Float64.encode_counter(1 << 40, &mut b);
        assert_eq!(f64::from_le_bytes(b), (1u64 << 40) as f64);
    }

    #[test]
    fn counter_values_decode_back_in_every_format() {
        for f in SampleFormat::ALL {
            let mut b = [0u8; 8];
            for index in [0, 1, 255, 256, 65_535, 65_536, (1 << 24) - 1, (1 << 24) + 5, u64::MAX] {
                f.encode_counter(index, &mut b[..f.width()]);
                assert_eq!(
                    f.decode_counter(&b[..f.width()]),
                    Some(index % f.counter_modulus()),
                    "{f:?} {index}"
                );
            }
        }
        assert_eq!(SampleFormat::Float.decode_counter(&0.5f32.to_le_bytes()), None);
        assert_eq!(SampleFormat::Float64.decode_counter(&(-1.0f64).to_le_bytes()), None);
    }

    #[test]
    fn names_round_trip() {
        for f in SampleFormat::ALL {
            assert_eq!(SampleFormat::from_name(f.name()), Some(f));
        }
        assert_eq!(SampleFormat::from_name("S16"), Some(SampleFormat::S16));
        assert_eq!(SampleFormat::from_name("s24"), None);
    }
}
