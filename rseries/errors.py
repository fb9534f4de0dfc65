"""The one error family of the rseries package."""

from __future__ import annotations


class RSeriesError(Exception):
    """Any failure talking to the R-Series appliance."""


class RSeriesLinkError(RSeriesError):
    """The serial link cannot be opened, is taken by another process, or was lost."""


class RSeriesTimeout(RSeriesError):
    """The appliance did not answer a command in time."""


class RSeriesProtocolError(RSeriesError):
    """The appliance answered something the protocol does not allow here."""


class WriteRefused(RSeriesError):
    """The caller's check, made right before the line would be written, said no."""


class ApplianceError(RSeriesError):
    """The appliance answered ``ERR <code> <text>``."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"ERR {code} {text}")
        self.code = code
        self.text = text

    @property
    def line(self) -> str:
        return f"ERR {self.code} {self.text}"
