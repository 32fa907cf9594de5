"""Shared test set-up.

Hypothesis is derandomized with a fixed example budget everywhere, so a run
is a pure function of the code: no flaky property tests. Set
HYPOTHESIS_PROFILE=explore to search with fresh randomness locally.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    derandomize=True,
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("explore", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
