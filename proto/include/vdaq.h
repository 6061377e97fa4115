/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 */
/* The user API of /dev/vdaqN. Generated from proto/src/uapi.rs by proto/tests/c_header.rs:
 * do not edit (VDAQ_BLESS=1 cargo test -p vdaq-proto --test c_header rewrites it). */
#ifndef VDAQ_H
#define VDAQ_H

#include <stddef.h>
#include <stdint.h>

#define VDAQ_PERIOD_MAGIC 0x51414456u
#define VDAQ_PERIOD_FLAG_LOST 0x1u
#define VDAQ_PERIOD_FLAG_ERROR 0x2u

struct vdaq_period_header {
	uint32_t magic; /* VDAQ_PERIOD_MAGIC */
	uint32_t flags; /* VDAQ_PERIOD_FLAG_* */
	uint64_t sequence; /* period number since start */
	uint64_t timestamp_ns; /* CLOCK_MONOTONIC of the interrupt */
	uint32_t frames; /* frames in this period */
	uint32_t bytes; /* bytes of frames after this header */
	uint64_t frames_lost; /* frames lost just before this period */
};
_Static_assert(sizeof(struct vdaq_period_header) == 40, "size");
_Static_assert(offsetof(struct vdaq_period_header, magic) == 0, "offset");
_Static_assert(offsetof(struct vdaq_period_header, flags) == 4, "offset");
_Static_assert(offsetof(struct vdaq_period_header, sequence) == 8, "offset");
_Static_assert(offsetof(struct vdaq_period_header, timestamp_ns) == 16, "offset");
_Static_assert(offsetof(struct vdaq_period_header, frames) == 24, "offset");
_Static_assert(offsetof(struct vdaq_period_header, bytes) == 28, "offset");
_Static_assert(offsetof(struct vdaq_period_header, frames_lost) == 32, "offset");

struct vdaq_params {
	uint32_t rate; /* frames per second */
	uint32_t channels; /* samples per frame */
	uint32_t format; /* virtio-snd format code */
	uint32_t period_bytes; /* bytes per period */
	uint32_t periods; /* periods in the ring */
	uint32_t reserved[3]; /* must be 0 */
};
_Static_assert(sizeof(struct vdaq_params) == 32, "size");
_Static_assert(offsetof(struct vdaq_params, rate) == 0, "offset");
_Static_assert(offsetof(struct vdaq_params, channels) == 4, "offset");
_Static_assert(offsetof(struct vdaq_params, format) == 8, "offset");
_Static_assert(offsetof(struct vdaq_params, period_bytes) == 12, "offset");
_Static_assert(offsetof(struct vdaq_params, periods) == 16, "offset");
_Static_assert(offsetof(struct vdaq_params, reserved) == 20, "offset");

struct vdaq_info {
	uint32_t streams; /* capture streams of the device */
	uint32_t stream; /* virtio-snd stream id of this node */
	uint64_t formats; /* bit n: virtio-snd format code n */
	uint64_t rates; /* bit n: the n-th virtio-snd rate */
	uint32_t channels_min; /* fewest channels */
	uint32_t channels_max; /* most channels */
	uint32_t max_periods; /* most periods */
	uint32_t max_period_bytes; /* largest period */
	struct vdaq_params params; /* current parameters */
	uint32_t started; /* 1 while started */
	uint32_t reserved; /* 0 */
};
_Static_assert(sizeof(struct vdaq_info) == 80, "size");
_Static_assert(offsetof(struct vdaq_info, streams) == 0, "offset");
_Static_assert(offsetof(struct vdaq_info, stream) == 4, "offset");
_Static_assert(offsetof(struct vdaq_info, formats) == 8, "offset");
_Static_assert(offsetof(struct vdaq_info, rates) == 16, "offset");
_Static_assert(offsetof(struct vdaq_info, channels_min) == 24, "offset");
_Static_assert(offsetof(struct vdaq_info, channels_max) == 28, "offset");
_Static_assert(offsetof(struct vdaq_info, max_periods) == 32, "offset");
_Static_assert(offsetof(struct vdaq_info, max_period_bytes) == 36, "offset");
_Static_assert(offsetof(struct vdaq_info, params) == 40, "offset");
_Static_assert(offsetof(struct vdaq_info, started) == 72, "offset");
_Static_assert(offsetof(struct vdaq_info, reserved) == 76, "offset");

