// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Descriptor chains the guest controls, through a split queue in guest memory with a hole:
//! whatever the descriptors say, a chain the device accepts lies inside guest memory (reading
//! and writing all of it succeeds), and nothing panics.
//!
//! Input: n (descriptors, at most 16), n raw 16-byte descriptors (addr u64, len u32, flags
//! u16, next u16, little-endian), then avail ring heads (u16 LE) to the end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdaq_device::chain::Chain;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueOwnedT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

const QUEUE_SIZE: u16 = 16;
/// Readable and writable lengths above this are not copied (the device bounds them too).
const MAX_COPY: usize = 1 << 20;

fuzz_target!(|input: &[u8]| {
    let Some((&n, rest)) = input.split_first() else { return };
    let n = usize::from(n).min(usize::from(QUEUE_SIZE));
    if rest.len() < n * 16 {
        return;
    }
    let (descs, heads) = rest.split_at(n * 16);
    // 64 KiB, a 64 KiB hole, then 64 KiB more.
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 0x1_0000),
        (GuestAddress(0x2_0000), 0x1_0000),
    ]) else {
        return;
    };
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    for (i, d) in descs.chunks_exact(16).enumerate() {
        let le =
            |r: std::ops::Range<usize>| d[r].iter().rev().fold(0u64, |v, &b| v << 8 | u64::from(b));
        let desc =
            Descriptor::new(le(0..8), le(8..12) as u32, le(12..14) as u16, le(14..16) as u16);
        let _ = vq.desc_table().store(i as u16, RawDescriptor::from(desc));
    }
    let heads: Vec<u16> = heads
        .chunks_exact(2)
        .take(usize::from(QUEUE_SIZE))
        .map(|h| u16::from_le_bytes([h[0], h[1]]))
        .collect();
    for (i, &h) in heads.iter().enumerate() {
        let _ = vq.avail().ring().ref_at(i).map(|r| r.store(h));
    }
    vq.avail().idx().store(heads.len() as u16);
    let Ok(mut queue) = vq.create_queue::<Queue>() else { return };
    let Ok(iter) = queue.iter(&mem) else { return };
    for desc_chain in iter {
        let Ok(chain) = Chain::parse(desc_chain, &mem) else { continue };
        if chain.readable_len() <= MAX_COPY {
            assert!(
                chain.read_all(&mem).is_ok(),
                "an accepted chain's readable part reads: {chain:?}"
            );
        }
        let len = chain.writable_len();
        if len <= MAX_COPY {
            assert!(
                chain.write_at(&mem, 0, &vec![0xa5; len]).is_ok(),
                "an accepted chain's writable part writes: {chain:?}"
            );
            assert!(
                chain.write_at(&mem, 0, &vec![0; len + 1]).is_err(),
                "one byte too many is refused"
            );
        }
    }
});
