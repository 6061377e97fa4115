// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! The whole backend against a hostile guest: `handle_event` of the real `VdaqBackend` over
//! split queues in guest memory (control, event, tx, rx, 16 entries each), with any
//! descriptor tables, available rings (heads repeated, out of range, indices anywhere),
//! guest memory contents, EVENT_IDX on or off, device resets, and time advancing as the
//! input says. After every event: the device holds at most a queue's size of chains per
//! queue, did bounded work, keeps its per-period lists bounded; over the whole input it
//! allocates at most ALLOC_CAP bytes more than it started with (a counting allocator).
//!
//! Input: a flags byte (bit 0: EVENT_IDX), then operations:
//!   0, q, idx, addr u32, len u32, flags u16, next u16   a descriptor in queue q's table
//!   1, q, head u16                                      head made available, avail idx + 1
//!   2, q                                                a kick of queue q (handle_event)
//!   3, stream, dt u16                                   time passes by dt x 10 us, a timer fires
//!   4, at u16, n, n bytes                               guest memory at DATA + at x 16
//!   5, q, idx u16                                       the avail idx set to anything
//!   6, q, used_event u16                                avail ring's used_event (EVENT_IDX)
//!   7, what                                             resume event (even) or a reset (odd)
//! (u16 and u32 little-endian; q is taken modulo 4, the others as they come.)
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vdaq_device::backend::{Clock, VdaqBackend, CHAINS_PER_EVENT};
use vdaq_device::faults::{FaultPlan, FaultStatus, UsedLenLie};
use vdaq_device::source::StreamSignal;
use vdaq_device::stream::{StreamCaps, MAX_PERIODS};
use vdaq_proto::format::SampleFormat;
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

/// Counts the bytes allocated and not yet freed, and the most at any time.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on as is.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Entries of each queue.
const QUEUE: u16 = 16;
/// Guest memory: 1 MiB.
const MEM: usize = 1 << 20;
/// Where the data written by operation 4 goes.
const DATA: u64 = 0x1_0000;
/// Most the backend may allocate during one input beyond what it started with: its held
/// chains (4 queues x 16 x 4098 descriptors x 16 bytes), replies, per-stream lists, with room.
const ALLOC_CAP: usize = 16 << 20;
/// Most work in one event: a budget of chains from each queue (a resume event serves all
/// four), the rx buffers held and flushed, the events sent.
const WORK_CAP: usize = 4 * CHAINS_PER_EVENT + 4 * QUEUE as usize;

fn desc_table(q: u16) -> u64 {
    0x1000 + u64::from(q) * 0x1000
}
fn avail(q: u16) -> u64 {
    desc_table(q) + 0x400
}
fn used(q: u16) -> u64 {
    desc_table(q) + 0x800
}

