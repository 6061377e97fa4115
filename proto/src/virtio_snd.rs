// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The virtio-sound wire format (OASIS VIRTIO 1.2, 5.14 "Sound Device"), the subset a capture
//! device and its drivers use. Names follow the specification without the `VIRTIO_SND_` prefix.

use crate::wire::{pod, Le32, Le64};

/// Virtio device id of the sound device.
pub const DEVICE_ID: u32 = 25;

/// Virtqueue indices.
pub mod queue {
    /// Control requests from the driver.
    pub const CONTROL: u16 = 0;
    /// Notifications from the device (jack, PCM events).
    pub const EVENT: u16 = 1;
    /// Playback I/O (driver to device).
    pub const TX: u16 = 2;
    /// Capture I/O (device to driver).
    pub const RX: u16 = 3;
    /// Number of queues.
    pub const COUNT: usize = 4;
}

/// Feature bit: the device supports control elements (`controls` config field).
pub const F_CTLS: u32 = 0;

/// Request, event and status codes.
pub mod code {
    /// Query jack information.
    pub const R_JACK_INFO: u32 = 1;
    /// Remap a jack.
    pub const R_JACK_REMAP: u32 = 2;
    /// Query PCM stream information.
    pub const R_PCM_INFO: u32 = 0x0100;
    /// Set a PCM stream's parameters.
    pub const R_PCM_SET_PARAMS: u32 = 0x0101;
    /// Prepare a PCM stream.
    pub const R_PCM_PREPARE: u32 = 0x0102;
    /// Release a PCM stream.
    pub const R_PCM_RELEASE: u32 = 0x0103;
    /// Start a PCM stream.
    pub const R_PCM_START: u32 = 0x0104;
    /// Stop a PCM stream.
    pub const R_PCM_STOP: u32 = 0x0105;
    /// Query channel map information.
    pub const R_CHMAP_INFO: u32 = 0x0200;

    /// Jack connected event.
    pub const EVT_JACK_CONNECTED: u32 = 0x1000;
    /// Jack disconnected event.
    pub const EVT_JACK_DISCONNECTED: u32 = 0x1001;
    /// Period elapsed event (shared-memory transport only).
    pub const EVT_PCM_PERIOD_ELAPSED: u32 = 0x1100;
    /// Overrun (capture) or underrun (playback) event.
    pub const EVT_PCM_XRUN: u32 = 0x1101;

    /// Success.
    pub const S_OK: u32 = 0x8000;
    /// Malformed request or request not valid in the current state.
    pub const S_BAD_MSG: u32 = 0x8001;
    /// Valid request the device does not support.
    pub const S_NOT_SUPP: u32 = 0x8002;
    /// I/O error.
    pub const S_IO_ERR: u32 = 0x8003;
}

/// Data flow directions.
pub mod direction {
    /// Playback.
    pub const OUTPUT: u8 = 0;
    /// Capture.
    pub const INPUT: u8 = 1;
}

/// PCM stream feature bits (`virtio_snd_pcm_info::features`, `set_params::features`).
pub mod pcm_feature {
    /// Shared memory transport, host side.
    pub const SHMEM_HOST: u32 = 0;
    /// Shared memory transport, guest side.
    pub const SHMEM_GUEST: u32 = 1;
    /// Polling of I/O messages.
    pub const MSG_POLLING: u32 = 2;
    /// Period elapsed events for the shared memory transport.
    pub const EVT_SHMEM_PERIODS: u32 = 3;
    /// XRUN events.
    pub const EVT_XRUNS: u32 = 4;
}

/// PCM sample formats (bit numbers in `virtio_snd_pcm_info::formats`).
#[allow(missing_docs)]
pub mod format {
    pub const IMA_ADPCM: u8 = 0;
    pub const MU_LAW: u8 = 1;
    pub const A_LAW: u8 = 2;
    pub const S8: u8 = 3;
    pub const U8: u8 = 4;
    pub const S16: u8 = 5;
    pub const U16: u8 = 6;
    pub const S18_3: u8 = 7;
    pub const U18_3: u8 = 8;
    pub const S20_3: u8 = 9;
    pub const U20_3: u8 = 10;
    pub const S24_3: u8 = 11;
    pub const U24_3: u8 = 12;
    pub const S20: u8 = 13;
    pub const U20: u8 = 14;
    pub const S24: u8 = 15;
    pub const U24: u8 = 16;
    pub const S32: u8 = 17;
    pub const U32: u8 = 18;
    pub const FLOAT: u8 = 19;
    pub const FLOAT64: u8 = 20;
    pub const DSD_U8: u8 = 21;
    pub const DSD_U16: u8 = 22;
    pub const DSD_U32: u8 = 23;
    pub const IEC958_SUBFRAME: u8 = 24;
}

