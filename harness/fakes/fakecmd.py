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

Replication (``fake-drbd``, the part of the kernel the safety depends on): the
link is up or down (``link-down``/``link-up``); each node has its own view of the
peer's disk (``pdsk``) while disconnected. With ``"fencing":
"resource-and-stonith"`` a Primary whose link broke freezes I/O until its
fence-peer handler returns a code that resolves the peer's disk (3/4/5/7, as
drbd_nl.c does); ``"resource-only"`` runs the handler but keeps writing. A
disconnected Secondary that is promoted calls the handler first. Handlers are the
commands in ``hosts.NODE.handlers`` run with ``hosts.NODE.env``; every run is
logged to ``handlers.jsonl``. ``write RES ID`` is an application write on this
node: refused unless Primary, blocked while I/O is frozen, replicated to the peer
while connected (protocol C), appended to ``data-NODE.ids`` and acknowledged with
this node's generation. On ``link-up`` the older side resynchronises from the
newer (``after-resync-target`` runs on it); diverged data is a split brain
resolved by the ``after_sb`` policies or left StandAlone. Each promotion keeps a
copy of the promoted node's data in ``promotions/`` for the checker.

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
    return load(DRBD_DIR, "drbd.json", default)


def peers_of(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for k, v in res["nodes"].items() if k != NODE]


def module_missing(tool: str) -> int:
    err("Could not connect to 'drbd' generic netlink family")
    err(f"{tool}: DRBD kernel module is not loaded")
    return 20


def drbdadm(argv: list[str], handler_ran: bool = False) -> int:
    args = list(argv)
    if args[:1] == ["-c"]:
        args = args[2:]
    force = "--force" in args
    args = [a for a in args if not a.startswith("-")]
    if len(args) != 2:
        err("USAGE: drbdadm COMMAND [OPTION...] {all|RESOURCE...}")
        return 1
    verb, name = args
    call_handler = False
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
            peer = peers[0]["disk"] if peers and connected else me.get("pdsk", "DUnknown")
            out(f"{me['disk']}/{peer}")
        elif verb == "cstate":
            if connected:
                out("Connected")
            else:
                out("StandAlone" if res.get("split_brain") else "WFConnection")
        elif verb == "primary":
            if me["role"] == "Primary":
                return 0
            if connected and any(p["role"] == "Primary" for p in peers):
                err(f"{name}: State change failed: (-1) Multiple primaries not allowed by config")
                return 11
            if me["disk"] != "UpToDate" and not force:
                err(f"{name}: State change failed: (-2) Need access to UpToDate data")
                return 11
            unresolved = me.get("pdsk", "DUnknown") not in ("Outdated", "Inconsistent")
            fencing = res.get("fencing", "dont-care") != "dont-care"
            if not connected and fencing and unresolved and not force:
                if handler_ran:
                    err(
                        f"{name}: State change failed: (-7) Refusing to be Primary while "
                        "peer is not outdated"
                    )
                    return 11
                call_handler = True
            else:
                me["role"] = "Primary"
                if force:
                    me["disk"] = "UpToDate"
                record_promotion(name, NODE, state)
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
            if me["disk"] in ("UpToDate", "Consistent"):
                me["disk"] = "Outdated"
        else:
            err(f"drbdadm: unknown command '{verb}'")
            return 1
        if not call_handler:
            save(DRBD_DIR, "drbd.json", state)
    if call_handler:
        # A disconnected Secondary asked to become Primary outdates its peer first.
        fence_peer(name, NODE)
        return drbdadm(argv, handler_ran=True)
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
                            else me.get("pdsk", "DUnknown"),
                        }
                    ],
                }
            )
        result.append(
            {
                "name": name,
                "node-id": 0,
                "role": me["role"],
                "suspended": frozen(res, NODE),
                "devices": [{"volume": 0, "minor": 0, "disk-state": me["disk"]}],
                "connections": conns,
            }
        )
    out(json.dumps(result, indent=2))
    return 0


# --------------------------------------------------------------------------- replication

FENCING_CODES_RESOLVED = {3: "Inconsistent", 4: "Outdated", 7: "Outdated"}


def data_path(node: str) -> str:
    return os.path.join(DRBD_DIR, f"data-{node}.ids")


