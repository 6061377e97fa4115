// SPDX-License-Identifier: GPL-2.0

//! Synchronisation the 6.12 Rust kernel crate lacks: an irqsave spinlock (state shared with a
//! hard-interrupt handler), a wait queue of our own (poll and blocking reads), the fasync
//! list (SIGIO to owners of files with O_ASYNC) and a high-resolution timer. Linux 7.2 has an
//! hrtimer and poll tables of its own, in other shapes, and still no irqsave lock backend or
//! fasync (docs/DRIVER-UPSTREAM.md): the same pieces serve both, with 7.2's C API differences
//! under `cfg(vdaq_linux7)`.

use core::marker::PhantomPinned;
use kernel::bindings;
use kernel::error::{code::ERESTARTSYS, to_result, Result};
use kernel::prelude::*;
use kernel::sync::lock::{Backend, Lock};
use kernel::types::Opaque;

/// Backend of [`SpinLockIrq`]: `spin_lock_irqsave`, with the saved flags as guard state.
pub(crate) struct SpinLockIrqBackend;

/// A spinlock that disables local interrupts while held: for data shared with interrupt
/// handlers.
pub(crate) type SpinLockIrq<T> = Lock<T, SpinLockIrqBackend>;

/// Creates a [`SpinLockIrq`] initialiser with a lock class of its own.
#[macro_export]
macro_rules! new_spinlock_irq {
    ($inner:expr, $name:literal) => {
        $crate::kernel_sync::SpinLockIrq::new(
            $inner,
            kernel::c_str!($name),
            kernel::static_lock_class!(),
        )
    };
}

// SAFETY: `lock` and `unlock` are `spin_lock_irqsave`/`spin_unlock_irqrestore` on a spinlock
// that `init` initialised, so the lock provides mutual exclusion; the flags saved by `lock` are
// the ones `unlock` restores.
unsafe impl Backend for SpinLockIrqBackend {
    type State = bindings::spinlock_t;
    type GuardState = kernel::ffi::c_ulong;

    unsafe fn init(
        ptr: *mut Self::State,
        name: *const kernel::ffi::c_char,
        key: *mut bindings::lock_class_key,
    ) {
        // SAFETY: the caller passes a valid spinlock to initialise and a static name and key.
        unsafe { bindings::__spin_lock_init(ptr, name, key) }
    }

    unsafe fn lock(ptr: *mut Self::State) -> Self::GuardState {
        // SAFETY: the caller guarantees the lock was initialised.
        unsafe { bindings::spin_lock_irqsave(ptr) }
    }

    unsafe fn unlock(ptr: *mut Self::State, flags: &Self::GuardState) {
        // SAFETY: the caller owns the lock; `flags` came from the matching `lock`.
        unsafe { bindings::spin_unlock_irqrestore(ptr, *flags) }
    }

    // Linux 7's `Backend` also asks for these two.
    #[cfg(vdaq_linux7)]
    unsafe fn try_lock(ptr: *mut Self::State) -> Option<Self::GuardState> {
        let mut flags: Self::GuardState = 0;
        // SAFETY: the caller guarantees the lock was initialised; `flags` is writable.
        let locked = unsafe { bindings::spin_trylock_irqsave(ptr, &mut flags) } != 0;
        locked.then_some(flags)
    }

    #[cfg(vdaq_linux7)]
    unsafe fn assert_is_held(ptr: *mut Self::State) {
        // SAFETY: the caller guarantees the lock was initialised.
        unsafe { bindings::spin_assert_is_held(ptr) }
    }
}

/// A wait queue head: readers sleep on it, poll() registers on it, the interrupt handler wakes
/// it.
#[pin_data]
pub(crate) struct WaitQueue {
    #[pin]
    head: Opaque<bindings::wait_queue_head>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: a wait queue head is designed to be used from any thread and interrupt context; its
// own spinlock serialises access.
unsafe impl Send for WaitQueue {}
// SAFETY: as above.
unsafe impl Sync for WaitQueue {}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The condition became true.
    Ready,
    /// The timeout passed first.
    TimedOut,
}

