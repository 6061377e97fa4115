// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Descriptor chains taken apart into the driver's readable and writable guest-memory segments,
//! checked once so that later copies cannot leave guest memory.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryError,
    GuestMemoryMmap, Permissions, VolatileSlice,
};

use crate::frames::FrameSink;

/// Most descriptors a chain may have: a 16 MiB period in 4 KiB pages, plus the header and the
/// status. The device keeps 16 bytes per descriptor of a chain it holds (at most 64 KiB a
/// chain); a longer chain is refused, and costs the device no more than this to look at.
pub const MAX_CHAIN_DESCRIPTORS: usize = 4096 + 2;

/// A contiguous piece of guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: usize,
}

/// Why a chain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A device-readable descriptor follows a device-writable one (VIRTIO 1.2, 2.7.4.2).
    #[error("a readable descriptor follows a writable one")]
    ReadableAfterWritable,
    /// More than [`MAX_CHAIN_DESCRIPTORS`] descriptors.
    #[error("more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooLong,
    /// The chain has no descriptor, or its last says NEXT but no descriptor follows: a next
    /// index past the table, a loop, an indirect table inside one or a bad table length, or
    /// more than 4 GiB (virtio-queue ends such a chain early; the device refuses it whole).
    #[error("the chain is malformed (empty, or cut short by a bad next, a loop or a bad indirect table)")]
    Malformed,
    /// A descriptor points outside guest memory.
    #[error("descriptor {addr:#x}+{len:#x} is outside guest memory")]
    OutsideGuestMemory {
        /// Start of the descriptor's buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

/// A chain the device refuses: its head (to return it with), why, and the part of it read
/// before the error (every segment of which lies in guest memory), where a status may go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Head descriptor index.
    pub head: u16,
    /// Why.
    pub error: ChainError,
    /// The segments read before the error.
    pub partial: Chain,
}

/// A descriptor chain's buffers, in order, with the head index to complete it with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// Head descriptor index (the id in the used ring).
    pub head: u16,
    /// Device-readable segments.
    pub readable: Vec<Segment>,
    /// Device-writable segments.
    pub writable: Vec<Segment>,
}

impl Chain {
    /// Takes a chain apart. Every segment is checked to lie within `mem`; a chain that
    /// virtio-queue ended early (its last descriptor says NEXT) is refused, not cut short.
    pub fn parse<M>(chain: DescriptorChain<M>, mem: &impl GuestMemory) -> Result<Self, Refused>
    where
        M: Deref,
        M::Target: GuestMemory,
    {
        let head = chain.head_index();
        let mut out = Chain { head, ..Chain::default() };
        let refuse = |error, partial| Err(Refused { head, error, partial });
        // Before the first descriptor, one is owed.
        let mut more = true;
        for (n, desc) in chain.enumerate() {
            if n >= MAX_CHAIN_DESCRIPTORS {
                return refuse(ChainError::TooLong, out);
            }
            more = desc.has_next();
            let seg = Segment { addr: desc.addr(), len: desc.len() as usize };
            let access = if desc.is_write_only() { Permissions::Write } else { Permissions::Read };
            if !mem.check_range(seg.addr, seg.len, access) {
                let error = ChainError::OutsideGuestMemory { addr: seg.addr.0, len: desc.len() };
                return refuse(error, out);
            }
            if desc.is_write_only() {
                out.writable.push(seg);
            } else if out.writable.is_empty() {
                out.readable.push(seg);
            } else {
                return refuse(ChainError::ReadableAfterWritable, out);
            }
        }
        if more {
            return refuse(ChainError::Malformed, out);
        }
        Ok(out)
    }

    /// Total size of the readable segments.
    pub fn readable_len(&self) -> usize {
        self.readable.iter().map(|s| s.len).sum()
    }

    /// Total size of the writable segments.
    pub fn writable_len(&self) -> usize {
        self.writable.iter().map(|s| s.len).sum()
    }

    /// Reads all readable bytes (the caller bounds [`Self::readable_len`] first).
    pub fn read_all(&self, mem: &impl GuestMemory) -> Result<Vec<u8>, vm_memory::GuestMemoryError> {
        let mut out = vec![0; self.readable_len()];
        let mut at = 0;
        for s in &self.readable {
            mem.read_slice(&mut out[at..at + s.len], s.addr)?;
            at += s.len;
        }
        Ok(out)
    }

    /// A cursor that writes a stream of bytes into the writable segments from their start.
    pub fn writer<'a>(&'a self, mem: &'a GuestMemoryMmap) -> ChainWriter<'a> {
        ChainWriter { mem, segments: &self.writable, seg: 0, offset: 0 }
    }

