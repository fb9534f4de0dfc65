"""The status contract: the committed JSON Schema is the one generated from the types."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from bot.statuscontract import json_schema, schema_text

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "status.schema.json"


def test_committed_schema_matches_the_code() -> None:
    assert SCHEMA_FILE.read_text() == schema_text(), (
        "docs/status.schema.json is out of date: "
        "python -m bot.statuscontract > docs/status.schema.json"
    )


def test_schema_is_a_valid_draft_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json_schema()
    status = schema["$defs"]["Status"]
    # What every producer must give (the agent adds more, listed as optional).
    assert {"nodes", "serving", "holder", "generated_at", "stale_after_seconds"} <= set(
        status["required"]
    )
    node = schema["$defs"]["NodeStatus"]
    assert {"role", "reported_role", "freshness", "stale", "last_seen_seconds"} <= set(
        node["required"]
    )