fn caps(paced: bool, faults: FaultPlan) -> StreamCaps {
    StreamCaps {
        formats: SampleFormat::ALL.to_vec(),
        rates: vec![8_000, 48_000, 384_000],
        channels_min: 1,
        channels_max: 20,
        signal: StreamSignal::default(),
        paced,
        faults,
    }
}

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(flags) = input.u8() else { return };
    let event_idx = flags & 1 != 0;
    let Ok(mmap) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]) else { return };
    let mem = GuestMemoryAtomic::new(mmap);
    let liar = FaultPlan {
        drop_every: 3,
        error_every: 4,
        withhold_every: 2,
        error_status: FaultStatus::Code(0x1234),
        used_len: Some(UsedLenLie::Extra(4096)),
        event_flood: 3,
        spurious_notify: 2,
        ..FaultPlan::default()
    };
    let streams =
        vec![caps(true, FaultPlan::default()), caps(false, FaultPlan::default()), caps(true, liar)];
    let n_streams = streams.len();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let Ok(mut backend) = VdaqBackend::new(streams) else { return };
    let now = Arc::new(AtomicU64::new(1_000_000_000));
    backend.set_clock(Clock::Manual(Arc::clone(&now)));
    let mut vrings = Vec::new();
    for q in 0..4u16 {
        let Ok(vring) = VringRwLock::new(mem.clone(), QUEUE) else { return };
        vring.set_queue_size(QUEUE);
        if vring.set_queue_info(desc_table(q), avail(q), used(q)).is_err() {
            return;
        }
        vring.set_queue_event_idx(event_idx);
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        vrings.push(vring);
    }
    let features = backend.features();
    backend.acked_features(features);
    backend.set_event_idx(event_idx);
    if backend.update_memory(mem.clone()).is_err() {
        return;
    }
    let guest = mem.memory();
    let mut avail_idx = [0u16; 4];
    let handle = |backend: &mut VdaqBackend, event: u16| {
        let _ = backend.handle_event(event, EventSet::IN, &vrings, 0);
        for q in 0..4 {
            assert!(
                backend.in_flight(q) <= usize::from(QUEUE),
                "queue {q}: {} held",
                backend.in_flight(q)
            );
        }
        assert!(
            backend.last_event_work() <= WORK_CAP,
            "{} units of work in one event",
            backend.last_event_work()
        );
        for s in backend.streams() {
            assert!(s.posted() <= usize::from(QUEUE));
            assert!(
                s.bookkeeping_len() <= 3 * (MAX_PERIODS as usize + 1),
                "{} list entries",
                s.bookkeeping_len()
            );
        }
    };
    while let Some(op) = input.u8() {
        match op % 8 {
            0 => {
                let (Some(q), Some(idx), Some(addr), Some(len), Some(fl), Some(next)) =
                    (input.u8(), input.u8(), input.u32(), input.u32(), input.u16(), input.u16())
                else {
                    break;
                };
                let at = desc_table(u16::from(q % 4)) + 16 * u64::from(idx % QUEUE as u8);
                let mut d = [0u8; 16];
                d[..8].copy_from_slice(&u64::from(addr).to_le_bytes());
                d[8..12].copy_from_slice(&len.to_le_bytes());
                d[12..14].copy_from_slice(&fl.to_le_bytes());
                d[14..].copy_from_slice(&next.to_le_bytes());
                let _ = guest.write_slice(&d, GuestAddress(at));
            }
            1 => {
                let (Some(q), Some(head)) = (input.u8(), input.u16()) else { break };
                let q = usize::from(q % 4);
                let slot = avail(q as u16) + 4 + 2 * u64::from(avail_idx[q] % QUEUE);
                let _ = guest.write_obj(head, GuestAddress(slot));
                avail_idx[q] = avail_idx[q].wrapping_add(1);
                let _ = guest.write_obj(avail_idx[q], GuestAddress(avail(q as u16) + 2));
            }
            2 => {
                let Some(q) = input.u8() else { break };
                handle(&mut backend, u16::from(q % 4));
            }
            3 => {
                let (Some(s), Some(dt)) = (input.u8(), input.u16()) else { break };
                now.fetch_add(u64::from(dt) * 10_000, Ordering::Relaxed);
                let s = usize::from(s) % n_streams;
                handle(&mut backend, VdaqBackend::timer_event(s));
            }
            4 => {
                let (Some(at), Some(n)) = (input.u16(), input.u8()) else { break };
                let Some(bytes) = input.bytes(usize::from(n)) else { break };
                let _ = guest.write_slice(bytes, GuestAddress(DATA + u64::from(at) * 16));
            }
            5 => {
                let (Some(q), Some(idx)) = (input.u8(), input.u16()) else { break };
                let q = usize::from(q % 4);
                avail_idx[q] = idx;
                let _ = guest.write_obj(idx, GuestAddress(avail(q as u16) + 2));
            }
            6 => {
                let (Some(q), Some(v)) = (input.u8(), input.u16()) else { break };
                let q = q % 4;
                let _ = guest
                    .write_obj(v, GuestAddress(avail(u16::from(q)) + 4 + 2 * u64::from(QUEUE)));
            }
            _ => {
                let Some(what) = input.u8() else { break };
                if what % 2 == 0 {
                    handle(&mut backend, VdaqBackend::resume_event());
                } else {
                    backend.acked_features(features);
                }
            }
        }
    }
    if std::env::var_os("VDAQ_FUZZ_DEBUG").is_some() {
        let stats = backend.stats_handle().lock().map(|s| s.clone()).unwrap_or_default();
        eprintln!("{stats:?}");
    }
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert!(peak <= ALLOC_CAP, "{peak} bytes allocated at once");
});
