"""A test call: an async ``Originate`` correlated by ActionID with its ``OriginateResponse``.

The outcome comes from the response's ``Reason`` (the last call-progress
indication Asterisk saw): 4 answered, 5 busy, 3 no answer (also: Timeout
expired), 8 congestion, anything else failed; no ``OriginateResponse`` in
time is a timeout. ``Async`` is always sent (panoramisk breaks on an
Originate without it), and ``CDR_PROP(disable)=1`` keeps test calls out of
the PBX's call records.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ami.errors import AmiActionError, AmiTimeout

if TYPE_CHECKING:
    from bot.config import TestCallConfig

OUTCOMES = ("answered", "busy", "no_answer", "congestion", "failed", "timeout")
REASON_OUTCOME = {4: "answered", 5: "busy", 3: "no_answer", 8: "congestion"}
# The OriginateResponse can trail the originate timeout slightly.
RESPONSE_MARGIN = 2.0


class _Originator(Protocol):
    async def send_action(self, fields: dict[str, Any], limit: float | None = None) -> Any: ...


@dataclass(frozen=True)
class TestCallResult:
    __test__ = False  # not a pytest class

    outcome: str
    setup_seconds: float | None
    channel: str
    reason: str
    reason_code: int | None = None
    action_id: str = ""
    uniqueid: str = ""

    @property
    def answered(self) -> bool:
        return self.outcome == "answered"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcome_of(response: str, reason: int) -> str:
    if response.lower() == "success":
        return "answered"
    return REASON_OUTCOME.get(reason, "failed") if reason != 4 else "failed"


def originate_fields(cfg: TestCallConfig, action_id: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "Action": "Originate",
        "ActionID": action_id,
        "Channel": cfg.channel,
        "Timeout": str(int(cfg.timeout * 1000)),
        "CallerID": '"failover-bot" <0>',
        "Async": "true",
        "Variable": ["CDR_PROP(disable)=1", *(f"{k}={v}" for k, v in cfg.variables.items())],
    }
    if cfg.application:
        fields["Application"] = cfg.application
        fields["Data"] = cfg.data or ""
    else:
        fields["Context"] = cfg.context or "default"
        fields["Exten"] = cfg.exten or "s"
        fields["Priority"] = str(cfg.priority)
    return fields


async def run_test_call(
    client: _Originator, cfg: TestCallConfig, *, clock: Any = None
) -> TestCallResult:
    """Place one test call; AmiConnectionError when Asterisk cannot be reached."""
    loop = asyncio.get_running_loop()
    now = clock or loop.time
    action_id = f"failover-bot-testcall-{uuid.uuid4().hex[:16]}"
    start = now()
    try:
        answer = await client.send_action(
            originate_fields(cfg, action_id), limit=cfg.timeout + RESPONSE_MARGIN
        )
    except AmiTimeout:
        return TestCallResult(
            "timeout",
            None,
            cfg.channel,
            f"no OriginateResponse within {cfg.timeout + RESPONSE_MARGIN:g} s"
            " (an AMI user without `read = call` never receives one)",
            action_id=action_id,
        )
    except AmiActionError as exc:  # refused at once (e.g. "Extension does not exist.")
        return TestCallResult("failed", now() - start, cfg.channel, str(exc), action_id=action_id)
    elapsed = now() - start
    event = answer[-1] if isinstance(answer, list) else answer
    if event.get("Event", "") != "OriginateResponse":
        return TestCallResult(
            "failed",
            elapsed,
            cfg.channel,
            "no OriginateResponse in the answer",
            action_id=action_id,
        )
    try:
        reason = int(event.get("Reason", "0"))
    except ValueError:
        reason = 0
    outcome = outcome_of(str(event.get("Response", "")), reason)
    return TestCallResult(
        outcome,
        elapsed,
        str(event.get("Channel", "")) or cfg.channel,
        f"OriginateResponse {event.get('Response', '')}, Reason {reason}",
        reason_code=reason,
        action_id=action_id,
        uniqueid=str(event.get("Uniqueid", "")),
    )
