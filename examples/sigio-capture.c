// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
/*
 * sigio-capture: capture from /dev/vdaqN the way `vdaq capture --rt-signal 1` does, in plain C
 * against proto/include/vdaq.h, and check the device's counter signal.
 *
 *   vdaq-sigio-example [-s SECONDS] [-r RATE] [-c CHANNELS] [-f s16|s32]
 *                      [-p PERIOD_BYTES] [-n PERIODS] /dev/vdaqN
 *
 * Build (static, as in the guest initramfs, which has no libc):
 *
 *   gcc -Wall -Wextra -Werror -O2 -static -I proto/include \
 *       -o vdaq-sigio-example examples/sigio-capture.c
 *
 * What it does:
 *   1. open(O_NONBLOCK), VDAQ_IOC_INFO, VDAQ_IOC_SET_PARAMS (the node's current parameters,
 *      changed by the options; the period defaults to 1024 frames);
 *   2. sigaction(SIGRTMIN+1, SA_SIGINFO), fcntl(F_SETOWN, getpid()), fcntl(F_SETSIG,
 *      SIGRTMIN+1), then O_ASYNC with F_SETFL: the driver's kill_fasync(SIGIO, POLL_IN) for
 *      each interrupt that completed periods now queues SIGRTMIN+1 to us, with si_fd and
 *      si_band;
 *   3. VDAQ_IOC_START; the main flow sleeps (its "other work") while the handler drains every
 *      ready period and checks it;
 *   4. after SECONDS: signals blocked, O_ASYNC off, a last drain, VDAQ_IOC_STOP; one line of
 *      JSON on stdout.
 *
 * Exit status: 0 when the counter was exact (a gap only where the driver reported lost
 * frames, in the gap's period header or an earlier one), 1 when it was not or the capture
 * failed (EIO: the device stalled; ENODEV: it is gone), 2 when it could not be set up.
 *
 * Why a handler (and not a sigwaitinfo() loop): this is the asynchronous way, the one the
 * issue and `vdaq capture` show. The main flow does its own work and the periods are taken
 * as soon as the signal arrives, wherever the main flow is. A sigwaitinfo() loop would be
 * simpler (no async-signal-safety rules) but is a synchronous wait on one thing, no better
 * than poll() or a blocking read(). The price of the handler: it may only call
 * async-signal-safe functions (here read() alone: no stdio, no malloc), it saves and restores
 * errno, and the main flow touches the state it shares with it only with the signals
 * blocked (at the end).
 *
 * Why the handler drains until EAGAIN: signals are not a count of periods. Several interrupts
 * may complete periods before the handler runs; plain SIGIO does not queue; a realtime signal
 * queues only up to RLIMIT_SIGPENDING, and when the queue is full the kernel sends plain SIGIO
 * instead (so SIGIO gets the same handler). Each signal therefore means "there may be
 * periods": the handler reads until the driver says EAGAIN, and no period waits for a signal
 * that will never come. A handler run that finds nothing is normal (its periods were taken by
 * the previous run).
 *
 * The counter: the device's default signal puts the frame's sample-clock index i on every
 * channel, modulo 2^bits for integer formats (little-endian; S16 carries the low 16 bits,
 * S32 the low 32: proto/src/format.rs). A lost period leaves exactly its gap. This example
 * checks S16 and S32 frame by frame; other formats are refused (`vdaq capture` checks all).
 */
#define _GNU_SOURCE /* F_SETSIG */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/ioctl.h>
#include <linux/types.h>

#include "vdaq.h"

/* virtio-snd sample format codes (VIRTIO_SND_PCM_FMT_*, the spec's Sound Device; in Rust:
 * proto/src/virtio_snd.rs): what struct vdaq_params::format holds. */
#define VIRTIO_SND_PCM_FMT_S16 5
#define VIRTIO_SND_PCM_FMT_S32 17

#define EXIT_INEXACT 1
#define EXIT_SETUP 2

/* Everything the handler touches. The main flow reads it only with the signals blocked. */
static struct {
	int fd;
	unsigned char *buf; /* room for the whole ring: one read() can return every ready period */
	size_t buf_bytes;
	unsigned width; /* bytes per sample */
	unsigned channels;
	__u64 modulus; /* 2^bits */

	/* Signals. */
	unsigned long signals; /* handler runs */
	unsigned long sigio; /* plain SIGIO: the realtime queue was full */
	unsigned long wrong_fd; /* si_fd not ours, or si_band without POLLIN */
	unsigned long error_signals; /* si_band POLLERR (stall) or POLLHUP (device gone) */
	unsigned long empty_runs; /* handler runs that found nothing ready */

