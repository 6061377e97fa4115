// SPDX-License-Identifier: GPL-2.0

//! Misc character devices: registration and the file operations vdaq uses (open, release,
//! read, poll, ioctl, fasync, mmap), dispatched to a safe trait.
//!
//! Each open file holds an `Arc` of the device state, so the state outlives a device removal
//! until the last file is closed; the file operations table is a static of this module (the
//! VFS reads it after release), owned by the module (`owner`), so rmmod waits for open files.

use core::marker::{PhantomData, PhantomPinned};
use kernel::bindings;
use kernel::error::{from_result, Error, Result};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::sync::{Arc, ArcBorrow};
use kernel::types::{ForeignOwnable, Opaque};
use kernel::uaccess::{UserSlice, UserSliceWriter};

use crate::kernel_sync::WaitQueue;
use crate::mm::VmaNew;

/// An open file, during one of its file operations.
pub(crate) struct File(*mut bindings::file);

impl File {
    pub(crate) fn as_ptr(&self) -> *mut bindings::file {
        self.0
    }

    /// True when the file was opened with O_NONBLOCK.
    pub(crate) fn is_nonblocking(&self) -> bool {
        // SAFETY: the file is live for the duration of the operation that made this `File`.
        unsafe { (*self.0).f_flags & bindings::O_NONBLOCK != 0 }
    }
}

/// The poll table of a poll() call.
pub(crate) struct PollTable {
    file: *mut bindings::file,
    table: *mut bindings::poll_table,
}

impl PollTable {
    /// Registers the caller on `queue`: a wake-up of the queue re-runs poll.
    pub(crate) fn register(&self, queue: &WaitQueue) {
        // SAFETY: file and table are live during poll(); the queue lives as long as the
        // device state, which the file holds (poll_wait entries are removed before the file
        // is released).
        unsafe { bindings::poll_wait(self.file, queue.as_ptr(), self.table) }
    }
}

