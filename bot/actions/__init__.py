"""Failover actions: DRBD, the floating IP, Asterisk service control, the PSTN route."""

from bot.actions.errors import ActionError

__all__ = ["ActionError"]
