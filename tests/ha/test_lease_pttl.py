"""A lease key that lives longer than lease_ttl is alerted (once per episode).

Every acquire and renewal sets lease_ttl; a longer PTTL means the Redis host's clock
stepped back (Redis keeps expiries as wall-clock instants) or a node runs with another
lease_ttl. Nothing unsafe follows, but takeovers come late by the difference.
"""

from __future__ import annotations

from bot.agent.observer import lease_view
from bot.bus import Bus
from bot.config import RedisConfig
from bot.ha import Action, ControlsView, HaConfig, HaState, LeaseView, Observation, step
from tests.helpers import RedisServer

CFG = HaConfig(node_id="b", peers=("a",), lease_ttl=3.0)
NOW = 1000.0


def _alerts(actions: list[Action]) -> list[str]:
    alerts = [a for a in actions if a.kind == "alert" and a.args["topic"] == "lease_pttl"]
    return [str(a.args["text"]) for a in alerts]


def _obs(lease: LeaseView) -> Observation:
    return Observation(lease=lease, lease_read_ok=True, controls=ControlsView(), redis_run_id="r")


async def test_a_key_read_from_redis_with_a_longer_life_is_alerted(
    redis_server: RedisServer,
) -> None:
    a = Bus(RedisConfig(url=redis_server.url, timeout=0.5), "t", "a")
    b = Bus(RedisConfig(url=redis_server.url, timeout=0.5), "t", "b")
    try:
        assert await a.acquire(10.0, 0) is not None  # 10 s where this cluster says 3 s
        read = await b.read_lease()
    finally:
        await a.close()
        await b.close()
    s = HaState(cfg=CFG, role="standby", since=NOW - 50)
    after, actions, _ = step(s, _obs(lease_view(read)), NOW)
    texts = _alerts(actions)
    assert len(texts) == 1 and "more than lease_ttl 3 s" in texts[0], texts
    _, again, _ = step(after, _obs(lease_view(read)), NOW + 0.2)
    assert _alerts(again) == []  # once per episode


def test_a_key_within_lease_ttl_is_not_alerted_and_ends_the_episode() -> None:
    s = HaState(cfg=CFG, role="standby", since=NOW - 50, pttl_alerted=True)
    within = LeaseView("a", 4, NOW + 2.9, pttl=2.9)
    after, actions, _ = step(s, _obs(within), NOW)
    assert _alerts(actions) == [] and not after.pttl_alerted
    beyond = LeaseView("a", 4, NOW + 9.0, pttl=9.0)
    _, actions, _ = step(after, _obs(beyond), NOW + 1)
    assert len(_alerts(actions)) == 1
