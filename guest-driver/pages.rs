// SPDX-License-Identifier: GPL-2.0

//! Page-backed memory a stream shares with the device (DMA) and with user space (mmap):
//! period buffers and the status page of the mapping.
//!
//! Each buffer is one physically contiguous allocation split into order-0 pages, so that it is
//! one scatterlist entry for the device and each page can be mapped on its own with its own
//! reference count: a page mapped into a process stays valid after the driver frees its
//! buffers (device removal, new parameters) until the process unmaps it.

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;

use crate::mm::{VmaExt, VmaNew};
use crate::uapi::{MmapLayout, MmapRecord, MmapStatus, MMAP_MAGIC, MMAP_VERSION};
use crate::wire::Pod;

/// Bytes per page.
pub(crate) const PAGE_SIZE: usize = bindings::PAGE_SIZE;

/// Zeroed, physically contiguous pages, each with its own reference count.
///
/// # Invariants
/// `first` is the first of `count` pages (`count >= 1`) that this value owns one reference
/// to; they are consecutive in the memory map (they come from one buddy block) and in the
/// kernel's direct mapping, starting at `addr`.
pub(crate) struct Pages {
    first: *mut bindings::page,
    count: usize,
    addr: *mut u8,
}

// SAFETY: the pages are plain memory owned by this value; nothing ties them to a thread.
unsafe impl Send for Pages {}
// SAFETY: shared references only read the addresses; writes go through `&mut self` or are
// published atomically.
unsafe impl Sync for Pages {}

impl Pages {
    /// Allocates `count` zeroed pages (zeroed: user space may map all of them).
    pub(crate) fn alloc(count: usize) -> Result<Self> {
        if count == 0 {
            return Err(EINVAL);
        }
        let order = count.next_power_of_two().trailing_zeros();
        // SAFETY: plain page allocation; the result is checked for NULL.
        let first =
            unsafe { bindings::alloc_pages(bindings::GFP_KERNEL | bindings::__GFP_ZERO, order) };
        if first.is_null() {
            return Err(ENOMEM);
        }
        // SAFETY: `first` heads a non-compound block of 2^order pages that we own; afterwards
        // each page has a reference count of its own.
        unsafe { bindings::split_page(first, order) };
        for i in count..(1usize << order) {
            // SAFETY: pages past `count` are ours and not used: give them back one by one. The
            // block's page structures are consecutive (one buddy block).
            unsafe { bindings::__free_pages(first.add(i), 0) };
        }
        // SAFETY: `first` is a live page; lowmem (x86_64 has no highmem) is directly mapped.
        let addr = unsafe { bindings::page_address(first) }.cast::<u8>();
        // INVARIANT: `count` consecutive owned pages, directly mapped at `addr`.
        Ok(Self { first, count, addr })
    }

    /// Bytes of the pages.
    pub(crate) fn len(&self) -> usize {
        self.count * PAGE_SIZE
    }

    /// Maps page `index` of these pages at user address `addr` of `vma`.
    fn map_page(&self, vma: &VmaNew, addr: usize, index: usize) -> Result {
        if index >= self.count {
            return Err(EINVAL);
        }
        // SAFETY: by the type invariant page `index` is a live order-0 page we hold a
        // reference to (it is not slab memory); the mapping takes a reference of its own.
        unsafe { vma.insert_page(addr, self.first.add(index)) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        for i in 0..self.count {
            // SAFETY: by the type invariant we own one reference to each page; a page still
            // mapped by a process keeps that mapping's reference.
            unsafe { bindings::__free_pages(self.first.add(i), 0) };
        }
    }
}

/// Byte offset of the records in the status pages (after [`MmapStatus`]).
const RECORDS_OFFSET: usize = core::mem::size_of::<MmapStatus>();
/// Byte offset of `MmapStatus::head`.
const HEAD_OFFSET: usize = core::mem::offset_of!(MmapStatus, head);
/// Byte offset of `MmapStatus::tail`.
const TAIL_OFFSET: usize = core::mem::offset_of!(MmapStatus, tail);

/// A stream's shared memory for one set of parameters: the status pages (an [`MmapStatus`]
/// and one [`MmapRecord`] per period) and the period buffers, laid out for mmap as
/// [`MmapLayout`] says.
///
/// # Invariants
/// `buffers.len() == periods`, each of `stride_pages` pages holding `period_bytes`;
/// `status` holds the status and `periods` records.
pub(crate) struct PagePool {
    status: Pages,
    buffers: KVec<Pages>,
    period_bytes: usize,
    stride_pages: usize,
}

impl PagePool {
    /// Allocates the pool and hands out the one [`PeriodBuffer`] of each period.
    pub(crate) fn new(periods: u32, period_bytes: u32) -> Result<(Arc<Self>, KVec<PeriodBuffer>)> {
        let (periods, period_bytes) = (periods as usize, period_bytes as usize);
        if periods == 0 || period_bytes == 0 {
            return Err(EINVAL);
        }
        let status_bytes = periods
            .checked_mul(core::mem::size_of::<MmapRecord>())
            .and_then(|r| r.checked_add(RECORDS_OFFSET))
            .ok_or(EINVAL)?;
        let status = Pages::alloc(status_bytes.div_ceil(PAGE_SIZE))?;
        let stride_pages = period_bytes.div_ceil(PAGE_SIZE);
        let mut buffers = KVec::with_capacity(periods, GFP_KERNEL)?;
        for _ in 0..periods {
            buffers.push(Pages::alloc(stride_pages)?, GFP_KERNEL)?;
        }
        let head = MmapStatus {
            magic: MMAP_MAGIC,
            version: MMAP_VERSION,
            ..Default::default()
        };
        let pool = Arc::new(
            Self {
                status,
                buffers,
                period_bytes,
                stride_pages,
            },
            GFP_KERNEL,
        )?;
        pool.write_status(0, head.as_bytes());
        let mut handles = KVec::with_capacity(periods, GFP_KERNEL)?;
        for index in 0..periods {
            // INVARIANT (of `PeriodBuffer`): one handle per index, made only here.
            handles.push(
                PeriodBuffer {
                    pool: pool.clone(),
                    index,
                },
                GFP_KERNEL,
            )?;
        }
        Ok((pool, handles))
    }

