"""The JSON Schemas of events and webhook bodies (docs/schema/) against what the code sends.

The agent's own events are validated where a real pair produces them (the end-to-end
scenarios, tests/e2e/outcome.py); here: the webhook bodies of every kind in both formats,
the event stream read back from a real Redis, and the schemas' names against the code's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis.asyncio as aredis

from bot.bus import Bus, Keys
from bot.config import RedisConfig, Secret, WebhookConfig
from bot.notify import KINDS, Message, Notifier
from tests.helpers import RedisServer

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schema"
STEPS = [
    {"name": "route", "duration": 0.04, "ok": True, "detail": "spans routed to host A"},
    {"name": "asterisk_start", "duration": 2.0, "ok": False, "detail": "no result within 1s"},
]
URL = "https://hooks.example.invalid/T000/B000/secret-path"


def validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(v: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in v.iter_errors(doc)]


def test_webhook_kinds_are_the_notifier_s() -> None:
    schema = json.loads((SCHEMAS / "webhook.schema.json").read_text())
    assert schema["$defs"]["kind"]["enum"] == list(KINDS)


@pytest.mark.parametrize("fmt", ["json", "slack"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_webhook_body_matches_the_schema(kind: str, fmt: str) -> None:
    hook = WebhookConfig(url_file=Secret(URL, "test"), format=fmt)  # type: ignore[arg-type]
    notifier = Notifier([hook], node_id="a", cluster="lab")
    fields = {"epoch": 7, "steps": STEPS, "reason": f"see {URL}", "spans": {"1": "red"}}
    body = notifier.payload(Message(kind, f"{kind} happened", fields, 1796050000.25, 2), fmt)
    assert not errors(validator("webhook.schema.json"), body), body
    json.dumps(body)  # what goes on the wire


def test_webhook_schema_rejects_a_wrong_body() -> None:
    v = validator("webhook.schema.json")
    good = {
        "kind": "self_fence",
        "severity": "critical",
        "title": "fenced",
        "node": "a",
        "cluster": "lab",
        "time": "2026-11-30T16:00:00+00:00",
        "repeated": 0,
        "fields": {},
    }
    assert not errors(v, good)
    assert errors(v, {**good, "kind": "self-fence"})
    assert errors(v, {**good, "repeated": -1})
    assert errors(v, {k: val for k, val in good.items() if k != "fields"})


async def test_event_stream_entries_match_the_schema(redis_server: RedisServer) -> None:
    bus = Bus(RedisConfig(url=redis_server.url, timeout=0.5), "t", "a")
    await bus.append_event("failover_completed", "takeover succeeded", epoch=3, steps=STEPS)
    await bus.append_event(
        "control", "pause requested", source="127.0.0.1", secret=Secret("pw-supersecret", "t")
    )
    raw = aredis.Redis.from_url(redis_server.url)
    try:
        await raw.xadd(Keys("t").events, {"e": b"{not json"})
    finally:
        await raw.aclose()
    try:
        events = await bus.read_events()
    finally:
        await bus.close()
    v = validator("bus-event.schema.json")
    assert [e["kind"] for e in events] == ["failover_completed", "control", "corrupt"]
    for event in events:
        assert not errors(v, event), event
    assert events[0]["fields"] == {"epoch": 3, "steps": STEPS}
    assert "***" in events[1]["fields"]["secret"]
    assert "pw-supersecret" not in json.dumps(events)


def test_event_schema_requires_the_takeover_fields() -> None:
    v = validator("event.schema.json")
    base = {"kind": "failover_completed", "message": "m", "node": "a", "time": 1796050000.0}
    assert errors(v, base)  # no epoch, no steps
    assert not errors(v, {**base, "epoch": 2, "steps": STEPS})
    assert errors(v, {**base, "epoch": 2, "steps": [{"name": "route"}]})
