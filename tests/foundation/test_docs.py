"""The README's configuration reference and the schema agree."""

from __future__ import annotations

from pathlib import Path

from bot.config import iter_documented_keys
from bot.configdoc import END, START, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_matches_schema() -> None:
    text = README.read_text()
    block = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert block == render(), "run: .venv/bin/python -m bot.configdoc --write README.md"


def test_every_key_is_documented() -> None:
    text = README.read_text()
    for key, fld in iter_documented_keys():
        assert fld.metadata.get("doc"), f"{key} has no doc text"
        assert f"`{key}`" in text, f"{key} missing from README"


def test_readme_starts_with_the_two_commands() -> None:
    commands = [line for line in README.read_text().splitlines() if line.startswith("make ")]
    assert commands[:2] == ["make demo", "make test"]
