"""The one gymnasium environment: robot + task + supervisor, built from a scenario.

`step` is the single place where an action becomes robot motion:
action -> Supervisor.filter -> SafeCommand | Stop -> robot.apply -> physics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

import dataclasses

from qrobot.errors import QrobotError
from qrobot.robots.diffbot import DiffDriveBase
from qrobot.robots.panda import HAND_LINK, PandaArm
from qrobot.safety import SafeCommand, Supervisor
from qrobot.safety.limits import Limits, apply_overrides, default_limits
from qrobot.safety.ssm import protective_distance
from qrobot.safety.supervisor import OperatorKey
from qrobot.scenario import INSTRUCTION_CHARSET, Scenario, load_scenario
from qrobot.sim import Camera, Sim
from qrobot.tasks.manipulation import PickPlace, Reach, Stack
from qrobot.tasks.navigation import ObjectNav, PointNav

TASKS = {"reach": Reach, "pick_place": PickPlace, "stack": Stack,
         "pointnav": PointNav, "objectnav": ObjectNav}
MOUNT_UP = {"world": (0.0, 0.0, 1.0), "wrist": (1.0, 0.0, 0.0), "base": (0.0, 0.0, 1.0)}  # in the mount's frame


class QRobotEnv(gym.Env):
    """A qrobot scenario as a gymnasium env.

    Args:
        scenario: a packaged scenario name, a path to a .toml file, or a Scenario.
        render_mode: None, "rgb_array" (first camera) or "human" (PyBullet GUI).
        images: include camera images in observations (off = faster, for experts).
        operator: the operator channel that may release the supervisor's e-stop. Keep
            it away from the policy; without one, a latched e-stop lasts the episode.
        foresight: a world-model checkpoint directory (`qrobot wm-train`); the supervisor
            then imagines each command with it and slows the base before a predicted collision.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 10}

    def __init__(self, scenario: str | Scenario = "pick_place", render_mode: str | None = None,
                 images: bool = True, operator: OperatorKey | None = None,
                 foresight: str | Path | None = None) -> None:
        super().__init__()
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.metadata = dict(self.metadata, render_fps=self.scenario.control_hz)
        self.images = images
        self.sim = Sim(gui=render_mode == "human", control_hz=self.scenario.control_hz)
        self.limits = self._limits()
        self._build()
        scale = (self.robot.max_step, self.robot.max_yaw_step) if self.robot.name == "panda" \
            else (self.robot.max_v, self.robot.max_w)
        self.foresight = self._foresight(foresight)
        self.supervisor = Supervisor(self.limits, scale, kinematics=self, operator=operator,
                                     foresight=self.foresight)
        self.cameras = [Camera(c.name, c.width, c.height, c.fov, eye=tuple(c.eye),
                               target=tuple(c.target), up=MOUNT_UP[c.mount],
                               body=None if c.mount == "world" else "robot",
                               link=HAND_LINK if c.mount == "wrist" else -1)
                        for c in self.scenario.cameras]
        self._depth = {c.name for c in self.scenario.cameras if c.depth}
        self.action_space = spaces.Box(-1.0, 1.0, (self.robot.action_dim,), np.float32)
        self.observation_space = self._make_obs_space()
        self.last_command: SafeCommand | Any = None

    def _limits(self) -> Limits:
        """The robot's default profile; a room narrows the map bounds; then the scenario's overrides."""
        lim = default_limits(self.scenario.robot, 1.0 / self.scenario.control_hz, self.scenario.limits.profile)
        if self.scenario.room is not None:
            sx, sy = self.scenario.room.size
            lim = dataclasses.replace(lim, base=dataclasses.replace(
                lim.base, bounds_low=(-sx / 2, -sy / 2), bounds_high=(sx / 2, sy / 2)))
        return apply_overrides(lim, dict(self.scenario.limits.overrides))

    def _foresight(self, checkpoint: str | Path | None) -> Any:
        if checkpoint is None:
            return None
        if self.scenario.robot != "diffbot":
            raise QrobotError(f"foresight: the world model guards a mobile base; scenario "
                              f"{self.scenario.name!r} has robot {self.scenario.robot!r}")
        from qrobot.worldmodel.foresight import Foresight  # torch only when asked for

        return Foresight.load(checkpoint, lambda cam: self.sim.render(cam)[0])

    # The supervisor's kinematics capability (the robot object is rebuilt every reset).
    def ik(self, target: np.ndarray, yaw: float) -> np.ndarray:
        return self.robot.ik(target, yaw)  # type: ignore[union-attr]

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        return self.robot.jacobian(q)  # type: ignore[union-attr]

    def _build(self) -> None:
        """(Re)build the world from scratch: robot, then the task's props."""
        self.sim.reset_world()
        self._state: dict | None = None
        self._state_version = -1
        kind = self.scenario.task.kind
        if self.scenario.robot == "panda":
            self.robot: PandaArm | DiffDriveBase = PandaArm(self.sim)
            self.task = TASKS[kind](self.sim, self.scenario, self.robot_state)
        else:
            self.robot = DiffDriveBase(self.sim)
            self.task = TASKS[kind](self.sim, self.scenario, self.robot_state, self.robot.reset)
            base = self.limits.base
            self.task.protective_distance = lambda v: protective_distance(base.ssm, v, base.v_acc)

    def _make_obs_space(self) -> spaces.Dict:
        obs: dict[str, spaces.Space] = {}
        if self.images:
            cams: dict[str, spaces.Space] = {}
            for c in self.cameras:
                cams[c.name] = spaces.Box(0, 255, (c.height, c.width, 3), np.uint8)
                if c.name in self._depth:
                    cams[f"{c.name}_depth"] = spaces.Box(0.0, c.far, (c.height, c.width), np.float32)
            obs["images"] = spaces.Dict(cams)
        obs["proprio"] = spaces.Box(-np.inf, np.inf, (self.robot.proprio_dim,), np.float32)
        obs["instruction"] = spaces.Text(max_length=256, charset=INSTRUCTION_CHARSET)
        if self.task.goal_dim:
            obs["goal"] = spaces.Box(-np.inf, np.inf, (self.task.goal_dim,), np.float32)
        return spaces.Dict(obs)

    # ------------------------------------------------------------ internals
    def robot_state(self) -> dict:
        """The robot's state, read once per control step (tasks ask for it often)."""
        if self._state is None or self._state_version != self.sim.version:
            self._state, self._state_version = self.robot.state(), self.sim.version
        return self._state

    def _obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        if self.images:
            imgs: dict[str, np.ndarray] = {}
            for cam in self.cameras:
                rgb, depth = self.sim.render(cam, depth=cam.name in self._depth)
                imgs[cam.name] = rgb
                if depth is not None:
                    imgs[f"{cam.name}_depth"] = np.clip(depth, 0.0, cam.far)
            obs["images"] = imgs
        obs["proprio"] = self.robot.proprio(self.robot_state())
        obs["instruction"] = self.task.instruction
        if self.task.goal_dim:
            obs["goal"] = self.task.goal()
        return obs

    def _info(self) -> dict[str, Any]:
        return {"success": bool(self.task.success()), "metrics": self.task.metrics(),
                "safety": self.supervisor.counts(), "estop": self.supervisor.latched or "",
                "time": self.sim.time}

    def supervisor_state(self) -> dict[str, Any]:
        """What the supervisor sees: robot state, a timestamp, and sensed people."""
        state = dict(self.robot_state(), time=self.sim.time)
        sensed = getattr(self.task, "sensed_people", None)
        if sensed is not None and self.scenario.people:
            state["people"], state["people_radius"] = sensed()
        return state

    # ------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._build()
        self.task.reset(self.np_random)
        self.supervisor.reset()
        self.last_command = None
        if self.foresight is not None:
            self.foresight.reset()
            self.foresight.observe()
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self.sim.gui and self.sim.key_pressed("e"):
            self.supervisor.estop("operator pressed 'e' in the GUI", self.sim.time)
        command = self.supervisor.filter(action, self.supervisor_state())
        self.robot.apply(command)
        self.task.before_physics(command, action)
        self.sim.step()
        self.task.after_physics()
        self.last_command = command
        if self.foresight is not None:
            self.foresight.observe()
        terminated = bool(self.task.terminated())
        # a latched e-stop ends the episode for the learner (the robot keeps braking if stepped)
        truncated = bool((self.task.steps >= self.scenario.max_steps or self.supervisor.latched)
                         and not terminated)
        return self._obs(), float(self.task.reward()), terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self.sim.render(self.cameras[0])[0]
        return None

    def privileged_state(self) -> dict[str, Any]:
        """Ground truth for scripted experts: an explicit channel, never in observations."""
        return dict(self.task.privileged(), robot=self.robot_state(), time=self.sim.time)

    def close(self) -> None:
        self.sim.close()
