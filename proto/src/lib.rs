// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! Wire formats shared by the vdaq device, the guest driver and the guest app.
//!
//! Every module here is dependency-free `core` code: the kernel module includes the same files,
//! so there is one definition of each format.
#![no_std]

pub mod format;
pub mod uapi;
pub mod virtio_snd;
pub mod wire;
