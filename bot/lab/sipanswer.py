"""The lab's real Asterisk, seen from a caller's side: TCP on VIP:5060 while it serves.

The lab runs a real Asterisk in the host's network namespace (its AMI and HTTP on
loopback, where the bot reaches them) and it has no SIP channel driver here, so
nothing of it answers on the floating address in the node's namespace. This
companion does: it listens on ``--port`` in ``--netns`` while Asterisk's own HTTP
server (``--ready-port`` on loopback, up late in its start) accepts connections,
closes the listener when that stops, and exits when the Asterisk process
(``--pid``) ends. The client probe of the benchmark then sees "answered" when the
new primary's Asterisk serves, as with the simulated one (``--sip-port``).

    python -m bot.lab.sipanswer --netns fb-a-1 --port 5060 --pid 1234 --ready-port 8088
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket
import time

from bot.lab.cluster import pid_alive
from bot.lab.netns import socket_in

POLL = 0.01  # the answer follows Asterisk's HTTP server within this much


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=POLL):
            return True
    except OSError:
        return False


def _listen(netns: str, port: int) -> socket.socket:
    sock = socket_in(netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _close_pending(sock: socket.socket) -> None:
    """Accept and close what the kernel has handshaken: the probe only needs the handshake."""
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.close()


def serve(netns: str, port: int, pid: int, ready_port: int) -> None:
    listener: socket.socket | None = None
    try:
        while pid_alive(pid):
            ready = _answers(ready_port)
            if ready and listener is None:
                listener = _listen(netns, port)
            elif not ready and listener is not None:
                listener.close()
                listener = None
            if listener is not None:
                readable, _, _ = select.select([listener], [], [], POLL)
                if readable:
                    _close_pending(listener)
            else:
                time.sleep(POLL)
    finally:
        if listener is not None:
            listener.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bot.lab.sipanswer", description=__doc__)
    p.add_argument("--netns", required=True, help="the node's network namespace")
    p.add_argument("--port", type=int, default=5060)
    p.add_argument("--pid", type=int, required=True, help="the Asterisk process to follow")
    p.add_argument("--ready-port", type=int, required=True, help="Asterisk's HTTP port")
    args = p.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.netns, args.port, args.pid, args.ready_port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