/// PCM frame rates: the index in this table is the wire code (bit number in
/// `virtio_snd_pcm_info::rates`).
pub const RATES: [u32; 14] = [
    5512, 8000, 11025, 16000, 22050, 32000, 44100, 48000, 64000, 88200, 96000, 176400, 192000,
    384000,
];

/// PCM frame rate codes (bit numbers in `virtio_snd_pcm_info::rates`; indexes in [`RATES`]).
#[allow(missing_docs)]
pub mod rate {
    pub const R5512: u8 = 0;
    pub const R8000: u8 = 1;
    pub const R11025: u8 = 2;
    pub const R16000: u8 = 3;
    pub const R22050: u8 = 4;
    pub const R32000: u8 = 5;
    pub const R44100: u8 = 6;
    pub const R48000: u8 = 7;
    pub const R64000: u8 = 8;
    pub const R88200: u8 = 9;
    pub const R96000: u8 = 10;
    pub const R176400: u8 = 11;
    pub const R192000: u8 = 12;
    pub const R384000: u8 = 13;
}

/// Returns the frame rate in Hz of a wire rate code.
pub fn rate_hz(code: u8) -> Option<u32> {
    RATES.get(usize::from(code)).copied()
}

/// Returns the wire rate code of a frame rate in Hz.
pub fn rate_code(hz: u32) -> Option<u8> {
    RATES.iter().position(|&r| r == hz).map(|i| i as u8)
}

/// Maximum number of positions in a channel map.
pub const CHMAP_MAX_SIZE: usize = 18;

/// Channel positions used by the device.
#[allow(missing_docs)]
pub mod chmap {
    pub const NONE: u8 = 0;
    pub const NA: u8 = 1;
    pub const MONO: u8 = 2;
    pub const FL: u8 = 3;
    pub const FR: u8 = 4;
}

/// Device configuration space.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of jacks.
    pub jacks: Le32,
    /// Number of PCM streams.
    pub streams: Le32,
    /// Number of channel maps.
    pub chmaps: Le32,
}

/// Common header of requests, responses and events.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Hdr {
    /// Request, event or status code.
    pub code: Le32,
}

/// An event on the event queue.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Event {
    /// Event code.
    pub hdr: Hdr,
    /// Event data: the stream or jack id.
    pub data: Le32,
}

/// An item-information query (JACK_INFO, PCM_INFO, CHMAP_INFO).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct QueryInfo {
    /// Request code.
    pub hdr: Hdr,
    /// First item id.
    pub start_id: Le32,
    /// Number of items.
    pub count: Le32,
    /// Size of one item's information structure in the response.
    pub size: Le32,
}

/// Common header of item information.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Info {
    /// HDA function group node id.
    pub hda_fn_nid: Le32,
}

/// Jack information.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct JackInfo {
    /// Common item header.
    pub hdr: Info,
    /// Jack features.
    pub features: Le32,
    /// HDA pin default configuration.
    pub hda_reg_defconf: Le32,
    /// HDA pin capabilities.
    pub hda_reg_caps: Le32,
    /// Non-zero when connected.
    pub connected: u8,
    /// Reserved.
    pub padding: [u8; 7],
}

/// Header of the PCM stream requests.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PcmHdr {
    /// Request code.
    pub hdr: Hdr,
    /// Stream id.
    pub stream_id: Le32,
}

/// PCM stream information.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PcmInfo {
    /// Common item header.
    pub hdr: Info,
    /// Supported PCM feature bits.
    pub features: Le32,
    /// Supported formats (bit per `format` code).
    pub formats: Le64,
    /// Supported rates (bit per `RATES` index).
    pub rates: Le64,
    /// Data flow direction.
    pub direction: u8,
    /// Minimum number of channels.
    pub channels_min: u8,
    /// Maximum number of channels.
    pub channels_max: u8,
    /// Reserved.
    pub padding: [u8; 5],
}

