"""The lab's ``[asterisk] status`` command: exit 0 while the process a pidfile names runs,
3 otherwise, as ``systemctl is-active`` does.

    python3 -IS pidstatus.py PIDFILE NAME

The bots probe it every second, so it runs as a bare script (no package, no site, no
imports beyond the interpreter's own): a full ``failover-bot`` start for each probe
cost the lab more CPU than the bots themselves. A process counts when it is neither a
zombie nor a reused pid: its executable or command line names NAME.
"""

import os
import sys

EXIT_NOT_RUNNING = 3


def running(pidfile: str, name: str) -> bool:
    try:
        with open(pidfile, encoding="utf-8") as fh:
            pid = int(fh.read().strip())
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmdline = fh.read()
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except (OSError, ValueError, IndexError):
        return False
    return state not in ("Z", "X") and (exe.startswith(name) or name.encode() in cmdline)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: pidstatus.py PIDFILE NAME", file=sys.stderr)
        return 2
    if running(argv[0], argv[1]):
        print("running")
        return 0
    print("not running")
    return EXIT_NOT_RUNNING


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