struct vdaq_stats {
	uint64_t periods; /* periods completed */
	uint64_t frames; /* frames completed */
	uint64_t frames_lost; /* frames lost (XRUN events) */
	uint64_t xruns; /* XRUN events */
	uint64_t rx_interrupts; /* receive interrupts */
	uint64_t rx_interrupts_with_data; /* receive interrupts that completed periods */
	uint64_t signals_sent; /* kill_fasync(SIGIO, POLL_IN) calls */
	uint64_t periods_read; /* periods read */
	uint64_t stalls; /* times found stalled */
	uint64_t stall_signals; /* kill_fasync(SIGIO, POLL_ERR) calls */
	uint64_t error_periods; /* periods completed with an error status (frames lost) */
	uint64_t reserved[5]; /* 0 */
};
_Static_assert(sizeof(struct vdaq_stats) == 128, "size");
_Static_assert(offsetof(struct vdaq_stats, periods) == 0, "offset");
_Static_assert(offsetof(struct vdaq_stats, frames) == 8, "offset");
_Static_assert(offsetof(struct vdaq_stats, frames_lost) == 16, "offset");
_Static_assert(offsetof(struct vdaq_stats, xruns) == 24, "offset");
_Static_assert(offsetof(struct vdaq_stats, rx_interrupts) == 32, "offset");
_Static_assert(offsetof(struct vdaq_stats, rx_interrupts_with_data) == 40, "offset");
_Static_assert(offsetof(struct vdaq_stats, signals_sent) == 48, "offset");
_Static_assert(offsetof(struct vdaq_stats, periods_read) == 56, "offset");
_Static_assert(offsetof(struct vdaq_stats, stalls) == 64, "offset");
_Static_assert(offsetof(struct vdaq_stats, stall_signals) == 72, "offset");
_Static_assert(offsetof(struct vdaq_stats, error_periods) == 80, "offset");
_Static_assert(offsetof(struct vdaq_stats, reserved) == 88, "offset");

#define VDAQ_MMAP_MAGIC 0x4d514456u
#define VDAQ_MMAP_VERSION 1u

struct vdaq_mmap_layout {
	uint64_t mapping_bytes; /* bytes of the whole mapping (whole pages) */
	uint64_t records_offset; /* offset of the records (struct vdaq_mmap_record[periods]) */
	uint64_t buffers_offset; /* offset of period buffer 0 (page aligned) */
	uint64_t buffer_stride; /* distance between buffers (period_bytes in whole pages) */
	uint32_t periods; /* period buffers and records */
	uint32_t period_bytes; /* bytes per period */
	uint64_t reserved; /* 0 */
};
_Static_assert(sizeof(struct vdaq_mmap_layout) == 48, "size");
_Static_assert(offsetof(struct vdaq_mmap_layout, mapping_bytes) == 0, "offset");
_Static_assert(offsetof(struct vdaq_mmap_layout, records_offset) == 8, "offset");
_Static_assert(offsetof(struct vdaq_mmap_layout, buffers_offset) == 16, "offset");
_Static_assert(offsetof(struct vdaq_mmap_layout, buffer_stride) == 24, "offset");
_Static_assert(offsetof(struct vdaq_mmap_layout, periods) == 32, "offset");
_Static_assert(offsetof(struct vdaq_mmap_layout, period_bytes) == 36, "offset");
_Static_assert(offsetof(struct vdaq_mmap_layout, reserved) == 40, "offset");

struct vdaq_mmap_status {
	uint32_t magic; /* VDAQ_MMAP_MAGIC */
	uint32_t version; /* VDAQ_MMAP_VERSION */
	uint64_t head; /* next sequence to complete: records tail..head ready; load with acquire */
	uint64_t tail; /* oldest sequence not given back (VDAQ_IOC_MMAP_ACK or read) */
	uint64_t reserved[5]; /* 0 */
};
_Static_assert(sizeof(struct vdaq_mmap_status) == 64, "size");
_Static_assert(offsetof(struct vdaq_mmap_status, magic) == 0, "offset");
_Static_assert(offsetof(struct vdaq_mmap_status, version) == 4, "offset");
_Static_assert(offsetof(struct vdaq_mmap_status, head) == 8, "offset");
_Static_assert(offsetof(struct vdaq_mmap_status, tail) == 16, "offset");
_Static_assert(offsetof(struct vdaq_mmap_status, reserved) == 24, "offset");

struct vdaq_mmap_record {
	struct vdaq_period_header header; /* as read() gives it; sequence s at index s % periods */
	uint32_t buffer; /* buffer of the frames: buffers_offset + buffer * buffer_stride */
	uint32_t reserved; /* 0 */
};
_Static_assert(sizeof(struct vdaq_mmap_record) == 48, "size");
_Static_assert(offsetof(struct vdaq_mmap_record, header) == 0, "offset");
_Static_assert(offsetof(struct vdaq_mmap_record, buffer) == 40, "offset");
_Static_assert(offsetof(struct vdaq_mmap_record, reserved) == 44, "offset");

#define VDAQ_IOC_INFO 0x80505601u
#define VDAQ_IOC_SET_PARAMS 0x40205602u
#define VDAQ_IOC_START 0x00005603u
#define VDAQ_IOC_STOP 0x00005604u
#define VDAQ_IOC_MMAP_LAYOUT 0x80305605u
#define VDAQ_IOC_MMAP_ACK 0x40085606u
#define VDAQ_IOC_STATS 0x80805610u

#endif /* VDAQ_H */
