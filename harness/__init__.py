"""Watches a lab cluster from outside, independently of the bots.

The recorders, the checker of the lease rules, the fault-injecting TCP proxy,
the floating-IP sampler and the stand-in commands (DRBD, mount, systemd, ip)
that the end-to-end tests, the chaos run and the benchmarks share. Nothing here
imports the bots' decision code: it judges what the outside world saw.
"""
