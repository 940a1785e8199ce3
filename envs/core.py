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

from qrobot.errors import QrobotError, ScenarioError
from qrobot.robots import diffbot, panda
from qrobot.robots.diffbot import DiffDriveBase
from qrobot.robots.panda import HAND_LINK, PandaArm
from qrobot.safety import SafeCommand, Supervisor
from qrobot.safety.limits import Limits
from qrobot.safety.ssm import protective_distance
from qrobot.safety.supervisor import OperatorKey
from qrobot.safety.view import SupervisorView
from qrobot.scenario import (
    INSTRUCTION_CHARSET,
    PHRASINGS,
    Phrasing,
    Scenario,
    load_scenario,
    people_source,
    scenario_limits,
)
from qrobot.sim import Camera, Sim
from qrobot.tasks.base import Task
from qrobot.tasks.manipulation import PickPlace, Reach, Stack
from qrobot.tasks.navigation import ObjectNav, PointNav

ARM_TASKS: dict[str, type[Reach | PickPlace | Stack]] = {"reach": Reach, "pick_place": PickPlace, "stack": Stack}
NAV_TASKS: dict[str, type[PointNav | ObjectNav]] = {"pointnav": PointNav, "objectnav": ObjectNav}
TASKS: dict[str, type[Task]] = {**ARM_TASKS, **NAV_TASKS}
MOUNT_UP = {"world": (0.0, 0.0, 1.0), "wrist": (1.0, 0.0, 0.0), "base": (0.0, 0.0, 1.0)}  # in the mount's frame


