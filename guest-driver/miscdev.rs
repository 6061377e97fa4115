// SPDX-License-Identifier: GPL-2.0

//! Misc character devices: upstream's `kernel::miscdevice` (Linux 7.2, with the additions of
//! `images/kernel/patches-7.2/0002-*`), or on Linux 6.12, which has none of it, [`local`]'s
//! copy of the same API. The driver's logic sees one API on both.
//!
//! What an open file holds (`MiscDevice::Ptr`) may keep the device state alive after a device
//! removal until the last file is closed; the file operations table is a static of the module
//! that owns it (`MiscDevice::OWNER`), so rmmod waits for open files.
//!
//! Beside the trait, this module has what neither kernel offers: the blocking test of a read
//! ([`KiocbExt`]), poll registration on a plain wait queue ([`PollTableExt`]) and the node's
//! sysfs `stats` file ([`StatsFile`]).

use core::marker::PhantomData;
use kernel::bindings;
use kernel::types::ForeignOwnable;

use crate::kernel_sync::WaitQueue;

#[cfg(not(vdaq_linux7))]
mod local;

#[cfg(not(vdaq_linux7))]
pub(crate) use local::{
    AttributeGroups, File, IovIterDest, Kiocb, MiscDevice, MiscDeviceRegistration, PollTable,
};

#[cfg(vdaq_linux7)]
pub(crate) use kernel::{
    fs::{File, Kiocb},
    iov::IovIterDest,
    miscdevice::{AttributeGroups, MiscDevice, MiscDeviceRegistration},
    sync::poll::PollTable,
};

/// What a read needs to know of its file beyond the data the file holds.
pub(crate) trait KiocbExt {
    /// True when the file was opened with O_NONBLOCK.
    fn is_nonblocking(&self) -> bool;
}

impl<T: ForeignOwnable> KiocbExt for Kiocb<'_, T> {
    fn is_nonblocking(&self) -> bool {
        // SAFETY: a `Kiocb` is live during the read_iter call that made it, and so is its file;
        // `f_flags` is read as the VFS reads it, without a lock.
        let flags =
            unsafe { core::ptr::read_volatile(&raw const (*(*self.as_raw()).ki_filp).f_flags) };
        flags & bindings::O_NONBLOCK != 0
    }
}

/// Poll registration on a wait queue that is not a `PollCondVar` (the driver's [`WaitQueue`]
/// also serves blocking reads, which wait on a condition without a lock).
pub(crate) trait PollTableExt {
    /// Registers the poll() caller on `queue`: a wake-up of the queue re-runs poll.
    fn register_wait_queue(&self, file: &File, queue: &WaitQueue);
}

impl PollTableExt for PollTable<'_> {
    fn register_wait_queue(&self, file: &File, queue: &WaitQueue) {
        // SAFETY: the file and the table (null or valid) are live during poll(); the queue lives
        // as long as the device state, which the file holds (poll_wait entries are removed
        // before the file is released).
        unsafe { bindings::poll_wait(file.as_ptr(), queue.as_ptr(), self.as_raw()) }
    }
}

/// The node's read-only sysfs file `stats` (/sys/class/misc/NAME/stats), readable by whoever
/// can read sysfs, whether or not the node is open. A driver gives [`StatsFile::GROUPS`] as its
/// `MiscDevice::ATTRIBUTE_GROUPS`.
pub(crate) trait StatsFile: MiscDevice {
    /// Writes the file's text.
    fn show_stats(data: &Self::RegistrationData, out: &mut SysfsText<'_>) -> core::fmt::Result;

    /// The attribute group holding `stats`.
    const GROUPS: AttributeGroups = StatsAttr::<Self>::GROUPS.as_ptr();
}

/// The page sysfs gives a `show` callback, filled with text.
pub(crate) struct SysfsText<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl core::fmt::Write for SysfsText<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self
            .len
            .checked_add(s.len())
            .filter(|&e| e <= self.buf.len())
            .ok_or(core::fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The `stats` attribute: constants of this module (read-only data), as the misc core and
/// sysfs only read them.
struct StatsAttr<T>(PhantomData<T>);

impl<T: StatsFile> StatsAttr<T> {
    // `attribute` has lockdep's key fields only with CONFIG_DEBUG_LOCK_ALLOC. Linux 7's
    // clippy settings want `CStrExt::as_char_ptr`, a trait method no constant can call.
    #[allow(clippy::needless_update, clippy::disallowed_methods)]
    const STATS: bindings::device_attribute = bindings::device_attribute {
        attr: bindings::attribute {
            name: c"stats".as_ptr().cast(),
            mode: 0o444,
            // SAFETY: all-zero is valid for the rest (lockdep's key fields, when present).
            ..unsafe { core::mem::zeroed() }
        },
        #[cfg(not(vdaq_linux7))]
        show: Some(show_stats::<T>),
        #[cfg(not(vdaq_linux7))]
        store: None,
        // Linux 7: each callback shares a union with its const-argument form.
        #[cfg(vdaq_linux7)]
        __bindgen_anon_1: bindings::device_attribute__bindgen_ty_1 {
            show: Some(show_stats::<T>),
        },
        #[cfg(vdaq_linux7)]
        __bindgen_anon_2: bindings::device_attribute__bindgen_ty_2 { store: None },
    };
    const ATTRS: &'static [*const bindings::attribute; 2] = &[&Self::STATS.attr, core::ptr::null()];
    const GROUP: bindings::attribute_group = bindings::attribute_group {
        #[cfg(not(vdaq_linux7))]
        attrs: Self::ATTRS.as_ptr().cast_mut().cast(),
        // Linux 7: `attrs` shares a union with its const form.
        #[cfg(vdaq_linux7)]
        __bindgen_anon_2: bindings::attribute_group__bindgen_ty_2 {
            attrs: Self::ATTRS.as_ptr().cast_mut().cast(),
        },
        // SAFETY: all-zero is valid for the rest (no name, no visibility callbacks).
        ..unsafe { core::mem::zeroed() }
    };
    const GROUPS: &'static [*const bindings::attribute_group; 2] =
        &[&Self::GROUP, core::ptr::null()];
}

/// sysfs `show` of the node's `stats` attribute.
///
/// # Safety
///
/// Called by sysfs only, with `dev` the device the misc core registered for a
/// [`MiscDeviceRegistration<T>`] (its driver data is the miscdevice) and `buf` a page for
/// this call.
unsafe extern "C" fn show_stats<T: StatsFile>(
    dev: *mut bindings::device,
    _attr: *mut bindings::device_attribute,
    buf: *mut kernel::ffi::c_char,
) -> isize {
    // SAFETY: the misc core registers the node's device with its miscdevice as driver data;
    // sysfs calls `show` only while the attribute exists, and misc_deregister removes it (and
    // waits for running callbacks) before the registration goes.
    let misc = unsafe { bindings::dev_get_drvdata(dev) }.cast::<bindings::miscdevice>();
    // SAFETY: `misc` is the misc device of a registered `MiscDeviceRegistration<T>`, live
    // during this call (above).
    let reg = unsafe { MiscDeviceRegistration::<T>::from_raw(misc) };
    // SAFETY: sysfs gives `show` a page-sized buffer for this call.
    let page =
        unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), crate::pages::PAGE_SIZE) };
    let mut out = SysfsText { buf: page, len: 0 };
    match T::show_stats(reg.data(), &mut out) {
        Ok(()) => out.len as isize,
        Err(_) => -(bindings::EOVERFLOW as isize),
    }
}
