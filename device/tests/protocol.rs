// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The device's protocol, timing and bad input, tested through the host harness (no QEMU): a
//! vhost-user frontend and a split-virtqueue driver against the real backend.

// Test code: a failed set-up step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{
    caps, prepared, s16_counters, Harness, Part, RawDesc, BUFFER, PERIOD, SEC, VIRTQ_DESC_F_WRITE,
};
use vdaq_proto::virtio_snd::{code, Config, Event, Hdr, PcmInfo, QueryInfo};
use vdaq_proto::wire::Pod;
use vhost::VhostBackend;

fn query(op: u32, start: u32, count: u32, size: u32) -> Vec<u8> {
    QueryInfo::new(op, start, count, size).as_bytes().to_vec()
}

#[test]
fn negotiates_version_1_indirect_descriptors_event_idx_and_config() {
    let mut h = Harness::start(vec![caps(true)], true);
    let offered = h.fe.get_features().expect("get_features");
    for bit in [32, 28, 29, 30] {
        assert!(offered & (1 << bit) != 0, "feature bit {bit} is offered");
    }
    assert_eq!(h.features & (1 << 29), 1 << 29, "EVENT_IDX negotiated");
    // With EVENT_IDX, the device must keep publishing avail_event: a second control request
    // is only seen if it did.
    for _ in 0..3 {
        let r = h.control(&query(code::R_PCM_INFO, 0, 1, 32), 36);
        assert_eq!(Hdr::from_prefix(&r).map(|x| x.code.get()), Some(code::S_OK));
    }
    h.finish().expect("clean disconnect");
}

#[test]
fn config_space_counts_streams_and_chmaps() {
    let mut two = caps(true);
    two.channels_max = 32;
    let mut h = Harness::start(vec![caps(true), two], false);
    let cfg = Config::from_prefix(&h.config(12)).expect("12 bytes");
    assert_eq!((cfg.jacks.get(), cfg.streams.get(), cfg.chmaps.get()), (0, 2, 1));
    // QEMU asks for 16 bytes with controls=on: the extra field reads 0.
    assert_eq!(&h.config(16)[12..], &[0, 0, 0, 0]);
    h.finish().expect("clean disconnect");
}

#[test]
fn pcm_info_through_the_control_queue() {
    let mut h = Harness::start(vec![caps(true)], false);
    let r = h.control(&query(code::R_PCM_INFO, 0, 1, 32), 36);
    assert_eq!(r.len(), 36, "used length is the response length");
    let info = PcmInfo::from_prefix(&r[4..]).expect("info");
    assert_eq!(info.direction, vdaq_proto::virtio_snd::direction::INPUT);
    assert_eq!((info.channels_min, info.channels_max), (1, 2));
    assert_eq!(info.rates.get(), (1 << 1) | (1 << 7), "8 kHz and 48 kHz");
    h.finish().expect("clean disconnect");
}

#[test]
fn bad_control_requests_get_error_statuses_and_the_device_keeps_serving() {
    let mut h = Harness::start(vec![caps(true)], false);
    let ok = support::pcm_hdr(code::R_PCM_PREPARE, 0);
    let short = &support::set_params(0, 8_000, 1, BUFFER, PERIOD, false).as_bytes()[..20].to_vec();
    let mut long = support::set_params(0, 8_000, 1, BUFFER, PERIOD, false).as_bytes().to_vec();
    long.extend_from_slice(&[0; 8]);
    let cases: Vec<(&str, Vec<u8>, u32)> = vec![
        ("short", short.clone(), code::S_BAD_MSG),
        ("oversized", long, code::S_BAD_MSG),
        ("header only", vec![1, 1], code::S_BAD_MSG),
        ("unknown code", support::pcm_hdr(0x7777, 0).as_bytes().to_vec(), code::S_NOT_SUPP),
        (
            "bogus stream",
            support::pcm_hdr(code::R_PCM_PREPARE, 5).as_bytes().to_vec(),
            code::S_BAD_MSG,
        ),
        ("wrong state", ok.as_bytes().to_vec(), code::S_BAD_MSG),
        ("jack info without jacks", query(code::R_JACK_INFO, 0, 1, 24), code::S_BAD_MSG),
        ("query past the end", query(code::R_PCM_INFO, 0, 2, 32), code::S_BAD_MSG),
    ];
    for (name, req, want) in cases {
        assert_eq!(h.control_status(&req), want, "{name}");
    }
    // A request of 64 KiB (the device reads at most 64 bytes of it).
    let huge = vec![0xffu8; 65536];
    assert_eq!(h.control_status(&huge), code::S_BAD_MSG, "huge");
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK, "still serving");
    let st = h.stats();
    assert!(st.control_errors >= 9, "errors are counted: {st:?}");
    h.finish().expect("clean disconnect");
}