	/* Periods. */
	unsigned long periods;
	__u64 frames;
	__u64 frames_lost_reported; /* sum of the headers' frames_lost */
	unsigned long lost_flags; /* headers with VDAQ_PERIOD_FLAG_LOST */
	unsigned long error_periods; /* headers with VDAQ_PERIOD_FLAG_ERROR */
	unsigned long bad_records; /* wrong magic, or bytes not frames x frame size */
	unsigned long sequence_breaks; /* a period's sequence not the previous one's + 1 */
	__u64 next_sequence;
	__u64 first_ts, last_ts, first_frames;

	/* The counter. */
	int have_expected;
	__u64 expected; /* the next frame's value */
	__u64 first_value;
	unsigned long gaps; /* the counter jumped forward */
	__u64 missing_frames; /* frames in those jumps */
	__u64 announced; /* reported lost frames not matched by a gap yet */
	__u64 unreported_frames; /* frames of gaps no header announced: the check fails */
	unsigned long reorders; /* the counter went back or repeated */
	unsigned long corrupt_frames; /* channels of a frame disagree */

	int read_errno; /* a read() failed: the capture ends */
} st;

static volatile sig_atomic_t failed;
static int rt_signal;

static __u64 sample(const unsigned char *p, unsigned width)
{
	if (width == 2)
		return (__u64)p[0] | (__u64)p[1] << 8;
	return (__u64)p[0] | (__u64)p[1] << 8 | (__u64)p[2] << 16 | (__u64)p[3] << 24;
}

/* Checks one period's frames; returns the frames missing in gaps inside it. */
static __u64 check_frames(const unsigned char *data, __u32 frames)
{
	size_t frame_bytes = (size_t)st.width * st.channels;
	__u64 lost = 0;
	__u32 i;
	unsigned c;

	for (i = 0; i < frames; i++) {
		const unsigned char *f = data + i * frame_bytes;
		__u64 v = sample(f, st.width);

		for (c = 1; c < st.channels; c++) {
			if (sample(f + c * st.width, st.width) != v) {
				st.corrupt_frames++;
				break;
			}
		}
		if (!st.have_expected) {
			st.have_expected = 1;
			st.first_value = v;
		} else if (v != st.expected) {
			__u64 ahead = (v + st.modulus - st.expected) % st.modulus;

			/* A jump of more than half the range is a step back, not a gap. */
			if (ahead < st.modulus / 2) {
				st.gaps++;
				st.missing_frames += ahead;
				lost += ahead;
			} else {
				st.reorders++;
			}
		}
		st.expected = (v + 1) % st.modulus;
	}
	return lost;
}

static void take_period(const struct vdaq_period_header *h, const unsigned char *data)
{
	__u64 lost, covered;

	if (h->sequence != st.next_sequence)
		st.sequence_breaks++;
	st.next_sequence = h->sequence + 1;
	st.lost_flags += !!(h->flags & VDAQ_PERIOD_FLAG_LOST);
	st.error_periods += !!(h->flags & VDAQ_PERIOD_FLAG_ERROR);
	st.frames_lost_reported += h->frames_lost;
	/*
	 * The driver puts the frames lost into the header of the first period of the interrupt
	 * that brought the device's XRUN event, which can be a period or two before the gap:
	 * every gap must be covered by frames announced in its own header or an earlier one.
	 */
	st.announced += h->frames_lost;
	lost = check_frames(data, h->frames);
	covered = lost < st.announced ? lost : st.announced;
	st.announced -= covered;
	st.unreported_frames += lost - covered;

	if (st.periods == 0) {
		st.first_ts = h->timestamp_ns;
		st.first_frames = h->frames;
	}
	st.last_ts = h->timestamp_ns;
	st.periods++;
	st.frames += h->frames;
}

/* Takes the records of one read(): a header each, then its frames. */
static void take_records(const unsigned char *p, size_t n)
{
	const size_t hdr = sizeof(struct vdaq_period_header);
	size_t frame_bytes = (size_t)st.width * st.channels;

	while (n >= hdr) {
		struct vdaq_period_header h;

		memcpy(&h, p, hdr);
		if (h.magic != VDAQ_PERIOD_MAGIC || h.bytes > n - hdr ||
		    (__u64)h.frames * frame_bytes != h.bytes) {
			st.bad_records++;
			return;
		}
		take_period(&h, p + hdr);
		p += hdr + h.bytes;
		n -= hdr + h.bytes;
	}
	if (n)
		st.bad_records++;
}

