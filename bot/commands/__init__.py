"""CLI verbs, one module per area; each exposes ``register(subparsers)``.

A verb's handler returns an exit code or raises ``CommandFailed`` (exit 1: it
ran, the outcome was a failure) or ``CannotRun`` (exit 2: usage, configuration,
or a dependency that cannot be reached).
"""

from __future__ import annotations

# Module names under bot.commands, in --help order.
COMMAND_MODULES = [
    "check_config",
    "simulate",
    "ami",
    "rseries",
    "cluster",
    "actions",
]
