"""Webhooks: a queue per receiver, retries with backoff, coalescing, redaction.

``Notifier.notify`` only enqueues, so no caller (least of all a takeover) ever
waits on a receiver.  One delivery worker per webhook, owned by ``run``, sends
in order; a slow receiver delays only its own queue.  Webhook URLs are secrets:
they are never logged nor put into a payload, and every string in a payload is
scrubbed of every known secret value.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bot.config import Secret, WebhookConfig

log = logging.getLogger(__name__)

# kind -> severity.  The kinds are the public names users filter on
# (``notify.webhooks[].events``).
KINDS: dict[str, str] = {
    "failover_started": "warning",
    "failover_completed": "info",
    "failover_failed": "critical",
    "failover_degraded": "critical",
    "demotion": "warning",
    "self_fence": "critical",
    "health_degraded": "warning",
    "health_recovered": "info",
    "span_alarm": "warning",
    "test_call_failed": "warning",
    "rseries_switched": "warning",
    "redis_lost": "warning",
    "redis_back": "info",
    "config_drift": "warning",
    "drbd_fence_peer_failed": "critical",
    "drbd_split_brain": "critical",
    "force_promote": "critical",
    "paused_lease_lost": "critical",
    "fence_peer": "critical",
    "lease_pttl": "warning",
    "drill_passed": "info",
    "drill_failed": "critical",
    "fence_overrun": "warning",
}

# Results passed to on_result (label of failoverbot_webhooks_total{result}).
RESULT_SENT = "sent"
RESULT_RETRY = "retried"
RESULT_FAILED = "failed"  # given up after max_attempts, or refused with a 4xx
RESULT_DROPPED = "dropped"  # queue full
RESULT_COALESCED = "coalesced"

REDACTED = "***"


@dataclass
class Message:
    kind: str
    title: str
    fields: dict[str, Any]
    wall_time: float
    repeated: int = 0
    frozen: bool = False  # its payload was built: later repeats cannot join it


@dataclass
class _Recent:
    first: float
    message: Message | None
    suppressed: int = 0


@dataclass
class _Hook:
    index: int
    url: Secret
    format: str
    events: frozenset[str]
    queue: deque[Message] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, kind: str) -> bool:
        return not self.events or kind in self.events


class Notifier:
    def __init__(
        self,
        hooks: list[WebhookConfig],
        *,
        node_id: str = "",
        cluster: str = "",
        timeout: float = 5.0,
        max_attempts: int = 5,
        coalesce_window: float = 60.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        queue_limit: int = 500,
        session_factory: Callable[[], aiohttp.ClientSession] = aiohttp.ClientSession,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_result: Callable[[str], None] | None = None,
        secrets: Iterable[Secret] = (),
    ) -> None:
        self._hooks = [
            _Hook(i, h.url_file, h.format, frozenset(h.events)) for i, h in enumerate(hooks)
        ]
        self._node = node_id
        self._cluster = cluster
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._window = coalesce_window
        self._backoff = (backoff_base, backoff_max)
        self._limit = queue_limit
        self._session_factory = session_factory
        self._clock = clock
        self._wall = wall_clock
        self._on_result = on_result
        values = [h.url_file.reveal() for h in hooks] + [s.reveal() for s in secrets]
        # Longest first, so a secret that contains another is scrubbed whole.
        self._secret_values = sorted({v for v in values if v}, key=len, reverse=True)
        self._recent: dict[tuple[str, str], _Recent] = {}
        self._closing = False
        self._workers: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    # ------------------------------------------------------------------ producer side

    def notify(self, kind: str, title: str, fields: Mapping[str, Any] | None = None) -> None:
        """Enqueue a notification; never blocks, never raises on bad input."""
        if self._closing or not self._hooks:
            return
        try:
            msg = Message(
                kind, self._scrub(str(title)), self._scrub(dict(fields or {})), self._wall()
            )
        except Exception:  # a field that cannot be rendered must not hurt the caller
            log.exception("notification %s dropped: fields could not be rendered", kind)
            return
        if kind not in KINDS:
            log.warning("notification of unknown kind %r", kind)
        if self._coalesce(msg):
            self._result(RESULT_COALESCED)
            return
        for hook in self._hooks:
            if not hook.wants(kind):
                continue
            if len(hook.queue) >= self._limit:
                hook.queue.popleft()
                self._result(RESULT_DROPPED)
            hook.queue.append(msg)
            hook.wake.set()
            self._idle.clear()

    def _coalesce(self, msg: Message) -> bool:
        """True when an identical alert went out within the window (it is counted)."""
        key = (msg.kind, msg.title)
        now = self._clock()
        entry = self._recent.get(key)
        if entry is not None and now - entry.first < self._window:
            if entry.message is not None and not entry.message.frozen:
                entry.message.repeated += 1  # still queued: the repeat rides along
            else:
                entry.suppressed += 1  # reported with the next one after the window
            return True
        msg.repeated = entry.suppressed if entry else 0
        self._recent[key] = _Recent(now, msg)
        if len(self._recent) > 1000:
            horizon = now - self._window
            self._recent = {k: v for k, v in self._recent.items() if v.first >= horizon}
        return False

    # ------------------------------------------------------------------ delivery

    async def run(self) -> None:
        """Deliver until cancelled or closed; the owner awaits this task."""
        if not self._hooks:
            return
        async with self._session_factory() as session, asyncio.TaskGroup() as tg:
            for hook in self._hooks:
                self._workers.append(
                    tg.create_task(self._worker(hook, session), name=f"webhook-{hook.index}")
                )

    async def close(self, flush_timeout: float) -> None:
        """Stop accepting; give queued messages up to flush_timeout, then end ``run``."""
        self._closing = True
        for hook in self._hooks:
            hook.wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_timeout):
                await self._idle.wait()
        # Whatever is still queued now belongs to a slow or dead receiver.
        for task in self._workers:
            task.cancel()
        dropped = self.pending()
        if dropped:
            log.warning("%d webhook message(s) not delivered at shutdown", dropped)
            for hook in self._hooks:
                hook.queue.clear()

    def pending(self) -> int:
        return sum(len(h.queue) for h in self._hooks)

    async def _worker(self, hook: _Hook, session: aiohttp.ClientSession) -> None:
        while True:
            if not hook.queue:
                self._update_idle()
                if self._closing:
                    return
                hook.wake.clear()
                await hook.wake.wait()
                continue
            msg = hook.queue[0]
            try:
                await self._deliver(hook, msg, session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook #%d: delivery failed unexpectedly", hook.index)
                self._result(RESULT_FAILED)
            if hook.queue and hook.queue[0] is msg:
                hook.queue.popleft()

    def _update_idle(self) -> None:
        if not any(h.queue for h in self._hooks):
            self._idle.set()

    async def _deliver(self, hook: _Hook, msg: Message, session: aiohttp.ClientSession) -> None:
        msg.frozen = True
        body = json.dumps(self.payload(msg, hook.format)).encode()
        for attempt in range(1, self._max_attempts + 1):
            outcome = await self._post(hook, session, body)
            if outcome is None:
                self._result(RESULT_SENT)
                return
            retryable, reason = outcome
            if not retryable:
                log.warning("webhook #%d refused %s: %s", hook.index, msg.kind, reason)
                self._result(RESULT_FAILED)
                return
            if attempt == self._max_attempts:
                break
            self._result(RESULT_RETRY)
            await asyncio.sleep(self._delay(attempt))
        log.warning(
            "webhook #%d: %s dropped after %d attempts", hook.index, msg.kind, self._max_attempts
        )
        self._result(RESULT_FAILED)

    async def _post(
        self, hook: _Hook, session: aiohttp.ClientSession, body: bytes
    ) -> tuple[bool, str] | None:
        """None on success, else (retryable, reason) with no URL in it."""
        try:
            async with asyncio.timeout(self._timeout):
                async with session.post(
                    hook.url.reveal(),
                    data=body,
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                ) as resp:
                    await resp.read()
                    status = resp.status
        except TimeoutError:
            return True, "timed out"
        except (aiohttp.ClientError, OSError) as exc:
            # The exception text may carry the URL: keep only its type.
            return True, type(exc).__name__
        if 200 <= status < 300:
            return None
        return (status >= 500 or status == 429), f"HTTP {status}"

    def _delay(self, attempt: int) -> float:
        base, cap = self._backoff
        delay: float = min(cap, base * 2 ** (attempt - 1))
        return delay * (0.5 + random.random() / 2)

    def _result(self, result: str) -> None:
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:
                log.exception("webhook result callback failed")

    # ------------------------------------------------------------------ payloads

    def payload(self, msg: Message, fmt: str) -> dict[str, Any]:
        severity = KINDS.get(msg.kind, "info")
        when = datetime.datetime.fromtimestamp(msg.wall_time, datetime.UTC).isoformat()
        if fmt == "json":
            return {
                "kind": msg.kind,
                "severity": severity,
                "title": msg.title,
                "node": self._node,
                "cluster": self._cluster,
                "time": when,
                "repeated": msg.repeated,
                "fields": msg.fields,
            }
        return self._slack(msg, severity, when)

    def _slack(self, msg: Message, severity: str, when: str) -> dict[str, Any]:
        where = " ".join(
            p
            for p in (
                self._cluster and f"cluster {self._cluster}",
                self._node and f"node {self._node}",
            )
            if p
        )
        text = f"[{severity}] {msg.title}"
        if where:
            text += f" ({where})"
        if msg.repeated:
            text += f" (repeated {msg.repeated}x)"
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": msg.title[:150]}},
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"*{severity}* · {msg.kind} · {where} · {when}"}
                ],
            },
        ]
        plain = {k: v for k, v in msg.fields.items() if k != "steps"}
        if plain:
            blocks.append(
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": f"*{k}*\n{_text(v)}"}
                        for k, v in list(plain.items())[:10]
                    ],
                }
            )
        steps = msg.fields.get("steps")
        if isinstance(steps, list) and steps:
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": _steps_text(steps)}}
            )
        if msg.repeated:
            blocks.append(
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": f"repeated {msg.repeated} more times"}],
                }
            )
        return {"text": text, "blocks": blocks}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, Secret):
            return REDACTED
        if isinstance(value, str):
            for secret in self._secret_values:
                value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, Mapping):
            return {str(self._scrub(str(k))): self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._scrub(v) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self._scrub(str(value))


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)[:500]
    return str(value)[:500]


def _steps_text(steps: list[Any]) -> str:
    lines = []
    for step in steps[:20]:
        if not isinstance(step, Mapping):
            continue
        mark = "ok" if step.get("ok", True) else "FAILED"
        dur = step.get("duration")
        dur_s = f"{dur:.3f}s" if isinstance(dur, (int, float)) else "?"
        lines.append(f"{step.get('name', '?')}: {dur_s} {mark}")
    return "```\n" + "\n".join(lines) + "\n```"