    /// Writes `bytes` at byte `offset` of the writable segments, which must have room.
    pub fn write_at(
        &self,
        mem: &impl GuestMemory,
        mut offset: usize,
        mut bytes: &[u8],
    ) -> Result<(), vm_memory::GuestMemoryError> {
        for s in &self.writable {
            if bytes.is_empty() {
                break;
            }
            if offset >= s.len {
                offset -= s.len;
                continue;
            }
            let n = bytes.len().min(s.len - offset);
            mem.write_slice(&bytes[..n], GuestAddress(s.addr.0 + offset as u64))?;
            bytes = &bytes[n..];
            offset = 0;
        }
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(vm_memory::GuestMemoryError::PartialBuffer { expected: bytes.len(), completed: 0 })
        }
    }
}

/// Writes consecutive pieces into a chain's writable segments, in order: each piece continues
/// where the last ended, without walking the segments from the start again.
#[derive(Debug)]
pub struct ChainWriter<'a> {
    mem: &'a GuestMemoryMmap,
    segments: &'a [Segment],
    seg: usize,
    offset: usize,
}

impl ChainWriter<'_> {
    /// The guest address at the cursor and the room left in its segment (empty segments are
    /// skipped); `None` when the segments are full.
    fn next_room(&mut self) -> Option<Result<(GuestAddress, usize), GuestMemoryError>> {
        loop {
            let s = self.segments.get(self.seg)?;
            if self.offset < s.len {
                let addr = s
                    .addr
                    .checked_add(self.offset as u64)
                    .ok_or(GuestMemoryError::InvalidGuestAddress(s.addr));
                return Some(addr.map(|a| (a, s.len - self.offset)));
            }
            self.seg += 1;
            self.offset = 0;
        }
    }
}

fn no_room(expected: usize) -> GuestMemoryError {
    GuestMemoryError::PartialBuffer { expected, completed: 0 }
}

impl FrameSink for ChainWriter<'_> {
    type Error = GuestMemoryError;

    /// Writes `bytes` next. Fails, with the bytes before the failure written, when the
    /// segments have no room left or guest memory refuses the write.
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), GuestMemoryError> {
        while !bytes.is_empty() {
            let (addr, room) = self.next_room().ok_or_else(|| no_room(bytes.len()))??;
            let n = bytes.len().min(room);
            self.mem.write_slice(&bytes[..n], addr)?;
            bytes = &bytes[n..];
            self.offset += n;
        }
        Ok(())
    }

    /// The guest memory at the cursor, up to `max` bytes: to the end of the segment or of the
    /// memory region that holds its start, whichever comes first.
    fn window(&mut self, max: usize) -> Result<VolatileSlice<'_>, GuestMemoryError> {
        let (addr, room) = self.next_room().ok_or_else(|| no_room(max))??;
        let slice = GuestMemoryBackend::get_slices(self.mem, addr, max.min(room))
            .next()
            .ok_or(GuestMemoryError::InvalidGuestAddress(addr))??;
        self.offset += slice.len();
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).expect("guest memory")
    }

    fn chain(segments: &[(u64, usize)]) -> Chain {
        Chain {
            head: 0,
            readable: Vec::new(),
            writable: segments
                .iter()
                .map(|&(addr, len)| Segment { addr: GuestAddress(addr), len })
                .collect(),
        }
    }

    #[test]
    fn the_writer_continues_across_pieces_and_segments() {
        let mem = mem();
        // Three segments, one empty, out of order in memory.
        let c = chain(&[(0x200, 3), (0x300, 0), (0x100, 5)]);
        let mut w = c.writer(&mem);
        for piece in [&[1u8, 2][..], &[3, 4, 5], &[6, 7, 8]] {
            assert!(w.write(piece).is_ok());
        }
        let mut got = [0u8; 5];
        assert!(mem.read_slice(&mut got[..3], GuestAddress(0x200)).is_ok());
        assert_eq!(&got[..3], &[1, 2, 3]);
        assert!(mem.read_slice(&mut got, GuestAddress(0x100)).is_ok());
        assert_eq!(got, [4, 5, 6, 7, 8]);
        assert!(w.write(&[9]).is_err(), "no room left");
    }

    #[test]
    fn the_writer_fails_outside_guest_memory() {
        let mem = mem();
        let c = chain(&[(0xff0, 8), (0x5000, 8)]);
        let mut w = c.writer(&mem);
        assert!(w.write(&[1; 8]).is_ok());
        assert!(w.write(&[2; 4]).is_err(), "a segment the memory map no longer has");
    }
}
