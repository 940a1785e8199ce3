"""Adversarial commands: >= 100,000 fuzzed inputs -> 0 non-finite outputs, 0 limit
violations, 0 uncaught exceptions (real Panda IK and a real diff-drive state)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qrobot.safety.command import SafeCommand, Stop

from .conftest import Rig

WEIRD = np.array([np.nan, np.inf, -np.inf, 1e308, -1e308, -0.0, 0.0, 5e-324, -5e-324, 1e-300,
                  1.0, -1.0, 0.5, 2.0, -7.0, 3.4e38])


def weird_command(rng: np.random.Generator, dim: int) -> Any:
    kind = int(rng.integers(14))
    if kind == 0:
        return rng.choice(WEIRD, dim)
    if kind == 1:
        return rng.uniform(-1, 1, dim)
    if kind == 2:
        return rng.uniform(-3, 3, dim).astype(rng.choice([np.float16, np.float32, np.float64]))
    if kind == 3:
        shape = [(dim - 1,), (dim + 1,), (dim, 1), (), (2, dim), (0,)][int(rng.integers(6))]
        return rng.uniform(-1, 1, shape)
    if kind == 4:
        return rng.integers(-3, 3, dim) if rng.random() < 0.5 else rng.random(dim) < 0.5
    if kind == 5:
        return None
    if kind == 6:
        return ["nan", "1.0", "forward", b"\x00\x01", ""][int(rng.integers(5))]
    if kind == 7:
        keys = ["dx", "dy", "dz", "v", "omega", "extra"][: int(rng.integers(7))]
        return {k: float(rng.choice(WEIRD)) for k in keys}
    if kind == 8:
        return ["a", 1, None, 2.0][: dim]
    if kind == 9:
        return rng.uniform(-1, 1, dim) + 1j * rng.uniform(-1, 1, dim)
    if kind == 10:
        return tuple(float(x) for x in rng.choice(WEIRD, dim))
    if kind == 11:
        return np.array([object()] * dim)
    if kind == 12:
        return [[float(x)] for x in rng.uniform(-1, 1, dim)]
    a = rng.uniform(-1, 1, dim)
    a[int(rng.integers(dim))] = float(rng.choice(WEIRD))
    return a


class Checker:
    """Asserts every output of a rig's supervisor is finite and inside the limits."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.prev = np.zeros(2)  # base: last issued (v, w)
        self.outputs = 0
        self.passed = 0  # SafeCommands (so the fuzz exercises the limiting rules, not just rejects)

    def check(self, out: Any, state: dict) -> None:
        assert isinstance(out, (SafeCommand, Stop)), type(out)
        cmd = out.brake if isinstance(out, Stop) else out
        self.outputs += 1
        self.passed += isinstance(out, SafeCommand)
        if cmd is None:
            return
        assert cmd.issued_by_supervisor and np.all(np.isfinite(cmd.values))
        lim, dt = self.rig.limits, self.rig.limits.control_dt
        if self.rig.robot.name == "panda":
            q, target = state["joint_pos"], cmd.values[:7]
            assert cmd.values.shape == (15,) and cmd.values[7] in (0.0, 0.04)
            assert np.all(cmd.values[8:] <= np.asarray(lim.arm.joint_vel_max)) and np.all(cmd.values[8:] > 0)
            assert np.all(target >= np.minimum(np.asarray(lim.arm.joint_lower), q) - 1e-9)
            assert np.all(target <= np.maximum(np.asarray(lim.arm.joint_upper), q) + 1e-9)
            assert np.all(np.abs(target - q) <= np.asarray(lim.arm.joint_vel_max) * dt + 1e-9)
        else:
            v, w, done = cmd.values
            b = lim.base
            assert abs(v) <= b.v_max + 1e-12 and abs(w) <= b.w_max + 1e-12 and done in (0.0, 1.0)
            assert abs(v - self.prev[0]) <= b.v_acc * dt + 1e-9
            assert abs(w - self.prev[1]) <= b.w_acc * dt + 1e-9
            self.prev = np.array([v, w])

    def run(self, commands: list[Any], step_every: int = 97) -> None:
        rig = self.rig
        for i, action in enumerate(commands):
            state = rig.state()
            out = rig.sup.filter(action, state)  # must never raise
            self.check(out, state)
            if rig.sup.latched:  # the watchdog latched (a run of invalid commands): new episode
                rig.sup.reset()
                self.prev = np.zeros(2)
            if i % step_every == 0:  # let the robot move so states vary
                rig.robot.apply(out)
            rig.sim.time += rig.sim.dt  # a fresh timestamp for every command
            if i % step_every == 0:
                rig.sim.step()


def test_fuzz_arm_60k(arm: Rig) -> None:
    rng = np.random.default_rng(1)
    checker = Checker(arm)
    checker.run([weird_command(rng, 5) for _ in range(60_000)])
    assert checker.outputs == 60_000 and checker.passed > 10_000


def test_fuzz_base_60k(base: Rig) -> None:
    rng = np.random.default_rng(2)
    checker = Checker(base)
    checker.run([weird_command(rng, 3) for _ in range(60_000)])
    assert checker.outputs == 60_000 and checker.passed > 10_000


ANY_COMMAND = st.one_of(
    st.none(), st.text(max_size=8), st.binary(max_size=8), st.integers(), st.floats(),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=7),
    st.lists(st.one_of(st.floats(), st.text(max_size=2), st.none()), max_size=6),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=4),
    hnp.arrays(hnp.floating_dtypes(), hnp.array_shapes(max_dims=2, max_side=6)),
    hnp.arrays(np.float64, 5, elements=st.floats(allow_nan=True, allow_infinity=True)),
    hnp.arrays(np.float64, 3, elements=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)),
)


@pytest.mark.parametrize("robot", ["panda", "diffbot"])
def test_hypothesis_commands(robot: str) -> None:
    rig = Rig(robot)
    checker = Checker(rig)

    @settings(max_examples=1500, deadline=None, database=None)
    @given(ANY_COMMAND)
    def prop(action: Any) -> None:
        checker.run([action])

    prop()
    rig.sim.close()


class _ZeroKinematics:
    def ik(self, target: np.ndarray, yaw: float) -> np.ndarray:
        return np.zeros(7)

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        return np.zeros((6, 7))


@settings(max_examples=300, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["joint_pos", "joint_vel", "ee_pos", "ee_yaw", "time", "base_pose",
                                        "base_vel", "people"]),
                       st.one_of(st.none(), st.floats(), st.lists(st.floats(), max_size=8), st.text(max_size=3)),
                       max_size=8))
def test_garbage_state_stops_never_raises(state: dict) -> None:
    from qrobot.safety.limits import default_limits
    from qrobot.safety.supervisor import Supervisor

    for robot, dim, scale in (("panda", 5, (0.025, 0.25)), ("diffbot", 3, (0.5, 1.2))):
        sup = Supervisor(default_limits(robot, 0.1), scale, kinematics=_ZeroKinematics())
        out = sup.filter(np.zeros(dim), state)
        if isinstance(out, SafeCommand):  # only a complete, finite state may pass
            assert all(np.all(np.isfinite(np.asarray(state[k], dtype=float))) for k in
                       (("joint_pos", "joint_vel", "ee_pos", "ee_yaw") if robot == "panda"
                        else ("base_pose", "base_vel")))
        else:
            assert isinstance(out, Stop) and sup.latched