impl WaitQueue {
    /// An initialiser for an empty wait queue.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writing the wait queue head it initialises.
            head <- Opaque::ffi_init(|slot| unsafe { bindings::init_waitqueue_head(slot) }),
            _pin: PhantomPinned,
        })
    }

    /// The raw head, for poll_wait.
    pub(crate) fn as_ptr(&self) -> *mut bindings::wait_queue_head {
        self.head.get()
    }

    /// Wakes every interruptible sleeper.
    pub(crate) fn wake_all(&self) {
        // SAFETY: the head was initialised by `new`.
        unsafe { bindings::wake_up_interruptible_all(self.head.get()) }
    }

    /// Sleeps interruptibly until `ready()` holds or `timeout_jiffies` pass (`None`: no
    /// timeout). A signal ends the wait with ERESTARTSYS.
    pub(crate) fn wait_until(
        &self,
        timeout_jiffies: Option<kernel::ffi::c_long>,
        mut ready: impl FnMut() -> bool,
    ) -> Result<Wait> {
        let mut remaining = timeout_jiffies.unwrap_or(kernel::task::MAX_SCHEDULE_TIMEOUT);
        let mut entry = core::mem::MaybeUninit::<bindings::wait_queue_entry>::uninit();
        let entry = entry.as_mut_ptr();
        // SAFETY: `entry` points to writable stack memory for a wait queue entry that stays
        // in place until `finish_wait` below removes it from the queue.
        unsafe { bindings::init_wait(entry) };
        let result = loop {
            // SAFETY: the head was initialised by `new`; `entry` was initialised above.
            unsafe {
                bindings::prepare_to_wait_exclusive(
                    self.head.get(),
                    entry,
                    bindings::TASK_INTERRUPTIBLE as kernel::ffi::c_int,
                )
            };
            if ready() {
                break Ok(Wait::Ready);
            }
            // SAFETY: `current` is always valid in process context.
            if unsafe { bindings::signal_pending(bindings::get_current()) } != 0 {
                break Err(ERESTARTSYS);
            }
            if remaining <= 0 {
                break Ok(Wait::TimedOut);
            }
            // SAFETY: called in process context with the task state set above.
            remaining = unsafe { bindings::schedule_timeout(remaining) };
        };
        // SAFETY: `entry` was added to this head by `prepare_to_wait_exclusive`.
        unsafe { bindings::finish_wait(self.head.get(), entry) };
        result
    }
}

/// The list of files that asked for SIGIO (O_ASYNC), as fasync_helper keeps it.
pub(crate) struct FasyncList {
    head: Opaque<*mut bindings::fasync_struct>,
}

// SAFETY: fasync_helper and kill_fasync serialise access to the list with the kernel's fasync
// lock and RCU; the pointer itself is only changed by fasync_helper.
unsafe impl Send for FasyncList {}
// SAFETY: as above.
unsafe impl Sync for FasyncList {}

impl FasyncList {
    /// An empty list.
    pub(crate) fn new() -> Self {
        Self {
            head: Opaque::new(core::ptr::null_mut()),
        }
    }

    /// Adds or removes `file` (the fasync file operation; `on` false also on release).
    pub(crate) fn helper(&self, fd: i32, file: &crate::miscdev::File, on: bool) -> Result<i32> {
        // SAFETY: `file` is a live file during its file operation; `head` is the list pointer
        // that fasync_helper owns.
        let ret =
            unsafe { bindings::fasync_helper(fd, file.as_ptr(), i32::from(on), self.head.get()) };
        to_result(ret)?;
        Ok(ret)
    }

    /// Sends `sig` with band `band` to every owner on the list; callable from interrupt
    /// context.
    pub(crate) fn kill(&self, sig: u32, band: u32) {
        // SAFETY: `head` is the list pointer fasync_helper maintains (possibly null: empty).
        unsafe { bindings::kill_fasync(self.head.get(), sig as i32, band as i32) }
    }
}

/// CLOCK_MONOTONIC, in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: ktime_get may be called from any context.
    let ns = unsafe { bindings::ktime_get() };
    ns as u64
}

/// Sleeps for at least `ms` milliseconds (process context).
pub(crate) fn sleep_ms(ms: u32) {
    // Linux 7 has the kernel crate's own: `fsleep`.
    #[cfg(vdaq_linux7)]
    kernel::time::delay::fsleep(kernel::time::Delta::from_millis(i64::from(ms)));
    // SAFETY: msleep may be called from any process context.
    #[cfg(not(vdaq_linux7))]
    unsafe {
        bindings::msleep(ms)
    };
}

/// What an [`HrTimer`]'s callback asks for (upstream's `HrTimerRestart`, whose `Restart`
/// forwards the timer by the context's interval; here the delay comes with the answer).
pub(crate) enum HrTimerRestart {
    /// Stay stopped (until a start).
    NoRestart,
    /// Fire again this many nanoseconds from now.
    RestartIn(u64),
}

