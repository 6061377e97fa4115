// SPDX-License-Identifier: GPL-2.0

//! Misc character devices: [`MiscDeviceRegistration`] and the file operations of a
//! [`MiscDevice`], in the shape of upstream's `kernel::miscdevice` (Linux 6.13 and later),
//! with local extensions for what it lacks (poll, fasync, the mapping's hooks, a sysfs file).
//!
//! What an open file holds (`MiscDevice::Ptr`) may keep the device state alive after a device
//! removal until the last file is closed; the file operations table is a static of this module
//! (the VFS reads it after release), owned by the module (`owner`), so rmmod waits for open
//! files.

use core::marker::{PhantomData, PhantomPinned};
use kernel::bindings;
use kernel::build_error;
use kernel::error::{from_result, Error, Result, VTABLE_DEFAULT_ERROR};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::types::{ForeignOwnable, Opaque};
#[cfg(not(vdaq_linux7))]
use kernel::uaccess::UserSliceWriter;

use crate::compat::into_foreign;
#[cfg(not(vdaq_linux7))]
use crate::compat::user_slice;
use crate::kernel_sync::WaitQueue;
use crate::mm::VmaNew;

/// An open file, during one of its file operations: Linux 7's is the kernel crate's own.
#[cfg(vdaq_linux7)]
pub(crate) use kernel::fs::File;

/// An open file, during one of its file operations, in the shape of upstream's
/// `kernel::fs::File` (a reference to the C `struct file`).
#[cfg(not(vdaq_linux7))]
#[repr(transparent)]
pub(crate) struct File(Opaque<bindings::file>);

#[cfg(not(vdaq_linux7))]
impl File {
    /// The file behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a file that stays live for `'a`.
    pub(crate) unsafe fn from_raw_file<'a>(ptr: *const bindings::file) -> &'a File {
        // SAFETY: by the caller's guarantee; `File` is a transparent wrapper of the C struct.
        unsafe { &*ptr.cast() }
    }

    /// The C `struct file`.
    pub(crate) fn as_ptr(&self) -> *mut bindings::file {
        self.0.get()
    }

    /// The file's open flags (`f_flags`).
    pub(crate) fn flags(&self) -> u32 {
        // SAFETY: the file is live while this reference is (`from_raw_file`); `f_flags` is
        // read as upstream reads it, without a lock.
        unsafe { core::ptr::read_volatile(&raw const (*self.as_ptr()).f_flags) }
    }
}

/// What the driver asks of an open file beyond [`File`]'s own methods.
pub(crate) trait FileExt {
    /// True when the file was opened with O_NONBLOCK.
    fn is_nonblocking(&self) -> bool;
}

impl FileExt for File {
    fn is_nonblocking(&self) -> bool {
        self.flags() & bindings::O_NONBLOCK != 0
    }
}

/// Where a read() puts what it returns. On Linux 6.12 the user's buffer (the `read` file
/// operation); on Linux 7 upstream's `kernel::iov::IovIterDest` (the `read_iter` operation, as
/// upstream's `MiscDevice::read_iter` takes it), so readv() works too.
pub(crate) struct ReadDest<'a> {
    #[cfg(not(vdaq_linux7))]
    out: UserSliceWriter,
    #[cfg(not(vdaq_linux7))]
    _iov: PhantomData<&'a mut [u8]>,
    #[cfg(vdaq_linux7)]
    out: &'a mut kernel::iov::IovIterDest<'a>,
}

