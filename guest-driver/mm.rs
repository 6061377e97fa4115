// SPDX-License-Identifier: GPL-2.0

//! A virtual memory area being set up by an mmap() file operation: upstream's
//! `kernel::mm::virt::VmaNew` on Linux 7.2; on 6.12, which lacks it, a copy of the part of
//! its API vdaq uses. [`VmaExt`] adds, on both, what upstream's lacks.

use kernel::bindings;
use kernel::error::{to_result, Result};
#[cfg(not(vdaq_linux7))]
use kernel::prelude::*;
#[cfg(not(vdaq_linux7))]
use kernel::types::Opaque;

#[cfg(vdaq_linux7)]
pub(crate) use kernel::mm::virt::VmaNew;

/// A VMA that a file's mmap() is setting up: the mmap lock is held for writing and the area
/// is not yet visible to other threads.
///
/// # Invariants
///
/// The area is live, and set up by a running mmap() call, while a reference to this value
/// exists.
#[cfg(not(vdaq_linux7))]
#[repr(transparent)]
pub(crate) struct VmaNew {
    vma: Opaque<bindings::vm_area_struct>,
}

#[cfg(not(vdaq_linux7))]
impl VmaNew {
    /// The area of an mmap() call.
    ///
    /// # Safety
    ///
    /// `vma` must be the area passed to an mmap() file operation that runs for `'a`.
    pub(crate) unsafe fn from_raw<'a>(vma: *mut bindings::vm_area_struct) -> &'a Self {
        // INVARIANT: by the caller's guarantee. SAFETY: `Self` is a transparent wrapper of the
        // C struct, live for `'a`.
        unsafe { &*vma.cast() }
    }

    /// The C `vm_area_struct`.
    pub(crate) fn as_ptr(&self) -> *mut bindings::vm_area_struct {
        self.vma.get()
    }

    /// First user address of the area.
    pub(crate) fn start(&self) -> usize {
        // SAFETY: by the type invariant the VMA is live.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_start }
    }

    /// User address just past the area.
    pub(crate) fn end(&self) -> usize {
        // SAFETY: by the type invariant the VMA is live.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.vm_end }
    }

    /// The area's `VM_*` flags.
    pub(crate) fn flags(&self) -> bindings::vm_flags_t {
        // SAFETY: by the type invariant the VMA is live; the flags do not change under us
        // (the mmap lock is held for writing).
        unsafe { (*self.as_ptr()).__bindgen_anon_2.vm_flags }
    }

    /// True when the area is mapped writable (`VM_WRITE`).
    pub(crate) fn writable(&self) -> bool {
        self.flags() & bindings::VM_WRITE as bindings::vm_flags_t != 0
    }

    /// Makes the mapping read-only for good: EINVAL if it is writable now; afterwards
    /// mprotect() cannot make it writable.
    pub(crate) fn try_clear_maywrite(&self) -> Result {
        if self.writable() {
            return Err(EINVAL);
        }
        self.clear_flags(bindings::VM_MAYWRITE as bindings::vm_flags_t);
        Ok(())
    }

    /// Forbids growing the area with mremap().
    pub(crate) fn set_dontexpand(&self) {
        self.set_flags(bindings::VM_DONTEXPAND as bindings::vm_flags_t);
    }

    /// Leaves the area out of core dumps.
    pub(crate) fn set_dontdump(&self) {
        self.set_flags(bindings::VM_DONTDUMP as bindings::vm_flags_t);
    }

    fn set_flags(&self, flags: bindings::vm_flags_t) {
        // SAFETY: the VMA is live and being set up under the mmap lock (type invariant).
        unsafe { bindings::vm_flags_set(self.as_ptr(), flags) };
    }

    fn clear_flags(&self, flags: bindings::vm_flags_t) {
        // SAFETY: as in `set_flags`.
        unsafe { bindings::vm_flags_clear(self.as_ptr(), flags) };
    }
}

/// What vdaq asks of an area being set up beyond upstream's `VmaNew`.
pub(crate) trait VmaExt {
    /// The mmap offset, in pages.
    fn pgoff(&self) -> usize;

    /// True when the mapping is shared (MAP_SHARED). `VM_MAYSHARE`, not `VM_SHARED`: the mm
    /// core clears `VM_SHARED` from shared mappings of files not open for writing.
    fn is_shared(&self) -> bool;

    /// Maps `page` at user address `addr` of the area; the mapping takes a reference to the
    /// page, so it stays valid until unmapped whatever its owner does. (Upstream's
    /// `VmaMixedMap::vm_insert_page` takes an owned `Page`; vdaq's are parts of split
    /// allocations.)
    ///
    /// # Safety
    ///
    /// `page` must be a live order-0 page (not slab memory) the caller holds a reference to.
    unsafe fn insert_page(&self, addr: usize, page: *mut bindings::page) -> Result;
}

impl VmaExt for VmaNew {
    fn pgoff(&self) -> usize {
        // SAFETY: a `VmaNew` is live during the mmap() call that made it.
        unsafe { (*self.as_ptr()).vm_pgoff }
    }

    fn is_shared(&self) -> bool {
        self.flags() & bindings::VM_MAYSHARE as bindings::vm_flags_t != 0
    }

    unsafe fn insert_page(&self, addr: usize, page: *mut bindings::page) -> Result {
        // SAFETY: the area is live and being set up (a `VmaNew`); the caller guarantees the
        // page.
        to_result(unsafe {
            bindings::vm_insert_page(self.as_ptr(), addr as kernel::ffi::c_ulong, page)
        })
    }
}
