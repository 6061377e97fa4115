// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Control requests, buffers and time in any order against the device model: every request
//! gets a response that fits the room the driver gave, and nothing panics.
//!
//! Input: a sequence of operations.
//!   0, len (u16 LE), room (u16 LE), request bytes  a control request
//!   1, stream, payload (u16 LE)                    a capture buffer posted
//!   2, ms                                          time passes: periods produced, completed
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdaq_device::control::Device;
use vdaq_device::source::StreamSignal;
use vdaq_device::stream::StreamCaps;
use vdaq_proto::format::SampleFormat;

fn caps(paced: bool, faults: vdaq_device::faults::FaultPlan) -> StreamCaps {
    StreamCaps {
        formats: SampleFormat::ALL.to_vec(),
        rates: vec![8_000, 48_000],
        channels_min: 1,
        channels_max: 20,
        signal: StreamSignal::default(),
        paced,
        faults,
    }
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Some(head)
}

fn u16_le(data: &mut &[u8]) -> Option<usize> {
    take(data, 2).map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
}

fuzz_target!(|input: &[u8]| {
    let faults = vdaq_device::faults::FaultPlan {
        drop_every: 3,
        error_every: 4,
        withhold_every: 2,
        delay_ns: 5_000_000,
        jitter_ns: 3_000_000,
        seed: 1,
        stall: Some((20_000_000, 15_000_000)),
        ..Default::default()
    };
    let mut device: Device<u32> = Device::new(vec![
        caps(true, Default::default()),
        caps(false, Default::default()),
        caps(true, faults),
    ]);
    let mut data = input;
    let mut now = 1_000_000_000u64;
    let mut tag = 0u32;
    while let Some(op) = take(&mut data, 1) {
        match op[0] % 3 {
            0 => {
                let (Some(len), Some(room)) = (u16_le(&mut data), u16_le(&mut data)) else {
                    return;
                };
                let n = len.min(data.len());
                let request = take(&mut data, n).unwrap_or_default();
                let response = device.handle_control(request, room, now);
                assert!(
                    response.len() <= room,
                    "{} response bytes for {room} of room",
                    response.len()
                );
            }
            1 => {
                let (Some(id), Some(payload)) = (take(&mut data, 1), u16_le(&mut data)) else {
                    return;
                };
                if let Some(s) = device.streams_mut().get_mut(usize::from(id[0])) {
                    tag += 1;
                    let _ = s.post(tag, payload);
                }
            }
            _ => {
                let Some(ms) = take(&mut data, 1) else { return };
                now += u64::from(ms[0]) * 1_000_000;
                for s in device.streams_mut() {
                    s.produce(now);
                    let frame = s.params().map_or(1, |p| p.frame_bytes());
                    s.complete_ready(|_, frames, c| {
                        assert_eq!(frames.len() % frame, 0, "whole frames only");
                        assert!(c.status != 0);
                        true
                    });
                    let _ = s.take_flushed();
                    let _ = s.take_unannounced_xruns();
                    let _ = s.next_deadline_ns();
                }
            }
        }
    }
});
