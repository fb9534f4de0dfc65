"""A whole cluster on one machine: the demo, the end-to-end tests and the benchmarks.

``cluster`` starts Redis, the R-Series simulator and two bots (each under
``supervisor``, which does what systemd does in production), with each node's
"Asterisk" played by the AMI simulator and the floating IP inside network
namespaces (``netns``) when the machine allows them.
"""
