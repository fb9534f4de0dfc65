"""Keeps CPUs busy, for the suite's loaded run (`make test-loaded`).

    python -m harness.burner N     # N spinning processes; they end with their parent

Each spinner checks every few milliseconds that the process which started the burner is
still there, so a killed test run leaves no burner behind.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time

from bot.lab.cluster import pid_alive


def spin(owner: int) -> None:
    while pid_alive(owner):
        deadline = time.monotonic() + 0.005
        while time.monotonic() < deadline:
            pass


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else os.cpu_count() or 1
    owner = os.getppid()  # the test run: when it goes, so do the spinners
    spinners = [multiprocessing.Process(target=spin, args=(owner,)) for _ in range(count)]
    for p in spinners:
        p.start()

    def stop(signum: int, frame: object) -> None:
        for p in spinners:
            p.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    for p in spinners:
        p.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
