"""What a starting bot says about its data: the epochs it recorded and DRBD's disk states.

After both nodes were down, the operator starts the node with the newest data first
(deploy/README.md, "Cold start"). At start the bot logs this node's view: the highest
lease epoch its state directory recorded (and the one it held), and per DRBD resource
``drbdadm dstate`` (this node's disk / the peer's). Pure here; the caller reads.
"""

from __future__ import annotations

import json
from pathlib import Path

GOOD = "UpToDate"
BEHIND = ("Outdated", "Inconsistent", "Failed", "Diskless")


def recorded_epochs(state_dir: Path) -> tuple[int | None, int | None]:
    """(highest epoch seen, epoch held) from state.json or its backup; (None, None) if
    neither can be read (the agent itself says why and starts paused)."""
    for name in ("state.json", "state.json.bak"):
        try:
            obj = json.loads((state_dir / name).read_text())
            highest, held = obj.get("highest_epoch"), obj.get("held_epoch")
        except (OSError, ValueError, AttributeError):
            continue
        return (
            highest if isinstance(highest, int) else None,
            held if isinstance(held, int) else None,
        )
    return None, None


def verdict(dstates: dict[str, str]) -> str:
    """Whose data is newer, by DRBD's own disk states ``local/peer`` per resource."""
    if not dstates:
        return "no DRBD resource configured"
    notes = []
    for resource, state in sorted(dstates.items()):
        local, _, peer = state.partition("/")
        if local in BEHIND:
            notes.append(
                f"{resource}: this node's disk is {local}: the peer's data is newer; this "
                "node does not take over until it has resynchronised"
            )
        elif local == GOOD and peer in BEHIND:
            notes.append(f"{resource}: this node has the newest data (peer {peer})")
        elif local == GOOD and peer == GOOD:
            notes.append(f"{resource}: both disks UpToDate (the same data)")
        elif local == GOOD:
            notes.append(
                f"{resource}: this disk says UpToDate, the peer's is {peer or 'unknown'}: "
                "not connected, so DRBD cannot compare; if the peer was primary last, start "
                "it first"
            )
        else:
            notes.append(f"{resource}: disk state {state or 'unknown'}")
    return "; ".join(notes)


def summary(highest: int | None, held: int | None, dstates: dict[str, str]) -> str:
    epochs = (
        "no readable state file"
        if highest is None
        else f"highest lease epoch recorded {highest}"
        + (f", held {held}" if held is not None else ", none held")
    )
    return f"data at start: {epochs}; {verdict(dstates)}"
