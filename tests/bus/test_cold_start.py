"""`failover-bot status` with both nodes down: which node to start first."""

from __future__ import annotations


def test_cold_start_names_the_last_primary() -> None:
    from bot.bus.status import build_status
    from bot.commands.cluster import format_status

    def status(seen: dict[str, tuple[float, str | None]]) -> str:
        obj = build_status(
            cluster="pbx", node_ids=["pbx-a", "pbx-b"], lease=None, records={},
            controls=None, now_wall=10_000.0, now_clock=0.0, stale_after=4.0, seen=seen,
        )  # fmt: skip
        return format_status(dict(obj))

    both_down = status({"pbx-a": (6_400.0, "standby"), "pbx-b": (6_399.0, "primary")})
    assert "COLD START: no node reports. Start pbx-b first: it was primary last" in both_down
    assert "3601 s ago" in both_down and "drbdadm status" in both_down
    unknown = status({})
    assert "Redis does not know the last primary" in unknown
