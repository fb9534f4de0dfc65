"""The lab's replication link and a client that writes through the active node's DRBD.

The DRBD stand-in (harness/fakes, ``fake-drbd``) takes its fencing and split-brain
policies from the resource file the project ships, so a test of the lab tests the
shipped settings; the handlers are the bot's own commands, run in the node's
environment, as DRBD runs them.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.fakes import FAKES_BIN

if TYPE_CHECKING:
    from bot.lab.cluster import Cluster

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RESOURCE = REPO / "deploy" / "drbd" / "pbx.res"
FAKE_DRBD = FAKES_BIN / "fake-drbd"


def shipped_policies(path: Path = SHIPPED_RESOURCE) -> dict[str, Any]:
    """``fencing`` and the ``after-sb-*`` policies as the shipped resource sets them."""
    text = re.sub(r"#.*", "", path.read_text())
    fencing = re.search(r"\bfencing\s+([\w-]+)\s*;", text)
    after = dict(re.findall(r"\bafter-sb-(\d)pri\s+([\w-]+)\s*;", text))
    return {
        "fencing": fencing.group(1) if fencing else "dont-care",
        "after_sb": {f"{k}pri": v for k, v in after.items()},
    }


def handlers(python: str, config: Path) -> dict[str, list[str]]:
    """The handlers as deploy/drbd wires them, for one node."""
    bot = [python, "-m", "bot"]
    cfg = ["--config", str(config)]
    return {
        "fence-peer": [*bot, "drbd-fence-peer", *cfg],
        "after-resync-target": [*bot, "drbd-fence-peer", "--unfence", *cfg],
        "split-brain": [*bot, "drbd-split-brain", *cfg],
    }


def enable(cluster: Cluster, resource: str) -> None:
    """Give the stand-in the shipped policies and each node's handlers and environment."""
    path = cluster.drbd_dir / "drbd.json"
    state = json.loads(path.read_text())
    state["resources"][resource].update(shipped_policies())
    state["hosts"] = {
        n.id: {"env": cluster.env(n), "handlers": handlers(cluster_python(), n.config_path)}
        for n in cluster.nodes.values()
    }
    path.write_text(json.dumps(state))


def cluster_python() -> str:
    from bot.lab.cluster import PY

    return PY


def fake_drbd(cluster: Cluster, node: str, *args: str, timeout: float = 90) -> int:
    env = cluster.env(cluster.nodes[node])
    proc = subprocess.run(
        [str(FAKE_DRBD), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    return proc.returncode


def handler_runs(cluster: Cluster, handler: str = "fence-peer") -> list[dict[str, Any]]:
    path = cluster.drbd_dir / "handlers.jsonl"
    if not path.exists():
        return []
    runs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in runs if r["handler"] == handler]


def drbd_state(cluster: Cluster, resource: str) -> dict[str, Any]:
    return dict(json.loads((cluster.drbd_dir / "drbd.json").read_text())["resources"][resource])


class Writer:
    """Writes at a steady rate through whichever node's DRBD is Primary; logs each ack.

    A write that is not acknowledged (no Primary, I/O frozen, refused) may be lost;
    an acknowledged one never.
    """

    def __init__(
        self, cluster: Cluster, resource: str, *, interval: float = 0.1, limit: float = 1.0
    ) -> None:
        self.cluster = cluster
        self.resource = resource
        self.interval = interval
        self.limit = limit
        self.log = cluster.dir / "acks.jsonl"
        self.acked = 0
        self.refused = 0
        self.frozen = 0
        self.no_primary = 0
        self._n = 0
        self.died: str | None = None  # why the writer stopped before it was stopped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def primaries(self) -> list[str]:
        try:
            nodes = drbd_state(self.cluster, self.resource)["nodes"]
        except (OSError, ValueError, KeyError):
            return []
        return [n for n, v in nodes.items() if v.get("role") == "Primary" and not v.get("dead")]

    def write_once(self) -> None:
        targets = self.primaries()
        if not targets:
            self.no_primary += 1
            return
        for node in targets:
            self._n += 1
            write_id = f"w{self._n}"
            env = self.cluster.env(self.cluster.nodes[node])
            proc = subprocess.run(
                [str(FAKE_DRBD), "write", self.resource, write_id, str(self.limit)],
                env=env,
                capture_output=True,
                text=True,
                timeout=self.limit + 30,
            )
            if proc.returncode == 0:
                ack = json.loads(proc.stdout)
                line = {"id": write_id, "node": node, "gen": ack["gen"], "t": ack["t"]}
                with self.log.open("a") as fh:
                    fh.write(json.dumps(line) + "\n")
                self.acked += 1
            elif proc.returncode == 75:
                self.frozen += 1
            else:
                self.refused += 1

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                self.write_once()
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))
        except Exception as exc:  # a client that stopped writing proves nothing more
            self.died = f"{type(exc).__name__}: {exc}"
            raise

    def acks_for(self, node: str) -> int:
        if not self.log.exists():
            return 0
        lines = self.log.read_text().splitlines()
        return sum(1 for line in lines if line.strip() and json.loads(line)["node"] == node)
