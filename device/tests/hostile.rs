// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! A hostile guest against the real backend, through the host harness: whatever the rings
//! hold, the device's memory and work stay bounded, and a guest that breaks the ring rules
//! gets a broken device until it resets it (QEMU's rule).

// Test code: a failed set-up step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{caps, prepared, Harness, BUFFER, PERIOD, SEC};
use vdaq_proto::virtio_snd::code;
use vdaq_proto::wire::Pod;
use vhost::VhostBackend;

#[test]
fn a_head_made_available_again_while_held_breaks_the_device_until_reset() {
    let mut h = prepared(false);
    let b = h.post_rx(0, PERIOD, false);
    // The same head, 200 more times, in batches the device takes as they come: a device
    // that trusts the ring holds 201 "buffers" that are one.
    for _ in 0..8 {
        for _ in 0..25 {
            h.queues[3].republish(&mut h.mem, b.head);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = h.stats();
    assert!(st.broken.is_some(), "the device is broken: {st:?}");
    // Broken: the control queue is not served (no START), nothing is written or completed.
    let req = h.mem.alloc(8, 8);
    h.mem.write(req, support::pcm_hdr(code::R_PCM_START, 0).as_bytes());
    let resp = h.mem.alloc(4, 4);
    h.queues[0].add(
        &mut h.mem,
        &[
            support::Part { gpa: req, len: 8, writable: false },
            support::Part { gpa: resp, len: 4, writable: true },
        ],
        false,
    );
    std::thread::sleep(Duration::from_millis(100));
    assert!(h.queues[0].take_used(&h.mem).is_empty(), "no control response while broken");
    assert!(h.wait_rx(1, Duration::from_millis(100)).is_empty(), "no rx completion");
    // A reset (the driver sets the features again) makes it a device again: the waiting
    // request is answered (the stream is back in its initial state: START is refused).
    let features = h.features;
    h.fe.set_features(features).expect("set_features");
    h.fe.get_features().expect("get_features");
    h.queues[0].kick_again();
    let used = h.queues[0].wait_used(&h.mem, 1, SEC);
    assert_eq!(used.len(), 1, "served after the reset");
    assert_eq!(h.stats().broken, None);
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    // (The rx ring still holds the 199 copies the broken device never took: a real reset
    // also resets the rings, which this harness does not.)
    h.finish().expect("clean disconnect");
}

#[test]
fn more_chains_than_one_events_budget_are_all_served_in_later_rounds() {
    let mut h = Harness::start(vec![caps(true)], false);
    // (A first request: the device has seen the rings' set-up events.)
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK);
    // 64 control requests made available at once, one kick: twice the per-event budget.
    h.queues[0].quiet = true;
    let resps: Vec<u64> = (0..64)
        .map(|_| {
            let req = h.mem.alloc(8, 8);
            h.mem.write(req, support::pcm_hdr(code::R_PCM_PREPARE, 0).as_bytes());
            let resp = h.mem.alloc(4, 4);
            h.queues[0].add(
                &mut h.mem,
                &[
                    support::Part { gpa: req, len: 8, writable: false },
                    support::Part { gpa: resp, len: 4, writable: true },
                ],
                true,
            );
            resp
        })
        .collect();
    h.queues[0].quiet = false;
    h.queues[0].kick_again();
    let used = h.queues[0].wait_used(&h.mem, 64, SEC);
    assert_eq!(used.len(), 64, "every request answered");
    assert!(used.iter().all(|u| u.len == 4));
    assert!(resps.iter().all(|&r| h.mem.read(r, 4) == code::S_OK.to_le_bytes()));
    h.finish().expect("clean disconnect");
}

#[test]
fn a_query_with_a_huge_item_size_over_overlapping_descriptors_is_refused_at_once() {
    let mut h = Harness::start(vec![caps(true)], false);
    let req = h.mem.alloc(16, 8);
    h.mem.write(
        req,
        vdaq_proto::virtio_snd::QueryInfo::new(code::R_PCM_INFO, 0, 1, 1 << 30).as_bytes(),
    );
    // A writable part of 4 GiB: 1024 descriptors of 4 MiB over the same guest pages.
    let resp = h.mem.alloc(4 << 20, 4096);
    let mut descs = vec![support::RawDesc { addr: req, len: 16, flags: 0 }];
    descs.extend((0..1024).map(|_| support::RawDesc {
        addr: resp,
        len: 4 << 20,
        flags: support::VIRTQ_DESC_F_WRITE,
    }));
    let start = std::time::Instant::now();
    let head = h.queues[0].add_raw(&mut h.mem, &descs, true);
    let used = h.queues[0].wait_used(&h.mem, 1, 5 * SEC);
    assert_eq!(used, vec![support::Used { id: head, len: 4 }], "the status only");
    assert_eq!(h.mem.read(resp, 4), code::S_BAD_MSG.to_le_bytes());
    assert!(start.elapsed() < Duration::from_millis(500), "answered in {:?}", start.elapsed());
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK, "still serving");
    h.finish().expect("clean disconnect");
}

