//! Descriptor chains taken apart into the driver's readable and writable guest-memory segments,
//! checked once so that later copies cannot leave guest memory.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// A contiguous piece of guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: usize,
}

/// Why a chain was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// A device-readable descriptor follows a device-writable one (VIRTIO 1.2, 2.7.4.2).
    ReadableAfterWritable,
    /// A descriptor points outside guest memory.
    OutsideGuestMemory {
        /// Start of the descriptor's buffer.
        addr: u64,
        /// Its length.
        len: u32,
    },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ReadableAfterWritable => {
                write!(f, "a readable descriptor follows a writable one")
            }
            Self::OutsideGuestMemory { addr, len } => {
                write!(f, "descriptor {addr:#x}+{len:#x} is outside guest memory")
            }
        }
    }
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
    /// Takes a chain apart. Every segment is checked to lie within `mem`.
    pub fn parse<M>(
        chain: DescriptorChain<M>,
        mem: &impl GuestMemory,
    ) -> Result<Self, (u16, ChainError)>
    where
        M: Deref,
        M::Target: GuestMemory,
    {
        let head = chain.head_index();
        let mut out = Chain { head, ..Chain::default() };
        for desc in chain {
            let seg = Segment { addr: desc.addr(), len: desc.len() as usize };
            let access = if desc.is_write_only() { Permissions::Write } else { Permissions::Read };
            if !mem.check_range(seg.addr, seg.len, access) {
                return Err((
                    head,
                    ChainError::OutsideGuestMemory { addr: seg.addr.0, len: desc.len() },
                ));
            }
            if desc.is_write_only() {
                out.writable.push(seg);
            } else if out.writable.is_empty() {
                out.readable.push(seg);
            } else {
                return Err((head, ChainError::ReadableAfterWritable));
            }
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
