"""``failover-bot simulate asterisk | asterisk-stop | asterisk-status``: the simulator as a service.

``--daemon --pidfile F`` behaves like a service start: it returns once the AMI
port accepts connections and the pidfile names the running simulator.
``asterisk-stop`` sends SIGTERM (the simulator sends ``Shutdown`` and exits)
or, with ``--kill``, SIGKILL (nothing is sent), and waits until the process is
gone. ``asterisk-status`` exits 0 while it runs and 3 otherwise, like
``systemctl is-active``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ami.simulator import AsteriskSimulator
from bot.commands.base import EXIT_OK, CannotRun, VerbFailed

if TYPE_CHECKING:
    from ami.ari_simulator import AriSimulator

log = logging.getLogger(__name__)

EXIT_NOT_RUNNING = 3
START_TIMEOUT = 10.0
STOP_TIMEOUT = 20.0
# As the lab's real Asterisk stop: no AMI greeting within this means a hung
# Asterisk, which never acts on a stop request, so it is killed at once.
GREETING_TIMEOUT = 2.0


def register_simulate(simsub: argparse._SubParsersAction) -> None:
    p = simsub.add_parser("asterisk", help="an AMI server speaking Asterisk's wire format")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="AMI port")
    p.add_argument("--boot-delay", type=float, default=0.0, metavar="S", help="FullyBooted after S")
    p.add_argument("--spans", type=int, default=2, metavar="N", help="DAHDI spans (0: no DAHDI)")
    p.add_argument("--username", default="failover", help="AMI user")
    p.add_argument("--secret-file", metavar="F", help="file with the AMI secret")
    p.add_argument(
        "--write",
        metavar="CLASSES",
        help="the user's manager.conf write classes, e.g. originate,reporting (default: all)",
    )
    p.add_argument(
        "--read",
        metavar="CLASSES",
        help="the user's manager.conf read classes, e.g. system,call (default: all)",
    )
    p.add_argument("--control-port", type=int, metavar="C", help="JSON-lines control port")
    p.add_argument(
        "--ari-port",
        type=int,
        metavar="P",
        help="also serve ARI (the ARI simulator) on this port, living and dying with this "
        "Asterisk; control commands ari_stall, ari_unstall",
    )
    p.add_argument("--ari-username", default="failover", help="ARI user")
    p.add_argument("--ari-password-file", metavar="F", help="file with the ARI password")
    p.add_argument(
        "--report-alarms",
        choices=["all", "spans", "channels", "none"],
        default="all",
        help="chan_dahdi reportalarms: which alarm events are sent (default all)",
    )
    p.add_argument(
        "--sip-port",
        type=int,
        metavar="P",
        help="also listen on TCP port P from FullyBooted on (connections are answered and closed)",
    )
    p.add_argument(
        "--sip-netns", metavar="NS", help="open the --sip-port listener in network namespace NS"
    )
    p.add_argument(
        "--stop-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="on SIGTERM, go on serving S seconds before stopping (a graceful stop)",
    )
    p.add_argument("--daemon", action="store_true", help="run in the background (needs --pidfile)")
    p.add_argument("--pidfile", metavar="F", help="write the process id here")
    p.add_argument("--record", metavar="FILE", help="append lifetime events as JSON lines")
    p.add_argument(
        "--dialplan-file",
        metavar="FILE",
        help='JSON {"context": {"exten": "answer|busy|congestion|noanswer|fail"}} read at '
        "each call, over the built-in test dialplan (a dialplan both lab nodes share)",
    )
    p.set_defaults(handler=_run)

    s = simsub.add_parser("asterisk-stop", help="stop a daemonised simulator")
    s.add_argument("--pidfile", required=True, metavar="F")
    s.add_argument("--kill", action="store_true", help="SIGKILL: nothing is sent")
    s.set_defaults(handler=_stop)

    q = simsub.add_parser("asterisk-status", help="exit 0 if the simulator runs, 3 if not")
    q.add_argument("--pidfile", required=True, metavar="F")
    q.set_defaults(handler=_status)


def _read_secret(path: str | None) -> str:
    if path is None:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CannotRun(f"--secret-file {path}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace) -> int:
    secret = _read_secret(args.secret_file)
    if args.ari_port is not None:
        # Before the fork, so the daemon's ports open without waiting on this import.
        import ami.ari_simulator  # noqa: F401
    if args.daemon:
        if not args.pidfile:
            raise CannotRun("--daemon needs --pidfile")
        return _daemonise(args)
    return asyncio.run(_serve(args, secret))


def _daemonise(args: argparse.Namespace) -> int:
    if _running_pid(args.pidfile) is not None:
        return EXIT_OK  # already running: starting is idempotent
    with contextlib.suppress(FileNotFoundError):
        os.unlink(args.pidfile)
    # Fork rather than exec a new interpreter: everything is imported already, so the
    # "service" is up in milliseconds (no event loop runs yet in this process).
    pid = os.fork()
    if pid == 0:  # the daemon
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            code = asyncio.run(_serve(args, _read_secret(args.secret_file)))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise CannotRun(f"simulator exited at start with status {status}")
        if _pid_in(args.pidfile) == pid and _port_open(args.host, args.port):
            return EXIT_OK
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    raise CannotRun(f"simulator did not listen on {args.host}:{args.port} in {START_TIMEOUT:g} s")


async def _serve(args: argparse.Namespace, secret: str) -> int:
    sim = AsteriskSimulator(
        host=args.host,
        port=args.port,
        username=args.username,
        secret=secret,
        boot_delay=args.boot_delay,
        spans=args.spans,
        control_port=args.control_port,
        record=Path(args.record) if args.record else None,
        report_alarms=args.report_alarms,
        write=args.write.split(",") if args.write else None,
        sip_listen=_sip_listener(args.sip_port, args.sip_netns) if args.sip_port else None,
        read=args.read.split(",") if args.read else None,
        dialplan_file=Path(args.dialplan_file) if args.dialplan_file else None,
    )
    ari: AriSimulator | None = None
    if args.ari_port is not None:
        # Imported here: the status and stop verbs run on the failover path, where the
        # import of aiohttp would cost them hundreds of milliseconds.
        from ami.ari_simulator import AriSimulator

        server = AriSimulator(
            args.host, args.ari_port, args.ari_username, _read_secret(args.ari_password_file)
        )
        sim.commands["ari_stall"] = lambda cmd: _ari_stall(server, True)
        sim.commands["ari_unstall"] = lambda cmd: _ari_stall(server, False)
        ari = server
    try:
        if ari is not None:
            await ari.start()
        await sim.start()
    except OSError as exc:
        if ari is not None:
            await ari.stop()
        raise CannotRun(f"cannot listen: {exc.strerror or exc}") from None
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    async def stop_after(delay: float) -> None:
        # A real Asterisk's `core stop gracefully` waits for its calls to end.
        if delay > 0:
            await asyncio.sleep(delay)
        await sim.shutdown(restart=False)

    def on_term() -> None:
        if sim.stalled:
            # A hung Asterisk does not act on SIGTERM either (a real SIGSTOP'd one
            # does not even see it); only SIGKILL ends it.
            log.warning("stalled: SIGTERM ignored")
            return
        task = loop.create_task(stop_after(args.stop_delay))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.add_signal_handler(signal.SIGINT, on_term)
    if args.pidfile:
        _write_pidfile(args.pidfile)
    log.info("simulated Asterisk on %s:%d (control %s)", args.host, sim.port, sim.control_port)
    try:
        await sim.stopped.wait()
    finally:
        if ari is not None:
            await ari.stop()
        if args.pidfile and _pid_in(args.pidfile) == os.getpid():
            with contextlib.suppress(OSError):
                os.unlink(args.pidfile)
    return EXIT_OK


def _ari_stall(ari: AriSimulator, on: bool) -> dict[str, bool]:
    """A hung ARI: requests held unanswered (on), or answered again (off)."""
    ari.stall(on)
    return {"ari_stalled": on}


def _sip_listener(port: int, netns: str | None) -> Callable[[], socket.socket]:
    def make() -> socket.socket:
        if netns:
            from bot.lab.netns import socket_in

            sock = socket_in(netns)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        return sock

    return make


def _write_pidfile(path: str) -> None:
    tmp = f"{path}.tmp"
    Path(tmp).write_text(f"{os.getpid()}\n", encoding="utf-8")
    os.replace(tmp, path)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _pid_in(pidfile: str) -> int | None:
    try:
        return int(Path(pidfile).read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """Running and ours (a zombie or a reused pid does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and b"simulate" in cmdline


def _running_pid(pidfile: str) -> int | None:
    pid = _pid_in(pidfile)
    return pid if pid is not None and _alive(pid) else None


def _stop(args: argparse.Namespace) -> int:
    pid = _running_pid(args.pidfile)
    if pid is None:
        return EXIT_OK
    kill = args.kill
    port = _port_of(pid)
    if not kill and port is not None and not _greets(port):
        log.warning("simulator %d does not greet on AMI port %d: killing it", pid, port)
        kill = True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid):
        if time.monotonic() > deadline:
            raise VerbFailed(f"simulator {pid} still running {STOP_TIMEOUT:g} s after the signal")
        time.sleep(0.01)
    if args.kill:
        with contextlib.suppress(OSError):
            os.unlink(args.pidfile)
    return EXIT_OK


def _port_of(pid: int) -> int | None:
    """The AMI port from the simulator's own command line."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except (OSError, UnicodeDecodeError):
        return None
    if "--port" in argv[:-1]:
        value = argv[argv.index("--port") + 1]
        return int(value) if value.isdigit() else None
    return None


def _greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=GREETING_TIMEOUT) as sock:
            sock.settimeout(GREETING_TIMEOUT)
            return sock.recv(64).startswith(b"Asterisk Call Manager/")
    except OSError:
        return False


def _status(args: argparse.Namespace) -> int:
    pid = _running_pid(args.pidfile)
    if pid is None:
        print("not running")
        return EXIT_NOT_RUNNING
    print(f"running (pid {pid})")
    return EXIT_OK