/// PCM_SET_PARAMS request.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PcmSetParams {
    /// Request header.
    pub hdr: PcmHdr,
    /// Size of the whole buffer in bytes.
    pub buffer_bytes: Le32,
    /// Size of one period in bytes.
    pub period_bytes: Le32,
    /// Selected PCM feature bits.
    pub features: Le32,
    /// Number of channels.
    pub channels: u8,
    /// Sample format code.
    pub format: u8,
    /// Rate code.
    pub rate: u8,
    /// Reserved.
    pub padding: u8,
}

/// Header of an I/O message.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PcmXfer {
    /// Stream id.
    pub stream_id: Le32,
}

/// Status trailer of an I/O message, written by the device.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct PcmStatus {
    /// Status code.
    pub status: Le32,
    /// Bytes the device holds beyond this message (its FIFO level, for capture).
    pub latency_bytes: Le32,
}

/// Channel map information.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct ChmapInfo {
    /// Common item header.
    pub hdr: Info,
    /// Data flow direction.
    pub direction: u8,
    /// Number of valid positions.
    pub channels: u8,
    /// Channel positions.
    pub positions: [u8; CHMAP_MAX_SIZE],
}

impl Hdr {
    /// A header with `code`.
    pub const fn new(code: u32) -> Self {
        Self { code: Le32::new(code) }
    }
}

impl PcmHdr {
    /// A PCM request header for `stream_id`.
    pub const fn new(code: u32, stream_id: u32) -> Self {
        Self { hdr: Hdr::new(code), stream_id: Le32::new(stream_id) }
    }
}

impl QueryInfo {
    /// A query of `count` items from `start_id`, each `size` bytes in the response.
    pub const fn new(code: u32, start_id: u32, count: u32, size: u32) -> Self {
        Self {
            hdr: Hdr::new(code),
            start_id: Le32::new(start_id),
            count: Le32::new(count),
            size: Le32::new(size),
        }
    }
}

pod!(
    Config = 12,
    Hdr = 4,
    Event = 8,
    QueryInfo = 16,
    Info = 4,
    JackInfo = 24,
    PcmHdr = 8,
    PcmInfo = 32,
    PcmSetParams = 24,
    PcmXfer = 4,
    PcmStatus = 8,
    ChmapInfo = 24,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Pod;

    #[test]
    fn rate_codes_index_the_rate_table() {
        let named = [
            (rate::R5512, 5512),
            (rate::R8000, 8000),
            (rate::R11025, 11025),
            (rate::R16000, 16000),
            (rate::R22050, 22050),
            (rate::R32000, 32000),
            (rate::R44100, 44100),
            (rate::R48000, 48000),
            (rate::R64000, 64000),
            (rate::R88200, 88200),
            (rate::R96000, 96000),
            (rate::R176400, 176400),
            (rate::R192000, 192000),
            (rate::R384000, 384000),
        ];
        assert_eq!(named.len(), RATES.len(), "every rate named");
        for (code, hz) in named {
            assert_eq!((rate_hz(code), rate_code(hz)), (Some(hz), Some(code)));
        }
    }

    #[test]
    fn set_params_decodes_little_endian_fields_in_spec_order() {
        let bytes = [
            0x01, 0x01, 0, 0, // PCM_SET_PARAMS
            2, 0, 0, 0, // stream 2
            0, 0x10, 0, 0, // buffer 4096
            0, 0x04, 0, 0, // period 1024
            0x10, 0, 0, 0, // EVT_XRUNS
            2, 5, 7, 0, // 2 ch, S16, 48 kHz
        ];
        let p = PcmSetParams::from_prefix(&bytes).expect("24 bytes");
        assert_eq!(p.hdr.hdr.code.get(), code::R_PCM_SET_PARAMS);
        assert_eq!(p.hdr.stream_id.get(), 2);
        assert_eq!(p.buffer_bytes.get(), 4096);
        assert_eq!(p.period_bytes.get(), 1024);
        assert_eq!(p.features.get(), 1 << pcm_feature::EVT_XRUNS);
        assert_eq!((p.channels, p.format, p.rate), (2, format::S16, 7));
        assert_eq!(p.as_bytes(), &bytes);
        assert!(PcmSetParams::from_prefix(&bytes[..23]).is_none());
    }

    #[test]
    fn rate_codes_round_trip_over_the_spec_table() {
        assert_eq!(rate_hz(0), Some(5512));
        assert_eq!(rate_hz(13), Some(384_000));
        assert_eq!(rate_hz(14), None);
        for (i, &hz) in RATES.iter().enumerate() {
            assert_eq!(rate_code(hz), Some(i as u8));
        }
        assert_eq!(rate_code(44_000), None);
    }
}
