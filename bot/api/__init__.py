"""The HTTP API: health endpoints, status JSON and page, SSE, controls, peer channel."""

from bot.api.app import SIGNATURE_HEADER, bound_port, create_app, parse_listen, start_api
from bot.api.protocols import ControlSink, NodeView, PeerHandler

__all__ = [
    "SIGNATURE_HEADER",
    "ControlSink",
    "NodeView",
    "PeerHandler",
    "bound_port",
    "create_app",
    "parse_listen",
    "start_api",
]