/* Reads every ready period (non-blocking) until EAGAIN; returns how many reads had data. */
static unsigned long drain(void)
{
	unsigned long reads = 0;

	while (!failed) {
		ssize_t n = read(st.fd, st.buf, st.buf_bytes);

		if (n > 0) {
			take_records(st.buf, (size_t)n);
			reads++;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		/* EIO (stalled), ENODEV (gone), or an end of file that should not happen. */
		st.read_errno = n < 0 ? errno : EIO;
		failed = 1;
	}
	return reads;
}

/* SIGRTMIN+1 (and SIGIO, should the realtime queue overflow): drain. Async-signal-safe. */
static void on_signal(int sig, siginfo_t *si, void *ctx)
{
	int saved_errno = errno;

	(void)ctx;
	st.signals++;
	if (sig == SIGIO) {
		/* No siginfo worth checking: the kernel's fallback carries none of ours. */
		st.sigio++;
	} else if (si->si_band & (POLLERR | POLLHUP)) {
		/* kill_fasync(POLL_ERR): the stream stalled; POLL_HUP: the device is gone. The
		 * read() below reports which. */
		st.error_signals++;
	} else if (si->si_fd != st.fd || (si->si_band & (POLLIN | POLLRDNORM)) !=
						 (POLLIN | POLLRDNORM)) {
		st.wrong_fd++;
	}
	if (drain() == 0)
		st.empty_runs++;
	errno = saved_errno;
}

/* A JSON string (the device path is the user's). */
static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
		"usage: %s [-s SECONDS] [-r RATE] [-c CHANNELS] [-f s16|s32] [-p PERIOD_BYTES] "
		"[-n PERIODS] /dev/vdaqN\n"
		"Captures SECONDS (default 3) by SIGRTMIN+1 (F_SETOWN, F_SETSIG, O_ASYNC), checks the\n"
		"counter signal and prints a JSON summary. Exit 0: counter exact; 1: not exact or\n"
		"the capture failed; 2: set-up error.\n",
		argv0);
}

/* A 32-bit unsigned option, or exit 2. */
static unsigned long number(const char *opt, const char *s)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-' || v > 0xffffffffUL) {
		fprintf(stderr, "vdaq-sigio-example: %s: not a number: %s\n", opt, s);
		exit(EXIT_SETUP);
	}
	return v;
}

static int stats_or_zero(int fd, struct vdaq_stats *s)
{
	memset(s, 0, sizeof(*s));
	return ioctl(fd, VDAQ_IOC_STATS, s) == 0;
}