/// What a misc device does with its files. `Self` is the device state every open file shares.
pub(crate) trait FileOperations: Send + Sync + Sized + 'static {
    /// A file is being opened (an error refuses the open).
    fn open(dev: &Arc<Self>, file: &File) -> Result;
    /// The last reference to an open file is gone.
    fn release(dev: &Arc<Self>, file: &File);
    /// read(): fills `out`, returns the bytes written.
    fn read(dev: ArcBorrow<'_, Self>, file: &File, out: &mut UserSliceWriter) -> Result<usize>;
    /// poll(): registers on wait queues through `table`, returns the EPOLL* mask.
    fn poll(dev: ArcBorrow<'_, Self>, file: &File, table: &PollTable) -> u32;
    /// ioctl(): `arg` is the user's argument.
    fn ioctl(dev: ArcBorrow<'_, Self>, file: &File, cmd: u32, arg: usize) -> Result<isize>;
    /// fasync(): O_ASYNC was set (`on`) or cleared on the file.
    fn fasync(dev: ArcBorrow<'_, Self>, fd: i32, file: &File, on: bool) -> Result<i32>;
    /// mmap(): fills `vma` (in the shape of upstream's `MiscDevice::mmap`, Linux 6.16). On
    /// success the area is a mapping of the file until it is unmapped, when
    /// [`FileOperations::mapping_closed`] is called (after [`FileOperations::mapping_opened`]
    /// for each copy of it made by fork() or a split); on error neither is called for it.
    fn mmap(dev: ArcBorrow<'_, Self>, file: &File, vma: &VmaNew) -> Result;
    /// A copy of a mapping of the file was made (fork(), or a part split off).
    fn mapping_opened(dev: ArcBorrow<'_, Self>);
    /// A mapping of the file went away (munmap(), exit, or a part split off).
    fn mapping_closed(dev: ArcBorrow<'_, Self>);
    /// The text of the node's read-only sysfs file `stats` (/sys/class/misc/NAME/stats),
    /// readable whoever holds the node (a local extension: upstream's `MiscDevice` has no
    /// attributes).
    fn show_stats(dev: &Self, out: &mut SysfsText<'_>) -> core::fmt::Result;
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

/// A registered misc device whose files share `Arc<T>`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: FileOperations> {
    #[pin]
    misc: Opaque<bindings::miscdevice>,
    registered: core::sync::atomic::AtomicBool,
    _name: CString,
    data: Arc<T>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: the registration only holds the miscdevice (used by the misc core under its own
// lock) and an `Arc<T>` with `T: Send + Sync`.
unsafe impl<T: FileOperations> Send for Registration<T> {}
// SAFETY: as above; no method gives mutable access.
unsafe impl<T: FileOperations> Sync for Registration<T> {}

impl<T: FileOperations> Registration<T> {
    /// Registers /dev/`name` with a dynamic minor; its files share `data`.
    pub(crate) fn register(name: CString, data: Arc<T>) -> impl PinInit<Self, Error> {
        let name_ptr = name.as_char_ptr();
        try_pin_init!(Self {
            misc <- Opaque::ffi_init(move |slot: *mut bindings::miscdevice| {
                // SAFETY: `slot` is valid for writes; all-zero is a valid miscdevice. The name
                // is heap memory owned by this registration (moved in below; the heap buffer
                // does not move) and the fops are static.
                unsafe {
                    slot.write(core::mem::zeroed());
                    (*slot).minor = bindings::MISC_DYNAMIC_MINOR as _;
                    (*slot).name = name_ptr;
                    (*slot).fops = fops::<T>();
                    (*slot).groups = AttrsHolder::<T>::GROUPS.as_ptr().cast_mut();
                }
            }),
            registered: core::sync::atomic::AtomicBool::new(false),
            _name: name,
            data: data,
            _pin: PhantomPinned,
        }? Error)
        .pin_chain(|this| {
            // SAFETY: the miscdevice is initialised and pinned inside `this` until drop,
            // which deregisters it.
            kernel::error::to_result(unsafe { bindings::misc_register(this.misc.get()) })?;
            this.registered
                .store(true, core::sync::atomic::Ordering::Release);
            Ok(())
        })
    }
}

#[pinned_drop]
impl<T: FileOperations> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        if !self.registered.load(core::sync::atomic::Ordering::Acquire) {
            return;
        }
        // SAFETY: the device was registered. After this, no new file can open; open files
        // keep their own `Arc<T>`.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}

fn fops<T: FileOperations>() -> &'static bindings::file_operations {
    &FopsHolder::<T>::FOPS
}

struct FopsHolder<T>(PhantomData<T>);

impl<T: FileOperations> FopsHolder<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        // Only the address of this module's `struct module` is taken.
        owner: &raw const bindings::__this_module as *mut _,
        open: Some(open::<T>),
        release: Some(release::<T>),
        read: Some(read::<T>),
        poll: Some(poll::<T>),
        unlocked_ioctl: Some(ioctl::<T>),
        compat_ioctl: Some(compat_ioctl::<T>),
        fasync: Some(fasync::<T>),
        mmap: Some(mmap::<T>),
        llseek: Some(bindings::noop_llseek),
        // SAFETY: all-zero is a valid `file_operations` (every other operation absent).
        ..unsafe { core::mem::zeroed() }
    };
}

/// The node's sysfs attributes: constants of this module (read-only data), as the misc core
/// and sysfs only read them.
struct AttrsHolder<T>(PhantomData<T>);

impl<T: FileOperations> AttrsHolder<T> {
    const STATS: bindings::device_attribute = bindings::device_attribute {
        attr: bindings::attribute {
            name: c"stats".as_ptr().cast(),
            mode: 0o444,
            // SAFETY: all-zero is valid for the rest (lockdep's key fields, when present).
            ..unsafe { core::mem::zeroed() }
        },
        show: Some(show_stats::<T>),
        store: None,
    };
    const ATTRS: &'static [*const bindings::attribute; 2] = &[&Self::STATS.attr, core::ptr::null()];
    const GROUP: bindings::attribute_group = bindings::attribute_group {
        attrs: Self::ATTRS.as_ptr().cast_mut().cast(),
        // SAFETY: all-zero is valid for the rest (no name, no visibility callbacks).
        ..unsafe { core::mem::zeroed() }
    };
    const GROUPS: &'static [*const bindings::attribute_group; 2] =
        &[&Self::GROUP, core::ptr::null()];
}

/// sysfs `show` of the node's `stats` attribute.
///
/// # Safety
/// Called by sysfs only, with `dev` the device the misc core registered for a
/// [`Registration<T>`] (its driver data is the miscdevice) and `buf` a page for this call.
unsafe extern "C" fn show_stats<T: FileOperations>(
    dev: *mut bindings::device,
    _attr: *mut bindings::device_attribute,
    buf: *mut kernel::ffi::c_char,
) -> isize {
    // SAFETY: the misc core registers the node's device with its miscdevice as driver data;
    // sysfs calls `show` only while the attribute exists, and misc_deregister removes it (and
    // waits for running callbacks) before the registration goes.
    let misc = unsafe { bindings::dev_get_drvdata(dev) }.cast::<bindings::miscdevice>();
    // SAFETY: `misc` is the `misc` field of a pinned, registered `Registration<T>`.
    let reg = unsafe {
        &*(misc as *const u8)
            .sub(core::mem::offset_of!(Registration<T>, misc))
            .cast::<Registration<T>>()
    };
    // SAFETY: sysfs gives `show` a page-sized buffer for this call.
    let page =
        unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), crate::pages::PAGE_SIZE) };
    let mut out = SysfsText { buf: page, len: 0 };
    match T::show_stats(&reg.data, &mut out) {
        Ok(()) => out.len as isize,
        Err(_) => -(bindings::EOVERFLOW as isize),
    }
}

struct VmOpsHolder<T>(PhantomData<T>);

impl<T: FileOperations> VmOpsHolder<T> {
    const VM_OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        open: Some(vma_open::<T>),
        close: Some(vma_close::<T>),
        // SAFETY: all-zero is a valid `vm_operations_struct` (every other operation absent).
        ..unsafe { core::mem::zeroed() }
    };
}

/// The device state of an open file.
///
/// # Safety
/// `file` must be a file of a [`Registration<T>`] that `open::<T>` succeeded for and that is
/// not released yet.
unsafe fn file_data<'a, T: FileOperations>(file: *mut bindings::file) -> ArcBorrow<'a, T> {
    // SAFETY: `open` stored an `Arc<T>` through `into_foreign` in `private_data`; it is
    // reclaimed only in `release`, after every other operation on the file has returned.
    unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) }
}