/// What an [`HrTimer`] embedded in `Self` does when it fires, in hard-interrupt context
/// (upstream's `HrTimerCallback`, whose `run` takes the owner through a pointer type).
pub(crate) trait HrTimerCallback: Sync + Sized {
    /// The timer fired.
    fn run(this: &Self) -> HrTimerRestart;
}

/// A type that embeds an [`HrTimer<T>`] (upstream's `HasHrTimer`): the timer finds its owner
/// by this offset.
///
/// # Safety
///
/// `OFFSET` must be the byte offset of an `HrTimer<T>` field in `Self`. Implement it with
/// [`impl_has_hr_timer`].
pub(crate) unsafe trait HasHrTimer<T> {
    /// The offset of the timer field.
    const OFFSET: usize;
}

/// Declares the [`HrTimer`] field of a type, in upstream's syntax:
/// `impl_has_hr_timer! { impl HasHrTimer<Self> for Type { self.field } }`.
#[macro_export]
macro_rules! impl_has_hr_timer {
    (impl HasHrTimer<Self> for $owner:ty { self.$field:ident }) => {
        // The field must be an `HrTimer<$owner>`: this does not compile otherwise.
        const _: () = {
            #[allow(dead_code)]
            fn field_is_a_timer(o: &$owner) -> &$crate::kernel_sync::HrTimer<$owner> {
                &o.$field
            }
        };
        // SAFETY: `offset_of!` gives the offset of that field, checked just above to be an
        // `HrTimer<$owner>`.
        unsafe impl $crate::kernel_sync::HasHrTimer<$owner> for $owner {
            const OFFSET: usize = core::mem::offset_of!($owner, $field);
        }
    };
}

/// A high-resolution timer (CLOCK_MONOTONIC) embedded in its owner `T`, which it calls back in
/// hard-interrupt context (upstream's `HrTimer`, which starts through an owning pointer and
/// hands back a handle; here the owner starts and cancels its own timer). Dropping it cancels
/// it and waits for a running callback, so the owner must declare it before the fields the
/// callback uses (fields drop in order).
#[pin_data(PinnedDrop)]
pub(crate) struct HrTimer<T: HasHrTimer<T> + HrTimerCallback> {
    #[pin]
    raw: Opaque<bindings::hrtimer>,
    #[pin]
    _pin: PhantomPinned,
    _owner: core::marker::PhantomData<*const T>,
}

// SAFETY: the hrtimer core serialises starting, cancelling and firing with its own lock; the
// callback only gets `&T`, and `T: Sync`.
unsafe impl<T: HasHrTimer<T> + HrTimerCallback> Send for HrTimer<T> {}
// SAFETY: as above.
unsafe impl<T: HasHrTimer<T> + HrTimerCallback> Sync for HrTimer<T> {}

