#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""A vhost-user relay that hides VIRTIO_RING_F_EVENT_IDX from the frontend (for the P6 peer).

    ci/peer/vhost-user-no-event-idx.py LISTEN_SOCKET BACKEND_SOCKET

Waits for BACKEND_SOCKET (the backend listens there), then listens on LISTEN_SOCKET, takes one
frontend connection (QEMU), connects to the backend and relays vhost-user messages both ways,
file descriptors included (SCM_RIGHTS), clearing feature bit 29 (EVENT_IDX) in the backend's
reply to GET_FEATURES. Only the vhost-user set-up messages pass through here: the rings are in
shared memory and the kick and call eventfds go straight to the backend, so the data path is
untouched. Ends when either side closes.

Why: vhost-device-sound 0.3.0 (vhost-user-backend 0.20) can start with its one queue thread
spinning forever on the event queue. QEMU hands each queue a kick eventfd that is already
signalled; if that thread reads the event queue's kick only after QEMU enabled the ring, it
calls the event handler, which takes none of the buffers Linux posted there, and with EVENT_IDX
the loop around it repeats while buffers are pending: the control queue is never served and
virtio_snd's probe times out ("control message (0x00000100) timeout"). Without EVENT_IDX the
handler runs once per kick. QEMU's vhost-user-snd-pci passes the backend's features through
(its event_idx property has no effect), hence this relay.
"""

import os
import select
import socket
import struct
import sys
import time

GET_FEATURES = 1
REPLY_FLAG = 0x4
EVENT_IDX = 1 << 29
HEADER = struct.Struct("<III")  # request, flags, payload size
MAX_FDS = 8


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def recv_message(sock):
    """One vhost-user message (header, payload, fds), or None when the peer closed."""
    header, fds, _, _ = socket.recv_fds(sock, HEADER.size, MAX_FDS)
    if not header:
        return None
    if len(header) < HEADER.size:
        rest = recv_exact(sock, HEADER.size - len(header))
        if rest is None:
            return None
        header += rest
    request, flags, size = HEADER.unpack(header)
    payload = recv_exact(sock, size) if size else b""
    if payload is None:
        return None
    return request, flags, payload, fds


def send_message(sock, request, flags, payload, fds):
    data = HEADER.pack(request, flags, len(payload)) + payload
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)
    for fd in fds:
        os.close(fd)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.split("\n\n")[1])
    listen_path, backend_path = sys.argv[1:]
    for _ in range(300):
        if os.path.exists(backend_path):
            break
        time.sleep(0.1)
    else:
        sys.exit(f"vhost-user relay: no backend socket at {backend_path}")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(1)
    frontend, _ = server.accept()
    server.close()
    os.unlink(listen_path)
    backend = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    backend.connect(backend_path)
    print("vhost-user relay: connected; EVENT_IDX hidden from the frontend", file=sys.stderr, flush=True)
    other = {frontend: backend, backend: frontend}
    while True:
        ready, _, _ = select.select([frontend, backend], [], [])
        for sock in ready:
            message = recv_message(sock)
            if message is None:
                return 0
            request, flags, payload, fds = message
            if sock is backend and request == GET_FEATURES and flags & REPLY_FLAG and len(payload) == 8:
                (features,) = struct.unpack("<Q", payload)
                payload = struct.pack("<Q", features & ~EVENT_IDX)
            send_message(other[sock], request, flags, payload, fds)


if __name__ == "__main__":
    sys.exit(main())
