"""The bus's one error family."""

from __future__ import annotations


class BusError(Exception):
    """Something went wrong talking to the cluster bus."""


class BusUnavailable(BusError):
    """Redis could not be reached in time, or did not confirm a write (connection, timeout)."""


class MarkedOutdated(BusError):
    """The lease was refused: this node's data is marked outdated on the bus."""


class BusCorrupt(BusError):
    """A value on the bus does not parse or has an unknown schema version.

    Never read as "free": the caller must treat the key as held by someone it cannot name.
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")
