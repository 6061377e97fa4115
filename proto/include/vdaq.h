/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR Apache-2.0 OR BSD-3-Clause */
/*
 * The user API of /dev/vdaqN (vdaq.ko).
 *
 * Generated from proto/src/uapi.rs by proto/tests/c_header.rs: do not edit
 * (VDAQ_BLESS=1 cargo test -p vdaq-proto --test c_header rewrites it).
 */
#ifndef _UAPI_LINUX_VDAQ_H
#define _UAPI_LINUX_VDAQ_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define VDAQ_PERIOD_MAGIC 0x51414456u
#define VDAQ_PERIOD_FLAG_LOST 0x1u
#define VDAQ_PERIOD_FLAG_ERROR 0x2u

struct vdaq_period_header {
	__u32 magic; /* VDAQ_PERIOD_MAGIC */
	__u32 flags; /* VDAQ_PERIOD_FLAG_* */
	__u64 sequence; /* period number since start */
	__u64 timestamp_ns; /* CLOCK_MONOTONIC of the interrupt */
	__u32 frames; /* frames in this period */
	__u32 bytes; /* bytes of frames after this header */
	__u64 frames_lost; /* frames lost just before this period */
};

struct vdaq_params {
	__u32 rate; /* frames per second */
	__u32 channels; /* samples per frame */
	__u32 format; /* virtio-snd format code */
	__u32 period_bytes; /* bytes per period */
	__u32 periods; /* periods in the ring */
	__u32 reserved[3]; /* must be 0 */
};

struct vdaq_info {
	__u32 streams; /* capture streams of the device */
	__u32 stream; /* virtio-snd stream id of this node */
	__u64 formats; /* bit n: virtio-snd format code n */
	__u64 rates; /* bit n: the n-th virtio-snd rate */
	__u32 channels_min; /* fewest channels */
	__u32 channels_max; /* most channels */
	__u32 max_periods; /* most periods */
	__u32 max_period_bytes; /* largest period */
	struct vdaq_params params; /* current parameters */
	__u32 started; /* 1 while started */
	__u32 reserved; /* 0 */
};

struct vdaq_stats {
	__u64 periods; /* periods completed */
	__u64 frames; /* frames completed */
	__u64 frames_lost; /* frames lost (XRUN events) */
	__u64 xruns; /* XRUN events */
	__u64 rx_interrupts; /* receive interrupts */
	__u64 rx_interrupts_with_data; /* receive interrupts that completed periods */
	__u64 signals_sent; /* kill_fasync(SIGIO, POLL_IN) calls */
	__u64 periods_read; /* periods read */
	__u64 stalls; /* times found stalled */
	__u64 stall_signals; /* kill_fasync(SIGIO, POLL_ERR) calls */
	__u64 error_periods; /* periods completed with an error status (frames lost) */
	__u64 reserved[5]; /* 0 */
};

#define VDAQ_MMAP_MAGIC 0x4d514456u
#define VDAQ_MMAP_VERSION 1u

struct vdaq_mmap_layout {
	__u64 mapping_bytes; /* bytes of the whole mapping (whole pages) */
	__u64 records_offset; /* offset of the records (struct vdaq_mmap_record[periods]) */
	__u64 buffers_offset; /* offset of period buffer 0 (page aligned) */
	__u64 buffer_stride; /* distance between buffers (period_bytes in whole pages) */
	__u32 periods; /* period buffers and records */
	__u32 period_bytes; /* bytes per period */
	__u64 reserved; /* 0 */
};

struct vdaq_mmap_status {
	__u32 magic; /* VDAQ_MMAP_MAGIC */
	__u32 version; /* VDAQ_MMAP_VERSION */
	__u64 head; /* next sequence to complete: records tail..head ready; load with acquire */
	__u64 tail; /* oldest sequence not given back (VDAQ_IOC_MMAP_ACK or read) */
	__u64 reserved[5]; /* 0 */
};

struct vdaq_mmap_record {
	struct vdaq_period_header header; /* as read() gives it; sequence s at index s % periods */
	__u32 buffer; /* buffer of the frames: buffers_offset + buffer * buffer_stride */
	__u32 reserved; /* 0 */
};

/* ioctl type: Documentation/userspace-api/ioctl/ioctl-number.rst lists none for it */
#define VDAQ_IOC_MAGIC 'Y'

#define VDAQ_IOC_INFO _IOR(VDAQ_IOC_MAGIC, 0x01, struct vdaq_info)
#define VDAQ_IOC_SET_PARAMS _IOW(VDAQ_IOC_MAGIC, 0x02, struct vdaq_params)
#define VDAQ_IOC_START _IO(VDAQ_IOC_MAGIC, 0x03)
#define VDAQ_IOC_STOP _IO(VDAQ_IOC_MAGIC, 0x04)
#define VDAQ_IOC_MMAP_LAYOUT _IOR(VDAQ_IOC_MAGIC, 0x05, struct vdaq_mmap_layout)
#define VDAQ_IOC_MMAP_ACK _IOW(VDAQ_IOC_MAGIC, 0x06, __u64)
#define VDAQ_IOC_STATS _IOR(VDAQ_IOC_MAGIC, 0x10, struct vdaq_stats)

#endif /* _UAPI_LINUX_VDAQ_H */