int main(int argc, char **argv)
{
	const char *device, *format_name = NULL;
	double seconds = 3.0, t0, deadline, wall;
	long rate = -1, channels = -1, period_bytes = -1, periods = -1;
	struct vdaq_info info;
	struct vdaq_params p;
	struct vdaq_stats before, after;
	struct sigaction sa;
	sigset_t both;
	siginfo_t si;
	const struct timespec in_flight = { 0, 20 * 1000 * 1000 };
	int opt, flags, exact;
	__u64 frame_bytes, signals_sent;
	unsigned long pending = 0;
	double stream_s, rate_hz;
	char *end;

	while ((opt = getopt(argc, argv, "s:r:c:f:p:n:h")) != -1) {
		switch (opt) {
		case 's':
			seconds = strtod(optarg, &end);
			if (*end || end == optarg || !(seconds > 0 && seconds < 86400)) {
				fprintf(stderr, "vdaq-sigio-example: -s: seconds between 0 and 86400: %s\n",
					optarg);
				return EXIT_SETUP;
			}
			break;
		case 'r': rate = (long)number("-r", optarg); break;
		case 'c': channels = (long)number("-c", optarg); break;
		case 'f':
			if (strcmp(optarg, "s16") && strcmp(optarg, "s32")) {
				fprintf(stderr, "vdaq-sigio-example: -f %s: this example checks the "
						"counter in s16 and s32 only (vdaq capture checks every "
						"format)\n", optarg);
				return EXIT_SETUP;
			}
			format_name = optarg;
			break;
		case 'p': period_bytes = (long)number("-p", optarg); break;
		case 'n': periods = (long)number("-n", optarg); break;
		case 'h': usage(argv[0]); return 0;
		default: usage(argv[0]); return EXIT_SETUP;
		}
	}
	if (optind != argc - 1) {
		usage(argv[0]);
		return EXIT_SETUP;
	}
	device = argv[optind];

	st.fd = open(device, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (st.fd < 0) {
		int e = errno;

		fprintf(stderr, "vdaq-sigio-example: %s: %s%s\n", device, strerror(e),
			e == ENOENT ? " (is vdaq.ko loaded?)" :
			e == EBUSY  ? " (in use: one open file per node)" : "");
		return EXIT_SETUP;
	}
	if (ioctl(st.fd, VDAQ_IOC_INFO, &info) < 0) {
		fprintf(stderr, "vdaq-sigio-example: VDAQ_IOC_INFO: %s (not a vdaq node, or a "
				"vdaq.h other than the driver's?)\n", strerror(errno));
		return EXIT_SETUP;
	}

	/* The node's current parameters, changed by the options. */
	p = info.params;
	memset(p.reserved, 0, sizeof(p.reserved));
	if (rate >= 0)
		p.rate = (__u32)rate;
	if (channels >= 0)
		p.channels = (__u32)channels;
	if (format_name)
		p.format = strcmp(format_name, "s16") ? VIRTIO_SND_PCM_FMT_S32 : VIRTIO_SND_PCM_FMT_S16;
	switch (p.format) {
	case VIRTIO_SND_PCM_FMT_S16: st.width = 2; st.modulus = 1ull << 16; break;
	case VIRTIO_SND_PCM_FMT_S32: st.width = 4; st.modulus = 1ull << 32; break;
	default:
		fprintf(stderr, "vdaq-sigio-example: the node's format is virtio-snd code %u: this "
				"example checks the counter in s16 and s32 only (pass -f s16 or -f s32)\n",
			p.format);
		return EXIT_SETUP;
	}
	if (p.channels == 0 || p.channels > 255) {
		fprintf(stderr, "vdaq-sigio-example: -c %u: 1 to 255 channels\n", p.channels);
		return EXIT_SETUP;
	}
	st.channels = p.channels;
	frame_bytes = (__u64)st.width * st.channels;
	p.period_bytes = period_bytes >= 0 ? (__u32)period_bytes : (__u32)(1024 * frame_bytes);
	if (periods >= 0)
		p.periods = (__u32)periods;
	if (ioctl(st.fd, VDAQ_IOC_SET_PARAMS, &p) < 0) {
		fprintf(stderr, "vdaq-sigio-example: VDAQ_IOC_SET_PARAMS refused %u Hz, %s, %u channels, "
				"%u periods of %u bytes: %s (the node offers %u to %u channels, at most "
				"%u periods of at most %u bytes, formats mask 0x%llx, rates mask 0x%llx)\n",
			p.rate, st.width == 2 ? "s16" : "s32", p.channels, p.periods, p.period_bytes,
			strerror(errno), info.channels_min, info.channels_max, info.max_periods,
			info.max_period_bytes, (unsigned long long)info.formats,
			(unsigned long long)info.rates);
		return EXIT_SETUP;
	}
	st.buf_bytes = (size_t)p.periods * (sizeof(struct vdaq_period_header) + p.period_bytes);
	st.buf = malloc(st.buf_bytes);
	if (!st.buf) {
		fprintf(stderr, "vdaq-sigio-example: no memory for %zu bytes\n", st.buf_bytes);
		return EXIT_SETUP;
	}

	/* The handler, for the realtime signal and for SIGIO; neither interrupts it. */
	rt_signal = SIGRTMIN + 1;
	sigemptyset(&both);
	sigaddset(&both, rt_signal);
	sigaddset(&both, SIGIO);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sa.sa_mask = both;
	if (sigaction(rt_signal, &sa, NULL) < 0 || sigaction(SIGIO, &sa, NULL) < 0) {
		perror("vdaq-sigio-example: sigaction");
		return EXIT_SETUP;
	}
	/* Us as the owner, the signal, then O_ASYNC (fasync joins the driver's list). */
	flags = fcntl(st.fd, F_GETFL);
	if (fcntl(st.fd, F_SETOWN, getpid()) < 0 || fcntl(st.fd, F_SETSIG, rt_signal) < 0 ||
	    flags < 0 || fcntl(st.fd, F_SETFL, flags | O_ASYNC) < 0) {
		perror("vdaq-sigio-example: fcntl (F_SETOWN, F_SETSIG, O_ASYNC)");
		return EXIT_SETUP;
	}
	if (!stats_or_zero(st.fd, &before)) {
		perror("vdaq-sigio-example: VDAQ_IOC_STATS");
		return EXIT_SETUP;
	}

	t0 = now_s();
	if (ioctl(st.fd, VDAQ_IOC_START) < 0) {
		perror("vdaq-sigio-example: VDAQ_IOC_START");
		return EXIT_SETUP;
	}
	/* The main flow's "other work": sleeping, interrupted by the signals. */
	deadline = t0 + seconds;
	while (!failed) {
		double left = deadline - now_s();
		struct timespec nap;

		if (left <= 0)
			break;
		if (left > 0.05)
			left = 0.05;
		nap.tv_sec = 0;
		nap.tv_nsec = (long)(left * 1e9);
		nanosleep(&nap, NULL);
	}
	wall = now_s() - t0;

	/*
	 * The end: block the signals (from here the state is the main flow's), leave the async
	 * list (the driver sends no more), count the signals already queued (waiting 20 ms for any
	 * still on its way), take what is left,
	 * stop. The signals stay blocked: a read() of a stopped stream would start it again.
	 */
	sigprocmask(SIG_BLOCK, &both, NULL);
	flags = fcntl(st.fd, F_GETFL);
	if (flags >= 0)
		fcntl(st.fd, F_SETFL, flags & ~O_ASYNC);
	stats_or_zero(st.fd, &after);
	while (sigtimedwait(&both, &si, &in_flight) > 0)
		pending++;
	if (!failed)
		drain();
	if (ioctl(st.fd, VDAQ_IOC_STOP) < 0 && !failed && st.read_errno == 0) {
		st.read_errno = errno;
		failed = 1;
	}
	signals_sent = after.signals_sent - before.signals_sent;

	stream_s = st.last_ts > st.first_ts ? (double)(st.last_ts - st.first_ts) / 1e9 : 0.0;
	rate_hz = stream_s > 0 ? (double)(st.frames - st.first_frames) / stream_s : 0.0;
	exact = !failed && st.periods > 0 && st.unreported_frames == 0 && st.reorders == 0 &&
		st.corrupt_frames == 0 && st.bad_records == 0 && st.sequence_breaks == 0;

	printf("{\"device\":");
	json_string(device);
	printf(",\"rate\":%u,\"channels\":%u,\"format\":\"%s\","
	       "\"period_bytes\":%u,\"periods_in_ring\":%u,\"seconds\":%.3f,\"wall_seconds\":%.3f,"
	       "\"signal\":\"SIGRTMIN+1\",\"signals\":%lu,\"signals_pending_at_end\":%lu,"
	       "\"signals_sigio\":%lu,\"signals_wrong_fd\":%lu,\"signals_error\":%lu,"
	       "\"handler_runs_empty\":%lu,\"driver_signals_sent\":%llu,"
	       "\"periods\":%lu,\"frames\":%llu,\"stream_seconds\":%.6f,\"rate_hz\":%.1f,"
	       "\"frames_lost_reported\":%llu,\"lost_flags\":%lu,\"error_periods\":%lu,"
	       "\"counter\":{\"first\":%llu,\"gaps\":%lu,\"missing_frames\":%llu,"
	       "\"unreported_frames\":%llu,\"reorders\":%lu,\"corrupt_frames\":%lu},"
	       "\"sequence_breaks\":%lu,\"bad_records\":%lu,\"error\":",
	       p.rate, p.channels, st.width == 2 ? "s16" : "s32", p.period_bytes,
	       p.periods, seconds, wall, st.signals, pending, st.sigio, st.wrong_fd,
	       st.error_signals, st.empty_runs, (unsigned long long)signals_sent, st.periods,
	       (unsigned long long)st.frames, stream_s, rate_hz,
	       (unsigned long long)st.frames_lost_reported, st.lost_flags, st.error_periods,
	       (unsigned long long)st.first_value, st.gaps, (unsigned long long)st.missing_frames,
	       (unsigned long long)st.unreported_frames, st.reorders, st.corrupt_frames,
	       st.sequence_breaks, st.bad_records);
	if (st.read_errno)
		printf("\"%s\"", strerror(st.read_errno));
	else
		printf("null");
	printf(",\"exact\":%s}\n", exact ? "true" : "false");
	return exact ? 0 : EXIT_INEXACT;
}
