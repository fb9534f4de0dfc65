"""The client's view of a floating address: what a caller's device sees.

Every ``period`` (10 ms) a thread in the client's namespace reads its neighbour
(ARP) entry for the floating address over netlink, and opens a new TCP
connection to ``VIP:port`` (5060, SIP over TCP), closing any attempt still
unanswered from the tick before.  Each sample is ``(monotonic time, MAC or None,
outcome)`` with outcome ``"answered"`` (handshake done), ``"refused"`` (a host
holds the address but nothing listens) or ``None`` (no answer yet).

``moved(t0, mac)`` is the first sample at or after ``t0`` whose neighbour entry
names ``mac`` (the new holder); ``answered(t0)`` the first completed handshake.

    with ClientProbe(topology.ns("client"), "192.0.2.100") as probe:
        t0 = time.monotonic(); ...fault...
        probe.wait_moved(t0, new_mac, within=10)
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass

from bot.lab.netns import CLONE_NEWNET, NETNS_DIR, NLMSG_HDR, RTATTR, _align

RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NDMSG = struct.Struct("=BBHiHBB")
NDA_DST, NDA_LLADDR = 1, 2
# Neighbour states whose link-layer address is in use (not INCOMPLETE/FAILED/NOARP).
NUD_INCOMPLETE, NUD_FAILED = 0x01, 0x20
USABLE = ~(NUD_INCOMPLETE | NUD_FAILED) & 0xFF


def parse_neigh_dump(data: bytes) -> tuple[dict[str, tuple[str, int]], bool]:
    """IPv4 neighbour entries ``{address: (mac, state)}`` in a netlink dump part; True when done."""
    found: dict[str, tuple[str, int]] = {}
    offset = 0
    while offset + NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, offset)
        if length < NLMSG_HDR.size:
            break
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, offset + NLMSG_HDR.size)
            raise OSError(-code, f"netlink error {os.strerror(-code)}")
        if kind == RTM_NEWNEIGH:
            body = offset + NLMSG_HDR.size
            family, _p1, _p2, _index, state, _flags, _type = NDMSG.unpack_from(data, body)
            attr = body + NDMSG.size
            dst = mac = None
            while attr + RTATTR.size <= offset + length:
                alen, atype = RTATTR.unpack_from(data, attr)
                if alen < RTATTR.size:
                    break
                value = data[attr + RTATTR.size : attr + alen]
                if atype == NDA_DST and family == socket.AF_INET and len(value) == 4:
                    dst = socket.inet_ntoa(value)
                elif atype == NDA_LLADDR and len(value) == 6:
                    mac = ":".join(f"{b:02x}" for b in value)
                attr += _align(alen)
            if dst is not None:
                found[dst] = (mac or "", state)
        offset += _align(length)
    return found, False


def enter_netns(ns: str) -> None:
    """Move the calling thread (only it) into namespace ``ns``: the probe's own thread
    does this once, so every socket it opens afterwards is the client's."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(NETNS_DIR / ns) as target:
        if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {ns}: {os.strerror(err)}")


class NeighbourReader:
    """The thread's namespace's neighbour table over netlink (no process per read)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.settimeout(1.0)
        self._seq = 0

    def mac_of(self, address: str) -> str | None:
        """The MAC the namespace would send to for ``address`` now, or None."""
        self._seq += 1
        header = NLMSG_HDR.pack(
            NLMSG_HDR.size + NDMSG.size, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, self._seq, 0
        )
        self._sock.send(header + NDMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0))
        entries: dict[str, tuple[str, int]] = {}
        while True:
            part, done = parse_neigh_dump(self._sock.recv(65536))
            entries.update(part)
            if done:
                break
        mac, state = entries.get(address, ("", 0))
        return mac if mac and state & USABLE else None

    def close(self) -> None:
        self._sock.close()


@dataclass(frozen=True)
class Sample:
    t: float
    mac: str | None
    outcome: str | None


class ClientProbe:
    def __init__(self, ns: str, address: str, port: int = 5060, period: float = 0.01):
        self.ns = ns
        self.address = address
        self.port = port
        self.period = period
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._pending: socket.socket | None = None

    def __enter__(self) -> ClientProbe:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ClientProbe:
        self._thread = threading.Thread(target=self._main, name="client-probe", daemon=True)
        self._thread.start()
        self._started.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    # ------------------------------------------------------------------ sampling

    def _main(self) -> None:
        try:
            enter_netns(self.ns)
            neigh = NeighbourReader()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            self._run(neigh)
        finally:
            self._drop_pending()
            neigh.close()

    def _run(self, neigh: NeighbourReader) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            outcome = self._connect_tick(next_tick + self.period)
            now = time.monotonic()
            try:
                mac = neigh.mac_of(self.address)
            except OSError:
                mac = None
            with self._lock:
                self.samples.append(Sample(now, mac, outcome))
            next_tick += self.period
            if next_tick < now:  # fell behind (a loaded machine): skip, do not burst
                next_tick = now
            self._stop.wait(max(0.0, next_tick - time.monotonic()))

    def _connect_tick(self, until: float) -> str | None:
        """Open a fresh connection (dropping the last unanswered one) and wait for it
        until ``until``: a SYN lost to a dead holder must not hide a live one."""
        self._drop_pending()
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError:
            return None
        sock.setblocking(False)
        code = sock.connect_ex((self.address, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return "refused" if code == errno.ECONNREFUSED else None
        self._pending = sock
        _, writable, _ = select.select([], [sock], [], max(0.0, until - time.monotonic()))
        if not writable:
            return None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._drop_pending()
        if err == 0:
            return "answered"
        return "refused" if err == errno.ECONNREFUSED else None

    def _drop_pending(self) -> None:
        if self._pending is not None:
            self._pending.close()
            self._pending = None

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> list[Sample]:
        with self._lock:
            return list(self.samples)

    def moved(self, t0: float, mac: str) -> float | None:
        """Seconds from ``t0`` until the client's neighbour entry first named ``mac``."""
        mac = mac.lower()
        for s in self.snapshot():
            if s.t >= t0 and s.mac == mac:
                return s.t - t0
        return None

    def answered(self, t0: float, mac: str = "") -> float | None:
        """Seconds from ``t0`` until the first TCP handshake on VIP:port completed (with
        ``mac``: while the client's neighbour entry named that node, so that the old
        holder's last answers in the instant of its death do not count)."""
        mac = mac.lower()
        for s in self.snapshot():
            if s.t >= t0 and s.outcome == "answered" and (not mac or s.mac == mac):
                return s.t - t0
        return None

    def wait(self, what: str, t0: float, within: float, mac: str = "") -> float:
        deadline = time.monotonic() + within
        while True:
            got = self.moved(t0, mac) if what == "moved" else self.answered(t0, mac)
            if got is not None:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"the client probe saw no {what} within {within:g} s")
            time.sleep(0.02)