impl ReadDest<'_> {
    /// The bytes that still fit.
    pub(crate) fn len(&self) -> usize {
        self.out.len()
    }

    /// Appends all of `data`, or fails with EFAULT (the user's memory faulted).
    pub(crate) fn write_slice(&mut self, data: &[u8]) -> Result {
        #[cfg(not(vdaq_linux7))]
        let written = self.out.write_slice(data);
        #[cfg(vdaq_linux7)]
        let written = if self.out.copy_to_iter(data) == data.len() {
            Ok(())
        } else {
            Err(EFAULT)
        };
        written
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

/// A misc device's file operations, in the shape of upstream's `kernel::miscdevice::MiscDevice`
/// (Linux 6.13; docs/DRIVER-UPSTREAM.md): `open` makes what the open file holds
/// ([`MiscDevice::Ptr`]), the other operations borrow it, `release` takes it back. Operations
/// an implementation leaves out are absent from the file operations table.
///
/// Local extensions, for what upstream's trait lacks: [`MiscDevice::RegistrationData`] (what
/// every file of a node shares, given to [`MiscDeviceRegistration::register`]), `read` with a
/// user slice (upstream: `read_iter`, 6.18), `poll`, `fasync`, the mapping's `open` and `close`
/// hooks, and the node's sysfs `stats` file.
#[vtable]
pub(crate) trait MiscDevice: Sized {
    /// What an open file holds.
    type Ptr: ForeignOwnable + Send + Sync;
    /// What the files of one registration share (local).
    type RegistrationData: Send + Sync;

    /// A file is being opened: returns what it holds (an error refuses the open).
    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr>;

    /// The last reference to an open file is gone.
    fn release(device: Self::Ptr, _file: &File) {
        drop(device);
    }

    /// read(): fills `out`, returns the bytes written (local: upstream's `read_iter` takes a
    /// `Kiocb` and an `IovIterDest`, which [`ReadDest`] wraps on Linux 7).
    fn read(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _out: &mut ReadDest<'_>,
    ) -> Result<usize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// ioctl(): `arg` is the user's argument.
    fn ioctl(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// ioctl() from a 32-bit process. Without it, a device with `ioctl` gets the same
    /// commands with the argument as a 32-bit pointer (`compat_ptr_ioctl`'s rule).
    fn compat_ioctl(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _cmd: u32,
        _arg: usize,
    ) -> Result<isize> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// mmap(): fills `vma` (upstream's `MiscDevice::mmap`, Linux 6.16). On success the area is
    /// a mapping of the file until it is unmapped, when [`MiscDevice::mapping_closed`] is
    /// called (after [`MiscDevice::mapping_opened`] for each copy of it made by fork() or a
    /// split); on error neither is called for it.
    fn mmap(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _vma: &VmaNew,
    ) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// A copy of a mapping of the file was made: fork(), or a part split off (local).
    fn mapping_opened(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>) {}

    /// A mapping of the file went away: munmap(), exit, or a part split off (local).
    fn mapping_closed(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>) {}

    /// poll(): registers on wait queues through `table`, returns the EPOLL* mask (local).
    fn poll(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _table: &PollTable,
    ) -> u32 {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// fasync(): O_ASYNC was set (`on`) or cleared on the file (local).
    fn fasync(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _fd: i32,
        _file: &File,
        _on: bool,
    ) -> Result<i32> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// The text of the node's read-only sysfs file `stats` (/sys/class/misc/NAME/stats),
    /// readable whoever holds the node (local: upstream's registration has no attributes).
    fn show_stats(_data: &Self::RegistrationData, _out: &mut SysfsText<'_>) -> core::fmt::Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }
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

/// How a misc device is registered (upstream's `MiscDeviceOptions`, whose name is static; a
/// node named at run time, /dev/vdaqN, needs one it owns).
pub(crate) struct MiscDeviceOptions {
    /// The node's name under /dev.
    pub(crate) name: CString,
}

/// A registered misc device (upstream's `MiscDeviceRegistration`), with the data its files
/// share.
///
/// # Invariants
///
/// While `registered` is true, `misc` is registered with the misc core, pinned here, and its
/// `name` points into `_name` and its `fops` to `T`'s static table.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscDeviceRegistration<T: MiscDevice> {
    #[pin]
    misc: Opaque<bindings::miscdevice>,
    registered: core::sync::atomic::AtomicBool,
    _name: CString,
    data: T::RegistrationData,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: the registration only holds the miscdevice (used by the misc core under its own
// lock) and `T::RegistrationData`, which is `Send + Sync`.
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> {}
// SAFETY: as above; no method gives mutable access.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers /dev/`opts.name` with a dynamic minor; its files share `data`.
    pub(crate) fn register(
        opts: MiscDeviceOptions,
        data: T::RegistrationData,
    ) -> impl PinInit<Self, Error> {
        let name = opts.name;
        let name_ptr = name.as_char_ptr();
        try_pin_init!(Self {
            misc <- Opaque::ffi_init(move |slot: *mut bindings::miscdevice| {
                // SAFETY: `slot` is valid for writes; all-zero is a valid miscdevice. The name
                // is heap memory owned by this registration (moved in below; the heap buffer
                // does not move) and the fops are static.
                unsafe {
                    slot.write(core::mem::zeroed());
                    (*slot).minor = bindings::MISC_DYNAMIC_MINOR as kernel::ffi::c_int;
                    (*slot).name = name_ptr;
                    (*slot).fops = &FopsHolder::<T>::FOPS;
                    (*slot).groups = if T::HAS_SHOW_STATS {
                        AttrsHolder::<T>::GROUPS.as_ptr().cast_mut()
                    } else {
                        core::ptr::null_mut()
                    };
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
            // INVARIANT: registered just above, with the name and table set at init.
            this.registered
                .store(true, core::sync::atomic::Ordering::Release);
            Ok(())
        })
    }

    /// What the files of this registration share (local: upstream's registration has none).
    pub(crate) fn data(&self) -> &T::RegistrationData {
        &self.data
    }

    /// The registration whose miscdevice is `misc`.
    ///
    /// # Safety
    ///
    /// `misc` must be the `misc` field of a live, pinned `MiscDeviceRegistration<T>`, which
    /// stays live for `'a`.
    unsafe fn from_misc<'a>(misc: *mut bindings::miscdevice) -> &'a Self {
        // SAFETY: by the caller's guarantee, `misc` is this field of a live registration.
        unsafe {
            &*(misc as *const u8)
                .sub(core::mem::offset_of!(Self, misc))
                .cast::<Self>()
        }
    }
}

#[pinned_drop]
impl<T: MiscDevice> PinnedDrop for MiscDeviceRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        if !self.registered.load(core::sync::atomic::Ordering::Acquire) {
            return;
        }
        // SAFETY: the device was registered. After this, no new file can open; open files
        // keep their own `Arc<T>`.
        unsafe { bindings::misc_deregister(self.misc.get()) };
    }
}

struct FopsHolder<T>(PhantomData<T>);

impl<T: MiscDevice> FopsHolder<T> {
    /// The operations `T` implements, and only those.
    const FOPS: bindings::file_operations = bindings::file_operations {
        // Only the address of this module's `struct module` is taken.
        owner: (&raw const bindings::__this_module).cast_mut(),
        open: Some(open::<T>),
        release: Some(release::<T>),
        #[cfg(not(vdaq_linux7))]
        read: if T::HAS_READ { Some(read::<T>) } else { None },
        #[cfg(vdaq_linux7)]
        read_iter: if T::HAS_READ {
            Some(read_iter::<T>)
        } else {
            None
        },
        poll: if T::HAS_POLL { Some(poll::<T>) } else { None },
        unlocked_ioctl: if T::HAS_IOCTL { Some(ioctl::<T>) } else { None },
        compat_ioctl: if T::HAS_COMPAT_IOCTL {
            Some(compat_ioctl::<T>)
        } else if T::HAS_IOCTL {
            Some(compat_ptr_ioctl::<T>)
        } else {
            None
        },
        fasync: if T::HAS_FASYNC {
            Some(fasync::<T>)
        } else {
            None
        },
        mmap: if T::HAS_MMAP { Some(mmap::<T>) } else { None },
        llseek: Some(bindings::noop_llseek),
        // SAFETY: all-zero is a valid `file_operations` (every other operation absent).
        ..unsafe { core::mem::zeroed() }
    };
}

/// The node's sysfs attributes: constants of this module (read-only data), as the misc core
/// and sysfs only read them.
struct AttrsHolder<T>(PhantomData<T>);

impl<T: MiscDevice> AttrsHolder<T> {
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
unsafe extern "C" fn show_stats<T: MiscDevice>(
    dev: *mut bindings::device,
    _attr: *mut bindings::device_attribute,
    buf: *mut kernel::ffi::c_char,
) -> isize {
    // SAFETY: the misc core registers the node's device with its miscdevice as driver data;
    // sysfs calls `show` only while the attribute exists, and misc_deregister removes it (and
    // waits for running callbacks) before the registration goes.
    let misc = unsafe { bindings::dev_get_drvdata(dev) }.cast::<bindings::miscdevice>();
    // SAFETY: `misc` is the `misc` field of a pinned, registered `MiscDeviceRegistration<T>`,
    // live during this call (above).
    let reg = unsafe { MiscDeviceRegistration::<T>::from_misc(misc) };
    // SAFETY: sysfs gives `show` a page-sized buffer for this call.
    let page =
        unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), crate::pages::PAGE_SIZE) };
    let mut out = SysfsText { buf: page, len: 0 };
    match T::show_stats(reg.data(), &mut out) {
        Ok(()) => out.len as isize,
        Err(_) => -(bindings::EOVERFLOW as isize),
    }
}

struct VmOpsHolder<T>(PhantomData<T>);

impl<T: MiscDevice> VmOpsHolder<T> {
    const VM_OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
        open: Some(vma_open::<T>),
        close: Some(vma_close::<T>),
        // SAFETY: all-zero is a valid `vm_operations_struct` (every other operation absent).
        ..unsafe { core::mem::zeroed() }
    };
}

/// What an open file holds, borrowed.
///
/// # Safety
///
/// `file` must be a file of a [`MiscDeviceRegistration<T>`] that `open::<T>` succeeded for
/// and that is not released yet.
unsafe fn file_data<'a, T: MiscDevice>(
    file: *mut bindings::file,
) -> <T::Ptr as ForeignOwnable>::Borrowed<'a> {
    // SAFETY: `open` stored a `T::Ptr` through `into_foreign` in `private_data`; it is
    // reclaimed only in `release`, after every other operation on the file has returned.
    unsafe { <T::Ptr as ForeignOwnable>::borrow((*file).private_data) }
}

/// `file_operations.open`.
///
/// # Safety
///
/// Called by the misc core only, on a file whose `private_data` is the miscdevice of a
/// registered [`MiscDeviceRegistration<T>`], under the misc core's lock.
unsafe extern "C" fn open<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> kernel::ffi::c_int {
    from_result(|| {
        // SAFETY: misc_open set `private_data` to our registration's miscdevice, which stays
        // registered (misc_deregister waits on the misc lock held during this call).
        let misc = unsafe { (*file).private_data }.cast::<bindings::miscdevice>();
        // SAFETY: `misc` is the `misc` field of a pinned registration, live during this call.
        let reg = unsafe { MiscDeviceRegistration::<T>::from_misc(misc) };
        // SAFETY: `file` is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file(file) };
        let ptr = T::open(this_file, reg)?;
        // SAFETY: the file is being opened; we own `private_data` from now on.
        unsafe { (*file).private_data = into_foreign(ptr) };
        Ok(0)
    })
}

/// `file_operations.release`.
///
/// # Safety
///
/// Called by the VFS only, once, on a file `open::<T>` succeeded for, when no other operation
/// runs on it.
unsafe extern "C" fn release<T: MiscDevice>(
    _inode: *mut bindings::inode,
    file: *mut bindings::file,
) -> kernel::ffi::c_int {
    // SAFETY: the file was opened by `open::<T>` and is being released: no other operation
    // runs on it, so we take back what `open` stored there.
    let ptr = unsafe { <T::Ptr as ForeignOwnable>::from_foreign((*file).private_data) };
    // SAFETY: `file` is live while this operation runs on it.
    let this_file = unsafe { File::from_raw_file(file) };
    T::release(ptr, this_file);
    0
}

/// `file_operations.read` (Linux 6.12).
///
/// # Safety
/// Called by the VFS only, on an open file of a [`MiscDeviceRegistration<T>`], with `buf` a user address.
#[cfg(not(vdaq_linux7))]
unsafe extern "C" fn read<T: MiscDevice>(
    file: *mut bindings::file,
    buf: *mut kernel::ffi::c_char,
    len: usize,
    _ppos: *mut bindings::loff_t,
) -> isize {
    from_result(|| {
        // SAFETY: read runs on an open file of this registration.
        let device = unsafe { file_data::<T>(file) };
        let out = user_slice(buf as usize, len).writer();
        // SAFETY: `file` is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file(file) };
        let mut out = ReadDest {
            out,
            _iov: PhantomData,
        };
        Ok(T::read(device, this_file, &mut out)? as isize)
    })
}

/// `file_operations.read_iter` (Linux 7), through upstream's `Kiocb` and `IovIterDest`.
///
/// # Safety
/// Called by the VFS only, with a live `kiocb` of an open file of a
/// [`MiscDeviceRegistration<T>`] and `iter` the read's destination (ITER_DEST).
#[cfg(vdaq_linux7)]
unsafe extern "C" fn read_iter<T: MiscDevice>(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    from_result(|| {
        // SAFETY: the kiocb is live during this call, and its file's private data is the
        // `T::Ptr` that `open::<T>` stored.
        let kiocb = unsafe { kernel::fs::Kiocb::<T::Ptr>::from_raw(kiocb) };
        let device = kiocb.file();
        // SAFETY: the kiocb's file is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file((*kiocb.as_raw()).ki_filp) };
        // SAFETY: the VFS hands read_iter an ITER_DEST iterator that only this call uses, over
        // memory it may write for the call's duration.
        let out = unsafe { kernel::iov::IovIterDest::from_raw(iter) };
        Ok(T::read(device, this_file, &mut ReadDest { out })? as isize)
    })
}

/// `file_operations.poll`.
///
/// # Safety
/// Called by the VFS only, on an open file of a [`MiscDeviceRegistration<T>`], with its poll table.
unsafe extern "C" fn poll<T: MiscDevice>(
    file: *mut bindings::file,
    table: *mut bindings::poll_table,
) -> bindings::__poll_t {
    // SAFETY: poll runs on an open file of this registration.
    let device = unsafe { file_data::<T>(file) };
    // SAFETY: `file` is live while this operation runs on it.
    let this_file = unsafe { File::from_raw_file(file) };
    T::poll(device, this_file, &PollTable { file, table })
}

/// `file_operations.unlocked_ioctl`.
///
/// # Safety
///
/// Called by the VFS only (or by `compat_ptr_ioctl::<T>`), on an open file of a
/// [`MiscDeviceRegistration<T>`].
unsafe extern "C" fn ioctl<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: kernel::ffi::c_uint,
    arg: kernel::ffi::c_ulong,
) -> kernel::ffi::c_long {
    from_result(|| {
        // SAFETY: ioctl runs on an open file of this registration.
        let device = unsafe { file_data::<T>(file) };
        // SAFETY: `file` is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file(file) };
        T::ioctl(device, this_file, cmd, arg)
    }) as kernel::ffi::c_long
}

