"""The peer's last test call, read from its record, tells a shared fault from its own."""

from __future__ import annotations

from typing import Any

import pytest

from bot.agent.observer import last_test_call_failed
from bot.bus import NodeRecord

WRITTEN = 1_800_000_000.0  # the record's last_seen: the writer's wall clock


def record(last: dict[str, Any] | None, at: object) -> NodeRecord:
    asterisk = {"last_test_call": last, "last_test_call_at": at}
    return NodeRecord(
        id="b", role="standby", healthy=True, last_seen=WRITTEN, extra={"asterisk": asterisk}
    )


FAILED = {"outcome": "congestion", "reason": "Circuit/channel congestion"}
ANSWERED = {"outcome": "answered", "reason": ""}


@pytest.mark.parametrize(
    ("rec", "failed"),
    [
        (None, False),
        (NodeRecord(id="b", role="standby", healthy=True), False),  # no asterisk facts
        (record(None, None), False),  # never placed one
        (record(ANSWERED, WRITTEN - 5), False),
        (record(FAILED, WRITTEN - 5), True),
        (record(FAILED, WRITTEN - 600), True),  # just within the window
        (record(FAILED, WRITTEN - 601), False),  # older than failed_holddown
        (record(FAILED, WRITTEN + 30), False),  # from the writer's future: not trusted
        (record(FAILED, "yesterday"), False),  # a value that does not parse
        (record("congestion", WRITTEN), False),  # type: ignore[arg-type]
    ],
)
def test_a_failed_test_call_counts_within_failed_holddown_of_the_record(
    rec: NodeRecord | None, failed: bool
) -> None:
    assert last_test_call_failed(rec, within=600.0) is failed
