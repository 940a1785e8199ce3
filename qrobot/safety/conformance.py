"""Limit conformance between control ticks: a probe that samples a robot at every physics
substep (240 Hz) and keeps, per limited quantity, the worst measured value over its limit.

Speeds are finite differences of measured positions at 240 Hz, accelerations differences
of those speeds over 25 ms windows, per-period steps differences over one control period.
Position limits are reported as 1 + (depth beyond the limit) / (size of the allowed
range), so every ratio reads the same way: <= 1 holds, 1.01 is a 1 % overshoot.

Samples while the robot touches something (an arm link other than its base, a base
touching anything but the floor), and one period after, are kept apart: an impact is
physics the supervisor did not command (it has no model of the props), and is reported
separately rather than mixed into the free-motion figures.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

from qrobot.safety.base_rules import violation
from qrobot.safety.limits import Limits
from qrobot.sim import PHYSICS_HZ

ACC_WINDOW = 6  # substeps: 25 ms at 240 Hz


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


class SubstepProbe:
    """Attach to a robot backend in its world; `ratios()` gives max(measured / limit)."""

    def __init__(self, robot: Any, limits: Limits) -> None:
        self.robot, self.limits = robot, limits
        self.worst: dict[str, float] = {}
        self.worst_contact: dict[str, float] = {}
        self.samples = 0
        self.contact_samples = 0
        self._contact_until = -1
        self._hist: deque = deque(maxlen=robot.sim.substeps)
        self._vel: deque = deque(maxlen=ACC_WINDOW + 1)
        robot.sim._on_substep(self._sample)

    def _keep(self, key: str, value: float | np.floating[Any]) -> None:
        table = self.worst_contact if self.samples <= self._contact_until else self.worst
        table[key] = max(table.get(key, -math.inf), float(value))

    def _touching(self) -> bool:
        sim = self.robot.sim
        ground = {sim.bodies.get(n) for n in ("floor", "ground")}
        for pt in sim._client.getContactPoints(bodyA=self.robot.uid):
            if self.limits.robot == "panda" and pt[3] > 0:
                return True  # an arm link (not the base, which stands on the ground)
            if self.limits.robot != "panda" and pt[2] not in ground:
                return True
        return False

    def _read(self) -> np.ndarray:
        st = self.robot.state()
        if self.limits.robot == "panda":
            return np.concatenate([st["joint_pos"], st["ee_pos"], [st["ee_yaw"]]])
        return np.asarray(st["base_pose"], dtype=np.float64)

    def _sample(self, _t: float) -> None:
        x = self._read()
        self.samples += 1
        if self._touching():
            self._contact_until = self.samples + ACC_WINDOW + self.robot.sim.substeps
        self.contact_samples += self.samples <= self._contact_until
        if self._hist:
            prev = self._hist[-1]
            vel = (x - prev) * PHYSICS_HZ
            if self.limits.robot == "panda":
                self._arm(x, prev, vel)
            else:
                self._base(x, prev)
        self._hist.append(x)

    def _arm(self, x: np.ndarray, prev: np.ndarray, vel: np.ndarray) -> None:
        a = self.limits.arm
        qd = vel[:7]
        self._keep("joint speed", np.max(np.abs(qd) / a.vmax))
        self._keep("EE speed", np.linalg.norm(vel[7:10]) / a.ee_speed_max)
        self._keep("EE yaw rate", abs(_wrap(x[10] - prev[10])) * PHYSICS_HZ / a.ee_ang_speed_max)
        self._vel.append(qd)
        if len(self._vel) > ACC_WINDOW:
            acc = np.abs(self._vel[-1] - self._vel[0]) / (ACC_WINDOW / PHYSICS_HZ)
            self._keep("joint acceleration (25 ms)", np.max(acc / a.amax))
        if len(self._hist) == self._hist.maxlen:
            self._keep("EE step per period", np.linalg.norm(x[7:10] - self._hist[0][7:10]) / a.ee_step_max)
        rng = a.upper - a.lower
        self._keep("joint position", 1 + max(np.max((x[:7] - a.upper) / rng), np.max((a.lower - x[:7]) / rng)))
        box = a.ws_high - a.ws_low
        self._keep("workspace", 1 + max(np.max((x[7:10] - a.ws_high) / box), np.max((a.ws_low - x[7:10]) / box)))

    def _base(self, x: np.ndarray, prev: np.ndarray) -> None:
        b = self.limits.base
        heading = np.array([math.cos(prev[2]), math.sin(prev[2])])
        v = float((x[:2] - prev[:2]) @ heading) * PHYSICS_HZ
        w = _wrap(x[2] - prev[2]) * PHYSICS_HZ
        self._keep("base speed", abs(v) / b.v_max)
        self._keep("base turn rate", abs(w) / b.w_max)
        self._vel.append(np.array([v, w]))
        if len(self._vel) > ACC_WINDOW:
            acc = np.abs(self._vel[-1] - self._vel[0]) / (ACC_WINDOW / PHYSICS_HZ)
            self._keep("base acceleration (25 ms)", acc[0] / b.v_acc)
            self._keep("base turn acceleration (25 ms)", acc[1] / b.w_acc)
        if len(self._hist) == self._hist.maxlen:
            self._keep("base step per period", np.linalg.norm(x[:2] - self._hist[0][:2]) / b.step_max)
        # a base placed inside a zone may drive out (the rule: never deeper than it is); what
        # is measured is entering a region after having been clear of all of them
        depth = violation(x[0], x[1], b)
        self._was_clear = getattr(self, "_was_clear", False) or depth <= 0.0
        self._keep(
            "map bounds and keep-out entered (depth / radius)", 1 + (depth / b.radius if self._was_clear else 0.0)
        )

    def ratios(self) -> dict[str, float]:
        """Worst ratios in free motion (the conformance figures)."""
        return dict(sorted(self.worst.items()))

    def contact_ratios(self) -> dict[str, float]:
        """Worst ratios while touching something (impacts; reported, not bounded)."""
        return dict(sorted(self.worst_contact.items()))


def measure_env(env: Any, steps: int, seed: int, actions: str = "corner") -> dict[str, Any]:
    """Drive a QRobotEnv for `steps` control periods (new episodes as they end) with
    "corner" actions (every axis +-1, random signs, held 5 periods: what hits limits
    hardest) or "uniform" ones in [-1.5, 1.5], probing every substep."""
    rng = np.random.default_rng(seed)
    dim = env.action_space.shape[0]
    free: dict[str, float] = {}
    contact: dict[str, float] = {}
    samples = touching = 0
    done, probe, action = True, None, np.zeros(dim)
    for k in range(steps):
        if done:
            if probe is not None:
                samples, touching = samples + probe.samples, touching + probe.contact_samples
                _merge(free, probe.ratios())
                _merge(contact, probe.contact_ratios())
            env.reset(seed=seed + k)
            probe = SubstepProbe(env.robot, env.limits)  # the world (and its hooks) is new
        if actions == "corner":
            if k % 5 == 0:
                action = rng.choice([-1.0, 1.0], dim)
        else:
            action = rng.uniform(-1.5, 1.5, dim)
        if env.robot.name == "diffbot":
            action[2] = -1.0  # never "I am at the goal": keep driving
        _, _, term, trunc, _ = env.step(action)
        done = term or trunc
    assert probe is not None
    samples, touching = samples + probe.samples, touching + probe.contact_samples
    _merge(free, probe.ratios())
    _merge(contact, probe.contact_ratios())
    return {"free": free, "contact": contact, "samples": samples, "contact_samples": touching}


def _merge(into: dict[str, float], new: dict[str, float]) -> None:
    for k, v in new.items():
        into[k] = max(into.get(k, -math.inf), v)