/// `file_operations.compat_ioctl`, when `T` has its own.
///
/// # Safety
///
/// Called by the VFS only, on an open file of a [`MiscDeviceRegistration<T>`].
unsafe extern "C" fn compat_ioctl<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: kernel::ffi::c_uint,
    arg: kernel::ffi::c_ulong,
) -> kernel::ffi::c_long {
    from_result(|| {
        // SAFETY: compat_ioctl runs on an open file of this registration.
        let device = unsafe { file_data::<T>(file) };
        // SAFETY: `file` is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file(file) };
        T::compat_ioctl(device, this_file, cmd, arg)
    }) as kernel::ffi::c_long
}

/// `file_operations.compat_ioctl` of a device with `ioctl` only: the same commands, the
/// argument a 32-bit user pointer, zero-extended (`compat_ptr_ioctl`, which the kernel has
/// only with `CONFIG_COMPAT`).
///
/// # Safety
///
/// Called by the VFS only, on an open file of a [`MiscDeviceRegistration<T>`].
unsafe extern "C" fn compat_ptr_ioctl<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: kernel::ffi::c_uint,
    arg: kernel::ffi::c_ulong,
) -> kernel::ffi::c_long {
    // SAFETY: the VFS calls compat_ioctl on an open file of this registration, as ioctl.
    unsafe { ioctl::<T>(file, cmd, arg & 0xffff_ffff) }
}

