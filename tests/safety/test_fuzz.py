"""The supervisor's contract, fuzzed and as properties (hypothesis, derandomized in CI):

- for any action and any state the output is a sealed plan within every limit, or a Stop;
  `filter` never raises;
- a robot state it cannot vouch for latches the e-stop; a people report it cannot vouch
  for is a protective stop;
- a latch holds until the operator key releases it, and a release never restarts motion
  until a fresh neutral command; stale commands never restart motion.

Real Panda IK/Jacobian and a real diff-drive state (>= 100,000 fuzzed inputs)."""

from __future__ import annotations

import datetime
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qrobot.safety import trajectory
from qrobot.safety.command import SafeCommand, Stop
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import OperatorKey, Supervisor

from .conftest import Rig

WEIRD = np.array(
    [np.nan, np.inf, -np.inf, 1e308, -1e308, -0.0, 0.0, 5e-324, -5e-324, 1e-300, 1.0, -1.0, 0.5, 2.0, -7.0, 3.4e38]
)


def weird_command(rng: np.random.Generator, dim: int) -> Any:
    kind = int(rng.integers(20))
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
        return ["a", 1, None, 2.0][:dim]
    if kind == 9:
        return rng.uniform(-1, 1, dim) + 1j * rng.uniform(-1, 1, dim)
    if kind == 10:
        return tuple(float(x) for x in rng.choice(WEIRD, dim))
    if kind == 11:
        return np.array([object()] * dim)
    if kind == 12:
        return [[float(x)] for x in rng.uniform(-1, 1, dim)]
    if kind == 13:
        return [10 ** int(rng.integers(18, 400))] + [0] * (dim - 1)  # Python ints beyond 64 bits
    if kind == 14:
        return [f"{x:.2f}" for x in rng.uniform(-1, 1, dim)]  # numeric strings
    if kind == 15:
        return np.array(["2026-01-01"] * dim, dtype="datetime64[D]")
    if kind == 16:
        return np.ma.masked_array(rng.uniform(-1, 1, dim), mask=rng.random(dim) < 0.5)
    if kind == 17:
        return np.zeros(dim, dtype=[("a", "f8")])
    if kind == 18:
        t = torch.tensor(rng.uniform(-1.5, 1.5, dim), dtype=torch.float32, requires_grad=bool(rng.random() < 0.5))
        return t if rng.random() < 0.8 else t > 0
    a = rng.uniform(-1, 1, dim)
    a[int(rng.integers(dim))] = float(rng.choice(WEIRD))
    return a


