"""Logging: readable by default, one JSON object per line with --log-format json.

Every record carries the node id and its current role, taken from ``LOG_CONTEXT``,
which the agent updates when the role changes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass


@dataclass
class LogContext:
    node: str = "-"
    role: str = "-"


LOG_CONTEXT = LogContext()


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.node = LOG_CONTEXT.node
        record.role = LOG_CONTEXT.role
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": getattr(record, "node", "-"),
            "role": getattr(record, "role", "-"),
            "msg": record.getMessage(),
        }
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        return json.dumps(obj, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)-7s [%(node)s/%(role)s] %(name)s: %(message)s"


def setup_logging(fmt: str = "text", level: str = "info", node: str | None = None) -> None:
    if node:
        LOG_CONTEXT.node = node
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