#[test]
fn the_pcm_state_machine_refuses_out_of_order_commands() {
    let mut h = Harness::start(vec![caps(true)], false);
    let seq = [
        (code::R_PCM_PREPARE, code::S_BAD_MSG),
        (code::R_PCM_START, code::S_BAD_MSG),
        (code::R_PCM_SET_PARAMS, code::S_OK),
        (code::R_PCM_STOP, code::S_BAD_MSG),
        (code::R_PCM_PREPARE, code::S_OK),
        (code::R_PCM_STOP, code::S_BAD_MSG),
        (code::R_PCM_START, code::S_OK),
        (code::R_PCM_RELEASE, code::S_BAD_MSG),
        (code::R_PCM_SET_PARAMS, code::S_BAD_MSG),
        (code::R_PCM_STOP, code::S_OK),
        (code::R_PCM_START, code::S_OK),
        (code::R_PCM_STOP, code::S_OK),
        (code::R_PCM_RELEASE, code::S_OK),
        (code::R_PCM_START, code::S_BAD_MSG),
        (code::R_PCM_PREPARE, code::S_OK),
        (code::R_PCM_RELEASE, code::S_OK),
        (code::R_PCM_SET_PARAMS, code::S_OK),
    ];
    for (i, (op, want)) in seq.into_iter().enumerate() {
        let got = if op == code::R_PCM_SET_PARAMS {
            h.set_params(0, 8_000, 1, BUFFER, PERIOD, false)
        } else {
            h.pcm(op, 0)
        };
        assert_eq!(got, want, "step {i}: {op:#x}");
    }
    h.finish().expect("clean disconnect");
}

#[test]
fn rule_a_release_completes_every_pending_buffer_before_its_response() {
    let mut h = prepared(false);
    let bufs: Vec<_> = (0..4).map(|_| h.post_rx(0, PERIOD, false)).collect();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.queues[3].used_idx(&h.mem), 0, "held while prepared");
    let r = h.control(support::pcm_hdr(code::R_PCM_RELEASE, 0).as_bytes(), 4);
    assert_eq!(Hdr::from_prefix(&r).map(|x| x.code.get()), Some(code::S_OK));
    // When the response is visible, every rx buffer must already be used.
    assert_eq!(h.queues[3].used_idx(&h.mem), 4, "all returned before the response");
    let used = h.wait_rx(4, SEC);
    let heads: Vec<u16> = bufs.iter().map(|b| b.head).collect();
    assert_eq!(used.iter().map(|u| u.id).collect::<Vec<_>>(), heads);
    assert!(used.iter().all(|u| u.len == 8), "no frames, just the status: {used:?}");
    h.finish().expect("clean disconnect");
}

