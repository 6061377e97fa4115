// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The capture data path through the host harness: frames rendered straight into guest
//! buffers of any layout, one notification per service round (or per 64 KiB of frames in a
//! long one), and failed writes into guest memory reported as errors, never as frames.

// Test code: a failed set-up step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{caps, s16_counters, Harness, Part};
use vdaq_proto::virtio_snd::{code, PcmStatus};
use vdaq_proto::wire::Pod;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn buffers_ready_in_one_round_complete_with_one_interrupt() {
    // Free-run, 48 kHz stereo S16, 8 periods of 4 KiB: all 8 buffers are posted (and held)
    // before START, which completes them in one round.
    let mut h = Harness::start(vec![caps(false)], false);
    assert_eq!(h.set_params(0, 48_000, 2, 8 * 4096, 4096, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    let bufs: Vec<_> = (0..8).map(|i| h.post_rx(0, 4096, i % 2 == 1)).collect();
    assert_eq!(h.stats().rx_interrupts, 0, "held buffers complete nothing");
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let used = h.wait_rx(8, SEC);
    assert_eq!(used.len(), 8);
    let mut seen = Vec::new();
    for (b, u) in bufs.iter().zip(&used) {
        assert_eq!(u.id, b.head, "in posting order");
        seen.extend(s16_counters(&h.rx_data(b, *u), 2));
    }
    assert_eq!(seen, (0..8 * 1024).collect::<Vec<u16>>());
    let stats = h.stats();
    assert_eq!(stats.streams[0].buffers_completed, 8);
    assert_eq!(stats.rx_interrupts, 1, "one notification for the round's 8 completions");
    h.finish().expect("clean disconnect");
}

#[test]
fn a_long_round_signals_every_64_kib_so_the_driver_can_post_meanwhile() {
    // 8 periods of 16 KiB completed in one round: a signal after every 4 (64 KiB of frames),
    // not one at the end, by which time the driver would have had nothing to post back.
    let mut h = Harness::start(vec![caps(false)], false);
    let period = 16 * 1024u32;
    assert_eq!(h.set_params(0, 48_000, 2, 8 * period, period, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    for _ in 0..8 {
        h.post_rx(0, period, false);
    }
    assert_eq!(h.stats().rx_interrupts, 0, "held buffers complete nothing");
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    assert_eq!(h.wait_rx(8, SEC).len(), 8);
    assert_eq!(h.stats().rx_interrupts, 2, "one signal per 64 KiB of frames");
    h.finish().expect("clean disconnect");
}

#[test]
fn frames_land_whole_in_buffers_split_at_odd_places_and_larger_than_a_chunk() {
    // 64 KiB periods (four render chunks) over segments that split frames and chunks alike.
    let mut h = Harness::start(vec![caps(false)], false);
    let period = 64 * 1024u32;
    assert_eq!(h.set_params(0, 48_000, 2, 2 * period, period, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    let sizes = [1u32, 4095, 3, 16384, 16383, 7, (period - 1 - 4095 - 3 - 16384 - 16383 - 7)];
    assert_eq!(sizes.iter().sum::<u32>(), period);
    let mut chains = Vec::new();
    for indirect in [false, true] {
        let xfer = h.mem.alloc(4, 4);
        h.mem.write(xfer, &0u32.to_le_bytes());
        let segments: Vec<(u64, u32)> =
            sizes.iter().map(|&n| (h.mem.alloc(n as usize, 1), n)).collect();
        let status = h.mem.alloc(8, 8);
        let mut parts = vec![Part { gpa: xfer, len: 4, writable: false }];
        parts.extend(segments.iter().map(|&(gpa, len)| Part { gpa, len, writable: true }));
        parts.push(Part { gpa: status, len: 8, writable: true });
        h.queues[3].add(&mut h.mem, &parts, indirect);
        chains.push((segments, status));
    }
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let used = h.wait_rx(2, SEC);
    assert_eq!(used.len(), 2);
    for (i, ((segments, status), u)) in chains.iter().zip(&used).enumerate() {
        assert_eq!(u.len, period + 8, "rule b");
        let st = PcmStatus::from_prefix(&h.mem.read(*status, 8)).expect("status");
        assert_eq!(st.status.get(), code::S_OK);
        let data: Vec<u8> =
            segments.iter().flat_map(|&(gpa, len)| h.mem.read(gpa, len as usize)).collect();
        let first = (i * period as usize / 4) as u16;
        let want: Vec<u16> =
            (0..period as usize / 4).map(|k| first.wrapping_add(k as u16)).collect();
        assert_eq!(s16_counters(&data, 2), want, "buffer {i}");
    }
    h.finish().expect("clean disconnect");
}

#[test]
fn a_write_guest_memory_refuses_reports_no_frames_and_the_stream_goes_on() {
    // Paced, 8 kHz stereo: the first 4 KiB period is due 128 ms after START. EVENT_IDX on, so
    // the test sees when the device has taken the buffer (with the whole memory map).
    let mut h = Harness::start(vec![caps(true)], true);
    assert_eq!(h.set_params(0, 8_000, 2, 4 * 4096, 4096, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    // The header and status low in memory, the frames high: after the memory map shrinks to
    // 32 MiB, only the frames' segment is gone.
    let xfer = h.mem.alloc(4, 4);
    h.mem.write(xfer, &0u32.to_le_bytes());
    let status = h.mem.alloc(8, 8);
    let _filler = h.mem.alloc(40 << 20, 4096);
    let data = h.mem.alloc(4096, 4096);
    let parts = [
        Part { gpa: xfer, len: 4, writable: false },
        Part { gpa: data, len: 4096, writable: true },
        Part { gpa: status, len: 8, writable: true },
    ];
    let head = h.queues[3].add(&mut h.mem, &parts, false);
    // The rx kick and START's control kick may be served in either order: a buffer taken
    // after the shrink would be refused whole, which is another test's case.
    assert!(h.queues[3].wait_taken(&h.mem, 1, SEC), "the device took the rx buffer");
    // START's own control buffers are high too: it goes first, then the map shrinks.
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    h.shrink_memory(32 << 20);
    let used = h.wait_rx(1, SEC);
    assert_eq!(used.len(), 1);
    assert_eq!((used[0].id, used[0].len), (head, 8), "the status alone: no frames reported");
    let st = PcmStatus::from_prefix(&h.mem.read(status, 8)).expect("status");
    assert_eq!(st.status.get(), code::S_IO_ERR);
    let s = h.stats().streams[0];
    assert_eq!((s.write_errors, s.frames_lost, s.buffers_completed), (1, 1024, 0));
    h.finish().expect("clean disconnect");
}