/// `file_operations.open`.
///
/// # Safety
/// Called by the misc core only, on a file whose `private_data` is the miscdevice of a
/// registered [`Registration<T>`], under the misc core's lock.
unsafe extern "C" fn open<T: FileOperations>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> kernel::ffi::c_int {
    from_result(|| {
        // SAFETY: misc_open set `private_data` to our registration's miscdevice, which stays
        // registered (misc_deregister waits on the misc lock held during this call).
        let misc = unsafe { (*file).private_data } as *mut bindings::miscdevice;
        // SAFETY: `misc` is the `misc` field of a pinned `Registration<T>`.
        let reg = unsafe {
            &*(misc as *const u8)
                .sub(core::mem::offset_of!(Registration<T>, misc))
                .cast::<Registration<T>>()
        };
        let data = reg.data.clone();
        T::open(&data, &File(file))?;
        // SAFETY: the file is being opened; we own `private_data` from now on.
        unsafe { (*file).private_data = data.into_foreign() as *mut _ };
        Ok(0)
    })
}

/// `file_operations.release`.
///
/// # Safety
/// Called by the VFS only, once, on a file `open::<T>` succeeded for, when no other operation
/// runs on it.
unsafe extern "C" fn release<T: FileOperations>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> kernel::ffi::c_int {
    // SAFETY: the file was opened by `open::<T>` and is being released: no other operation
    // runs on it, so we take back the `Arc` stored there.
    let data = unsafe { <Arc<T> as ForeignOwnable>::from_foreign((*file).private_data) };
    T::release(&data, &File(file));
    0
}

/// `file_operations.read`.
///
/// # Safety
/// Called by the VFS only, on an open file of a [`Registration<T>`], with `buf` a user address.
unsafe extern "C" fn read<T: FileOperations>(
    file: *mut bindings::file,
    buf: *mut kernel::ffi::c_char,
    len: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    from_result(|| {
        // SAFETY: read runs on an open file of this registration.
        let data = unsafe { file_data::<T>(file) };
        let mut out = UserSlice::new(buf as usize, len).writer();
        Ok(T::read(data, &File(file), &mut out)? as isize)
    })
}

/// `file_operations.poll`.
///
/// # Safety
/// Called by the VFS only, on an open file of a [`Registration<T>`], with its poll table.
unsafe extern "C" fn poll<T: FileOperations>(
    file: *mut bindings::file,
    table: *mut bindings::poll_table,
) -> bindings::__poll_t {
    // SAFETY: poll runs on an open file of this registration.
    let data = unsafe { file_data::<T>(file) };
    T::poll(data, &File(file), &PollTable { file, table })
}

