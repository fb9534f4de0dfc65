"""CLI verbs, one module per area; each exposes ``register(subparsers)``.

A verb's handler returns an exit code or raises ``VerbFailed`` (exit 1: it
ran, the outcome was a failure) or ``CannotRun`` (exit 2: usage, configuration,
or a dependency that cannot be reached).

Modules are imported only for the verb that runs: the fencing and simulator
verbs are started by other programs on the failover path, where every 100 ms
of Python imports counts.
"""

from __future__ import annotations

# Module names under bot.commands, in --help order, with the verbs each defines.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "run": ("run",),
    "check_config": ("check-config",),
    "cluster": (
        "status",
        "switchover",
        "pause",
        "resume",
        "cordon",
        "uncordon",
        "clear-failed",
        "events",
    ),
    "check": ("check",),
    "drill": ("drill",),
    "actions": ("fence-local",),
    "drbd": ("drbd-fence-peer", "drbd-split-brain", "force-promote"),
    "ami": ("test-call", "ami"),
    "rseries": ("rseries",),
    "simulate": ("simulate",),
    "demo": ("demo",),
}


def modules_for(verb: str | None) -> list[str]:
    """The modules to import for ``verb``; all of them for help or an unknown verb."""
    for module, verbs in COMMAND_MODULES.items():
        if verb in verbs:
            return [module]
    return list(COMMAND_MODULES)
