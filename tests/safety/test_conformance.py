"""Limit conformance between control ticks: corner and over-range random actions through
real envs, every physics substep (240 Hz) probed. Every speed, acceleration (25 ms
windows), per-period step and position limit holds within 1 % in free motion; the arm's
workspace floor keeps its fingers off the table (no contact at all on `reach`)."""

from __future__ import annotations

import pytest
from qrobot.envs.core import QRobotEnv

from qrobot.safety.conformance import measure_env
from qrobot.scenario import load_scenario

BAR = 1.01
STEPS = 1200  # the benchmark runs 10,000 (benchmarks/limit_conformance.py)


def _zoned_room() -> object:
    sc = load_scenario("pointnav")
    room = sc.room.model_copy(update={"obstacles": [], "random_obstacles": 0})
    return sc.model_copy(
        update={
            "room": room,
            "limits": sc.limits.model_copy(
                update={
                    "overrides": {"keep_out": [[1.0, -0.6, 1.6, 0.6], [-1.6, -0.6, -1.0, 0.6], [-0.4, 1.2, 0.4, 2.0]]}
                }
            ),
        }
    )


@pytest.mark.parametrize("actions", ["corner", "uniform"])
def test_arm_limits_hold_at_every_substep(actions: str) -> None:
    env = QRobotEnv("reach", images=False)
    out = measure_env(env, STEPS, seed=0 if actions == "corner" else 1, actions=actions)
    env.close()
    assert out["contact_samples"] == 0, out["contact"]  # the workspace floor keeps the fingers up
    expected = {
        "EE speed",
        "EE yaw rate",
        "EE step per period",
        "joint speed",
        "joint acceleration (25 ms)",
        "joint position",
        "workspace",
    }
    assert set(out["free"]) == expected and out["samples"] >= STEPS * 24 - 24
    assert max(out["free"].values()) <= BAR, out["free"]
    assert out["free"]["EE speed"] > 0.9  # the actions did push on the limits


def test_arm_limits_hold_in_free_motion_among_props() -> None:
    """pick_place: random actions hit cubes and bowls; between impacts every limit holds
    (the folded-elbow configurations near the table are where the Jacobian turns fastest)."""
    env = QRobotEnv("pick_place", images=False)
    out = measure_env(env, STEPS, seed=4, actions="corner")
    env.close()
    assert out["contact_samples"] > 0  # the props were hit: impacts are listed apart
    assert max(out["free"].values()) <= BAR, out["free"]


@pytest.mark.parametrize("actions", ["corner", "uniform"])
def test_base_limits_hold_at_every_substep(actions: str) -> None:
    env = QRobotEnv(_zoned_room(), images=False)
    out = measure_env(env, STEPS, seed=2 if actions == "corner" else 3, actions=actions)
    env.close()
    assert max(out["free"].values()) <= BAR, out["free"]
    assert out["free"]["base speed"] > 0.95 and out["free"]["base turn rate"] > 0.95
    assert out["contact_samples"] == 0, out["contact"]  # walls are beyond the map bounds


def test_the_arm_does_not_sag_below_the_workspace_floor() -> None:
    """Driven into the far low corner, then held with neutral actions: the motors' small
    tracking lag under gravity must not accumulate below the floor (each plan starts where
    the arm is measured; outside the box the step goes back by the depth)."""
    from .conftest import Rig  # (here: benchmarks import this module on its own)

    rig = Rig("panda")
    floor = rig.limits.arm.ws_low[2]
    lowest = 1.0
    for k in range(184):
        rig.step([1.0, 1.0, -1.0, 1.0, 1.0] if k < 84 else [0.0, 0.0, 0.0, 0.0, 1.0])
        lowest = min(lowest, float(rig.robot.state()["ee_pos"][2]))
    rig.sim.close()
    assert lowest > floor - 0.001, lowest  # it sank 7 mm (fingers on the ground) before
