"""Fake commands (DRBD, mount, ip, arping, a service manager) and a handle on their state."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FAKES_BIN = Path(__file__).resolve().parent / "bin"


class FakeWorld:
    """The state directory the fakes share: set faults, read calls and state."""

    def __init__(self, state_dir: Path, *, node: str = "local", drbd_dir: Path | None = None):
        self.dir = state_dir
        self.node = node
        self.drbd_dir = drbd_dir or state_dir
        self.dir.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        return {
            "FAKE_STATE_DIR": str(self.dir),
            "FAKE_DRBD_DIR": str(self.drbd_dir),
            "FAKE_NODE": self.node,
            "PATH": f"{FAKES_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _read(self, directory: Path, name: str, default: Any) -> Any:
        try:
            return json.loads((directory / name).read_text())
        except FileNotFoundError:
            return default

    def _write(self, directory: Path, name: str, data: Any) -> None:
        (directory / name).write_text(json.dumps(data, indent=1))

    def calls(self, *cmds: str) -> list[dict[str, Any]]:
        try:
            lines = (self.dir / "calls.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        calls = [json.loads(line) for line in lines if line.strip()]
        calls = [c for c in calls if c.get("event") != "child"]
        return [c for c in calls if not cmds or c["cmd"] in cmds]

    def mutations(self) -> list[tuple[float, str]]:
        """Calls that change (or try to change) state, as (time, "cmd argv..."); queries and
        ``ip netns exec`` wrappers are left out."""
        result = []
        for call in self.calls():
            cmd, argv = call["cmd"], call["argv"]
            query = (
                cmd in ("mountpoint", "drbdsetup")
                or (cmd == "drbdadm" and argv[:1] in (["role"], ["dstate"], ["cstate"]))
                or (cmd == "ip" and ("show" in argv or argv[:2] == ["netns", "exec"]))
                or (cmd == "fake-service" and argv[:1] == ["status"])
            )
            if not query:
                result.append((float(call["t"]), " ".join([cmd, *argv])))
        return result

    def mutating_calls(self) -> list[str]:
        return [words for _, words in self.mutations()]

    def child_pids(self) -> list[int]:
        try:
            lines = (self.dir / "calls.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        calls = [json.loads(line) for line in lines if line.strip()]
        return [c["child_pid"] for c in calls if "child_pid" in c] + [c["pid"] for c in calls]

    def set_fault(self, key: str, **fault: Any) -> None:
        faults = self._read(self.dir, "faults.json", {})
        faults[key] = fault
        self._write(self.dir, "faults.json", faults)

    def clear_faults(self) -> None:
        self._write(self.dir, "faults.json", {})

    @property
    def drbd(self) -> dict[str, Any]:
        return dict(self._read(self.drbd_dir, "drbd.json", {}))

    def set_drbd(
        self,
        resources: dict[str, dict[str, Any]],
        *,
        module: bool = True,
        version: int = 9,
    ) -> None:
        self._write(
            self.drbd_dir,
            "drbd.json",
            {"module": module, "version": version, "resources": resources},
        )

    def role(self, resource: str) -> str:
        return str(self.drbd["resources"][resource]["nodes"][self.node]["role"])

    @property
    def mounts(self) -> dict[str, str]:
        return dict(self._read(self.dir, "mounts.json", {}))

    def set_busy(self, path: str, users: int = 1) -> None:
        """``users`` processes keep the file system at ``path`` busy (0: none)."""
        busy = self._read(self.dir, "busy.json", {})
        busy[path] = users
        self._write(self.dir, "busy.json", {k: v for k, v in busy.items() if v})

    @property
    def services(self) -> dict[str, Any]:
        return dict(self._read(self.dir, "services.json", {}))

    def running(self, name: str = "asterisk") -> bool:
        return bool(self.services.get(name, {}).get("running", False))

    def addresses(self, dev: str, ns: str = "") -> list[str]:
        return list(self._read(self.dir, "ip.json", {}).get(ns, {}).get(dev, {}))


def drbd_resource(
    node: str = "local",
    *,
    role: str = "Secondary",
    disk: str = "UpToDate",
    peer_role: str = "Secondary",
    peer_disk: str = "UpToDate",
    connected: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "connected": connected,
        "nodes": {
            node: {"role": role, "disk": disk},
            "peer": {"role": peer_role, "disk": peer_disk},
        },
    }
    if device:
        res["device"] = device
    return res


# A real command with the failures of ``faults.json`` in front: the broken host's own
# commands (``ip addr del`` refused, an Asterisk kill that hangs). The key is the
# command's name and its non-option words, as for the fakes ("ip addr del"). The
# common path is a shell's exec (a command's own time must not grow); only while
# faults.json names this command does a Python helper look closer.
_GATE_SH = """#!/bin/sh
if grep -qs '"{name}' "$FAKE_STATE_DIR/faults.json"; then
  exec {python} -IS {helper} "$@"
fi
exec {real} "$@"
"""
_GATE_PY = """import json, os, sys, time
REAL = {real!r}
NAME = {name!r}
argv = sys.argv[1:]
words = " ".join([NAME, *[a for a in argv if not a.startswith("-")]])
try:
    with open(os.path.join(os.environ.get("FAKE_STATE_DIR", ""), "faults.json")) as fh:
        faults = json.load(fh)
except (OSError, ValueError):
    faults = {{}}
for key, fault in faults.items():
    if words == key or words.startswith(key + " "):
        time.sleep(float(fault.get("sleep", 0)))
        if "exit" in fault:
            sys.stderr.write(fault.get("stderr", "") + "\\n")
            sys.exit(int(fault["exit"]))
        break
os.execv(REAL[0], [*REAL, *argv])
"""


def write_gate(path: Path, name: str, real: list[str]) -> Path:
    """Write an executable at ``path`` that runs ``real`` (plus its own arguments) unless
    faults.json in ``$FAKE_STATE_DIR`` has a fault for ``name`` and those arguments."""
    import shlex
    import sys

    path.parent.mkdir(parents=True, exist_ok=True)
    helper = path.with_name(path.name + "-gate.py")
    script = _GATE_SH.format(
        name=name,
        python=shlex.quote(sys.executable),
        helper=shlex.quote(str(helper)),
        real=shlex.join(real),
    )
    # Replaced, never rewritten in place: a running gate keeps its own copy.
    for target, text, mode in (
        (helper, _GATE_PY.format(real=list(real), name=name), 0o644),
        (path, script, 0o755),
    ):
        tmp = target.with_name(target.name + ".new")
        tmp.write_text(text)
        tmp.chmod(mode)
        os.replace(tmp, target)
    return path


def set_fault_atomic(state_dir: Path, key: str, fault: dict[str, Any] | None) -> None:
    """Add (or with None remove) one fault; the file is replaced at once, so a command
    reading it never sees half of it."""
    path = state_dir / "faults.json"
    try:
        faults = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        faults = {}
    if fault is None:
        faults.pop(key, None)
    else:
        faults[key] = fault
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(faults))
    os.replace(tmp, path)
