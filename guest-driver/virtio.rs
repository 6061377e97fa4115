// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers: a [`Driver`] in the shape of upstream's bus drivers (an id table, probe
//! returning a pinned initialiser, removal by drop), its [`Registration`], the [`Device`], and
//! virtqueues that own the messages posted on them.
//!
//! A message (`KBox<M>`) is handed to the queue with its buffers and comes back from
//! `get_buf` or `detach_unused`; while the device owns it, nothing else can reach it, which is
//! the DMA rule of virtqueues expressed as ownership.

use core::marker::PhantomData;
use kernel::bindings;
use kernel::error::{from_result, to_result, Error, Result};
use kernel::prelude::*;
use kernel::str::CStr;
use kernel::types::{ForeignOwnable, Opaque};

/// The feature bit of indirect descriptor tables (VIRTIO 1.2, 6.1; the kernel's
/// `virtio_ring.h` that defines it is not in the bindings).
const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;

/// A virtio device id, as a driver's [`Driver::ID_TABLE`] lists it (upstream's bus drivers:
/// `pci::DeviceId`).
pub(crate) struct DeviceId {
    device: u32,
    vendor: u32,
}

impl DeviceId {
    /// Devices of type `device` (VIRTIO 1.2, 5), from any vendor.
    pub(crate) const fn new(device: u32) -> Self {
        Self {
            device,
            vendor: bindings::VIRTIO_DEV_ANY_ID,
        }
    }

    fn matches(&self, id: &bindings::virtio_device_id) -> bool {
        self.device == id.device
            && (self.vendor == bindings::VIRTIO_DEV_ANY_ID || self.vendor == id.vendor)
    }
}

/// A virtio driver, in the shape of upstream's bus drivers (`pci::Driver`, Linux 6.14 and
/// later; mainline has no Rust virtio bus): the devices it binds in an id table, `probe`
/// returning the driver's data as a pinned initialiser, and removal by drop: unbinding drops
/// the data, after the device was reset (no queue callback runs any more).
///
/// Local extension: [`Driver::ready`], the step after the data is reachable from the queue
/// callbacks, when the driver may start talking to the device (DRIVER_OK).
pub(crate) trait Driver: Send + Sync + Sized + 'static {
    /// Driver name.
    const NAME: &'static CStr;
    /// The devices the driver binds.
    const ID_TABLE: &'static [DeviceId];

    /// Sets the device up (queues found, nothing started); `id` is the entry it matched.
    fn probe(dev: &Device, id: &DeviceId) -> impl PinInit<Self, Error>;
    /// The data is reachable from the queue callbacks: start talking to the device. On
    /// error, the binding fails as an unbinding does (the device reset, the data dropped).
    fn ready(self: Pin<&Self>, dev: &Device) -> Result;
    /// A queue's callback (the used-buffer interrupt), in interrupt context.
    fn callback(self: Pin<&Self>, queue: u32);
}

/// A virtio device, bound to a [`Driver`].
///
/// # Invariants
///
/// The pointer is a device of the virtio core, live while the driver is bound to it: from its
/// `probe` until the driver's data is dropped at removal.
pub(crate) struct Device(*mut bindings::virtio_device);

// SAFETY: the device is the virtio core's, live while bound (the type invariant); the calls
// made through it are for any context the kernel documents for them.
unsafe impl Send for Device {}
// SAFETY: as above; the handle has no state of its own.
unsafe impl Sync for Device {}

impl Device {
    /// Another handle to the device, for the driver's data to keep: valid while the device is
    /// bound, as the data is.
    pub(crate) fn handle(&self) -> Self {
        // INVARIANT: the same device, bound as long as `self` is.
        Self(self.0)
    }

    /// The device's index (virtioN).
    pub(crate) fn index(&self) -> i32 {
        // SAFETY: the device is live while this handle exists.
        unsafe { (*self.0).index }
    }

    /// True when `feature` was negotiated.
    pub(crate) fn has_feature(&self, feature: u32) -> bool {
        // SAFETY: the device is live.
        unsafe { bindings::virtio_has_feature(self.0, feature) }
    }

    /// True when the device takes indirect descriptor tables (a message of any length then
    /// uses one ring entry).
    pub(crate) fn has_indirect_descriptors(&self) -> bool {
        self.has_feature(VIRTIO_RING_F_INDIRECT_DESC)
    }