#[test]
fn a_chain_of_more_descriptors_than_the_device_keeps_is_refused_not_held() {
    let mut h = Harness::start(vec![caps(true)], false);
    assert_eq!(h.set_params(0, 8_000, 1, 16384, 4096, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    // An rx message of 5,000 one-byte pieces (frame-aligned in total, within the buffer):
    // each costs the device a segment to keep while it holds the chain.
    let xfer = h.mem.alloc(4, 4);
    h.mem.write(xfer, &0u32.to_le_bytes());
    let data = h.mem.alloc(5000, 8);
    let status = h.mem.alloc(8, 8);
    let w = support::VIRTQ_DESC_F_WRITE;
    let mut descs = vec![support::RawDesc { addr: xfer, len: 4, flags: 0 }];
    descs.extend((0..5000u64).map(|i| support::RawDesc { addr: data + i, len: 1, flags: w }));
    descs.push(support::RawDesc { addr: status, len: 8, flags: w });
    let head = h.queues[3].add_raw(&mut h.mem, &descs, true);
    let used = h.wait_rx(1, SEC);
    assert_eq!(used, vec![support::Used { id: head, len: 0 }], "refused, not held");
    assert_eq!(h.stats().bad_chains, 1);
    h.finish().expect("clean disconnect");
}

/// Posts an rx message of raw descriptors (header, frames, status) whose status descriptor
/// says NEXT to `next` (with `indirect`, an index in the table), or is followed by `extra`.
fn post_malformed(
    h: &mut Harness,
    indirect: bool,
    next: Option<u16>,
    extra: Option<support::RawDesc>,
) -> (u16, support::RxBuffer) {
    let xfer = h.mem.alloc(4, 4);
    h.mem.write(xfer, &0u32.to_le_bytes());
    let data = h.mem.alloc(PERIOD as usize, 8);
    let status = h.mem.alloc(8, 8);
    let w = support::VIRTQ_DESC_F_WRITE;
    let mut descs = vec![
        support::RawDesc { addr: xfer, len: 4, flags: 0 },
        support::RawDesc { addr: data, len: PERIOD, flags: w },
        support::RawDesc {
            addr: status,
            len: 8,
            flags: w | if next.is_some() { support::VIRTQ_DESC_F_NEXT } else { 0 },
        },
    ];
    descs.extend(extra);
    let head = h.queues[3].add_raw_next(&mut h.mem, &descs, indirect, next.unwrap_or(0));
    (head, support::RxBuffer { head, xfer, data, payload: PERIOD, status })
}

#[test]
fn a_chain_cut_short_by_a_bad_next_or_a_nested_table_is_refused_not_used_as_if_whole() {
    let mut h = prepared(false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let nested = support::RawDesc { addr: 0x1000, len: 16, flags: support::VIRTQ_DESC_F_INDIRECT };
    let cases = [
        ("next past the queue", false, Some(200), None),
        ("next past the indirect table", true, Some(9), None),
        ("an indirect table inside one", true, None, Some(nested)),
    ];
    for (i, (name, indirect, next, extra)) in cases.into_iter().enumerate() {
        let (head, b) = post_malformed(&mut h, indirect, next, extra);
        let used = h.wait_rx(1, SEC);
        assert_eq!(used, vec![support::Used { id: head, len: 0 }], "{name}: refused");
        assert_eq!(h.mem.read(b.status, 8), vec![0; 8], "{name}: no status where none is known");
        assert_eq!(h.mem.read(b.data, PERIOD as usize), vec![0; PERIOD as usize], "{name}");
        assert_eq!(h.stats().bad_chains, i as u64 + 1, "{name}: counted");
    }
    // The next good buffer is served.
    let b = h.post_rx(0, PERIOD, false);
    assert_eq!(h.wait_rx(1, SEC), vec![support::Used { id: b.head, len: PERIOD + 8 }]);
    h.finish().expect("clean disconnect");
}

#[test]
fn a_control_request_cut_short_gets_bad_msg_and_changes_nothing() {
    let mut h = Harness::start(vec![caps(true)], false);
    let req = h.mem.alloc(24, 8);
    h.mem.write(req, support::set_params(0, 8_000, 1, BUFFER, PERIOD, false).as_bytes());
    let resp = h.mem.alloc(4, 4);
    let descs = [
        support::RawDesc { addr: req, len: 24, flags: 0 },
        support::RawDesc {
            addr: resp,
            len: 4,
            flags: support::VIRTQ_DESC_F_WRITE | support::VIRTQ_DESC_F_NEXT,
        },
    ];
    let head = h.queues[0].add_raw_next(&mut h.mem, &descs, false, 300);
    let used = h.queues[0].wait_used(&h.mem, 1, SEC);
    assert_eq!(used, vec![support::Used { id: head, len: 4 }]);
    assert_eq!(h.mem.read(resp, 4), code::S_BAD_MSG.to_le_bytes(), "refused");
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_BAD_MSG, "the parameters were not set");
    h.finish().expect("clean disconnect");
}

#[test]
fn an_available_index_moved_past_the_queue_size_breaks_the_device_and_keeps_no_thread() {
    for event_idx in [true, false] {
        let mut h = Harness::start(vec![caps(true)], event_idx);
        assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK);
        // 1000 entries "available" on a 64-entry ring: virtio-queue takes none of them, and
        // with EVENT_IDX re-enabling notifications says there are some, forever.
        h.queues[3].set_avail_idx(&mut h.mem, 1000);
        std::thread::sleep(Duration::from_millis(100));
        let st = h.stats();
        assert!(
            matches!(st.broken, Some(vdaq_device::backend::GuestError::AvailIndexTooFar { .. })),
            "event_idx {event_idx}: {:?}",
            st.broken
        );
        // The worker thread is free: after a reset it answers again.
        let features = h.features;
        h.fe.set_features(features).expect("set_features");
        h.fe.get_features().expect("get_features");
        assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK);
        h.finish().expect("clean disconnect");
    }
}
