// SPDX-License-Identifier: GPL-2.0

//! Linux 6.12's misc devices, in the shape of upstream's `kernel::miscdevice` as Linux 7.2 has
//! it with the additions of `images/kernel/patches-7.2/0002-*` (6.12 has no Rust misc device):
//! the same names and signatures, so the driver's logic builds against either. With them, the
//! types of upstream's that the trait's signatures name and 6.12 lacks: [`File`] (upstream's
//! `kernel::fs::File`), [`Kiocb`] (`kernel::fs::Kiocb`), [`IovIterDest`] (`kernel::iov`) and
//! [`PollTable`] (`kernel::sync::poll`).
//!
//! Of upstream's trait, only what vdaq uses is here: no `write_iter`, no `show_fdinfo`, and
//! only `register_named` (a name owned at run time) of the two ways to register.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::bindings;
use kernel::build_error;
use kernel::error::{from_result, to_result, Error, Result, VTABLE_DEFAULT_ERROR};
use kernel::prelude::*;
use kernel::str::CString;
use kernel::types::{ForeignOwnable, Opaque};
use kernel::ThisModule;

use crate::compat::into_foreign;
use crate::mm::VmaNew;

/// A null-terminated array of sysfs attribute groups, as `struct miscdevice` takes them.
pub(crate) type AttributeGroups = *const *const bindings::attribute_group;

/// An open file, during one of its file operations (a reference to the C `struct file`).
#[repr(transparent)]
pub(crate) struct File(Opaque<bindings::file>);

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
}

/// The I/O control block of a read_iter() call on a file whose private data is a `T`.
///
/// # Invariants
///
/// `inner` points to a live `kiocb` for `'a`, whose file's private data is a `T` that
/// `into_foreign` made.
pub(crate) struct Kiocb<'a, T> {
    inner: core::ptr::NonNull<bindings::kiocb>,
    _phantom: PhantomData<&'a T>,
}

impl<'a, T: ForeignOwnable> Kiocb<'a, T> {
    /// The control block behind `kiocb`.
    ///
    /// # Safety
    ///
    /// `kiocb` must be live for `'a`, and its file's private data a `T` in foreign form, not
    /// reclaimed before `'a` ends.
    pub(crate) unsafe fn from_raw(kiocb: *mut bindings::kiocb) -> Self {
        // INVARIANT: by the caller's guarantee.
        Self {
            // SAFETY: by the caller's guarantee, `kiocb` is a live (non-null) control block.
            inner: unsafe { core::ptr::NonNull::new_unchecked(kiocb) },
            _phantom: PhantomData,
        }
    }

    /// The C `struct kiocb`.
    pub(crate) fn as_raw(&self) -> *mut bindings::kiocb {
        self.inner.as_ptr()
    }

    /// The data the file holds.
    pub(crate) fn file(&self) -> <T as ForeignOwnable>::Borrowed<'a> {
        // SAFETY: by the type invariant the kiocb and its file are live and the file's private
        // data is a `T` in foreign form for `'a`.
        unsafe { T::borrow((*(*self.as_raw()).ki_filp).private_data) }
    }
}

/// The destination of a read_iter() call: user memory in one or more buffers.
///
/// # Invariants
///
/// `iov` is a live ITER_DEST `iov_iter` that only this value uses, over memory that may be
/// written for `'data`.
#[repr(transparent)]
pub(crate) struct IovIterDest<'data> {
    iov: Opaque<bindings::iov_iter>,
    _dest: PhantomData<&'data mut [u8]>,
}

impl<'data> IovIterDest<'data> {
    /// The iterator behind `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must be a live ITER_DEST `iov_iter` that nothing else uses for `'iov`, over memory
    /// that may be written for `'data`.
    pub(crate) unsafe fn from_raw<'iov>(ptr: *mut bindings::iov_iter) -> &'iov mut Self {
        // INVARIANT: by the caller's guarantee. SAFETY: `Self` is a transparent wrapper of the
        // C struct, and the caller gives exclusive use for `'iov`.
        unsafe { &mut *ptr.cast() }
    }

    /// The bytes that still fit (a fault in the user's memory may end the copy sooner).
    pub(crate) fn len(&self) -> usize {
        // SAFETY: by the type invariant the iterator is live and ours; `count` is its length.
        unsafe {
            (*self.iov.get())
                .__bindgen_anon_1
                .__bindgen_anon_1
                .as_ref()
                .count
        }
    }

    /// Appends what fits of `input`; returns the bytes written (fewer on a fault).
    pub(crate) fn copy_to_iter(&mut self, input: &[u8]) -> usize {
        // SAFETY: by the type invariant the iterator may be written; `input` is valid for its
        // length.
        unsafe { bindings::_copy_to_iter(input.as_ptr().cast(), input.len(), self.iov.get()) }
    }
}

/// The poll table of a poll() call.
///
/// # Invariants
///
/// `table` is null or a poll table live for `'a`.
pub(crate) struct PollTable<'a> {
    table: *mut bindings::poll_table,
    _lifetime: PhantomData<&'a bindings::poll_table>,
}

impl PollTable<'_> {
    /// The C `poll_table` (null when the caller does not wait).
    pub(crate) fn as_raw(&self) -> *mut bindings::poll_table {
        self.table
    }
}

/// A misc device's file operations: `open` makes what the open file holds
/// ([`MiscDevice::Ptr`]), the other operations borrow it, `release` takes it back. Operations
/// an implementation leaves out are absent from the file operations table.
#[vtable]
pub(crate) trait MiscDevice: Sized {
    /// What an open file holds.
    type Ptr: ForeignOwnable + Send + Sync;
    /// What the files of one registration share.
    type RegistrationData: Send + Sync;

    /// The module whose code the file operations are: it cannot be unloaded while a file is
    /// open (`file_operations.owner`).
    const OWNER: Option<&'static ThisModule> = None;

    /// The sysfs attribute groups of the node's device, or null.
    const ATTRIBUTE_GROUPS: AttributeGroups = core::ptr::null();

    /// A file is being opened: returns what it holds (an error refuses the open).
    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr>;

    /// The last reference to an open file is gone.
    fn release(device: Self::Ptr, _file: &File) {
        drop(device);
    }

    /// read() and readv(): fills `iov`, returns the bytes written.
    fn read_iter(_kiocb: Kiocb<'_, Self::Ptr>, _iov: &mut IovIterDest<'_>) -> Result<usize> {
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

    /// mmap(): fills `vma`. On success the area is a mapping of the file until it is
    /// unmapped, when [`MiscDevice::mapping_closed`] is called (after
    /// [`MiscDevice::mapping_opened`] for each copy of it made by fork() or a split); on error
    /// neither is called for it.
    fn mmap(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _vma: &VmaNew,
    ) -> Result {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// poll(): registers on wait queues through `table`, returns the `EPOLL*` events ready.
    fn poll(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _file: &File,
        _table: &PollTable<'_>,
    ) -> u32 {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// fasync(): O_ASYNC was set (`on`) or cleared on `file`, open as `fd`.
    fn fasync(
        _device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        _fd: i32,
        _file: &File,
        _on: bool,
    ) -> Result<i32> {
        build_error!(VTABLE_DEFAULT_ERROR)
    }

    /// A copy of a mapping that [`MiscDevice::mmap`] set up was made: fork(), or a split.
    fn mapping_opened(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>) {}

    /// A mapping that [`MiscDevice::mmap`] set up, or a copy of it, went away.
    fn mapping_closed(_device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>) {}
}

/// A registered misc device, with the data its files share.
///
/// # Invariants
///
/// While `registered` is true, `inner` is registered with the misc core, pinned here; its
/// `name` points into `name` and its `fops` to `T`'s static table. `data` is initialised
/// before the registration and dropped after the deregistration.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct MiscDeviceRegistration<T: MiscDevice> {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
    registered: AtomicBool,
    name: CString,
    data: T::RegistrationData,
    _t: PhantomData<T>,
}

// SAFETY: misc_deregister may run on any thread, and `T::RegistrationData` is `Send`.
unsafe impl<T: MiscDevice> Send for MiscDeviceRegistration<T> {}
// SAFETY: no method gives mutable access, and `T::RegistrationData` is `Sync`.
unsafe impl<T: MiscDevice> Sync for MiscDeviceRegistration<T> {}

impl<T: MiscDevice> MiscDeviceRegistration<T> {
    /// Registers /dev/`name` with a dynamic minor; its files share `data`.
    pub(crate) fn register_named(
        name: CString,
        data: T::RegistrationData,
    ) -> impl PinInit<Self, Error> {
        // The name's heap buffer does not move when `name` moves into the registration.
        let name_ptr = name.as_char_ptr();
        try_pin_init!(Self {
            // Fields are initialised in this order: the data and the name exist before the
            // device can be opened.
            data: data,
            name: name,
            registered: AtomicBool::new(false),
            inner <- Opaque::ffi_init(move |slot: *mut bindings::miscdevice| {
                // SAFETY: `slot` is valid for writes; all-zero is a valid miscdevice.
                unsafe {
                    slot.write(core::mem::zeroed());
                    (*slot).minor = bindings::MISC_DYNAMIC_MINOR as kernel::ffi::c_int;
                    (*slot).name = name_ptr;
                    (*slot).fops = &FopsHolder::<T>::FOPS;
                    (*slot).groups = T::ATTRIBUTE_GROUPS.cast_mut();
                }
            }),
            _t: PhantomData,
        }? Error)
        .pin_chain(|this| {
            // SAFETY: the miscdevice is initialised and stays pinned in the registration until
            // its drop, which deregisters it.
            to_result(unsafe { bindings::misc_register(this.inner.get()) })?;
            // INVARIANT: registered just above, with the name and table set at init.
            this.registered.store(true, Ordering::Release);
            Ok(())
        })
    }

    /// What the files of this registration share.
    pub(crate) fn data(&self) -> &T::RegistrationData {
        &self.data
    }

    /// The registration whose misc device is `misc`.
    ///
    /// # Safety
    ///
    /// `misc` must be the misc device of a [`MiscDeviceRegistration<T>`] that stays registered
    /// for `'a`.
    pub(crate) unsafe fn from_raw<'a>(misc: *mut bindings::miscdevice) -> &'a Self {
        // SAFETY: `inner` is the first field of this `repr(C)` struct, and by the caller's
        // guarantee `misc` is the `inner` of a live registration.
        unsafe { &*misc.cast::<Self>() }
    }
}

#[pinned_drop]
impl<T: MiscDevice> PinnedDrop for MiscDeviceRegistration<T> {
    fn drop(self: Pin<&mut Self>) {
        if !self.registered.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: registered (type invariant). After this, no new file can open; open files
        // keep their own `T::Ptr`.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}

struct FopsHolder<T>(PhantomData<T>);

impl<T: MiscDevice> FopsHolder<T> {
    /// The operations `T` implements, and only those.
    const FOPS: bindings::file_operations = bindings::file_operations {
        owner: match T::OWNER {
            Some(module) => module.as_ptr(),
            None => core::ptr::null_mut(),
        },
        open: Some(open::<T>),
        release: Some(release::<T>),
        read_iter: if T::HAS_READ_ITER {
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
        // SAFETY: all-zero is a valid `file_operations` (every other operation absent).
        ..unsafe { core::mem::zeroed() }
    };

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
        // SAFETY: `misc` is the miscdevice of a registration live during this call.
        let reg = unsafe { MiscDeviceRegistration::<T>::from_raw(misc) };
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

/// `file_operations.read_iter`.
///
/// # Safety
///
/// Called by the VFS only, with a live `kiocb` of an open file of a
/// [`MiscDeviceRegistration<T>`] and `iter` the read's destination (ITER_DEST).
unsafe extern "C" fn read_iter<T: MiscDevice>(
    kiocb: *mut bindings::kiocb,
    iter: *mut bindings::iov_iter,
) -> isize {
    from_result(|| {
        // SAFETY: the kiocb is live during this call, and its file's private data is the
        // `T::Ptr` that `open::<T>` stored (reclaimed only in release).
        let kiocb = unsafe { Kiocb::<T::Ptr>::from_raw(kiocb) };
        // SAFETY: the VFS hands read_iter an ITER_DEST iterator that only this call uses, over
        // memory it may write for the call's duration.
        let iov = unsafe { IovIterDest::from_raw(iter) };
        Ok(T::read_iter(kiocb, iov)? as isize)
    })
}

/// `file_operations.poll`.
///
/// # Safety
///
/// Called by the VFS only, on an open file of a [`MiscDeviceRegistration<T>`], with its poll
/// table (null or live for the call).
unsafe extern "C" fn poll<T: MiscDevice>(
    file: *mut bindings::file,
    table: *mut bindings::poll_table,
) -> bindings::__poll_t {
    // SAFETY: poll runs on an open file of this registration.
    let device = unsafe { file_data::<T>(file) };
    // SAFETY: `file` is live while this operation runs on it.
    let this_file = unsafe { File::from_raw_file(file) };
    // INVARIANT: the table is null or live during this call, which the value does not outlive.
    let table = PollTable {
        table,
        _lifetime: PhantomData,
    };
    T::poll(device, this_file, &table)
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
    // SAFETY: by this function's contract.
    unsafe { dispatch_ioctl::<T>(file, cmd, arg, T::ioctl) }
}

/// What a driver's ioctl handler looks like (`MiscDevice::ioctl`, `compat_ioctl`).
type IoctlHandler<T> = for<'a> fn(
    <<T as MiscDevice>::Ptr as ForeignOwnable>::Borrowed<'a>,
    &'a File,
    u32,
    usize,
) -> Result<isize>;

/// Runs `handler` for an ioctl of `file`, and turns its result into the C return value.
///
/// # Safety
///
/// `file` must be an open file of a [`MiscDeviceRegistration<T>`], during one of its ioctl
/// file operations.
unsafe fn dispatch_ioctl<T: MiscDevice>(
    file: *mut bindings::file,
    cmd: kernel::ffi::c_uint,
    arg: kernel::ffi::c_ulong,
    handler: IoctlHandler<T>,
) -> kernel::ffi::c_long {
    from_result(|| {
        // SAFETY: the ioctl runs on an open file of this registration (the caller's guarantee).
        let device = unsafe { file_data::<T>(file) };
        // SAFETY: `file` is live while this operation runs on it.
        let this_file = unsafe { File::from_raw_file(file) };
        handler(device, this_file, cmd, arg)
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
    // SAFETY: by this function's contract.
    unsafe { dispatch_ioctl::<T>(file, cmd, arg, T::compat_ioctl) }
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
///
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
///
/// Called by the mm core only, under the mmap lock, on an open file of a
/// [`MiscDeviceRegistration<T>`] with the area being set up.
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
        T::mmap(device, this_file, area)?;
        // SAFETY: the area is being set up under the mmap lock; its operations are static.
        // Set only on success, so that `close` runs only for areas `T::mmap` accepted.
        unsafe { (*vma).vm_ops = &FopsHolder::<T>::VM_OPS };
        Ok(0)
    })
}

/// What the file a mapping belongs to holds, borrowed.
///
/// # Safety
///
/// `vma` must be a live area whose operations are `FopsHolder::<T>::VM_OPS`.
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
///
/// Called by the mm core only, on a live copy of an area `mmap::<T>` set up.
unsafe extern "C" fn vma_open<T: MiscDevice>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the mm core calls `open` on a live copy of an area of ours.
    T::mapping_opened(unsafe { vma_data::<T>(vma) });
}

/// `vm_operations_struct.close`.
///
/// # Safety
///
/// Called by the mm core only, on a live area `mmap::<T>` set up, before it drops `vm_file`.
unsafe extern "C" fn vma_close<T: MiscDevice>(vma: *mut bindings::vm_area_struct) {
    // SAFETY: the mm core calls `close` on a live area of ours, before it drops `vm_file`.
    T::mapping_closed(unsafe { vma_data::<T>(vma) });
}
