"""Suite-wide determinism: hypothesis draws the same examples on every run ("ci", the
default); `pytest --hypothesis-profile fuzz` searches fresh examples at length (outside CI).
Torch, where a test uses it, runs on one thread."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz",
    derandomize=False,
    database=None,
    deadline=None,
    max_examples=20_000,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("QROBOT_HYPOTHESIS_PROFILE", "ci"))

try:  # one thread: results do not depend on how many cores a machine has
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass
