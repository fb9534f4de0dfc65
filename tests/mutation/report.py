"""After `mutmut run`: mutants per module by outcome, and the names of the survivors.

python -m tests.mutation.report [--survivors]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants")


def summary(root: Path = MUTANTS) -> dict[str, tuple[Counter[str], list[str]]]:
    out: dict[str, tuple[Counter[str], list[str]]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        module = str(meta.relative_to(root)).removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        counts: Counter[str] = Counter(status_by_exit_code[c] for c in codes.values())
        survivors = sorted(k for k, c in codes.items() if status_by_exit_code[c] == "survived")
        out[module] = (counts, survivors)
    return out


def main(argv: list[str]) -> int:
    found = summary()
    if not found:
        print("no mutmut results under mutants/ (run `make mutate`)")
        return 1
    for module, (counts, survivors) in found.items():
        total = sum(counts.values())
        parts = ", ".join(f"{n} {status}" for status, n in counts.most_common())
        print(f"{module}: {total} mutants: {parts}")
        if "--survivors" in argv:
            for name in survivors:
                print(f"    {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
