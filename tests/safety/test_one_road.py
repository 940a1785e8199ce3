"""One road: no code outside the robot backends calls a PyBullet actuator, and the
env has no switch that bypasses the supervisor."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
ACTUATORS = {
    "setJointMotorControl2",
    "setJointMotorControlArray",
    "setJointMotorControlMultiDof",
    "setJointMotorControlMultiDofArray",
    "resetBaseVelocity",
    "resetJointState",
    "resetJointStateMultiDof",
    "resetJointStatesMultiDof",
    "applyExternalForce",
    "applyExternalTorque",
}
BACKENDS = {ROOT / "qrobot" / "robots" / "panda.py", ROOT / "qrobot" / "robots" / "diffbot.py"}
# a kinematics-only model in a world of its own (robot hosts of real arms): it poses, never drives
MODEL = ROOT / "qrobot" / "robots" / "kinematics.py"


def _actuator_calls(path: Path) -> list[str]:
    found = []
    tree = ast.parse(path.read_text())
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ACTUATORS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
        elif isinstance(node, ast.Attribute) and node.attr in ACTUATORS and id(node) not in called:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.attr} (reference)")  # getattr tricks
    return found


def test_no_actuator_call_outside_the_robot_backends() -> None:
    offenders = []
    for d in ("qrobot", "envs", "policies", "benchmarks"):
        for path in (ROOT / d).rglob("*.py"):
            if path not in BACKENDS and path != MODEL and path.name != "env_speed.py":  # (the bare-PyBullet baseline)
                offenders += _actuator_calls(path)
    model = _actuator_calls(MODEL)
    assert model and all(c.endswith("resetJointState") for c in model)  # it only poses its joints
    assert "PandaArm(Sim())" in MODEL.read_text()  # in a world of its own
    assert offenders == []
    assert all(_actuator_calls(p) for p in BACKENDS)  # the scan does see real calls


def test_the_scan_catches_a_smuggled_call(tmp_path: Path) -> None:
    bad = ROOT / "qrobot" / "_smuggled_test_file.py"
    bad.write_text("def go(c, uid):\n    c.setJointMotorControl2(uid, 0, 0, targetPosition=1)\n")
    try:
        assert _actuator_calls(bad) == ["qrobot/_smuggled_test_file.py:2 setJointMotorControl2"]
    finally:
        bad.unlink()


def test_robot_state_resets_happen_only_in_backend_reset_methods() -> None:
    """resetJointState / resetBaseVelocity may appear only inside `_reset` (between episodes)."""
    for path in BACKENDS:
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef):
                calls = {
                    n.func.attr for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                }
                if calls & {"resetJointState", "resetBaseVelocity", "resetBasePositionAndOrientation"}:
                    assert fn.name == "_reset", f"{path.name}:{fn.name}"


def test_env_step_always_goes_through_the_supervisor() -> None:
    from qrobot.envs.core import QRobotEnv

    src = inspect.getsource(QRobotEnv.step)
    assert "self._supervisor.filter(" in src and "self._robot._apply(command)" in src
    params = inspect.signature(QRobotEnv.__init__).parameters
    assert not any("supervis" in p or "unsafe" in p or "bypass" in p for p in params)


def test_props_api_cannot_move_the_robot() -> None:
    from qrobot.envs.core import QRobotEnv

    env = QRobotEnv("pointnav", images=False)
    env.reset(seed=0)
    for mutator in ("set_pose", "set_color", "set_light"):  # teleporting a wall into the robot moves it too
        assert not hasattr(env.sim, mutator), mutator
    with pytest.raises(PermissionError):
        env.sim._set_pose("robot", [1, 0, 0])  # and even the tasks' own call refuses the robot
    with pytest.raises(TypeError):
        env.sim.bodies["alias"] = env.sim.bodies["robot"]  # type: ignore[index]  # read-only
    with pytest.raises(PermissionError):
        env.sim.add_shape("wedge", "box", [0.1, 0.1, 0.1], [1, 1, 1, 1])  # the world is sealed
    with pytest.raises(AttributeError):
        env.sim.time = 0.0  # type: ignore[misc]
    for _ in range(10):
        env.step(np.array([1.0, 0.0, 0.0]))
    assert env.robot.state()["base_vel"][0] > 0.4
    for _ in range(5):  # physics stepped without the supervisor: the plan runs out, the base brakes
        env.sim.step()
    assert abs(env.robot.state()["base_vel"][0]) < 0.01
    _, _, _, trunc, info = env.step(np.array([1.0, 0.0, 0.0]))  # time jumped: the watchdog saw it
    assert trunc and "watchdog" in info["estop"]
    env.close()