#[test]
fn rule_b_used_length_is_frames_plus_status() {
    let mut h = prepared(false);
    let b = h.post_rx(0, PERIOD, false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let used = h.wait_rx(1, SEC);
    assert_eq!(used, vec![support::Used { id: b.head, len: PERIOD + 8 }]);
    assert_eq!(h.rx_status(&b).status.get(), code::S_OK);
    assert_eq!(s16_counters(&h.rx_data(&b, used[0]), 1), (0..80).collect::<Vec<u16>>());
    h.finish().expect("clean disconnect");
}

#[test]
fn rule_c_buffers_posted_before_start_are_held_not_failed() {
    let mut h = prepared(false);
    let bufs: Vec<_> = (0..3).map(|_| h.post_rx(0, PERIOD, false)).collect();
    assert!(h.wait_rx(1, Duration::from_millis(100)).is_empty(), "nothing completes before START");
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let used = h.wait_rx(3, SEC);
    assert_eq!(used.len(), 3);
    for (b, u) in bufs.iter().zip(&used) {
        assert_eq!(u.len, PERIOD + 8);
        assert_eq!(h.rx_status(b).status.get(), code::S_OK);
    }
    h.finish().expect("clean disconnect");
}

#[test]
fn rule_d_a_streams_buffers_complete_in_posting_order_with_consecutive_frames() {
    let mut h = prepared(false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let mut bufs = Vec::new();
    let mut seen = Vec::new();
    for round in 0..3 {
        let batch: Vec<_> = (0..4).map(|i| h.post_rx(0, PERIOD, (round + i) % 2 == 0)).collect();
        let used = h.wait_rx(4, SEC);
        assert_eq!(
            used.iter().map(|u| u.id).collect::<Vec<_>>(),
            batch.iter().map(|b| b.head).collect::<Vec<_>>()
        );
        for (b, u) in batch.iter().zip(&used) {
            seen.extend(s16_counters(&h.rx_data(b, *u), 1));
        }
        bufs.extend(batch);
    }
    assert_eq!(seen, (0..12 * 80).collect::<Vec<u16>>(), "frames in order, none lost");
    h.finish().expect("clean disconnect");
}

#[test]
fn indirect_chains_carry_whole_buffers() {
    let mut h = Harness::start(vec![caps(true)], false);
    // 48 kHz stereo, 4 KiB periods split over pages like Linux's virtio_snd does.
    assert_eq!(h.set_params(0, 48_000, 2, 16384, 4096, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    let xfer = h.mem.alloc(4, 4);
    let pages: Vec<u64> = (0..4).map(|_| h.mem.alloc(1024, 4096)).collect();
    let status = h.mem.alloc(8, 8);
    let mut parts = vec![Part { gpa: xfer, len: 4, writable: false }];
    parts.extend(pages.iter().map(|&p| Part { gpa: p, len: 1024, writable: true }));
    parts.push(Part { gpa: status, len: 8, writable: true });
    h.queues[3].add(&mut h.mem, &parts, true);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let used = h.wait_rx(1, SEC);
    assert_eq!(used[0].len, 4096 + 8);
    let data: Vec<u8> = pages.iter().flat_map(|&p| h.mem.read(p, 1024)).collect();
    assert_eq!(s16_counters(&data, 2), (0..1024).collect::<Vec<u16>>());
    h.finish().expect("clean disconnect");
}

/// Starts stream 0 and lets its FIFO (4 periods) overflow by `lost` periods with no buffer
/// posted; then posts 4 buffers (they take the FIFO's content), notes the XRUN events seen so
/// far, and posts 1 more (it takes the first period after the gap). Returns the counters, the
/// events, and how many events were used before the fifth completion.
fn overrun(xruns: bool, lost: u32, events: usize) -> (Harness, Vec<u16>, Vec<Event>, u16) {
    let mut h = prepared(xruns);
    let evs: Vec<u64> = (0..events).map(|_| h.post_event()).collect();
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    std::thread::sleep(Duration::from_millis(u64::from(4 + lost) * 10 + 5));
    let first: Vec<_> = (0..4).map(|_| h.post_rx(0, PERIOD, false)).collect();
    let used = h.wait_rx(4, SEC);
    let events_before_gap = h.queues[1].used_idx(&h.mem);
    let last = h.post_rx(0, PERIOD, false);
    let used_last = h.wait_rx(1, SEC);
    // Stop the clock: the statistics then stay as they were at this completion (the FIFO
    // has four periods of room again, so nothing is lost in between).
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    let mut counters = Vec::new();
    for (b, u) in first.iter().chain([&last]).zip(used.iter().chain(&used_last)) {
        counters.extend(s16_counters(&h.rx_data(b, *u), 1));
    }
    let seen = h.queues[1].take_used(&h.mem);
    let events: Vec<Event> = seen
        .iter()
        .zip(&evs)
        .map(|(_, &gpa)| Event::from_prefix(&h.mem.read(gpa, 8)).expect("event"))
        .collect();
    (h, counters, events, events_before_gap)
}

#[test]
fn a_full_fifo_loses_whole_periods_counted_exactly_and_reported_before_the_period_after_the_gap() {
    let (h, counters, events, events_before_gap) = overrun(true, 2, 8);
    let st = h.stats();
    let s = st.streams[0];
    assert!(s.xruns >= 2, "at least two periods lost: {s:?}");
    assert_eq!(s.frames_lost, s.xruns * 80, "lost frames = xruns x period frames");
    // The gap in the counter is exactly the loss, after the four periods the FIFO held.
    assert_eq!(&counters[..320], &(0..320).collect::<Vec<u16>>()[..]);
    assert_eq!(u64::from(counters[320]) - 320, s.frames_lost, "the gap is exactly the loss");
    assert_eq!(events_before_gap, 0, "no event with the periods from before the gap");
    assert_eq!(events.len() as u64, s.xruns, "one XRUN event per lost period: {st:?}");
    assert!(events.iter().all(|e| e.hdr.code.get() == code::EVT_PCM_XRUN && e.data.get() == 0));
    assert_eq!(st.xrun_events_sent, s.xruns);
    h.finish().expect("clean disconnect");
}

#[test]
fn losses_with_no_period_after_them_are_announced_on_release() {
    let mut h = prepared(true);
    let evs: Vec<u64> = (0..16).map(|_| h.post_event()).collect();
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    // The FIFO (4 periods) fills, then periods are lost; no buffer ever takes the period after
    // the gap, so only the release can announce the loss.
    std::thread::sleep(Duration::from_millis(95));
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_RELEASE, 0), code::S_OK);
    std::thread::sleep(Duration::from_millis(50));
    let st = h.stats();
    let lost = st.streams[0].xruns;
    assert!(lost >= 2, "periods were lost: {st:?}");
    let seen = h.queues[1].take_used(&h.mem);
    assert_eq!(seen.len() as u64, lost, "one XRUN event per period lost: {st:?}");
    for gpa in evs.iter().take(seen.len()) {
        let e = Event::from_prefix(&h.mem.read(*gpa, 8)).expect("event");
        assert_eq!((e.hdr.code.get(), e.data.get()), (code::EVT_PCM_XRUN, 0));
    }
    assert_eq!(st.xrun_events_sent, lost);
    h.finish().expect("clean disconnect");
}

#[test]
fn xrun_events_only_when_selected() {
    let (h, _, events, _) = overrun(false, 2, 8);
    assert!(h.stats().streams[0].xruns >= 2);
    assert!(events.is_empty(), "no XRUN event without VIRTIO_SND_PCM_F_EVT_XRUNS");
    h.finish().expect("clean disconnect");
}

#[test]
fn latency_bytes_reports_the_fifo_level_and_nothing_is_lost_below_full() {
    let mut h = prepared(false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    std::thread::sleep(Duration::from_millis(25)); // two periods in the FIFO
    let b = h.post_rx(0, PERIOD, false);
    let used = h.wait_rx(1, SEC);
    assert_eq!(used.len(), 1);
    let level = h.rx_status(&b).latency_bytes.get();
    assert!(level == PERIOD || level == 2 * PERIOD, "one or two periods left: {level}");
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    assert_eq!(h.stats().streams[0].xruns, 0);
    h.finish().expect("clean disconnect");
}

#[test]
fn pacing_delivers_rate_times_time_within_one_period() {
    let mut h = Harness::start(vec![caps(true)], false);
    // 48 kHz stereo, 10 ms periods (480 frames), 8 periods of buffer.
    assert_eq!(h.set_params(0, 48_000, 2, 8 * 1920, 1920, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    for _ in 0..8 {
        h.post_rx(0, 1920, false);
    }
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let start = Instant::now();
    let mut frames = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for u in h.wait_rx(1, Duration::from_millis(50)) {
            frames += u64::from(u.len - 8) / 4;
            h.post_rx(0, 1920, false);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 48_000.0 * elapsed;
    assert!(
        (frames as f64 - expected).abs() <= 480.0 + 480.0,
        "{frames} frames in {elapsed:.3} s, expected {expected:.0} within a period (plus the one in flight)"
    );
    assert_eq!(h.stats().streams[0].xruns, 0);
    h.finish().expect("clean disconnect");
}

#[test]
fn bad_descriptors_get_an_error_and_the_device_serves_the_next_request() {
    let mut h = prepared(false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let xfer = h.mem.alloc(4, 4);
    h.mem.write(xfer, &0u32.to_le_bytes());
    let data = h.mem.alloc(PERIOD as usize, 8);
    let status = h.mem.alloc(8, 8);
    let r = |addr, len| RawDesc { addr, len, flags: 0 };
    let w = |addr, len| RawDesc { addr, len, flags: VIRTQ_DESC_F_WRITE };
    let outside = (support::MEM_SIZE as u64) + 4096;
    let cases: Vec<(&str, Vec<RawDesc>, u32)> = vec![
        ("status too short", vec![r(xfer, 4), w(data, 4)], 0),
        ("read-only where the device writes", vec![r(xfer, 4), r(data, PERIOD), r(status, 8)], 0),
        ("outside guest memory", vec![r(xfer, 4), w(outside, PERIOD), w(status, 8)], 0),
        ("readable after writable", vec![r(xfer, 4), w(data, PERIOD), r(status, 8)], 0),
        ("not frame-aligned", vec![r(xfer, 4), w(data, PERIOD - 1), w(status, 8)], 8),
        ("no xfer header", vec![w(data, PERIOD), w(status, 8)], 8),
    ];
    for (name, descs, want_len) in cases {
        let head = h.queues[3].add_raw(&mut h.mem, &descs, false);
        let used = h.wait_rx(1, SEC);
        assert_eq!(used, vec![support::Used { id: head, len: want_len }], "{name}");
        if want_len == 8 {
            let st = vdaq_proto::virtio_snd::PcmStatus::from_prefix(&h.mem.read(status, 8))
                .expect("status");
            assert_eq!(st.status.get(), code::S_BAD_MSG, "{name}");
            h.mem.write(status, &[0; 8]);
        }
        // The next good request is served.
        let b = h.post_rx(0, PERIOD, false);
        let used = h.wait_rx(1, SEC);
        assert_eq!(used.len(), 1, "{name}: served after");
        assert_eq!(h.rx_status(&b).status.get(), code::S_OK, "{name}");
    }
    assert!(h.stats().bad_chains >= 6);
    h.finish().expect("clean disconnect");
}

#[test]
fn a_control_chain_outside_guest_memory_is_refused_and_serving_goes_on() {
    let mut h = Harness::start(vec![caps(true)], false);
    let resp = h.mem.alloc(4, 4);
    let descs = [
        RawDesc { addr: (support::MEM_SIZE as u64) * 2, len: 8, flags: 0 },
        RawDesc { addr: resp, len: 4, flags: VIRTQ_DESC_F_WRITE },
    ];
    let head = h.queues[0].add_raw(&mut h.mem, &descs, false);
    let used = h.queues[0].wait_used(&h.mem, 1, SEC);
    assert_eq!(used, vec![support::Used { id: head, len: 0 }]);
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK);
    h.finish().expect("clean disconnect");
}

#[test]
fn a_device_reset_returns_every_stream_to_its_initial_state() {
    let mut h = prepared(false);
    h.post_rx(0, PERIOD, false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    // QEMU sets the features again when the guest driver restarts the device.
    let features = h.features;
    h.fe.set_features(features).expect("set_features");
    // A request with a reply: the backend handles its socket in order, so the reset is done.
    h.fe.get_features().expect("get_features");
    // Running, SET_PARAMS would be refused; in the initial state START is.
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_BAD_MSG, "no parameters after the reset");
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK);
    h.finish().expect("clean disconnect");
}

#[test]
fn stopping_the_rings_drops_held_buffers_and_writes_nothing_more() {
    let mut h = prepared(false);
    let b = h.post_rx(0, PERIOD, false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    assert_eq!(h.wait_rx(1, SEC).len(), 1);
    // Hold a buffer in the device, then stop the rx ring as QEMU does on a guest reset.
    let held = h.post_rx(0, PERIOD, false);
    h.mem.write(held.data, &[0xAA; PERIOD as usize]);
    h.fe.get_vring_base(3).expect("get_vring_base");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.mem.read(held.data, PERIOD as usize), vec![0xAA; PERIOD as usize], "untouched");
    assert_eq!(h.queues[3].used_idx(&h.mem), 1, "not completed either");
    let _ = b;
    h.finish().expect("clean disconnect");
}