/// `file_operations.fasync`.
///
/// # Safety
/// Called by the VFS only (fcntl, and release before `release::<T>`), on an open file of a
/// [`MiscDeviceRegistration<T>`].
unsafe extern "C" fn fasync<T: MiscDevice>(
    fd: kernel::ffi::c_int,
    file: *mut bindings::file,
    on: kernel::ffi::c_int,
) -> kernel::ffi::c_int {
    from_result(|| {
        // SAFETY: fasync runs on an open file of this registration (also from release, before
        // `release::<T>` reclaims the data).
        let device = unsafe { file_data::<T>(file) };
        // SAFETY: `file` is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file(file) };
        T::fasync(device, fd, this_file, on != 0)
    })
}

/// `file_operations.mmap`.
///
/// # Safety
/// Called by the mm core only, under the mmap lock, on an open file of a [`MiscDeviceRegistration<T>`]
/// with the area being set up.
unsafe extern "C" fn mmap<T: MiscDevice>(
    file: *mut bindings::file,
    vma: *mut bindings::vm_area_struct,
) -> kernel::ffi::c_int {
    from_result(|| {
        // SAFETY: mmap runs on an open file of this registration.
        let device = unsafe { file_data::<T>(file) };
        // SAFETY: `vma` is the area of this running mmap call; `area` does not outlive it.
        let area = unsafe { VmaNew::from_raw(vma) };
        // SAFETY: `file` is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file(file) };
        T::mmap(device, this_file, &area)?;
        // SAFETY: the area is being set up under the mmap lock; its operations are static.
        // Set only on success, so that `close` runs only for areas `T::mmap` accepted.
        unsafe { (*vma).vm_ops = &VmOpsHolder::<T>::VM_OPS };
        Ok(0)
    })
}

