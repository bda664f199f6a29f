#!/usr/bin/env python3
"""A delay line for kernels without netem: hold every packet of an NFQUEUE queue for a fixed time.

    python3 bench/delayline.py --queue 94 --delay-ms 25

iptables rules send the packets to be delayed to queue 94 (`-j NFQUEUE --queue-num 94 --queue-bypass`);
this process binds the queue over nfnetlink (pure Python, no library), notes each packet's id as it
arrives, and accepts it `delay_ms` later. The kernel keeps the packets, in order; the verdicts are
batched (NFQNL_MSG_VERDICT_BATCH accepts every id up to the given one), so a notification lost to a full
socket buffer still gets its packet released on time. If this process dies, `--queue-bypass` lets
packets through undelayed, so the benchmark checks that it is alive after every run.

The bench uses it when `tc qdisc ... netem` is not available (Linux built without CONFIG_NET_SCH_NETEM).
"""

from __future__ import annotations

import argparse
import collections
import errno
import os
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_FAIL_OPEN = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
NF_ACCEPT = 1


def _attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def _message(msg: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + attrs
    return struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg, flags, seq, 0) + body


class DelayLine:
    def __init__(self, queue: int, delay: float, maxlen: int = 20000) -> None:
        self.queue, self.delay = queue, delay
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:   # room for a burst of notifications (root may exceed rmem_max)
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)   # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self._request(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_UNSPEC)))
        self._request(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
                      + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
                      + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
                      + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)))
        self.sock.setblocking(False)
        self.pending: collections.deque[tuple[float, int]] = collections.deque()
        self.packets = 0

    def _request(self, attrs: bytes) -> None:
        """Send one config message and raise OSError when the kernel's ack carries an error."""
        self.sock.send(_message(NFQNL_MSG_CONFIG, self.queue, attrs, NLM_F_REQUEST | NLM_F_ACK, seq=1))
        data = self.sock.recv(65536)
        _, kind, _, _, _ = struct.unpack_from("=IHHII", data)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, 16)
            if code:
                raise OSError(-code, f"nfqueue config of queue {self.queue}: {os.strerror(-code)}")

    def _receive(self) -> None:
        now = time.monotonic()
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:   # notifications lost; their packets go with the next batch
                    continue
                raise
            offset = 0
            while offset + 16 <= len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, offset)
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    packet_id = self._packet_id(data[offset + 20:offset + length])
                    if packet_id is not None:
                        self.pending.append((now + self.delay, packet_id))
                        self.packets += 1
                offset += (length + 3) & ~3

    @staticmethod
    def _packet_id(attrs: bytes) -> int | None:
        offset = 0
        while offset + 4 <= len(attrs):
            length, kind = struct.unpack_from("=HH", attrs, offset)
            if kind & 0x7FFF == NFQA_PACKET_HDR:
                return int(struct.unpack_from("!I", attrs, offset + 4)[0])
            offset += (length + 3) & ~3
        return None

    def _release(self) -> None:
        now, last = time.monotonic(), None
        while self.pending and self.pending[0][0] <= now:
            last = self.pending.popleft()[1]
        if last is not None:
            verdict = _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last))
            self.sock.send(_message(NFQNL_MSG_VERDICT_BATCH, self.queue, verdict))

    def run(self) -> None:
        while True:
            wait = max(0.0, self.pending[0][0] - time.monotonic()) if self.pending else 1.0
            readable, _, _ = select.select([self.sock], [], [], wait)
            if readable:
                self._receive()
            self._release()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--ready", help="write this file once the queue is bound")
    args = parser.parse_args()
    line = DelayLine(args.queue, args.delay_ms / 1000)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.ready:
        with open(args.ready, "w") as fh:
            fh.write(f"{os.getpid()}\n")
    try:
        line.run()
    finally:
        print(f"delayline: {line.packets} packets delayed {args.delay_ms} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
