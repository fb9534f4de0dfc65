from __future__ import annotations

from hypothesis import HealthCheck, settings

# Default: fast enough for every run of the suite. `--hypothesis-profile=thorough`
# (make bench, manual runs) explores many more schedules.
settings.register_profile(
    "default",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("default")