class Checker:
    """Asserts every output of a rig's supervisor is a sealed, finite plan inside the limits."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.outputs = 0
        self.passed = 0  # plans (so the fuzz exercises the limiting rules, not just rejects)

    def check(self, out: Any, state: dict) -> None:
        assert isinstance(out, (SafeCommand, Stop)), type(out)
        cmd = out.brake if isinstance(out, Stop) else out
        self.outputs += 1
        self.passed += isinstance(out, SafeCommand)
        if cmd is None:
            return
        assert cmd.seal and np.all(np.isfinite(cmd.values))
        lim, dt = self.rig.limits, self.rig.limits.control_dt
        if self.rig.robot.name == "panda":
            a = lim.arm
            assert cmd.values.shape == (22,) and cmd.values[21] in (0.0, 0.04)
            q0, v0, v1 = cmd.values[:7], cmd.values[7:14], cmd.values[14:21]
            np.testing.assert_array_equal(q0, state["joint_pos"])
            np.testing.assert_array_equal(v0, state["cmd_vel"])
            assert np.all(np.abs(v1) <= a.vmax + 1e-9)
            assert np.all(np.abs(v1 - v0) <= a.amax * dt + 1e-9)
            rest = q0 + trajectory.stopping_displacement(v0, v1, a.amax, dt)
            assert np.all(rest >= np.minimum(a.lower, q0) - 1e-9) and np.all(rest <= np.maximum(a.upper, q0) + 1e-9)
            jac = self.rig.robot.jacobian(q0)
            if np.linalg.norm(jac[:3] @ v0) <= a.ee_speed_max:  # the ramp from v0 keeps the EE speed
                assert np.linalg.norm(jac[:3] @ v1) <= a.ee_speed_max + 1e-9
        else:
            b = lim.base
            v1, w1, done, v0, w0 = cmd.values
            assert (v0, w0) == tuple(state["cmd_vel"]) and done in (0.0, 1.0)
            assert abs(v1) <= b.v_max + 1e-12 and abs(w1) <= b.w_max + 1e-12
            assert abs(v1 - v0) <= b.v_acc * dt + 1e-9 and abs(w1 - w0) <= b.w_acc * dt + 1e-9

    def run(self, commands: list[Any], step_every: int = 97) -> None:
        rig = self.rig
        for i, action in enumerate(commands):
            state = rig.state()
            out = rig.sup.filter(action, state)  # must never raise
            self.check(out, state)
            if rig.sup.latched:  # the watchdog latched (a run of invalid commands): the operator releases
                assert rig.sup.reset_estop(rig.key, rearm=False)
            if i % step_every == 0:  # let the robot move so states vary
                rig.robot._apply(out)
                rig.sim.step()
            else:
                rig.sim._time += rig.sim.dt  # a fresh timestamp for every command


def test_fuzz_arm_60k(arm: Rig) -> None:
    rng = np.random.default_rng(1)
    checker = Checker(arm)
    checker.run([weird_command(rng, 5) for _ in range(60_000)])
    assert checker.outputs == 60_000 and checker.passed > 6_000


def test_fuzz_base_60k(base: Rig) -> None:
    rng = np.random.default_rng(2)
    checker = Checker(base)
    checker.run([weird_command(rng, 3) for _ in range(60_000)])
    assert checker.outputs == 60_000 and checker.passed > 6_000


ANY_COMMAND = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.binary(max_size=8),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), max_size=7),
    st.lists(st.integers(min_value=-(10**400), max_value=10**400), min_size=3, max_size=5),
    st.lists(st.one_of(st.floats(), st.text(max_size=2), st.none(), st.booleans()), max_size=6),
    st.dictionaries(st.text(max_size=3), st.floats(), max_size=4),
    st.datetimes().map(lambda d: [d] * 3),
    st.just(datetime.timedelta(1)),
    hnp.arrays(hnp.floating_dtypes(), hnp.array_shapes(max_dims=2, max_side=6)),
    hnp.arrays(hnp.integer_dtypes(), st.sampled_from([3, 5])),
    hnp.arrays(np.bool_, st.sampled_from([3, 5])),
    hnp.arrays(np.float64, 5, elements=st.floats(allow_nan=True, allow_infinity=True)),
    hnp.arrays(np.float64, 3, elements=st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True)),
    st.lists(st.floats(-2, 2), min_size=3, max_size=5).map(torch.tensor),
)


@pytest.mark.parametrize("robot", ["panda", "diffbot"])
def test_any_command_is_a_plan_within_limits_or_a_stop(robot: str) -> None:
    rig = Rig(robot)
    checker = Checker(rig)

    @settings(max_examples=1500)
    @given(ANY_COMMAND)
    def prop(action: Any) -> None:
        checker.run([action])

    prop()
    rig.sim.close()


class _ZeroKinematics:
    def jacobian(self, q: np.ndarray) -> np.ndarray:
        return np.zeros((6, 7))


FIELDS = {
    "panda": {"joint_pos": 7, "joint_vel": 7, "ee_pos": 3, "ee_orn": 4, "ee_yaw": 0, "ee_lin_vel": 3, "cmd_vel": 7},
    "diffbot": {"base_pose": 3, "base_vel": 2, "cmd_vel": 2},
}
VALUE = st.one_of(
    st.none(),
    st.floats(),
    st.booleans(),
    st.text(max_size=3),
    st.integers(-10, 10),
    st.lists(st.floats(-0.1, 0.1), min_size=0, max_size=8),
    st.lists(st.floats(), max_size=8).map(np.array),
    st.integers(0, 8).map(lambda n: np.zeros(n)),
)


def _trusted(value: Any, size: int, key: str = "") -> bool:
    """An independent oracle for a robot-state field: real, finite, exact shape, small (an
    orientation: a unit quaternion)."""
    if isinstance(value, (bool, np.bool_, str)) or value is None:
        return False
    if key == "ee_orn":
        arr = np.asarray(value) if isinstance(value, (list, np.ndarray)) else None
        return (
            arr is not None
            and arr.shape == (4,)
            and arr.dtype.kind in "iuf"
            and bool(np.all(np.isfinite(arr)) and abs(float(np.sum(np.square(arr, dtype=np.float64))) - 1) <= 1e-4)
        )
    if size == 0:
        return type(value) in (int, float) and np.isfinite(value) and abs(value) <= 6
    arr = np.asarray(value) if isinstance(value, (list, np.ndarray)) else None
    return (
        arr is not None
        and arr.shape == (size,)
        and arr.dtype.kind in "iuf"
        and bool(np.all(np.isfinite(arr)) and np.all(np.abs(arr) <= 0.1 + 1e-12))
    )


@settings(max_examples=400)
@given(st.sampled_from(["panda", "diffbot"]), st.data())
def test_untrusted_state_latches_untrusted_people_stop_never_raises(robot: str, data: st.DataObject) -> None:
    """Each field valid (small, exact shape) or garbage; people valid, garbage or absent."""
    spec = FIELDS[robot]
    state: dict[str, Any] = {"time": data.draw(st.one_of(st.just(0.5), VALUE), "time")}
    for key, size in spec.items():
        good = (
            st.lists(st.floats(-0.1, 0.1), min_size=size, max_size=size).map(np.array) if size else st.floats(-0.1, 0.1)
        )
        if key == "ee_orn":  # a unit quaternion, or one slightly off (implausible beyond 1e-4)
            good = st.tuples(st.lists(st.floats(0.1, 1.0), min_size=4, max_size=4), st.sampled_from([1.0, 1.001])).map(
                lambda t: np.array(t[0]) / np.linalg.norm(t[0]) * t[1]
            )
        state[key] = data.draw(st.one_of(good, VALUE), key)
    people = data.draw(st.sampled_from(["absent", "far", "at_robot", "garbage"]), "people")
    if people != "absent":
        state["people"] = {
            "far": np.array([[20.0, 20.0]]),
            "at_robot": np.zeros((1, 2)),
            "garbage": np.array([[np.nan, 1.0]]),
        }[people]
        state["people_radius"] = data.draw(st.sampled_from([0.25, -10.0, np.nan, "0.25"]), "radius")
    sup = Supervisor(
        default_limits(robot, 0.1),
        (0.025, 0.25) if robot == "panda" else (0.5, 1.2),
        kinematics=_ZeroKinematics(),
        people="sensor",
    )
    out = sup.filter(np.zeros(5 if robot == "panda" else 3), state)
    trusted = (
        type(state["time"]) in (int, float)
        and 0 <= state["time"] < 1e9
        and all(_trusted(state[k], n, k) for k, n in spec.items())
    )
    believable = people in ("far", "at_robot") and state["people_radius"] == 0.25
    if not trusted:  # a robot state it cannot vouch for: a latched fault
        assert isinstance(out, Stop) and sup.latched and "sensor fault" in sup.latched
    elif not believable:  # dropout or unbelievable people report: a protective stop, no latch
        assert isinstance(out, Stop) and not sup.latched and sup.protective
    elif people == "at_robot":  # a person at the robot's position: a protective stop, no latch
        assert isinstance(out, Stop) and not sup.latched and sup.protective
    else:
        assert isinstance(out, SafeCommand) and not sup.latched


@settings(max_examples=150)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 1e-4, 0.3, -1.0, 2.0]),
            st.sampled_from([0.0, 0.5, -2.0]),
            st.sampled_from([None, "x", np.nan, "ok"]),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(0, 29),
)
def test_a_latch_holds_until_the_key_and_a_release_never_restarts_motion(
    actions: list[tuple[float, float, Any]], release_at: int
) -> None:
    key = OperatorKey()
    sup = Supervisor(default_limits("diffbot", 0.1), (0.5, 1.2), operator=key, people="none")
    state = {"base_pose": np.zeros(3), "base_vel": np.zeros(2), "cmd_vel": np.zeros(2), "time": 0.0}
    sup.estop("test")
    released = neutral_after_release = False
    for k, (v, w, junk) in enumerate(actions):
        state = dict(state, time=0.1 * (k + 1))
        if k == release_at:
            assert not sup.reset_estop(OperatorKey()) and sup.latched  # not the operator's key
            sup.reset()  # what a policy could call: never a release
            assert sup.latched and sup.reset_estop(key)
            released = True
        valid = junk == "ok"
        out = sup.filter([v, w, 0.0] if valid else junk, state)
        if isinstance(out, SafeCommand):  # motion only after a release and a later neutral command
            assert released and neutral_after_release and not sup.latched
        else:
            assert isinstance(out, Stop)
        if released and valid and abs(v) <= 1e-3 and abs(w) <= 1e-3:
            neutral_after_release = True
        cmd = out if isinstance(out, SafeCommand) else out.brake
        state = dict(state, cmd_vel=cmd.values[:2].copy())
        if sup.latched and released:  # the watchdog fired after the release: the key again
            assert sup.reset_estop(key)
            neutral_after_release = False
