"""Suite-wide determinism: hypothesis draws the same examples on every run ("ci", the
default); `pytest --hypothesis-profile fuzz` searches fresh examples at length (outside CI).
Torch, where a test uses it, runs on one thread."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
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


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """A local Ray for the session's Ray tests (2 CPUs and 1 GPU declared: with CPU torch the
    policy actor of `--policy-gpus` runs on the CPU); the address other processes join it
    at. (Ray 2.60 swaps a loopback node address for the machine's own and its gRPC servers
    listen on every interface; the token it makes for a new cluster, `~/.ray/auth_token`,
    is what keeps others out. No dashboard.) Ended with ray.shutdown(), never `ray stop`."""
    ray = pytest.importorskip("ray", reason="Ray is an opt-in extra: pip install 'qrobot[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ctx = ray.init(
        num_cpus=2,
        num_gpus=1,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level="WARNING",
        log_to_driver=False,
    )
    try:
        yield str(ctx.address_info["gcs_address"])
    finally:
        ray.shutdown()