def read_data(node: str) -> list[str]:
    try:
        with open(data_path(node)) as fh:
            return [line.strip() for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def append_data(node: str, write_id: str) -> None:
    with open(data_path(node), "a") as fh:
        fh.write(write_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def copy_data(source: str, target: str) -> None:
    data = read_data(source)
    path = data_path(target)
    with open(path + ".tmp", "w") as fh:
        fh.write("".join(i + "\n" for i in data))
    os.replace(path + ".tmp", path)


def peer_names(res: dict[str, Any], node: str) -> list[str]:
    return [k for k in res["nodes"] if k != node]


def frozen(res: dict[str, Any], node: str) -> bool:
    """resource-and-stonith: a Primary that lost its peer writes nothing until the
    fence-peer handler told it what became of the peer's disk."""
    me = res["nodes"][node]
    if res.get("fencing") != "resource-and-stonith" or me["role"] != "Primary":
        return False
    if res.get("connected", True):
        return False
    return me.get("pdsk", "DUnknown") not in ("Outdated", "Inconsistent")


def run_handler(state: dict[str, Any], res_name: str, node: str, handler: str) -> int | None:
    """Run NODE's HANDLER (outside the lock); None when none is configured."""
    import subprocess

    host = state.get("hosts", {}).get(node, {})
    argv = host.get("handlers", {}).get(handler)
    if not argv:
        return None
    res = state["resources"][res_name]
    env = dict(host.get("env") or os.environ)
    peers = peer_names(res, node)
    env.update(DRBD_RESOURCE=res_name, DRBD_PEER=",".join(peers), DRBD_PEERS=",".join(peers))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired:
        code, stdout, stderr = -9, "", "handler timed out after 60 s"
    line = {
        "t0": t0,
        "t": time.monotonic(),
        "node": node,
        "resource": res_name,
        "handler": handler,
        "exit": code,
        "stdout": stdout[-2000:],
        "stderr": stderr[-2000:],
    }
    with open(os.path.join(DRBD_DIR, "handlers.jsonl"), "a") as fh:
        fh.write(json.dumps(line) + "\n")
    return code


def apply_fence_result(res: dict[str, Any], node: str, code: int | None) -> bool:
    """What DRBD makes of the handler's exit code (drbd_nl.c); True: peer resolved."""
    me = res["nodes"][node]
    if code in FENCING_CODES_RESOLVED:
        me["pdsk"] = FENCING_CODES_RESOLVED[code]
        return True
    if code == 5 and me["disk"] == "UpToDate":
        me["pdsk"] = "Outdated"  # "peer is unreachable, assumed to be dead"
        return True
    if code == 6:
        me["disk"] = "Outdated"  # "peer is active": outdate myself
    return False


def fence_peer(res_name: str, node: str) -> int | None:
    """Call NODE's fence-peer handler and apply its answer; returns its exit code."""
    with locked(DRBD_DIR):
        state = drbd_state()
    code = run_handler(state, res_name, node, "fence-peer")
    with locked(DRBD_DIR):
        state = drbd_state()
        res = state["resources"][res_name]
        if not res.get("connected", True):
            apply_fence_result(res, node, code)
            save(DRBD_DIR, "drbd.json", state)
    return code


def link_down(res_name: str, react: bool = False) -> int:
    """The replication link breaks; each surviving Primary calls its fence-peer handler.
    ``react``: the link was already marked down (a host died): react all the same."""
    with locked(DRBD_DIR):
        state = drbd_state()
        res = state["resources"][res_name]
        was = res.get("connected", True) or react
        if res.get("connected", True):
            for info in res["nodes"].values():
                info.pop("pdsk", None)  # DUnknown until a handler says otherwise
        res["connected"] = False
        save(DRBD_DIR, "drbd.json", state)
        primaries = [
            n for n, v in res["nodes"].items() if v["role"] == "Primary" and not v.get("dead")
        ]
        fencing = res.get("fencing", "dont-care")
    if not was or fencing == "dont-care":
        return 0
    for node in primaries:
        fence_peer(res_name, node)
    return 0


def is_prefix(short: list[str], long: list[str]) -> bool:
    return len(short) <= len(long) and long[: len(short)] == short


def link_up(res_name: str) -> int:
    with locked(DRBD_DIR):
        state = drbd_state()
        res = state["resources"][res_name]
        nodes = res["nodes"]
        if res.get("connected", True):
            return 0
        if any(v.get("dead") for v in nodes.values()):
            err(f"{res_name}: a host is down; the link stays down")
            return 1
        if res.get("split_brain"):
            err(f"{res_name}: StandAlone after a split brain; resolve by hand")
            return 1
        a, b = sorted(nodes)
        da, db = read_data(a), read_data(b)
        target: str | None = None
        source: str | None = None
        if da == db:
            # Nothing to copy; an Outdated or Inconsistent side still becomes a target.
            for n in (a, b):
                other = b if n == a else a
                if nodes[n]["disk"] != "UpToDate" and nodes[other]["disk"] == "UpToDate":
                    target, source = n, other
        elif is_prefix(da, db) and nodes[a]["role"] != "Primary":
            target, source = a, b
        elif is_prefix(db, da) and nodes[b]["role"] != "Primary":
            target, source = b, a
        else:
            victim = split_brain_victim(res, a, b)
            if victim is None:
                res["split_brain"] = True
                save(DRBD_DIR, "drbd.json", state)
                sb = [a, b]
            else:
                target, source = victim, (b if victim == a else a)
                sb = []
            if sb:
                for n in sb:
                    run_handler(state, res_name, n, "split-brain")
                return 1
        if target is not None and source is not None:
            copy_data(source, target)
            nodes[target]["disk"] = "UpToDate"
        res["connected"] = True
        for info in nodes.values():
            info.pop("pdsk", None)
        save(DRBD_DIR, "drbd.json", state)
    if target is not None:
        run_handler(state, res_name, target, "after-resync-target")
    return 0


def split_brain_victim(res: dict[str, Any], a: str, b: str) -> str | None:
    """The side the after-sb policy discards, or None: disconnect (StandAlone)."""
    policy = res.get("after_sb", {})
    primaries = [n for n in (a, b) if res["nodes"][n]["role"] == "Primary"]
    if len(primaries) == 1 and policy.get("1pri") == "discard-secondary":
        return b if primaries[0] == a else a
    if not primaries and policy.get("0pri") == "discard-younger-primary":
        return None
    return None


def app_write(res_name: str, write_id: str, limit: float) -> int:
    """One application write on this node: acknowledged (exit 0, prints the generation
    and the time) or not (exit 1 not primary, 75 I/O frozen past the limit)."""
    deadline = time.monotonic() + limit
    while True:
        with locked(DRBD_DIR):
            state = drbd_state()
            res = state["resources"].get(res_name)
            if res is None:
                err(f"'{res_name}' not defined")
                return 10
            me = res["nodes"][NODE]
            if me["role"] != "Primary" or me.get("dead"):
                err(f"{res_name}: not Primary here")
                return 1
            if not frozen(res, NODE):
                append_data(NODE, write_id)
                if res.get("connected", True):
                    for peer in peer_names(res, NODE):
                        if not res["nodes"][peer].get("dead"):
                            append_data(peer, write_id)
                out(json.dumps({"gen": me.get("gen", 0), "t": time.monotonic()}))
                return 0
        if time.monotonic() > deadline:
            err(f"{res_name}: I/O suspended (fencing: waiting for the fence-peer handler)")
            return 75
        time.sleep(0.02)


def record_promotion(res_name: str, node: str, state: dict[str, Any]) -> None:
    me = state["resources"][res_name]["nodes"][node]
    me["gen"] = int(me.get("gen", 0)) + 1
    directory = os.path.join(DRBD_DIR, "promotions")
    os.makedirs(directory, exist_ok=True)
    t = time.monotonic()
    name = f"{t:.6f}-{node}.ids"
    with open(os.path.join(directory, name), "w") as fh:
        fh.write("".join(i + "\n" for i in read_data(node)))
    with open(os.path.join(DRBD_DIR, "promotions.jsonl"), "a") as fh:
        fh.write(json.dumps({"t": t, "node": node, "gen": me["gen"], "file": name}) + "\n")


def fake_drbd(argv: list[str]) -> int:
    """fake-drbd link-down|link-up RES | write RES ID [TIMEOUT] | host-down|host-up RES"""
    if len(argv) < 2:
        err("usage: fake-drbd link-down|link-up|host-down|host-up RES | write RES ID [TIMEOUT]")
        return 2
    verb, res_name = argv[0], argv[1]
    if verb == "link-down":
        return link_down(res_name)
    if verb == "link-up":
        return link_up(res_name)
    if verb in ("host-down", "host-up"):
        with locked(DRBD_DIR):
            state = drbd_state()
            me = state["resources"][res_name]["nodes"][NODE]
            me["dead"] = verb == "host-down"
            if me["dead"]:
                me["role"] = "Secondary"  # a dead host holds nothing open
            save(DRBD_DIR, "drbd.json", state)
        return link_down(res_name, react=True) if verb == "host-down" else 0
    if verb == "write" and len(argv) >= 3:
        return app_write(res_name, argv[2], float(argv[3]) if len(argv) > 3 else 2.0)
    err(f"fake-drbd: unknown verb {verb!r}")
    return 2


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
    "fake-drbd": fake_drbd,
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