impl<T: HasHrTimer<T> + HrTimerCallback> HrTimer<T> {
    /// An initialiser for a stopped timer.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is valid for writing an hrtimer, which this initialises with its
            // callback before any start.
            raw <- Opaque::ffi_init(|slot: *mut bindings::hrtimer| unsafe {
                Self::setup(slot)
            }),
            _pin: PhantomPinned,
            _owner: core::marker::PhantomData,
        })
    }

    /// Initialises the hrtimer at `slot` (CLOCK_MONOTONIC, relative) to call [`Self::fire`].
    ///
    /// # Safety
    ///
    /// `slot` must be valid for writing an hrtimer that is not queued.
    unsafe fn setup(slot: *mut bindings::hrtimer) {
        #[cfg(not(vdaq_linux7))]
        // SAFETY: by the caller's guarantee; `function` is set before any start.
        unsafe {
            bindings::hrtimer_init(
                slot,
                bindings::CLOCK_MONOTONIC as bindings::clockid_t,
                bindings::hrtimer_mode_HRTIMER_MODE_REL,
            );
            (*slot).function = Some(Self::fire);
        }
        // Linux 7 sets the callback in the same call (the field is private there).
        #[cfg(vdaq_linux7)]
        // SAFETY: by the caller's guarantee.
        unsafe {
            bindings::hrtimer_setup(
                slot,
                Some(Self::fire),
                bindings::CLOCK_MONOTONIC as bindings::clockid_t,
                bindings::hrtimer_mode_HRTIMER_MODE_REL,
            )
        };
    }

    /// Whether the timer is queued, read without the base lock (`hrtimer_is_queued`).
    ///
    /// # Safety
    ///
    /// `raw` must be an initialised hrtimer.
    unsafe fn is_queued(raw: *mut bindings::hrtimer) -> bool {
        // SAFETY: a volatile read of a field the hrtimer core writes under its lock.
        #[cfg(not(vdaq_linux7))]
        let queued = u32::from(unsafe { core::ptr::read_volatile(&raw const (*raw).state) })
            & bindings::HRTIMER_STATE_ENQUEUED
            != 0;
        // SAFETY: as above (Linux 7 keeps a bool of its own).
        #[cfg(vdaq_linux7)]
        let queued = unsafe { core::ptr::read_volatile(&raw const (*raw).is_queued) };
        queued
    }

    /// Fires in `ns` nanoseconds (re-arms a running timer).
    pub(crate) fn start(&self, ns: u64) {
        // SAFETY: the timer was initialised by `new` and stays pinned in its owner.
        unsafe {
            bindings::hrtimer_start_range_ns(
                self.raw.get(),
                ns as bindings::ktime_t,
                0,
                bindings::hrtimer_mode_HRTIMER_MODE_REL,
            )
        };
    }

    /// Makes the timer fire within `ns` nanoseconds: starts it unless it is already queued to
    /// fire by then. A timer that re-arms itself every tick must not be pushed back by each
    /// start (a stream started more often than the tick kept it from ever firing).
    ///
    /// The state and expiry are read without the hrtimer base lock. A stale "queued" is
    /// harmless when the caller made the callback's reason to re-arm visible (under its own
    /// lock) before calling: a callback that dequeued the timer after that sees the reason;
    /// one that dequeued it before left it not queued, which this call then saw. A stale "not
    /// queued" only starts a timer that is about to be started anyway.
    pub(crate) fn start_within(&self, ns: u64) {
        let raw = self.raw.get();
        // SAFETY: the timer was initialised by `new`; a volatile read of the expiry, which
        // the hrtimer core writes under its lock.
        let (queued, expires) = unsafe {
            (
                Self::is_queued(raw),
                core::ptr::read_volatile(&raw const (*raw).node.expires),
            )
        };
        // SAFETY: ktime_get may be called from any context.
        let due = unsafe { bindings::ktime_get() }.saturating_add(ns as bindings::ktime_t);
        if !(queued && expires <= due) {
            self.start(ns);
        }
    }

    /// Stops the timer; waits for a running callback to finish (process context, without
    /// holding a lock the callback takes).
    pub(crate) fn cancel(&self) {
        // SAFETY: the timer was initialised by `new`.
        unsafe { bindings::hrtimer_cancel(self.raw.get()) };
    }

    /// The hrtimer's callback.
    ///
    /// # Safety
    /// Called by the hrtimer core only, with `raw` the `raw` field of a live `HrTimer<T>`.
    unsafe extern "C" fn fire(raw: *mut bindings::hrtimer) -> bindings::hrtimer_restart {
        // From the hrtimer back to its owner: field offset in the timer, then in the owner.
        let timer_offset = core::mem::offset_of!(Self, raw);
        // SAFETY: `raw` is the `raw` field of an `HrTimer<T>` that is the field at `T::OFFSET`
        // of a live `T` (HasHrTimer's contract); the owner outlives the timer, whose drop cancels
        // it before the owner's memory goes away.
        let owner = unsafe { &*(raw as *const u8).sub(timer_offset + T::OFFSET).cast::<T>() };
        if let HrTimerRestart::RestartIn(ns) = T::run(owner) {
            // Re-armed by a start under the hrtimer base lock, not by hrtimer_forward and
            // HRTIMER_RESTART: `start` may run on another CPU at the same time, and forwarding
            // a timer it has just queued would corrupt the queue.
            // SAFETY: `raw` is this live, initialised timer; starting it from its own callback
            // is allowed (the core does not touch a timer that the callback queued and that
            // returns HRTIMER_NORESTART).
            unsafe {
                bindings::hrtimer_start_range_ns(
                    raw,
                    ns as bindings::ktime_t,
                    0,
                    bindings::hrtimer_mode_HRTIMER_MODE_REL,
                )
            };
        }
        bindings::hrtimer_restart_HRTIMER_NORESTART
    }
}

#[pinned_drop]
impl<T: HasHrTimer<T> + HrTimerCallback> PinnedDrop for HrTimer<T> {
    fn drop(self: Pin<&mut Self>) {
        self.cancel();
    }
}