/// What the file a mapping belongs to holds, borrowed.
///
/// # Safety
/// `vma` must be a live area whose operations are `VmOpsHolder::<T>::VM_OPS`.
unsafe fn vma_data<'a, T: MiscDevice>(
    vma: *mut bindings::vm_area_struct,
) -> <T::Ptr as ForeignOwnable>::Borrowed<'a> {
    // SAFETY: only `mmap::<T>` installs these operations, on areas of files of this
    // registration; an area holds a reference to its file (`vm_file`), released after `close`,
    // so the file is open during `open` and `close`.
    unsafe { file_data::<T>((*vma).vm_file) }
}

/// `vm_operations_struct.open`.
///
/// # Safety
/// Called by the mm core only, on a live copy of an area `mmap::<T>` set up.
unsafe extern "C" fn vma_open<T: MiscDevice>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the mm core calls `open` on a live copy of an area of ours.
    T::mapping_opened(unsafe { vma_data::<T>(vma) });
}

/// `vm_operations_struct.close`.
///
/// # Safety
/// Called by the mm core only, on a live area `mmap::<T>` set up, before it drops `vm_file`.
unsafe extern "C" fn vma_close<T: MiscDevice>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the mm core calls `close` on a live area of ours, before it drops `vm_file`.
    T::mapping_closed(unsafe { vma_data::<T>(vma) });
}
