"""Taking the lease back in tests whose subject is not the lease: on a loaded machine a
policy's retains can starve past the staleness bound (0.5 s), and the agent rightly refuses
a stale lease until the policy acquires again (tests/bridge/test_agent_core.py says so)."""

from __future__ import annotations

from typing import Any


def retake_lease(core: Any, policy: Any, clock: Any) -> None:
    """Acquire again if the policy's lease is stale or not held, as a policy runner does
    between episodes (`RemoteEnv.reset`)."""
    if core.holder != "policy" or core.ages(clock())[1] > core.timing.lease_stale:
        try:
            policy.acquire()
        except PermissionError:  # a retain stamped just before the bound, handled after the
            assert core.holder == "policy"  # check, made it fresh again: the grant holds
