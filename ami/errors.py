"""The one error family of the ami package.

``AmiConnectionError``, ``AmiAuthError`` and ``AmiTimeout`` say the link or the
peer failed; ``AmiActionError`` says Asterisk answered an action with an error;
``AmiProtocolError`` says the peer broke the wire format. Messages never carry
the AMI secret.
"""

from __future__ import annotations


class AmiError(Exception):
    """Any failure talking to Asterisk."""


class AmiConnectionError(AmiError):
    """Not connected, connection refused, reset or closed."""


class AmiAuthError(AmiError):
    """Login refused (wrong user or secret)."""


class AmiActionError(AmiError):
    """Asterisk answered an action with ``Response: Error``."""


class AmiTimeout(AmiError):
    """An answer did not arrive in time."""


class AmiProtocolError(AmiError):
    """The peer broke the AMI wire format (e.g. a frame too large)."""
