"""failover-bot simulate ...: the simulators, for labs, tests and the demo."""

from __future__ import annotations

import argparse
import importlib

# Modules that provide ``register_simulate(simulate_subparsers)``.
SIMULATOR_MODULES: list[str] = ["rseries.simulator_cli", "ami.simulator_cli", "ami.ari_simulator"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="run a simulator (Asterisk AMI, R-Series appliance)")
    simsub = p.add_subparsers(dest="simulator", metavar="SIMULATOR")
    for name in SIMULATOR_MODULES:
        importlib.import_module(name).register_simulate(simsub)
