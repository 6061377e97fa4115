// SPDX-License-Identifier: GPL-2.0

//! A virtual memory area being set up by an mmap() file operation, in the shape of upstream's
//! `kernel::mm::virt::VmaNew` (Linux 6.16), which 6.12 lacks.

use kernel::bindings;
use kernel::error::{to_result, Result};
use kernel::prelude::*;

/// A VMA that a file's mmap() is setting up: the mmap lock is held for writing and the area
/// is not yet visible to other threads.
///
/// # Invariants
/// `vma` points to a live `vm_area_struct` during the mmap() call that made this value.
pub(crate) struct VmaNew {
    vma: *mut bindings::vm_area_struct,
}

impl VmaNew {
    /// Wraps the VMA of an mmap() call.
    ///
    /// # Safety
    /// `vma` must be the area passed to an mmap() file operation that is running, and the
    /// value must not outlive that call.
    pub(crate) unsafe fn from_raw(vma: *mut bindings::vm_area_struct) -> Self {
        // INVARIANT: by the caller's guarantee.
        Self { vma }
    }

    /// First user address of the area.
    pub(crate) fn start(&self) -> usize {
        // SAFETY: by the type invariant the VMA is live.
        unsafe { (*self.vma).__bindgen_anon_1.__bindgen_anon_1.vm_start }
    }

    /// User address just past the area.
    pub(crate) fn end(&self) -> usize {
        // SAFETY: by the type invariant the VMA is live.
        unsafe { (*self.vma).__bindgen_anon_1.__bindgen_anon_1.vm_end }
    }

    /// The mmap offset, in pages.
    pub(crate) fn pgoff(&self) -> usize {
        // SAFETY: by the type invariant the VMA is live.
        unsafe { (*self.vma).vm_pgoff }
    }

    /// The area's `VM_*` flags.
    pub(crate) fn flags(&self) -> bindings::vm_flags_t {
        // SAFETY: by the type invariant the VMA is live; the flags do not change under us
        // (the mmap lock is held for writing).
        unsafe { (*self.vma).__bindgen_anon_2.vm_flags }
    }

    /// True when the mapping is shared (MAP_SHARED). `VM_MAYSHARE`, not `VM_SHARED`: the mm
    /// core clears `VM_SHARED` from shared mappings of files not open for writing.
    pub(crate) fn is_shared(&self) -> bool {
        self.flags() & bindings::VM_MAYSHARE as bindings::vm_flags_t != 0
    }

    /// Makes the mapping read-only for good: EPERM if it is writable now; afterwards
    /// mprotect() cannot make it writable.
    pub(crate) fn try_clear_maywrite(&self) -> Result {
        if self.flags() & bindings::VM_WRITE as bindings::vm_flags_t != 0 {
            return Err(EPERM);
        }
        // SAFETY: the VMA is live and being set up under the mmap lock (type invariant).
        unsafe {
            bindings::vm_flags_clear(self.vma, bindings::VM_MAYWRITE as bindings::vm_flags_t)
        };
        Ok(())
    }

    /// Forbids growing the area with mremap() and leaves it out of core dumps.
    pub(crate) fn set_dontexpand(&self) {
        // SAFETY: as in `try_clear_maywrite`.
        unsafe {
            bindings::vm_flags_set(
                self.vma,
                (bindings::VM_DONTEXPAND | bindings::VM_DONTDUMP) as bindings::vm_flags_t,
            )
        };
    }

    /// Maps `page` at user address `addr` of the area; the mapping takes a reference to the
    /// page, so it stays valid until unmapped whatever its owner does.
    ///
    /// # Safety
    /// `page` must be a live order-0 page (not slab memory) the caller holds a reference to.
    pub(crate) unsafe fn insert_page(&self, addr: usize, page: *mut bindings::page) -> Result {
        // SAFETY: the VMA is live (type invariant); the caller guarantees the page.
        to_result(unsafe { bindings::vm_insert_page(self.vma, addr as kernel::ffi::c_ulong, page) })
    }
}
