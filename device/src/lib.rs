// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
//! vdaq-device: a vhost-user backend that emulates a paced data-acquisition card over the
//! virtio-sound capture protocol.
//!
//! The binary is a thin layer over this library, so tests and benchmarks drive the same code.

pub mod backend;
pub mod chain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod counter;
pub mod daemon;
pub mod faults;
pub mod fifo;
pub mod frames;
pub mod ratelimit;
pub mod recording;
pub mod source;
pub mod statsfile;
pub mod status;
pub mod stream;
