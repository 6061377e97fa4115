// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The lying device (`[stream.faults]`: used_len_extra, used_len_short, status, event_flood,
//! spurious_notify, event_storm_ms), through the host harness: each lie is what the fault says, in the used
//! ring, the status or the notifications, and the device never writes outside the buffers the
//! driver posted.

// Test code: a failed set-up step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::{caps, s16_counters, Harness, Part, Used, BUFFER, PERIOD, SEC};
use vdaq_device::faults::FaultsConfig;
use vdaq_proto::virtio_snd::{code, Event};
use vdaq_proto::wire::Pod;

const GUARD: usize = 8192;

/// A harness whose stream 0 has the faults of `table` (a `[stream.faults]` table).
fn lying(table: &str) -> Harness {
    let cfg: FaultsConfig = toml::from_str(table).expect("faults table");
    let mut c = caps(true);
    c.faults = cfg.to_plan("faults").expect("valid faults");
    Harness::start(vec![c], false)
}

/// Sends a control request with a 4-byte response buffer followed by GUARD bytes of 0xEE;
/// returns the used element, the status the device wrote and whether the guard is intact.
fn control_guarded(h: &mut Harness, request: &[u8]) -> (Used, u32, bool) {
    let req = h.mem.alloc(request.len(), 8);
    h.mem.write(req, request);
    let resp = h.mem.alloc(4, 8);
    let guard = h.mem.alloc(GUARD, 1);
    assert_eq!(guard, resp + 4, "the guard follows the response buffer");
    h.mem.write(guard, &[0xEE; GUARD]);
    let parts = [
        Part { gpa: req, len: request.len() as u32, writable: false },
        Part { gpa: resp, len: 4, writable: true },
    ];
    h.queues[0].add(&mut h.mem, &parts, false);
    let used = h.queues[0].wait_used(&h.mem, 1, SEC);
    assert_eq!(used.len(), 1, "a control response");
    let status = u32::from_le_bytes(h.mem.read(resp, 4).try_into().unwrap());
    (used[0], status, h.mem.read(guard, GUARD) == vec![0xEE; GUARD])
}

/// SET_PARAMS (8 kHz mono, 10 ms periods), PREPARE and START through guarded responses;
/// returns their used lengths.
fn start_guarded(h: &mut Harness, xruns: bool) -> Vec<u32> {
    let reqs = [
        support::set_params(0, 8_000, 1, BUFFER, PERIOD, xruns).as_bytes().to_vec(),
        support::pcm_hdr(code::R_PCM_PREPARE, 0).as_bytes().to_vec(),
    ];
    let mut lens = Vec::new();
    for r in reqs {
        let (used, status, intact) = control_guarded(h, &r);
        assert_eq!(status, code::S_OK);
        assert!(intact, "nothing written past the response buffer");
        lens.push(used.len);
    }
    lens
}

/// Posts an rx buffer followed by GUARD bytes of 0xEE; returns it and the guard's address.
fn post_guarded(h: &mut Harness) -> (support::RxBuffer, u64) {
    let b = h.post_rx(0, PERIOD, false);
    let guard = h.mem.alloc(GUARD, 1);
    assert_eq!(guard, b.status + 8);
    h.mem.write(guard, &[0xEE; GUARD]);
    (b, guard)
}

#[test]
fn used_len_extra_reports_bytes_past_the_buffer_and_writes_none_there() {
    let mut h = lying("used_len_extra = 4096");
    assert_eq!(start_guarded(&mut h, false), vec![4 + 4096; 2], "control responses lie");
    let (b, guard) = post_guarded(&mut h);
    let (used, status, _) =
        control_guarded(&mut h, support::pcm_hdr(code::R_PCM_START, 0).as_bytes());
    assert_eq!((used.len, status), (4 + 4096, code::S_OK));
    let u = h.wait_rx(1, SEC);
    assert_eq!(u, vec![Used { id: b.head, len: PERIOD + 8 + 4096 }], "rx completions lie");
    assert_eq!(h.rx_status(&b).status.get(), code::S_OK);
    let frames = h.mem.read(b.data, PERIOD as usize);
    assert_eq!(s16_counters(&frames, 1), (0..80).collect::<Vec<u16>>(), "the frames are true");
    assert_eq!(h.mem.read(guard, GUARD), vec![0xEE; GUARD], "nothing past the status");
    assert_eq!(h.stats().streams[0].faults.lies, 4);
    h.finish().expect("clean disconnect");
}

