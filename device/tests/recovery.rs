// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The counter rule across the command sequences Linux's virtio_snd sends (6.12), through the
//! host harness: each PCM_PREPARE starts a new acquisition at frame 0; within a START..STOP
//! run, periods lost in the device leave a gap of exactly their frames; STOP then START
//! continues without a gap.
//!
//! The sixth case, a loss with no recovery (a full FIFO, then buffers posted again: a gap of
//! exactly the lost frames), is `protocol.rs`'s
//! `a_full_fifo_loses_whole_periods_counted_exactly_and_reported_before_the_period_after_the_gap`
//! (and `stream.rs`'s unit test `a_full_fifo_loses_whole_periods_and_the_counter_shows_the_gap`).

// Test code: a failed set-up step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::{prepared, s16_counters, Harness, BUFFER, PERIOD, SEC};
use vdaq_proto::virtio_snd::code;

/// Posts `n` one-period buffers on stream 0, waits for them and returns their counters
/// (8 kHz mono S16 unless the stream was set otherwise: one counter per frame).
fn take(h: &mut Harness, n: usize) -> Vec<u16> {
    let bufs: Vec<_> = (0..n).map(|_| h.post_rx(0, PERIOD, false)).collect();
    let used = h.wait_rx(n, SEC);
    assert_eq!(used.len(), n, "every buffer completed");
    let mut seen = Vec::new();
    for (b, u) in bufs.iter().zip(&used) {
        assert_eq!((u.id, u.len), (b.head, PERIOD + 8), "in order, full");
        seen.extend(s16_counters(&h.rx_data(b, *u), 1));
    }
    seen
}

/// Starts prepared stream 0 and takes two periods: frames 0..160.
fn running() -> Harness {
    let mut h = prepared(false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    assert_eq!(take(&mut h, 2), (0..160).collect::<Vec<u16>>());
    h
}

/// Posts one buffer (held), STARTs and returns the counters of the first two periods.
fn first_after_start(h: &mut Harness) -> Vec<u16> {
    let held = h.post_rx(0, PERIOD, false);
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let used = h.wait_rx(1, SEC);
    assert_eq!(used.len(), 1);
    let mut seen = s16_counters(&h.rx_data(&held, used[0]), 1);
    seen.extend(take(h, 1));
    seen
}

#[test]
fn xrun_recovery_stop_release_prepare_start_restarts_at_frame_0() {
    let mut h = running();
    // No buffer posted: the FIFO (4 periods) fills and then periods are lost.
    std::thread::sleep(Duration::from_millis(4 * 10 + 35));
    for op in [code::R_PCM_STOP, code::R_PCM_RELEASE, code::R_PCM_PREPARE] {
        assert_eq!(h.pcm(op, 0), code::S_OK);
    }
    assert_eq!(first_after_start(&mut h), (0..160).collect::<Vec<u16>>(), "a new acquisition");
    assert!(h.stats().streams[0].xruns >= 1, "periods were lost before the recovery");
    h.finish().expect("clean disconnect");
}

#[test]
fn suspend_recovery_with_set_params_restarts_at_frame_0() {
    let mut h = running();
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_RELEASE, 0), code::S_OK);
    assert_eq!(h.set_params(0, 8_000, 1, BUFFER, PERIOD, false), code::S_OK, "same values");
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    assert_eq!(first_after_start(&mut h), (0..160).collect::<Vec<u16>>());
    h.finish().expect("clean disconnect");
}

#[test]
fn a_new_open_with_another_rate_restarts_at_frame_0() {
    let mut h = running();
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_RELEASE, 0), code::S_OK);
    assert_eq!(h.set_params(0, 48_000, 1, BUFFER, PERIOD, false), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    assert_eq!(first_after_start(&mut h), (0..160).collect::<Vec<u16>>());
    h.finish().expect("clean disconnect");
}

#[test]
fn prepare_twice_then_start_restarts_at_frame_0() {
    let mut h = running();
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_RELEASE, 0), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    assert_eq!(h.pcm(code::R_PCM_PREPARE, 0), code::S_OK);
    assert_eq!(first_after_start(&mut h), (0..160).collect::<Vec<u16>>());
    h.finish().expect("clean disconnect");
}

#[test]
fn a_pause_stop_then_start_continues_without_a_gap() {
    let mut h = running();
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    // Longer than the FIFO: had the clock run on, periods would be lost.
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(h.pcm(code::R_PCM_START, 0), code::S_OK);
    let mut seen: Vec<u16> = (0..160).collect();
    seen.extend(take(&mut h, 6));
    assert_eq!(seen, (0..8 * 80).collect::<Vec<u16>>(), "the run goes on where it stopped");
    // Stop the clock again so that nothing is lost while the statistics are read.
    assert_eq!(h.pcm(code::R_PCM_STOP, 0), code::S_OK);
    let s = h.stats().streams[0];
    assert_eq!((s.xruns, s.frames_lost), (0, 0), "nothing lost over the pause");
    h.finish().expect("clean disconnect");
}
