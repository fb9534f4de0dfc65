#!/usr/bin/python3 -IS
"""What the fake commands in bin/ run: fakecmd imported, not run as a script, so its
compiled bytecode is cached (the bots probe DRBD every second; compiling the fakes
each time cost the lab more CPU than the probes themselves)."""

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
sys.exit(importlib.import_module("fakecmd").main())