    /// Reads a 32-bit configuration field at byte `offset`.
    pub(crate) fn read_config_u32(&self, offset: u32) -> u32 {
        // SAFETY: the device is live; the transport checks the offset.
        unsafe { bindings::virtio_cread32(self.0, offset) }
    }

    /// Finds the device's queues; `callbacks[i]` says whether queue `i` interrupts.
    pub(crate) fn find_vqs<T: Driver>(
        &self,
        names: &[&'static CStr],
        callbacks: &[bool],
    ) -> Result<KVec<RawQueue>> {
        const MAX: usize = 8;
        if names.len() > MAX || names.len() != callbacks.len() {
            return Err(EINVAL);
        }
        let mut vqs = [core::ptr::null_mut::<bindings::virtqueue>(); MAX];
        // SAFETY: all-zero is a valid virtqueue_info (no name, no callback).
        let mut info: [bindings::virtqueue_info; MAX] = unsafe { core::mem::zeroed() };
        for (i, (name, cb)) in names.iter().zip(callbacks).enumerate() {
            info[i].name = name.as_char_ptr();
            info[i].callback = if *cb { Some(vq_callback::<T>) } else { None };
        }
        // SAFETY: the arrays hold `names.len()` entries; the names are static.
        to_result(unsafe {
            bindings::virtio_find_vqs(
                self.0,
                names.len() as u32,
                vqs.as_mut_ptr(),
                info.as_mut_ptr(),
                core::ptr::null_mut(),
            )
        })?;
        let mut out = KVec::with_capacity(names.len(), GFP_KERNEL)?;
        for vq in vqs.iter().take(names.len()) {
            out.push(RawQueue(*vq), GFP_KERNEL)?;
        }
        Ok(out)
    }

    /// Tells the device the driver is ready (DRIVER_OK): queues may be used from now on.
    pub(crate) fn ready(&self) {
        // SAFETY: the device is live and its queues were found.
        unsafe { bindings::virtio_device_ready(self.0) }
    }

    /// Resets the device: it stops using every buffer and raises no more interrupts (pending
    /// callbacks have finished when this returns).
    pub(crate) fn reset(&self) {
        // SAFETY: the device is live.
        unsafe { bindings::virtio_reset_device(self.0) }
    }

    /// Deletes the device's queues.
    ///
    /// # Safety
    /// Every [`Virtqueue`] made from this device's queues must have been dropped, and the
    /// device reset.
    pub(crate) unsafe fn del_vqs(&self) {
        // SAFETY: the caller guarantees no queue is used any more.
        unsafe { bindings::virtio_del_vqs(self.0) }
    }
}

/// A queue as [`Device::find_vqs`] returns it, before it is given a message type.
pub(crate) struct RawQueue(*mut bindings::virtqueue);

impl RawQueue {
    /// Number of entries of the ring.
    pub(crate) fn size(&self) -> u32 {
        // SAFETY: the queue is live (found, not deleted).
        unsafe { bindings::virtqueue_get_vring_size(self.0) }
    }
}

/// The buffers of a message: device-readable parts first, then device-writable ones.
pub(crate) struct Buffers<'a> {
    /// Device-readable parts.
    pub(crate) readable: [Option<&'a [u8]>; 2],
    /// Device-writable parts.
    pub(crate) writable: [Option<&'a mut [u8]>; 2],
}

/// A message that can be posted on a queue.
pub(crate) trait Message {
    /// The message's buffers, which must be heap memory of the message itself.
    fn buffers(&mut self) -> Buffers<'_>;
}

/// A virtqueue carrying messages of type `M`.
pub(crate) struct Virtqueue<M: Message> {
    vq: *mut bindings::virtqueue,
    _msg: PhantomData<KBox<M>>,
}

// SAFETY: a virtqueue may be used from any context as long as calls are serialised, which
// `&mut self` on every operation guarantees.
unsafe impl<M: Message + Send> Send for Virtqueue<M> {}

impl<M: Message> Virtqueue<M> {
    /// Gives `raw` its message type.
    pub(crate) fn new(raw: RawQueue) -> Self {
        Self {
            vq: raw.0,
            _msg: PhantomData,
        }
    }

    /// Posts `msg` (atomic allocation: callable under spinlocks and in interrupts); on failure
    /// (ring full, ENOSPC) the message comes back.
    pub(crate) fn add(&mut self, mut msg: KBox<M>) -> core::result::Result<(), (Error, KBox<M>)> {
        let mut sgs: [bindings::scatterlist; 4] =
            // SAFETY: all-zero scatterlists are valid before sg_init_one.
            unsafe { core::mem::zeroed() };
        let mut list = [core::ptr::null_mut::<bindings::scatterlist>(); 4];
        let (mut n, mut outs) = (0usize, 0u32);
        {
            let b = msg.buffers();
            for part in b.readable.iter().flatten() {
                // SAFETY: `sgs[n]` is valid; `part` is heap memory owned by the message.
                unsafe {
                    bindings::sg_init_one(&mut sgs[n], part.as_ptr().cast(), part.len() as u32)
                };
                n += 1;
                outs += 1;
            }
            for part in b.writable.into_iter().flatten() {
                // SAFETY: as above, writable by the device.
                unsafe {
                    bindings::sg_init_one(&mut sgs[n], part.as_mut_ptr().cast(), part.len() as u32)
                };
                n += 1;
            }
        }
        for (i, l) in list.iter_mut().enumerate().take(n) {
            *l = &mut sgs[i];
        }
        let token = KBox::into_raw(msg);
        // SAFETY: the scatterlists describe memory of `*token`, which the queue owns until
        // `get_buf` or `detach_unused` returns the token (or the device is reset and the
        // queues deleted, see `Device::del_vqs`).
        let ret = unsafe {
            bindings::virtqueue_add_sgs(
                self.vq,
                list.as_mut_ptr(),
                outs,
                n as u32 - outs,
                token.cast(),
                bindings::GFP_ATOMIC,
            )
        };
        if ret < 0 {
            // SAFETY: the queue refused the token, so it is still ours.
            return Err((Error::from_errno(ret), unsafe { KBox::from_raw(token) }));
        }
        Ok(())
    }

    /// Notifies the device of new messages; false if the device is broken.
    pub(crate) fn kick(&mut self) -> bool {
        // SAFETY: the queue is live.
        unsafe { bindings::virtqueue_kick(self.vq) }
    }

    /// Takes back a message the device used, with the number of bytes it wrote.
    pub(crate) fn get_buf(&mut self) -> Option<(KBox<M>, u32)> {
        let mut len = 0u32;
        // SAFETY: the queue is live.
        let token = unsafe { bindings::virtqueue_get_buf(self.vq, &mut len) };
        // SAFETY: every token on this queue is a `KBox<M>` given up by `add`.
        (!token.is_null()).then(|| (unsafe { KBox::from_raw(token.cast::<M>()) }, len))
    }

    /// Takes back a message the device did not use (after a reset).
    pub(crate) fn detach_unused(&mut self) -> Option<KBox<M>> {
        // SAFETY: the queue is live; the caller resets the device first.
        let token = unsafe { bindings::virtqueue_detach_unused_buf(self.vq) };
        // SAFETY: as in `get_buf`.
        (!token.is_null()).then(|| unsafe { KBox::from_raw(token.cast::<M>()) })
    }
}

/// A virtqueue's callback (interrupt context).
///
/// # Safety
///
/// Called by the virtio transport only, with a live queue of a live device of this driver.
unsafe extern "C" fn vq_callback<T: Driver>(vq: *mut bindings::virtqueue) {
    // SAFETY: the transport calls this with a live queue of a live device.
    let (vdev, index) = unsafe { ((*vq).vdev, (*vq).index) };
    // SAFETY: as above.
    let data = unsafe { (*vdev).priv_ };
    if data.is_null() {
        return; // Not ready yet, or being removed.
    }
    // SAFETY: `priv` holds a `Pin<KBox<T>>` from `into_foreign` until `remove_callback` clears
    // it after the device was reset (no callback runs then).
    T::callback(
        unsafe { <Pin<KBox<T>> as ForeignOwnable>::borrow(data) },
        index,
    );
}

/// `virtio_driver.probe`.
///
/// # Safety
///
/// Called by the virtio core only, once per binding, with a live device whose `priv` is ours.
unsafe extern "C" fn probe_callback<T: Driver>(
    vdev: *mut bindings::virtio_device,
) -> kernel::ffi::c_int {
    from_result(|| {
        // INVARIANT: the core probes a live device, bound until `remove_callback`.
        let dev = Device(vdev);
        // SAFETY: the device is live; the core matched it against our table.
        let matched = unsafe { &(*vdev).id };
        let id = T::ID_TABLE
            .iter()
            .find(|id| id.matches(matched))
            .ok_or(ENODEV)?;
        let data = match KBox::pin_init(T::probe(&dev, id), GFP_KERNEL) {
            Ok(data) => data,
            Err(e) => {
                // Queues `T::probe` found before it failed would outlive the binding.
                dev.reset();
                // SAFETY: the device was reset; `T::probe` failed, so it dropped every
                // `Virtqueue` it made (none outlives it).
                unsafe { dev.del_vqs() };
                return Err(e);
            }
        };
        // SAFETY: the device is being probed; `priv` is ours.
        unsafe { (*vdev).priv_ = crate::compat::into_foreign(data) };
        // SAFETY: just stored; taken back only by `remove_callback` below or at unbinding.
        let data = unsafe { <Pin<KBox<T>> as ForeignOwnable>::borrow((*vdev).priv_) };
        if let Err(e) = data.ready(&dev) {
            // SAFETY: as in an unbinding: the device is bound and `priv` holds our data.
            unsafe { remove_callback::<T>(vdev) };
            return Err(e);
        }
        Ok(0)
    })
}

/// `virtio_driver.remove`: resets the device, then drops the driver's data.
///
/// # Safety
///
/// Called by the virtio core only, once, on a device `probe_callback::<T>` bound.
unsafe extern "C" fn remove_callback<T: Driver>(vdev: *mut bindings::virtio_device) {
    // The device stops using its buffers and raising interrupts, and running queue callbacks
    // have finished, before the data they borrow goes.
    Device(vdev).reset();
    // SAFETY: the device is bound, so `priv` holds our data.
    let ptr = unsafe { (*vdev).priv_ };
    // SAFETY: after the reset no callback can see `priv` any more.
    unsafe { (*vdev).priv_ = core::ptr::null_mut() };
    // SAFETY: `ptr` came from `into_foreign` in probe and is not used after this.
    drop(unsafe { <Pin<KBox<T>> as ForeignOwnable>::from_foreign(ptr) });
}

/// A registered virtio driver.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Driver> {
    #[pin]
    drv: Opaque<bindings::virtio_driver>,
    /// `T::ID_TABLE` as the virtio core reads it, with its all-zero end.
    ids: KVec<bindings::virtio_device_id>,
    registered: core::sync::atomic::AtomicBool,
    _t: PhantomData<T>,
}

// SAFETY: the driver structure is only used by the driver core, under its own locking.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: as above.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    fn id_table() -> Result<KVec<bindings::virtio_device_id>> {
        let mut ids = KVec::with_capacity(T::ID_TABLE.len() + 1, GFP_KERNEL)?;
        for id in T::ID_TABLE {
            let entry = bindings::virtio_device_id {
                device: id.device,
                vendor: id.vendor,
            };
            ids.push(entry, GFP_KERNEL)?;
        }
        let end = bindings::virtio_device_id {
            device: 0,
            vendor: 0,
        };
        ids.push(end, GFP_KERNEL)?;
        Ok(ids)
    }

    /// Registers the driver for the devices of `T::ID_TABLE`.
    pub(crate) fn register(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        let ids = Self::id_table();
        try_pin_init!(Self {
            ids: ids?,
            drv <- Opaque::ffi_init(|slot: *mut bindings::virtio_driver| {
                // SAFETY: `slot` is valid for writes; all-zero is a valid virtio_driver.
                unsafe {
                    slot.write(core::mem::zeroed());
                    (*slot).driver.name = T::NAME.as_char_ptr();
                    (*slot).probe = Some(probe_callback::<T>);
                    (*slot).remove = Some(remove_callback::<T>);
                }
            }),
            registered: core::sync::atomic::AtomicBool::new(false),
            _t: PhantomData,
        }? Error)
        .pin_chain(move |this| {
            // SAFETY: the driver structure and id table live in `this`, pinned until drop,
            // which unregisters the driver first.
            unsafe {
                (*this.drv.get()).id_table = this.ids.as_ptr();
                to_result(bindings::__register_virtio_driver(
                    this.drv.get(),
                    module.as_ptr(),
                ))?;
            }
            this.registered
                .store(true, core::sync::atomic::Ordering::Release);
            Ok(())
        })
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        if !self.registered.load(core::sync::atomic::Ordering::Acquire) {
            return;
        }
        // SAFETY: registered in `register`; this removes every bound device first.
        unsafe { bindings::unregister_virtio_driver(self.drv.get()) };
    }
}