/// `file_operations.unlocked_ioctl`.
///
/// # Safety
/// Called by the VFS only (or by `compat_ioctl::<T>`), on an open file of a
/// [`Registration<T>`].
unsafe extern "C" fn ioctl<T: FileOperations>(
    file: *mut bindings::file,
    cmd: kernel::ffi::c_uint,
    arg: kernel::ffi::c_ulong,
) -> kernel::ffi::c_long {
    from_result(|| {
        // SAFETY: ioctl runs on an open file of this registration.
        let data = unsafe { file_data::<T>(file) };
        T::ioctl(data, &File(file), cmd, arg)
    }) as _
}

/// ioctl() from a 32-bit process: the same commands, as `compat_ptr_ioctl` would pass them
/// (every vdaq ioctl argument is a pointer to a struct laid out alike for 32-bit processes:
/// 64-bit fields at 8-byte offsets, sizes in multiples of 8).
///
/// # Safety
/// Called by the VFS only, on an open file of a [`Registration<T>`].
unsafe extern "C" fn compat_ioctl<T: FileOperations>(
    file: *mut bindings::file,
    cmd: kernel::ffi::c_uint,
    arg: kernel::ffi::c_ulong,
) -> kernel::ffi::c_long {
    // compat_ptr(): a 32-bit user pointer, zero-extended.
    let arg = arg & 0xffff_ffff;
    // SAFETY: the VFS calls compat_ioctl on an open file of this registration, as ioctl.
    unsafe { ioctl::<T>(file, cmd, arg) }
}

/// `file_operations.fasync`.
///
/// # Safety
/// Called by the VFS only (fcntl, and release before `release::<T>`), on an open file of a
/// [`Registration<T>`].
unsafe extern "C" fn fasync<T: FileOperations>(
    fd: kernel::ffi::c_int,
    file: *mut bindings::file,
    on: kernel::ffi::c_int,
) -> kernel::ffi::c_int {
    from_result(|| {
        // SAFETY: fasync runs on an open file of this registration (also from release, before
        // `release::<T>` reclaims the data).
        let data = unsafe { file_data::<T>(file) };
        T::fasync(data, fd, &File(file), on != 0)
    })
}

/// `file_operations.mmap`.
///
/// # Safety
/// Called by the mm core only, under the mmap lock, on an open file of a [`Registration<T>`]
/// with the area being set up.
unsafe extern "C" fn mmap<T: FileOperations>(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> kernel::ffi::c_int {
    from_result(|| {
        // SAFETY: mmap runs on an open file of this registration.
        let data = unsafe { file_data::<T>(file) };
        // SAFETY: `vma` is the area of this running mmap call; `area` does not outlive it.
        let area = unsafe { VmaNew::from_raw(vma) };
        T::mmap(data, &File(file), &area)?;
        // SAFETY: the area is being set up under the mmap lock; its operations are static.
        // Set only on success, so that `close` runs only for areas `T::mmap` accepted.
        unsafe { (*vma).vm_ops = &VmOpsHolder::<T>::VM_OPS };
        Ok(0)
    })
}

/// The device state of the file a mapping belongs to.
///
/// # Safety
/// `vma` must be a live area whose operations are `VmOpsHolder::<T>::VM_OPS`.
unsafe fn vma_data<'a, T: FileOperations>(vma: *mut bindings::vm_area_struct) -> ArcBorrow<'a, T> {
    // SAFETY: only `mmap::<T>` installs these operations, on areas of files of this
    // registration; an area holds a reference to its file (`vm_file`), released after `close`,
    // so the file is open during `open` and `close`.
    unsafe { file_data::<T>((*vma).vm_file) }
}

/// `vm_operations_struct.open`.
///
/// # Safety
/// Called by the mm core only, on a live copy of an area `mmap::<T>` set up.
unsafe extern "C" fn vma_open<T: FileOperations>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the mm core calls `open` on a live copy of an area of ours.
    T::mapping_opened(unsafe { vma_data::<T>(vma) });
}

/// `vm_operations_struct.close`.
///
/// # Safety
/// Called by the mm core only, on a live area `mmap::<T>` set up, before it drops `vm_file`.
unsafe extern "C" fn vma_close<T: FileOperations>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the mm core calls `close` on a live area of ours, before it drops `vm_file`.
    T::mapping_closed(unsafe { vma_data::<T>(vma) });
}
