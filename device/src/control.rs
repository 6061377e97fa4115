// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The device model behind the control queue: configuration space and control requests.
//!
//! Requests arrive as the bytes a driver wrote and leave as the response bytes to write back;
//! every malformed, unknown or out-of-order request gets the spec's status, never a panic.

use vdaq_proto::virtio_snd::{
    chmap, code, direction, pcm_feature, rate_code, ChmapInfo, Config, Hdr, Info, JackInfo, PcmHdr,
    PcmInfo, PcmSetParams, QueryInfo, CHMAP_MAX_SIZE,
};
use vdaq_proto::wire::{Le32, Le64, Pod};

use crate::status::Status;
use crate::stream::{Stream, StreamCaps};

/// Largest item size a query may ask for: 8 times the largest the spec defines (PCM_INFO's
/// 32 bytes). A driver's larger item size (a newer layout) gets its items padded with zeros
/// up to this; past it the query is refused, so a reply is at most
/// 4 + items x this bytes whatever the guest's buffer.
pub const MAX_QUERY_ITEM_SIZE: usize = 8 * 32;
use vdaq_proto::format::SampleFormat;

/// The sound device: its capture streams (no jacks, no playback).
#[derive(Debug)]
pub struct Device<R> {
    streams: Vec<Stream<R>>,
}

/// Channel maps are offered only for streams of at most this many channels (the size of
/// CHMAP_INFO's position array).
fn has_chmap(caps: &StreamCaps) -> bool {
    usize::from(caps.channels_max) <= CHMAP_MAX_SIZE
}

fn status(status: Status) -> Vec<u8> {
    Hdr::new(status.into()).as_bytes().to_vec()
}

impl<R> Device<R> {
    /// A device with one capture stream per entry of `streams`.
    pub fn new(streams: Vec<StreamCaps>) -> Self {
        Self { streams: streams.into_iter().map(Stream::new).collect() }
    }

    /// The streams, indexed by stream id.
    pub fn streams(&self) -> &[Stream<R>] {
        &self.streams
    }

    /// The streams, mutably.
    pub fn streams_mut(&mut self) -> &mut [Stream<R>] {
        &mut self.streams
    }

    /// The configuration space.
    pub fn config(&self) -> Config {
        Config {
            jacks: Le32::new(0),
            streams: Le32::new(self.streams.len() as u32),
            chmaps: Le32::new(self.chmap_streams().count() as u32),
        }
    }

    fn chmap_streams(&self) -> impl Iterator<Item = (usize, &Stream<R>)> {
        self.streams.iter().enumerate().filter(|(_, s)| has_chmap(s.caps()))
    }

    /// Handles one control request. `response_room` is the size of the driver's response
    /// buffer. Returns the response bytes (status header first), at most `response_room` long;
    /// empty when not even a status fits.
    pub fn handle_control(&mut self, request: &[u8], response_room: usize, now_ns: u64) -> Vec<u8> {
        if response_room < std::mem::size_of::<Hdr>() {
            return Vec::new();
        }
        let Some(hdr) = Hdr::from_prefix(request) else {
            return status(Status::BadMsg);
        };
        let op = hdr.code.get();
        let expected = match op {
            code::R_JACK_INFO | code::R_PCM_INFO | code::R_CHMAP_INFO => size_of::<QueryInfo>(),
            code::R_PCM_SET_PARAMS => size_of::<PcmSetParams>(),
            code::R_PCM_PREPARE | code::R_PCM_RELEASE | code::R_PCM_START | code::R_PCM_STOP => {
                size_of::<PcmHdr>()
            }
            code::R_JACK_REMAP => return status(Status::BadMsg), // there are no jacks
            _ => return status(Status::NotSupp),
        };
        if request.len() != expected {
            return status(Status::BadMsg);
        }
        match op {
            code::R_JACK_INFO | code::R_PCM_INFO | code::R_CHMAP_INFO => {
                QueryInfo::from_prefix(request)
                    .map_or_else(|| status(Status::BadMsg), |q| self.query_info(&q, response_room))
            }
            _ => {
                let result = self.pcm_command(op, request, now_ns);
                status(result.err().unwrap_or(Status::Ok))
            }
        }
    }