    /// Periods (buffers and records).
    pub(crate) fn periods(&self) -> usize {
        self.buffers.len()
    }

    fn status_pages(&self) -> usize {
        self.status.count
    }

    /// Where things are in the mapping.
    pub(crate) fn layout(&self) -> MmapLayout {
        let stride = (self.stride_pages * PAGE_SIZE) as u64;
        let buffers_offset = self.status.len() as u64;
        MmapLayout {
            mapping_bytes: buffers_offset + stride * self.periods() as u64,
            records_offset: RECORDS_OFFSET as u64,
            buffers_offset,
            buffer_stride: stride,
            periods: self.periods() as u32,
            period_bytes: self.period_bytes as u32,
            reserved: 0,
        }
    }

    /// Writes `bytes` into the status pages at `offset` (within bounds: callers pass offsets
    /// of the layout).
    fn write_status(&self, offset: usize, bytes: &[u8]) {
        if !matches!(offset.checked_add(bytes.len()), Some(end) if end <= self.status.len()) {
            return;
        }
        // SAFETY: in bounds of the status pages (checked above), which live as long as `self`.
        // User space maps them read-only; the driver writes them under the device's lock only,
        // so writes do not race each other. Readers in user space read racily by design and
        // synchronise through `head` (release store below, acquire load there).
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.status.addr.add(offset),
                bytes.len(),
            )
        };
    }

    fn store_u64(&self, offset: usize, value: u64) {
        // SAFETY: `offset` is one of the aligned `MmapStatus` fields, inside the first status
        // page, which lives as long as `self`; the page is only accessed atomically there.
        let cell = unsafe { AtomicU64::from_ptr(self.status.addr.add(offset).cast::<u64>()) };
        cell.store(value, Ordering::Release);
    }

    /// Publishes the record of period `record.header.sequence`, then `head` past it.
    pub(crate) fn publish(&self, record: &MmapRecord) {
        let slot = (record.header.sequence % self.periods() as u64) as usize;
        self.write_status(
            RECORDS_OFFSET + slot * core::mem::size_of::<MmapRecord>(),
            record.as_bytes(),
        );
        self.store_u64(HEAD_OFFSET, record.header.sequence + 1);
    }

    /// Sets `head` and `tail` (e.g. both 0 at a start).
    pub(crate) fn set_positions(&self, head: u64, tail: u64) {
        self.store_u64(TAIL_OFFSET, tail);
        self.store_u64(HEAD_OFFSET, head);
    }

    /// Sets `tail`: periods before it were given back.
    pub(crate) fn set_tail(&self, tail: u64) {
        self.store_u64(TAIL_OFFSET, tail);
    }

    /// Maps the pool's pages `pgoff..` into all of `vma` (the whole range must lie within
    /// the layout: EINVAL otherwise).
    pub(crate) fn map_into(&self, vma: &VmaNew) -> Result {
        let pages = (vma.end() - vma.start()) / PAGE_SIZE;
        let total = self.status_pages() + self.periods() * self.stride_pages;
        let first = vma.pgoff();
        if !matches!(first.checked_add(pages), Some(end) if end <= total) {
            return Err(EINVAL);
        }
        for i in 0..pages {
            let addr = vma.start() + i * PAGE_SIZE;
            let page = first + i;
            if page < self.status_pages() {
                self.status.map_page(vma, addr, page)?;
            } else {
                let at = page - self.status_pages();
                let buffer = self.buffers.get(at / self.stride_pages).ok_or(EINVAL)?;
                buffer.map_page(vma, addr, at % self.stride_pages)?;
            }
        }
        Ok(())
    }
}

/// The claim on one period buffer of a [`PagePool`]: its message carries it to the device
/// and back.
///
/// # Invariants
/// There is exactly one `PeriodBuffer` per buffer of a pool (it is not `Clone`; only
/// [`PagePool::new`] makes them). The device writes a buffer only while the message that owns
/// its `PeriodBuffer` is posted, and user space maps it read-only; so while the driver holds
/// the `PeriodBuffer`, nothing writes the memory.
pub(crate) struct PeriodBuffer {
    pool: Arc<PagePool>,
    index: usize,
}

impl PeriodBuffer {
    /// The buffer's index in the pool (and in the mapping).
    pub(crate) fn index(&self) -> u32 {
        self.index as u32
    }

    /// The pool this buffer belongs to.
    pub(crate) fn pool(&self) -> &Arc<PagePool> {
        &self.pool
    }

    /// The period's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        let pages = &self.pool.buffers[self.index];
        // SAFETY: the pages hold at least `period_bytes` (type invariant of `PagePool`) and
        // live as long as the pool, which `self` keeps; by the type invariant nothing writes
        // them while `self` is held outside the queue.
        unsafe { core::slice::from_raw_parts(pages.addr, self.pool.period_bytes) }
    }

    /// The period's bytes, for the device to write (the message is being posted).
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        let pages = &self.pool.buffers[self.index];
        // SAFETY: as in `as_slice`; `&mut self` is the one claim on the buffer, so this is
        // the only reference the driver makes to it.
        unsafe { core::slice::from_raw_parts_mut(pages.addr, self.pool.period_bytes) }
    }
}
