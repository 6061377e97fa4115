// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Plain-old-data wire structs: byte views without copies of per-field code.
//!
//! Dependency-free so that the kernel module can include this file as it is.

/// Little-endian 16-bit wire integer.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Le16(u16);

/// Little-endian 32-bit wire integer.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Le32(u32);

/// Little-endian 64-bit wire integer.
#[repr(transparent)]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Le64(u64);

macro_rules! le_int {
    ($le:ident, $native:ty) => {
        impl $le {
            /// Encodes a native value.
            pub const fn new(value: $native) -> Self {
                Self(value.to_le())
            }
            /// Decodes to a native value.
            pub const fn get(self) -> $native {
                <$native>::from_le(self.0)
            }
        }
        impl From<$native> for $le {
            fn from(value: $native) -> Self {
                Self::new(value)
            }
        }
        impl From<$le> for $native {
            fn from(value: $le) -> Self {
                value.get()
            }
        }
    };
}
le_int!(Le16, u16);
le_int!(Le32, u32);
le_int!(Le64, u64);

/// A `#[repr(C)]` struct made only of integers and arrays of integers, with no implicit padding,
/// so that every byte pattern is a valid value and every value is fully initialised bytes.
///
/// # Safety
/// Implement only for types that satisfy the above; `assert_pod_size!` checks the size.
pub unsafe trait Pod: Copy + Sized {
    /// The value's bytes, in wire order.
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: `Self: Pod` has no padding and only integer fields, so all
        // `size_of::<Self>()` bytes behind `self` are initialised and readable as `u8`.
        unsafe {
            core::slice::from_raw_parts(
                core::ptr::from_ref(self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// The value's bytes, writable: any byte pattern written is a valid value.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, and every byte pattern is a valid `Self`, so writes
        // through the slice cannot create an invalid value.
        unsafe {
            core::slice::from_raw_parts_mut(
                core::ptr::from_mut(self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }

    /// Decodes a value from the first `size_of::<Self>()` bytes, or `None` when `bytes` is
    /// shorter.
    fn from_prefix(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked above; `read_unaligned` has no alignment requirement,
        // and every byte pattern is a valid `Self` because `Self: Pod`.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

/// Declares `Pod` for wire structs and checks their sizes against the specification at compile
/// time.
macro_rules! pod {
    ($($ty:ty = $size:expr),* $(,)?) => {
        $(
            // SAFETY: the type is `#[repr(C)]` with integer fields only; the size assertion
            // below proves there is no implicit padding.
            unsafe impl $crate::wire::Pod for $ty {}
            const _: () = assert!(core::mem::size_of::<$ty>() == $size);
        )*
    };
}
pub(crate) use pod;

// SAFETY: transparent wrappers of integers.
unsafe impl Pod for Le16 {}
// SAFETY: transparent wrapper of an integer.
unsafe impl Pod for Le32 {}
// SAFETY: transparent wrapper of an integer.
unsafe impl Pod for Le64 {}
