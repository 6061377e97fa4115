// SPDX-License-Identifier: GPL-2.0

//! What differs between the kernel crates of Linux 6.12 and 7 that more than one abstraction
//! of the FFI layer meets (the `vdaq_linux7` cfg comes from the Kbuild file). The driver's
//! logic never sees these differences.

use kernel::ffi::c_void;
use kernel::types::ForeignOwnable;
use kernel::uaccess::UserSlice;

/// Hands `owner` over to C as a `void *` (a file's `private_data`, a device's `priv`).
pub(crate) fn into_foreign<P: ForeignOwnable>(owner: P) -> *mut c_void {
    // 6.12 hands out a `*const`; Linux 7 a `*mut`.
    #[cfg(not(vdaq_linux7))]
    let ptr = owner.into_foreign().cast_mut();
    #[cfg(vdaq_linux7)]
    let ptr = owner.into_foreign();
    ptr
}

/// The user memory at `addr` (an ioctl's argument, a read's buffer), `len` bytes long.
pub(crate) fn user_slice(addr: usize, len: usize) -> UserSlice {
    // Linux 7 names user addresses by a type of their own.
    #[cfg(vdaq_linux7)]
    let addr = kernel::uaccess::UserPtr::from_addr(addr);
    UserSlice::new(addr, len)
}