#[test]
fn used_len_short_reports_less_than_the_status_it_wrote() {
    let mut h = lying("used_len_short = 5");
    assert_eq!(start_guarded(&mut h, false), vec![3, 3], "control: shorter than the header");
    let (b, guard) = post_guarded(&mut h);
    let (used, status, _) =
        control_guarded(&mut h, support::pcm_hdr(code::R_PCM_START, 0).as_bytes());
    assert_eq!((used.len, status), (3, code::S_OK), "the status is written all the same");
    let u = h.wait_rx(1, SEC);
    assert_eq!(u, vec![Used { id: b.head, len: 5 }]);
    assert_eq!(h.rx_status(&b).status.get(), code::S_OK, "status and frames written");
    assert_eq!(h.mem.read(guard, GUARD), vec![0xEE; GUARD]);
    h.finish().expect("clean disconnect");
}

#[test]
fn lie_every_lies_on_every_nth_only() {
    let mut h = lying("used_len_extra = 100\nlie_every = 2");
    assert_eq!(start_guarded(&mut h, false), vec![4, 104]);
    let bufs: Vec<_> = (0..4).map(|_| h.post_rx(0, PERIOD, false)).collect();
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let used = h.wait_rx(4, SEC);
    let lens: Vec<u32> = used.iter().map(|u| u.len).collect();
    assert_eq!(lens, [PERIOD + 8, PERIOD + 108, PERIOD + 8, PERIOD + 108]);
    let _ = bufs;
    h.finish().expect("clean disconnect");
}

#[test]
fn status_gives_error_completions_the_code_asked_for() {
    for (status, want) in [("\"bad_msg\"", code::S_BAD_MSG), ("0x1234", 0x1234)] {
        let mut h = lying(&format!("error_every = 2\nstatus = {status}"));
        assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK);
        assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
        let bufs: Vec<_> = (0..4).map(|_| h.post_rx(0, PERIOD, false)).collect();
        assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
        let used = h.wait_rx(4, SEC);
        assert_eq!(used.len(), 4);
        let got: Vec<(u32, u32)> =
            bufs.iter().zip(&used).map(|(b, u)| (h.rx_status(b).status.get(), u.len)).collect();
        let ok = (code::S_OK, PERIOD + 8);
        assert_eq!(got, [ok, (want, 8), ok, (want, 8)], "status {status}");
        h.finish().expect("clean disconnect");
    }
}

#[test]
fn event_flood_sends_spurious_events_while_event_buffers_wait() {
    let mut h = lying("event_flood = 6");
    let evs: Vec<u64> = (0..5).map(|_| h.post_event()).collect();
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, true), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    h.post_rx(0, PERIOD, false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    assert_eq!(h.wait_rx(1, SEC).len(), 1);
    let used = h.queues[1].wait_used(&h.mem, 5, SEC);
    assert_eq!(used.len(), 5, "six asked for, five buffers waited");
    let got: Vec<(u32, u32)> = evs
        .iter()
        .map(|&gpa| {
            let e = Event::from_prefix(&h.mem.read(gpa, 8)).expect("event");
            (e.hdr.code.get(), e.data.get())
        })
        .collect();
    assert_eq!(
        got,
        [
            (code::EVT_PCM_XRUN, 0),
            (code::EVT_PCM_XRUN, 2),
            (0x7fff, 0),
            (code::EVT_PCM_PERIOD_ELAPSED, 0),
            (code::EVT_PCM_XRUN, 0),
        ]
    );
    assert_eq!(h.stats().spurious_events, 5);
    h.finish().expect("clean disconnect");
}

