#!/usr/bin/python3 -IS
"""Stateful stand-ins for commands that cannot run here (DRBD, mount, systemd, ip, arping).

One script, invoked through symlinks in ``bin/`` named after the command it
plays: ``drbdadm``, ``drbdsetup``, ``mount``, ``umount``, ``mountpoint``,
``fuser``, ``ip``, ``arping``, ``fake-service``. Every call is appended as one JSON line
to ``$FAKE_STATE_DIR/calls.jsonl``; state is kept as JSON in that directory
(DRBD's in ``$FAKE_DRBD_DIR/drbd.json``, so that two nodes can share it; this
node is ``$FAKE_NODE``). ``faults.json`` injects failures: a key such as
``"drbdadm primary"`` (matched against the command and its non-option words)
maps to ``{"exit": N, "stderr": "...", "sleep": S, "child": true, "times": K}``.

The DRBD fake behaves as DRBD does where the bot depends on it: ``primary`` is
refused while the peer is primary and connected, or without UpToDate data
(unless ``--force``); ``secondary`` is refused while the device is mounted
or held open; without the kernel module (``"module": false``) every command exits 20.

A busy mount (``busy.json``: mount path -> number of processes using it) cannot be
unmounted ("target is busy"); ``umount -l`` detaches it, but its device stays held
open until ``fuser -k -m PATH`` has ended the processes, as on Linux.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

STATE = os.environ.get("FAKE_STATE_DIR", "")
DRBD_DIR = os.environ.get("FAKE_DRBD_DIR", STATE)
NODE = os.environ.get("FAKE_NODE", "local")


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    sys.stderr.write(text + "\n")


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    with open(os.path.join(directory, ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load(directory: str, name: str, default: Any) -> Any:
    try:
        with open(os.path.join(directory, name)) as fh:
            return json.load(fh)
    except FileNotFoundError:
        return default


def save(directory: str, name: str, data: Any) -> None:
    path = os.path.join(directory, name)
    with open(path + ".tmp", "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def record(cmd: str, argv: list[str], **extra: Any) -> None:
    line = json.dumps(
        {"t": time.monotonic(), "cmd": cmd, "argv": argv, "pid": os.getpid(), **extra}
    )
    fd = os.open(os.path.join(STATE, "calls.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def words(cmd: str, argv: list[str]) -> str:
    return " ".join([cmd, *[a for a in argv if not a.startswith("-")]])


def apply_fault(cmd: str, argv: list[str]) -> None:
    key_text = words(cmd, argv)
    with locked(STATE):
        faults = load(STATE, "faults.json", {})
        match = next((k for k in faults if key_text == k or key_text.startswith(k + " ")), None)
        if match is None:
            return
        fault = dict(faults[match])
        if "times" in fault:
            faults[match]["times"] -= 1
            if faults[match]["times"] <= 0:
                del faults[match]
            save(STATE, "faults.json", faults)
    if fault.get("child"):
        import subprocess  # only here: keeps the common path's start-up fast

        child = subprocess.Popen(["sleep", "300"])
        record(cmd, argv, child_pid=child.pid, event="child")
    if fault.get("sleep"):
        time.sleep(float(fault["sleep"]))
    if "exit" in fault:
        if fault.get("stderr"):
            err(fault["stderr"])
        sys.exit(int(fault["exit"]))


# --------------------------------------------------------------------------- DRBD


def drbd_state() -> dict[str, Any]:
    names = os.environ.get("FAKE_DRBD_RESOURCES", "r0").split(",")
    default = {
        "module": True,
        "version": 9,
        "resources": {
            n: {
                "connected": True,
                "nodes": {
                    NODE: {"role": "Secondary", "disk": "UpToDate"},
                    "peer": {"role": "Secondary", "disk": "UpToDate"},
                },
            }
            for n in names
        },
    }
    return load(DRBD_DIR, "drbd.json", default)  # type: ignore[no-any-return]


def peers_of(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in res["nodes"].items() if k != NODE]


def module_missing(tool: str) -> int:
    err("Could not connect to 'drbd' generic netlink family")
    err(f"{tool}: DRBD kernel module is not loaded")
    return 20


def drbdadm(argv: list[str]) -> int:
    args = list(argv)
    if args[:1] == ["-c"]:
        args = args[2:]
    force = "--force" in args
    args = [a for a in args if not a.startswith("-")]
    if len(args) != 2:
        err("USAGE: drbdadm COMMAND [OPTION...] {all|RESOURCE...}")
        return 1
    verb, name = args
    with locked(DRBD_DIR):
        state = drbd_state()
        if not state.get("module", True):
            return module_missing("drbdadm")
        res = state["resources"].get(name)
        if res is None:
            err(f"'{name}' not defined in your config (for this host).")
            return 10
        me = res["nodes"][NODE]
        peers = peers_of(res)
        connected = res.get("connected", True)
        if verb == "role":
            peer = peers[0]["role"] if peers and connected else "Unknown"
            out(f"{me['role']}/{peer}")
        elif verb == "dstate":
            peer = peers[0]["disk"] if peers and connected else "DUnknown"
            out(f"{me['disk']}/{peer}")
        elif verb == "cstate":
            out("Connected" if connected else "WFConnection")
        elif verb == "primary":
            if connected and any(p["role"] == "Primary" for p in peers):
                err(f"{name}: State change failed: (-1) Multiple primaries not allowed by config")
                return 11
            if me["disk"] != "UpToDate" and not force:
                err(f"{name}: State change failed: (-2) Need access to UpToDate data")
                return 11
            me["role"] = "Primary"
            if force:
                me["disk"] = "UpToDate"
        elif verb == "secondary":
            mounts = load(STATE, "mounts.json", {})
            held = load(STATE, "held.json", {})
            if res.get("device") and res["device"] in [*mounts.values(), *held.values()]:
                err(f"{name}: State change failed: (-12) Device is held open by someone")
                return 11
            me["role"] = "Secondary"
        elif verb == "outdate":
            if me["role"] == "Primary":
                err(f"{name}: State change failed: (-2) Refusing to outdate a primary")
                return 11
            me["disk"] = "Outdated"
        else:
            err(f"drbdadm: unknown command '{verb}'")
            return 1
        save(DRBD_DIR, "drbd.json", state)
    return 0


def drbdsetup(argv: list[str]) -> int:
    with locked(DRBD_DIR):
        state = drbd_state()
    if not state.get("module", True):
        return module_missing("drbdsetup")
    if argv[:1] != ["status"]:
        err("drbdsetup: only 'status' is simulated")
        return 1
    if state.get("version", 9) < 9:
        err("drbdsetup: unrecognized option '--json'")
        return 20 if "--json" not in argv else 1
    names = [a for a in argv[1:] if not a.startswith("-")] or list(state["resources"])
    result = []
    for name in names:
        res = state["resources"].get(name)
        if res is None:
            err(f"{name}: No such resource")
            return 10
        me = res["nodes"][NODE]
        conns = []
        for i, peer in enumerate(peers_of(res)):
            conns.append(
                {
                    "peer-node-id": i + 1,
                    "name": f"peer{i}",
                    "connection-state": "Connected" if res.get("connected", True) else "Connecting",
                    "peer-role": peer["role"] if res.get("connected", True) else "Unknown",
                    "peer_devices": [
                        {
                            "volume": 0,
                            "replication-state": "Established",
                            "peer-disk-state": peer["disk"]
                            if res.get("connected", True)
                            else "DUnknown",
                        }
                    ],
                }
            )
        result.append(
            {
                "name": name,
                "node-id": 0,
                "role": me["role"],
                "suspended": False,
                "devices": [{"volume": 0, "minor": 0, "disk-state": me["disk"]}],
                "connections": conns,
            }
        )
    out(json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------- mounts


def device_role(device: str) -> str | None:
    state = drbd_state()
    for res in state["resources"].values():
        if res.get("device") == device:
            return str(res["nodes"][NODE]["role"])
    return None


def mount(argv: list[str]) -> int:
    positional = []
    i = 0
    while i < len(argv):
        if argv[i] in ("-t", "-o"):
            i += 2
            continue
        positional.append(argv[i])
        i += 1
    if len(positional) != 2:
        err("mount: bad usage")
        return 1
    device, path = positional
    with locked(STATE):
        mounts = load(STATE, "mounts.json", {})
        if path in mounts:
            err(f"mount: {path}: {mounts[path]} already mounted on {path}.")
            return 32
        if device_role(device) not in (None, "Primary"):
            err(f"mount: {path}: wrong medium type.")
            return 32
        mounts[path] = device
        save(STATE, "mounts.json", mounts)
    return 0


def umount(argv: list[str]) -> int:
    paths = [a for a in argv if not a.startswith("-")]
    lazy = "-l" in argv
    with locked(STATE):
        mounts = load(STATE, "mounts.json", {})
        busy = load(STATE, "busy.json", {})
        held = load(STATE, "held.json", {})
        for path in paths:
            if path not in mounts:
                err(f"umount: {path}: not mounted.")
                return 32
            if busy.get(path) and not lazy:
                err(f"umount: {path}: target is busy.")
                return 32
            if busy.get(path):
                held[path] = mounts[path]  # detached, but its users keep the device open
            del mounts[path]
        save(STATE, "mounts.json", mounts)
        save(STATE, "held.json", held)
    return 0


def fuser(argv: list[str]) -> int:
    """``fuser -k -m PATH`` (or ``-km``): end the processes using the file system."""
    flags = "".join(a[1:] for a in argv if a.startswith("-") and not a.startswith("--"))
    paths = [a for a in argv if not a.startswith("-")]
    killed = 0
    with locked(STATE):
        busy = load(STATE, "busy.json", {})
        held = load(STATE, "held.json", {})
        for path in paths:
            users = int(busy.get(path, 0))
            if users and "k" in flags:
                busy.pop(path, None)
                held.pop(path, None)
            killed += users
        save(STATE, "busy.json", busy)
        save(STATE, "held.json", held)
    if "k" in flags and killed:
        out(" ".join(str(90000 + i) for i in range(killed)))
    return 0 if killed else 1


def mountpoint(argv: list[str]) -> int:
    paths = [a for a in argv if not a.startswith("-")]
    mounts = load(STATE, "mounts.json", {})
    if paths and paths[0] in mounts:
        if "-q" not in argv:
            out(f"{paths[0]} is a mountpoint")
        return 0
    if "-q" not in argv:
        out(f"{paths[0] if paths else '?'} is not a mountpoint")
    return 32


# --------------------------------------------------------------------------- ip, arping


def ip(argv: list[str]) -> int:
    if argv[:2] == ["netns", "exec"] and len(argv) > 3:
        os.environ["FAKE_NETNS"] = argv[2]
        os.execvp(argv[3], argv[3:])
    ns = os.environ.get("FAKE_NETNS", "")
    args = [a for a in argv if a not in ("-o", "-4", "-6")]
    opts = dict(zip(args[3::2], args[4::2], strict=False)) if len(args) > 3 else {}
    with locked(STATE):
        state = load(STATE, "ip.json", {})
        table = state.setdefault(ns, {})
        if args[:3] == ["addr", "show", "dev"] and len(args) >= 4:
            dev = args[3]
            if dev in state.get("missing", []):
                err(f'Device "{dev}" does not exist.')
                return 1
            for addr, label in table.get(dev, {}).items():
                out(
                    f"2: {dev}    inet {addr} scope global {label}\\"
                    "       valid_lft forever preferred_lft forever"
                )
            return 0
        if args[:2] in (["addr", "add"], ["addr", "del"]) and len(args) >= 5:
            addr = args[2]
            opts = dict(zip(args[3::2], args[4::2], strict=False))
            dev = opts.get("dev", "")
            addrs = table.setdefault(dev, {})
            if args[1] == "add":
                if addr in addrs:
                    err("RTNETLINK answers: File exists")
                    return 2
                addrs[addr] = opts.get("label", dev)
            else:
                if addr not in addrs:
                    err("RTNETLINK answers: Cannot assign requested address")
                    return 2
                del addrs[addr]
            save(STATE, "ip.json", state)
            return 0
    err(f"fake ip: unsupported {argv!r} {opts!r}")
    return 255


def arping(argv: list[str]) -> int:
    return 0


def service(argv: list[str]) -> int:
    if len(argv) != 2:
        err("usage: fake-service start|stop|kill|status NAME")
        return 2
    verb, name = argv
    with locked(STATE):
        services = load(STATE, "services.json", {})
        svc = services.setdefault(name, {"running": False, "starts": 0})
        if verb == "status":
            return 0 if svc["running"] else 3
        if verb == "start":
            if not svc["running"]:
                svc["starts"] += 1
            svc["running"] = True
        elif verb in ("stop", "kill"):
            svc["running"] = False
        else:
            err(f"fake-service: unknown verb {verb}")
            return 2
        save(STATE, "services.json", services)
    return 0


COMMANDS = {
    "drbdadm": drbdadm,
    "drbdsetup": drbdsetup,
    "mount": mount,
    "umount": umount,
    "mountpoint": mountpoint,
    "fuser": fuser,
    "ip": ip,
    "arping": arping,
    "fake-service": service,
}


def main() -> int:
    cmd = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    if cmd not in COMMANDS or not STATE:
        err(f"fakecmd: unknown command {cmd!r} or FAKE_STATE_DIR unset")
        return 127
    record(cmd, argv, ns=os.environ.get("FAKE_NETNS", ""))
    apply_fault(cmd, argv)
    return COMMANDS[cmd](argv)


if __name__ == "__main__":
    sys.exit(main())
