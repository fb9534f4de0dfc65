"""The configuration reference, rendered from the schema in bot/config.py.

``python -m bot.configdoc --write README.md`` refreshes the block between the
markers; a test checks that the README and the schema agree.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from bot.config import Config, format_duration, iter_documented_keys

START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


def _default(fld: dataclasses.Field[Any]) -> str:
    if fld.metadata.get("required"):
        return "required"
    if fld.default is not dataclasses.MISSING:
        value = fld.default
    elif fld.default_factory is not dataclasses.MISSING:
        value = fld.default_factory()
    else:  # pragma: no cover
        return ""
    if value is None:
        return "unset"
    if dataclasses.is_dataclass(value):
        return "(section)"
    kind = fld.metadata.get("kind")
    if kind in ("duration", "watchdog") and isinstance(value, float):
        return f'`"{format_duration(value)}"`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{json.dumps(value)}`"


def render() -> str:
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key, fld in iter_documented_keys(Config):
        doc = str(fld.metadata.get("doc", "")).replace("|", "\\|")
        lines.append(f"| `{key}` | {_default(fld)} | {doc} |")
    return "\n".join(lines)


def splice(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", metavar="README", help="refresh the block in this file")
    args = parser.parse_args(argv)
    if args.write:
        path = Path(args.write)
        path.write_text(splice(path.read_text()))
    else:
        sys.stdout.write(render() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