    fn pcm_command(&mut self, op: u32, request: &[u8], now_ns: u64) -> Result<(), Status> {
        let hdr = PcmHdr::from_prefix(request).ok_or(Status::BadMsg)?;
        let stream = usize::try_from(hdr.stream_id.get())
            .ok()
            .and_then(|id| self.streams.get_mut(id))
            .ok_or(Status::BadMsg)?;
        match op {
            code::R_PCM_SET_PARAMS => {
                stream.set_params(&PcmSetParams::from_prefix(request).ok_or(Status::BadMsg)?)
            }
            code::R_PCM_PREPARE => stream.prepare(),
            code::R_PCM_RELEASE => stream.release(),
            code::R_PCM_START => stream.start(now_ns),
            code::R_PCM_STOP => stream.stop(),
            _ => Err(Status::NotSupp),
        }
    }

    /// A query's reply: the status, then `count` items of `size` bytes. Its size is bounded by
    /// what exists (`count` items of the device's streams or channel maps; there are no jacks)
    /// and by [`MAX_QUERY_ITEM_SIZE`], never by the room the guest gave.
    fn query_info(&self, q: &QueryInfo, response_room: usize) -> Vec<u8> {
        let (op, item_size, available) = match q.hdr.code.get() {
            code::R_PCM_INFO => (code::R_PCM_INFO, size_of::<PcmInfo>(), self.streams.len()),
            code::R_CHMAP_INFO => {
                (code::R_CHMAP_INFO, size_of::<ChmapInfo>(), self.chmap_streams().count())
            }
            code::R_JACK_INFO => (code::R_JACK_INFO, size_of::<JackInfo>(), 0),
            _ => return status(Status::NotSupp),
        };
        let (Ok(start), Ok(count), Ok(size)) = (
            usize::try_from(q.start_id.get()),
            usize::try_from(q.count.get()),
            usize::try_from(q.size.get()),
        ) else {
            return status(Status::BadMsg);
        };
        if start.checked_add(count).is_none_or(|end| end > available)
            || !(item_size..=MAX_QUERY_ITEM_SIZE).contains(&size)
        {
            return status(Status::BadMsg);
        }
        // At most `available` items of MAX_QUERY_ITEM_SIZE: no overflow.
        let needed = size_of::<Hdr>() + count * size;
        if needed > response_room {
            return status(Status::BadMsg);
        }
        let mut out = Vec::with_capacity(needed);
        out.extend_from_slice(&status(Status::Ok));
        let items: Box<dyn Iterator<Item = Vec<u8>> + '_> = match op {
            code::R_PCM_INFO => {
                Box::new(self.streams.iter().enumerate().map(|(id, s)| pcm_info(id, s.caps())))
            }
            code::R_CHMAP_INFO => {
                Box::new(self.chmap_streams().map(|(id, s)| chmap_info(id, s.caps())))
            }
            _ => Box::new(std::iter::empty()),
        };
        for item in items.skip(start).take(count) {
            out.extend_from_slice(&item);
            // A driver's larger item size (a newer layout) gets zeros in the fields we lack.
            out.resize(out.len() + size - item.len(), 0);
        }
        out
    }
}

fn pcm_info(stream_id: usize, caps: &StreamCaps) -> Vec<u8> {
    let rates = caps.rates.iter().filter_map(|&r| rate_code(r)).fold(0u64, |m, c| m | 1 << c);
    PcmInfo {
        // Linux makes one PCM device per node id: one per stream, as in the channel maps.
        hdr: Info { hda_fn_nid: Le32::new(stream_id as u32) },
        features: Le32::new(1 << pcm_feature::EVT_XRUNS),
        formats: Le64::new(SampleFormat::wire_mask(&caps.formats)),
        rates: Le64::new(rates),
        direction: direction::INPUT,
        channels_min: caps.channels_min,
        channels_max: caps.channels_max,
        padding: [0; 5],
    }
    .as_bytes()
    .to_vec()
}

