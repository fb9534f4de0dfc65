"""failover-bot simulate ...: the simulators, for labs, tests and the demo."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that provide ``register_simulate(simulate_subparsers)``, with their verbs
# (only the one that runs is imported: the lab's Asterisk start and stop use them).
SIMULATOR_MODULES: dict[str, tuple[str, ...]] = {
    "bot.commands.sim_rseries": ("rseries",),
    "bot.commands.sim_asterisk": (
        "asterisk",
        "asterisk-stop",
        "asterisk-status",
        "asterisk-control",
    ),
    "bot.commands.sim_ari": ("ari",),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a simulator (Asterisk AMI, R-Series appliance)")
    simsub = p.add_subparsers(dest="simulator", metavar="SIMULATOR")
    wanted = next((w for w in sys.argv[2:] if not w.startswith("-")), None)
    names = [m for m, verbs in SIMULATOR_MODULES.items() if wanted in verbs] or list(
        SIMULATOR_MODULES
    )
    for name in names:
        importlib.import_module(name).register_simulate(simsub)
