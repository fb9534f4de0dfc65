"""The action error family: everything a command, a DRBD, VIP, Asterisk or PSTN step raises."""

from __future__ import annotations


class ActionError(Exception):
    """An action could not be carried out."""


class CommandFailed(ActionError):
    """A command ran and exited non-zero (or could not be started)."""

    def __init__(self, message: str, *, returncode: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output


class CommandNotFound(CommandFailed):
    """The command's executable does not exist or is not executable."""


class CommandTimeout(ActionError):
    """A command did not finish within its timeout; it was killed."""


class DrbdError(ActionError):
    """A DRBD operation failed."""


class DrbdModuleMissing(DrbdError):
    """drbdadm/drbdsetup exited 20: the DRBD kernel module is not loaded."""


class PromoteRefused(DrbdError):
    """Promotion refused: the local data is not known to be good."""


class VipError(ActionError):
    """The floating address could not be added, removed or checked."""


class AsteriskError(ActionError):
    """Asterisk could not be started, stopped, killed or did not boot."""


class PstnError(ActionError):
    """The R-Series appliance did not route the spans here."""


class LeaseLost(ActionError):
    """The lease stopped being valid before a primary action."""