class QRobotEnv(gym.Env):
    """A qrobot scenario as a gymnasium env.

    Args:
        scenario: a packaged scenario name, a path to a .toml file, or a Scenario.
        render_mode: None, "rgb_array" (first camera) or "human" (PyBullet GUI).
        images: include camera images in observations (off = faster, for experts).
        operator: the operator channel that may release the supervisor's e-stop. Keep
            it away from the policy; with one, a latch survives `reset()` until the key's
            holder releases it. Without one (plain gym.make, RL training) each new world
            starts unlatched, and the release is logged as an event.
        foresight: a world-model checkpoint directory (`qrobot wm-train`); the supervisor
            then imagines each command with it and slows the base before a predicted collision.
        phrasing: "seen" (the task's training phrasings) or "held-out" (its
            held_out_instructions). A seed makes the same scene with either; only the sentence differs.
    """

    # an instance attribute in gymnasium.Env: __init__ sets the scenario's render_fps per env
    metadata: dict[str, Any] = {"render_modes": ["rgb_array", "human"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        scenario: str | Scenario = "pick_place",
        render_mode: str | None = None,
        images: bool = True,
        operator: OperatorKey | None = None,
        foresight: str | Path | None = None,
        phrasing: Phrasing = "seen",
    ) -> None:
        super().__init__()
        # private copy: what a policy can reach (env.scenario, task.scenario) is a copy
        self._scenario = (scenario if isinstance(scenario, Scenario) else load_scenario(scenario)).model_copy(deep=True)
        if phrasing not in PHRASINGS:
            raise ValueError(f"phrasing must be one of {PHRASINGS} (got {phrasing!r})")
        if phrasing == "held-out" and not self._scenario.task.held_out_instructions:
            where = self._scenario.path or self._scenario.name
            raise ScenarioError(f"{where}: task.held_out_instructions: none listed, so no held-out phrasing to draw")
        self._phrasing: Phrasing = phrasing
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        self.render_mode = render_mode
        self.metadata = dict(self.metadata, render_fps=self._scenario.control_hz)
        self.images = images
        self._sim = Sim(gui=render_mode == "human", control_hz=self._scenario.control_hz)
        try:  # a world that fails half-built must not leave its physics client behind
            self._setup(operator, foresight)
        except BaseException:
            self._sim.close()
            raise

    def _setup(self, operator: OperatorKey | None, foresight: str | Path | None) -> None:
        """Everything after the physics client: limits, supervisor, world, spaces."""
        try:
            self._limits, self._reference = scenario_limits(self._scenario)
        except ValueError as exc:
            raise ScenarioError(f"{self._scenario.path or self._scenario.name}: limits.overrides.{exc}") from None
        scale = (
            (panda.MAX_STEP, panda.MAX_YAW_STEP) if self._scenario.robot == "panda" else (diffbot.MAX_V, diffbot.MAX_W)
        )
        self._foresight = self._load_foresight(foresight)  # private: its frames and weights steer the supervisor
        self._world_key = None if operator is not None else OperatorKey()  # never leaves the env
        self._supervisor = Supervisor(
            self._limits,
            scale,
            kinematics=self,
            operator=operator or self._world_key,
            foresight=self._foresight,
            people=people_source(self._scenario),
        )
        self._view = SupervisorView(self._supervisor)
        self._episode = 0  # counts env.reset() calls: a runner notices one it did not make
        self._build()
        self._sim._sealed = True
        self.cameras = [
            Camera(
                c.name,
                c.width,
                c.height,
                c.fov,
                eye=(c.eye[0], c.eye[1], c.eye[2]),
                target=(c.target[0], c.target[1], c.target[2]),
                up=MOUNT_UP[c.mount],
                body=None if c.mount == "world" else "robot",
                link=HAND_LINK if c.mount == "wrist" else -1,
            )
            for c in self._scenario.cameras
        ]
        self._depth = {c.name for c in self._scenario.cameras if c.depth}
        self.action_space = spaces.Box(-1.0, 1.0, (self._robot.action_dim,), np.float32)
        self.observation_space = self._make_obs_space()
        self.last_command: SafeCommand | Any = None

    @property
    def scenario(self) -> Scenario:
        """A copy of the scenario this env runs (changing it changes nothing)."""
        return self._scenario.model_copy(deep=True)

    @property
    def phrasing(self) -> Phrasing:
        """Which instruction templates this env draws from: "seen" or "held-out"."""
        return self._phrasing

    # The env's wiring is read-only: rebinding one of these to another world's object would
    # let the supervisor read one world while the robot moves in another.
    @property
    def sim(self) -> Sim:
        return self._sim

    @property
    def robot(self) -> PandaArm | DiffDriveBase:
        return self._robot

    @property
    def task(self) -> Any:
        return self._task

    @property
    def episode(self) -> int:
        """How many times this env has been reset (read-only)."""
        return self._episode

    @property
    def foresight_horizon(self) -> int:
        """Steps the world model predicts ahead (0: no foresight)."""
        return int(self._foresight.horizon) if self._foresight is not None else 0

    def foresight_view(self) -> dict[str, Any] | None:
        """What the world model saw and predicted for this step, as copies (for recorders):
        the model and its frame history stay private, since they steer the supervisor."""
        fs = self._foresight
        if fs is None or not fs.frames:
            return None
        predicted = {h: fs.predicted_now(h) for h in (1, fs.horizon)}
        return {
            "actual": fs.frames[-1].copy(),
            "horizon": fs.horizon,
            "predicted": {h: p.copy() for h, p in predicted.items() if p is not None},
            "probability": float(fs.last_probability),
            "scale": float(fs.last_scale),
        }

    @property
    def supervisor(self) -> SupervisorView:
        """The supervisor's verdicts (latch, events, counts) and its e-stop; not its levers."""
        return self._view

    @property
    def limits(self) -> Limits:
        """What the supervisor enforces (the profile, tightened by the scenario's overrides)."""
        return self._limits

    @property
    def reference_limits(self) -> Limits:
        """The robot's reference profile: safety metrics are measured against it."""
        return self._reference

    def _load_foresight(self, checkpoint: str | Path | None) -> Any:
        if checkpoint is None:
            return None
        if self._scenario.robot != "diffbot":
            raise QrobotError(
                f"foresight: the world model guards a mobile base; scenario "
                f"{self._scenario.name!r} has robot {self._scenario.robot!r}"
            )
        from qrobot.worldmodel.foresight import Foresight  # torch only when asked for

        return Foresight.load(checkpoint, lambda cam: self._sim.render(cam)[0])

    # The supervisor's kinematics capability (the robot object is rebuilt every reset).
    def jacobian(self, q: np.ndarray) -> np.ndarray:
        return self._robot.jacobian(q)  # type: ignore[union-attr]

    def _build(self) -> None:
        """(Re)build the world from scratch: robot (bound to the supervisor), then the task's props."""
        self._sim._reset_world()
        self._state: dict | None = None
        self._state_version = -1
        kind = self._scenario.task.kind
        if self._scenario.robot == "panda":
            self._robot: PandaArm | DiffDriveBase = PandaArm(self._sim)
            self._task: Task = ARM_TASKS[kind](self._sim, self._scenario, self.robot_state)
        else:
            self._robot = DiffDriveBase(self._sim)
            self._task = nav = NAV_TASKS[kind](self._sim, self._scenario, self.robot_state, self._robot._reset)
            ref = self._reference.base  # intrusions are measured against the reference profile
            nav._protective_distance = lambda v: protective_distance(ref.ssm, v, ref.v_acc)
            nav._keep_out = [
                ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)  # as (cx, cy, wx, wy) boxes
                for x0, y0, x1, y1 in self._limits.base.keep_out
            ]
        self._task.phrasing = self._phrasing
        self._supervisor.bind(self._robot)

    def _make_obs_space(self) -> spaces.Dict:
        obs: dict[str, spaces.Space] = {}
        if self.images:
            cams: dict[str, spaces.Space] = {}
            for c in self.cameras:
                cams[c.name] = spaces.Box(0, 255, (c.height, c.width, 3), np.uint8)
                if c.name in self._depth:
                    cams[f"{c.name}_depth"] = spaces.Box(0.0, c.far, (c.height, c.width), np.float32)
            obs["images"] = spaces.Dict(cams)
        obs["proprio"] = spaces.Box(-np.inf, np.inf, (self._robot.proprio_dim,), np.float32)
        obs["instruction"] = spaces.Text(max_length=256, charset=INSTRUCTION_CHARSET)
        if self._task.goal_dim:
            obs["goal"] = spaces.Box(-np.inf, np.inf, (self._task.goal_dim,), np.float32)
        return spaces.Dict(obs)

    # ------------------------------------------------------------ internals
    def robot_state(self) -> dict:
        """The robot's state, read once per control step (tasks ask for it often)."""
        if self._state is None or self._state_version != self._sim.version:
            state = self._robot.state()
            for value in state.values():
                if isinstance(value, np.ndarray):
                    value.setflags(write=False)  # handed to policies and the supervisor alike
            self._state, self._state_version = state, self._sim.version
        return dict(self._state)

    def _obs(self) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        if self.images:
            imgs: dict[str, np.ndarray] = {}
            for cam in self.cameras:
                rgb, depth = self._sim.render(cam, depth=cam.name in self._depth)
                imgs[cam.name] = rgb
                if depth is not None:
                    imgs[f"{cam.name}_depth"] = np.clip(depth, 0.0, cam.far)
            obs["images"] = imgs
        obs["proprio"] = self._robot.proprio(self.robot_state())
        obs["instruction"] = self._task.instruction
        if self._task.goal_dim:
            obs["goal"] = self._task.goal()
        return obs

    def _info(self) -> dict[str, Any]:
        success = bool(self._task.success())
        # is_success: the key Gymnasium-Robotics, SB3's HER and LeRobot read
        return {
            "success": success,
            "is_success": success,
            "metrics": self._task.metrics(),
            "safety": self.supervisor.counts(),
            "estop": self.supervisor.latched or "",
            "time": self._sim.time,
        }

    def supervisor_state(self) -> dict[str, Any]:
        """What the supervisor sees: robot state, a timestamp, and sensed people."""
        state = dict(self.robot_state(), time=self._sim.time)
        if self._supervisor.people_source != "sensor":
            return state
        sensed = getattr(self._task, "sensed_people", None)
        if sensed is not None and self._scenario.people:
            state["people"], state["people_radius"] = sensed()
        elif not self._scenario.people:  # a sensor watching a room nobody is in
            state["people"], state["people_radius"] = np.zeros((0, 2)), np.zeros(0)
        return state

    # ------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._episode += 1
        self._build()
        self._task._reset(self.np_random)
        self._sim._sealed = True
        self._supervisor.reset()
        if self._supervisor.latched and self._world_key is not None:
            self._supervisor.reset_estop(
                self._world_key, 0.0, rearm=False, note="new world; this env has no operator key"
            )
        self.last_command = None
        if self._foresight is not None:
            self._foresight.reset()
            self._foresight.observe()
        return self._obs(), self._info()

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        if self._sim.gui and self._sim.key_pressed("e"):
            self._supervisor.estop("operator pressed 'e' in the GUI", self._sim.time)
        command = self._supervisor.filter(action, self.supervisor_state())
        self._robot._apply(command)
        # the task sees the supervisor's validated copy of the action, never the raw object
        return self._advance(command, self._supervisor.last_action)

    def _advance(
        self, command: Any, action: np.ndarray | None
    ) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """One control period after `command` was applied (by this env's supervisor, or by a
        remote agent's through the robot process, `qrobot.bridge.robot_sim`)."""
        self._task._before_physics(command, action)
        self._sim.step()
        self._task._after_physics()
        self.last_command = command
        if self._foresight is not None:
            self._foresight.observe()
        terminated = bool(self._task.terminated())
        # a latched e-stop ends the episode for the learner (the robot keeps braking if stepped)
        truncated = bool((self._task.steps >= self._scenario.max_steps or self.supervisor.latched) and not terminated)
        return self._obs(), float(self._task.reward()), terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._sim.render(self.cameras[0])[0]
        return None

    def privileged_state(self) -> dict[str, Any]:
        """Ground truth for scripted experts: an explicit channel, never in observations."""
        return dict(self._task.privileged(), robot=self.robot_state(), time=self._sim.time)

    def close(self) -> None:
        self._sim.close()
