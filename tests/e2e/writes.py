"""The data checker: which acknowledged writes a later primary's data lacks (pure).

The client logs every write the active node's DRBD stand-in acknowledged (with the
node, its generation and the stand-in's clock). The stand-in keeps a copy of a
node's data each time it is promoted. A write acknowledged before a promotion must
be in the promoted node's data (else the new primary serves without it: lost, or
at best stale until a resync nobody may run), and every acknowledged write must be
in the data of the node promoted last.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ack:
    id: str
    node: str
    gen: int
    t: float


@dataclass(frozen=True)
class Promotion:
    t: float
    node: str
    gen: int
    data: frozenset[str]


@dataclass(frozen=True)
class LostWrite:
    ack: Ack
    where: str

    def __str__(self) -> str:
        a = self.ack
        return f"write {a.id} (acknowledged by {a.node} gen {a.gen} at {a.t:.3f}) {self.where}"


def lost_writes(
    acks: Iterable[Ack],
    promotions: Iterable[Promotion],
    final_data: Mapping[str, frozenset[str]],
) -> list[LostWrite]:
    """Every acknowledged write missing where it must be, in acknowledgement order."""
    acks = sorted(acks, key=lambda a: a.t)
    promotions = sorted(promotions, key=lambda p: p.t)
    lost: list[LostWrite] = []
    seen: set[str] = set()
    for p in promotions:
        for ack in acks:
            if ack.t >= p.t:
                break
            if ack.id not in p.data and ack.id not in seen:
                seen.add(ack.id)
                lost.append(LostWrite(ack, f"missing from {p.node}'s data when it was promoted"))
    if promotions:
        last = promotions[-1].node
        data = final_data.get(last, frozenset())
        for ack in acks:
            if ack.id not in data and ack.id not in seen:
                seen.add(ack.id)
                lost.append(LostWrite(ack, f"missing from the final data of {last}"))
    return lost


# ---------------------------------------------------------------------- reading files


def read_acks(path: Path) -> list[Ack]:
    if not path.exists():
        return []
    result = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            result.append(Ack(str(d["id"]), str(d["node"]), int(d["gen"]), float(d["t"])))
    return result


def _ids(path: Path) -> frozenset[str]:
    try:
        return frozenset(i.strip() for i in path.read_text().splitlines() if i.strip())
    except FileNotFoundError:
        return frozenset()


def read_promotions(drbd_dir: Path) -> list[Promotion]:
    path = drbd_dir / "promotions.jsonl"
    if not path.exists():
        return []
    result = []
    for line in path.read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            data = _ids(drbd_dir / "promotions" / str(d["file"]))
            result.append(Promotion(float(d["t"]), str(d["node"]), int(d["gen"]), data))
    return result


def read_final_data(drbd_dir: Path, nodes: Iterable[str]) -> dict[str, frozenset[str]]:
    return {n: _ids(drbd_dir / f"data-{n}.ids") for n in nodes}


def check_dir(drbd_dir: Path, acks_path: Path, nodes: Iterable[str]) -> list[LostWrite]:
    return lost_writes(
        read_acks(acks_path), read_promotions(drbd_dir), read_final_data(drbd_dir, nodes)
    )