#[test]
fn event_storm_answers_event_buffers_posted_without_a_notification() {
    // 8 kHz mono, 2048-frame periods: the first completes 256 ms after START, then a storm of
    // 20 ms begins.
    let mut h = lying("event_storm_ms = 20.0");
    assert_eq!(h.set_params(0, 8_000, 1, 4 * 4096, 4096, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    h.post_rx(0, 4096, false);
    let kicked = h.post_event();
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.queues[1].take_used(&h.mem).is_empty(), "no storm before START");
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    // Buffers made available without a kick, as a driver's interrupt handler re-posts them
    // inside its loop: the storm takes them all the same.
    h.queues[1].quiet = true;
    let quiet: Vec<u64> = (0..3).map(|_| h.post_event()).collect();
    assert_eq!(h.wait_rx(1, SEC).len(), 1);
    let answered = h.queues[1].wait_used(&h.mem, 4, SEC);
    assert_eq!(answered.len(), 4, "the kicked buffer and three posted quietly");
    assert!(answered.iter().all(|u| u.len == 8));
    for gpa in std::iter::once(kicked).chain(quiet) {
        let e = Event::from_prefix(&h.mem.read(gpa, 8)).expect("event");
        assert_eq!((e.hdr.code.get(), e.data.get()), (0x7fff, 0), "an unknown event code");
    }
    // The storm ends: a buffer posted without a kick waits (the next period is 256 ms away).
    std::thread::sleep(Duration::from_millis(40));
    h.post_event();
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.queues[1].take_used(&h.mem).is_empty(), "the storm is bounded");
    let stats = h.stats();
    assert_eq!((stats.spurious_events, stats.streams[0].faults.storm_events), (4, 4));
    h.queues[1].quiet = false;
    h.finish().expect("clean disconnect");
}

#[test]
fn event_storm_serves_rx_and_control_and_ends_at_stop() {
    // A storm of up to a second: rx buffers posted during it are filled, and a STOP is
    // answered and ends it. 8 kHz mono, 512-frame periods of 64 ms.
    let mut h = lying("event_storm_ms = 1000.0");
    assert_eq!(h.set_params(0, 8_000, 1, 4 * 1024, 1024, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    h.post_rx(0, 1024, false);
    h.post_event();
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    assert_eq!(h.wait_rx(1, SEC).len(), 1);
    assert_eq!(h.queues[1].wait_used(&h.mem, 1, SEC).len(), 1, "the storm began");
    let started = Instant::now();
    h.post_rx(0, 1024, false);
    h.post_rx(0, 1024, false);
    assert_eq!(h.wait_rx(2, SEC).len(), 2, "periods completed during the storm");
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    assert!(started.elapsed() < Duration::from_millis(900), "STOP waited for the storm's end");
    h.queues[1].quiet = true;
    h.post_event();
    std::thread::sleep(Duration::from_millis(50));
    assert!(h.queues[1].take_used(&h.mem).is_empty(), "no storm once stopped");
    h.queues[1].quiet = false;
    h.finish().expect("clean disconnect");
}

#[test]
fn spurious_notify_signals_with_nothing_new_in_the_used_rings() {
    let mut h = lying("spurious_notify = 3");
    // 8 kHz mono, 2048-frame periods: the first completes 256 ms after START.
    assert_eq!(h.set_params(0, 8_000, 1, 4 * 4096, 4096, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    let b = h.post_rx(0, 4096, false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    std::thread::sleep(Duration::from_millis(50));
    let control_used = h.queues[0].used_idx(&h.mem);
    h.queues[0].take_calls();
    h.queues[3].take_calls();
    let deadline = Instant::now() + SEC;
    while h.queues[3].used_idx(&h.mem) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.queues[3].take_used(&h.mem), vec![Used { id: b.head, len: 4096 + 8 }]);
    assert_eq!(h.queues[3].take_calls(), 1 + 3, "the completion's and three more");
    assert_eq!(h.queues[0].take_calls(), 3, "three on the control queue");
    assert_eq!(h.queues[0].used_idx(&h.mem), control_used, "nothing new there");
    assert_eq!(h.stats().spurious_notifications, 6);
    h.finish().expect("clean disconnect");
}