fn chmap_info(stream_id: usize, caps: &StreamCaps) -> Vec<u8> {
    let channels = caps.channels_max;
    let mut positions = [chmap::NONE; CHMAP_MAX_SIZE];
    match channels {
        1 => positions[0] = chmap::MONO,
        2 => positions[..2].copy_from_slice(&[chmap::FL, chmap::FR]),
        n => positions[..usize::from(n)].fill(chmap::NA),
    }
    ChmapInfo {
        hdr: Info { hda_fn_nid: Le32::new(stream_id as u32) },
        direction: direction::INPUT,
        channels,
        positions,
    }
    .as_bytes()
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::StreamSignal;
    use crate::stream::PcmState;
    use vdaq_proto::virtio_snd::format;

    fn caps(channels_max: u8) -> StreamCaps {
        StreamCaps {
            formats: vec![SampleFormat::S16],
            rates: vec![48_000],
            channels_min: 1,
            channels_max,
            signal: StreamSignal::default(),
            paced: true,
            faults: Default::default(),
        }
    }

    fn device() -> Device<u32> {
        Device::new(vec![caps(2), caps(32)])
    }

    fn query(op: u32, start: u32, count: u32, size: u32) -> Vec<u8> {
        QueryInfo::new(op, start, count, size).as_bytes().to_vec()
    }

    fn pcm(op: u32, stream: u32) -> Vec<u8> {
        PcmHdr::new(op, stream).as_bytes().to_vec()
    }

    fn set_params(stream: u32) -> Vec<u8> {
        PcmSetParams {
            hdr: PcmHdr::new(code::R_PCM_SET_PARAMS, stream),
            buffer_bytes: Le32::new(4096),
            period_bytes: Le32::new(1024),
            features: Le32::new(0),
            channels: 2,
            format: format::S16,
            rate: 7,
            padding: 0,
        }
        .as_bytes()
        .to_vec()
    }

    fn status_of(resp: &[u8]) -> Status {
        let code = Hdr::from_prefix(resp).map(|h| h.code.get()).unwrap_or(0);
        Status::try_from(code).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn config_counts_streams_and_chmaps_of_at_most_18_channels() {
        let d = device();
        assert_eq!(
            d.config(),
            Config { jacks: Le32::new(0), streams: Le32::new(2), chmaps: Le32::new(1) }
        );
    }

    #[test]
    fn pcm_info_describes_each_capture_stream() {
        let mut d = device();
        let r = d.handle_control(&query(code::R_PCM_INFO, 0, 2, 32), 4 + 64, 0);
        assert_eq!(status_of(&r), Status::Ok);
        assert_eq!(r.len(), 4 + 64);
        let second = PcmInfo::from_prefix(&r[36..]).expect("item");
        assert_eq!(second.direction, direction::INPUT);
        assert_eq!(second.hdr.hda_fn_nid.get(), 1, "one PCM device per stream");
        assert_eq!((second.channels_min, second.channels_max), (1, 32));
        assert_eq!(second.formats.get(), 1 << format::S16);
        assert_eq!(second.rates.get(), 1 << 7);
        assert_eq!(second.features.get(), 1 << pcm_feature::EVT_XRUNS);
    }

    #[test]
    fn query_info_pads_larger_item_sizes_and_refuses_bad_ranges() {
        let mut d = device();
        let r = d.handle_control(&query(code::R_PCM_INFO, 1, 1, 40), 44, 0);
        assert_eq!((status_of(&r), r.len()), (Status::Ok, 44));
        assert!(r[36..].iter().all(|&b| b == 0));
        for (start, count, size, room) in [
            (1, 2, 32, 200),        // past the last stream
            (u32::MAX, 2, 32, 200), // overflowing range
            (0, 1, 31, 200),        // item size smaller than the spec's
            (0, 2, 32, 40),         // response buffer too small
            (0, 1, u32::MAX, 200),  // overflowing size
        ] {
            let r = d.handle_control(&query(code::R_PCM_INFO, start, count, size), room, 0);
            assert_eq!(status_of(&r), Status::BadMsg, "start {start} count {count} size {size}");
            assert_eq!(r.len(), 4);
        }
        let r = d.handle_control(&query(code::R_JACK_INFO, 0, 1, 24), 100, 0);
        assert_eq!(status_of(&r), Status::BadMsg, "there are no jacks");
        let r = d.handle_control(&query(code::R_JACK_INFO, 0, 0, 24), 100, 0);
        assert_eq!(status_of(&r), Status::Ok, "an empty query is fine");
    }

    #[test]
    fn a_query_reply_is_sized_by_its_items_never_by_the_guests_item_size() {
        let mut d = device();
        // A writable part of 4 GiB (overlapping descriptors cost the guest nothing) and a
        // 64 MiB item size: the reply may not be what the guest asks for.
        let room = 4usize << 30;
        for op in [code::R_PCM_INFO, code::R_CHMAP_INFO] {
            let r = d.handle_control(&query(op, 0, 1, 64 << 20), room, 0);
            assert!(r.len() <= 4 + MAX_QUERY_ITEM_SIZE, "{op:#x}: a reply of {} bytes", r.len());
            assert_eq!(status_of(&r), Status::BadMsg, "{op:#x}");
        }
        // The largest item size accepted still gets its items, padded.
        let r =
            d.handle_control(&query(code::R_PCM_INFO, 0, 2, MAX_QUERY_ITEM_SIZE as u32), room, 0);
        assert_eq!((status_of(&r), r.len()), (Status::Ok, 4 + 2 * MAX_QUERY_ITEM_SIZE));
    }

    #[test]
    fn chmap_info_maps_stereo_for_the_small_stream_only() {
        let mut d = device();
        let r = d.handle_control(&query(code::R_CHMAP_INFO, 0, 1, 24), 28, 0);
        assert_eq!(status_of(&r), Status::Ok);
        let info = ChmapInfo::from_prefix(&r[4..]).expect("item");
        assert_eq!((info.hdr.hda_fn_nid.get(), info.channels), (0, 2));
        assert_eq!(&info.positions[..3], &[chmap::FL, chmap::FR, chmap::NONE]);
        let r = d.handle_control(&query(code::R_CHMAP_INFO, 1, 1, 24), 28, 0);
        assert_eq!(status_of(&r), Status::BadMsg);
    }

    #[test]
    fn malformed_and_unknown_requests_get_the_spec_status() {
        let mut d = device();
        assert_eq!(status_of(&d.handle_control(&[1, 1], 4, 0)), Status::BadMsg, "short header");
        assert!(
            d.handle_control(&pcm(code::R_PCM_PREPARE, 0), 3, 0).is_empty(),
            "no room for status"
        );
        assert_eq!(
            status_of(&d.handle_control(&pcm(0x0300, 0), 4, 0)),
            Status::NotSupp,
            "CTL_INFO"
        );
        assert_eq!(status_of(&d.handle_control(&pcm(0xdead, 0), 4, 0)), Status::NotSupp);
        assert_eq!(status_of(&d.handle_control(&pcm(code::R_JACK_REMAP, 0), 4, 0)), Status::BadMsg);
        let mut long = set_params(0);
        long.push(0);
        assert_eq!(status_of(&d.handle_control(&long, 4, 0)), Status::BadMsg, "oversized");
        let short = &set_params(0)[..20];
        assert_eq!(status_of(&d.handle_control(short, 4, 0)), Status::BadMsg, "truncated");
        let short = &query(code::R_PCM_INFO, 0, 1, 32)[..12];
        assert_eq!(status_of(&d.handle_control(short, 100, 0)), Status::BadMsg);
        assert_eq!(
            status_of(&d.handle_control(&set_params(2), 4, 0)),
            Status::BadMsg,
            "bogus stream"
        );
        assert_eq!(status_of(&d.handle_control(&pcm(code::R_PCM_START, 9), 4, 0)), Status::BadMsg);
        assert_eq!(d.streams()[0].state(), PcmState::Initial);
    }

    #[test]
    fn pcm_commands_drive_the_addressed_stream() {
        let mut d = device();
        assert_eq!(status_of(&d.handle_control(&pcm(code::R_PCM_START, 0), 4, 0)), Status::BadMsg);
        assert_eq!(status_of(&d.handle_control(&set_params(0), 4, 0)), Status::Ok);
        assert_eq!(status_of(&d.handle_control(&pcm(code::R_PCM_PREPARE, 0), 4, 0)), Status::Ok);
        assert_eq!(status_of(&d.handle_control(&pcm(code::R_PCM_START, 0), 4, 0)), Status::Ok);
        assert_eq!(d.streams()[0].state(), PcmState::Running);
        assert_eq!(d.streams()[1].state(), PcmState::Initial);
        assert_eq!(
            status_of(&d.handle_control(&pcm(code::R_PCM_RELEASE, 0), 4, 0)),
            Status::BadMsg
        );
        assert_eq!(status_of(&d.handle_control(&pcm(code::R_PCM_STOP, 0), 4, 0)), Status::Ok);
        assert_eq!(status_of(&d.handle_control(&pcm(code::R_PCM_RELEASE, 0), 4, 0)), Status::Ok);
    }
}
