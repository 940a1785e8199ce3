"""The Qwen VLA as a qrobot policy: an action-chunk queue with a re-planning interval
(LeRobot's select_action / predict_action_chunk), batched inference, CPU by default.

It sees only the observation: images, proprio, instruction and (PointNav) the goal
vector. For the base, the predicted waypoints are tracked by a pure-pursuit controller.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qrobot.robots.diffbot import MAX_V, MAX_W
from qrobot.vla.model import QwenVLA

REPLAN = 4  # arm: actions of a chunk executed before predicting again (docs/vla.md: 1, 2, 4 compared)
STOP_RADIUS = 0.12  # PointNav: stop when the goal vector says we are this close
APPROACH_RADIUS = 0.5  # ... and steer straight at it from this close (see _track)
STUCK_STEPS = 5  # driving forward yet not moving for this long: blocked ...
BACKUP_STEPS = 6  # ... so reverse this many steps, then let the model re-plan
NO_PROGRESS_STEPS = 40  # the goal no nearer (by PROGRESS m) for this long: a detour ...
PROGRESS = 0.1
DETOUR = [(-0.5, 0.0)] * 6 + [(0.0, 1.0)] * 14 + [(1.0, 0.0)] * 16  # back, turn ~90 deg, drive ~0.8 m
# no goal vector (ObjectNav): stop where the model foresees the base standing still, i.e. its
# last waypoint (1.6 s ahead) within this distance (m) and heading change (rad); the
# demonstrations' waypoints shrink to zero where the expert stopped (validation-chosen)
STILL_XY, STILL_TH = 0.06, 0.15


class VLAPolicy:
    name = "qwen-vla"
    needs_images = True

    def __init__(
        self, checkpoint: str | Path, device: str = "cpu", replan: int = REPLAN, seed: int = 0, robot: str | None = None
    ) -> None:
        self.model = QwenVLA.from_pretrained(checkpoint, device=device, robot=robot)
        self.device = device
        self.replan = max(1, min(replan, self.model.config.chunk))
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.queue: deque[np.ndarray] = deque()
        self.instruction = ""
        self.nav = "waypoints" in self.model.norm
        self.reset("")

    def seed_episode(self, seed: int) -> None:
        """The flow-matching noise from the episode's seed (benchmarks: order-independent)."""
        self.generator.manual_seed(seed)

    def reset(self, instruction: str) -> None:
        self.instruction = instruction
        self.queue.clear()
        self.stuck = self.backing = 0
        self.backing_turn = 0.0
        self.detour: deque[np.ndarray] = deque()
        self.best, self.no_progress, self.detours = np.inf, 0, 0

    def _inputs(self, observations: list[dict[str, Any]]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        cams = self.model.config.cameras
        images = torch.from_numpy(np.stack([np.stack([o["images"][c] for c in cams]) for o in observations]))
        width = self.model.config.state_dim  # (a several-task model: the goal zero-padded to its widest)
        state = np.stack(
            [
                np.pad(s, (0, max(0, width - len(s))))
                for s in (np.concatenate([o["proprio"], o.get("goal", np.zeros(0, np.float32))]) for o in observations)
            ]
        )
        state = self.model.norm["state"].normalize(state)
        return images, [o["instruction"] for o in observations], torch.from_numpy(state)

    def predict_chunk(self, observations: list[dict[str, Any]]) -> np.ndarray:
        """Batched: one chunk (H, A) of actions per observation (vector envs)."""
        images, texts, state = self._inputs(observations)
        chunk = self.model.predict_chunk(images, texts, state, self.generator).cpu().numpy()
        return self.model.norm["actions"].unnormalize(chunk)

    def predict_waypoints(self, observations: list[dict[str, Any]]) -> np.ndarray:
        images, texts, state = self._inputs(observations)
        w = self.model.predict_waypoints(images, texts, state).cpu().numpy()
        return self.model.norm["waypoints"].unnormalize(w)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.nav:
            return self._track(obs)
        if not self.queue:
            self.queue.extend(self.predict_chunk([obs])[0][: self.replan])
        return np.asarray(self.queue.popleft(), np.float32)

    def _track(self, obs: dict[str, Any]) -> np.ndarray:
        """Waypoints are in the robot frame of the moment they were predicted, so the base
        re-plans every step (one forward pass) and steers at the second waypoint. In the
        last APPROACH_RADIUS the tracker docks on the goal vector itself: demonstrations
        hold few frames that close, and there the waypoint head is least reliable."""
        goal = obs.get("goal")
        if goal is not None and goal[0] < STOP_RADIUS:
            return np.array([0.0, 0.0, 1.0], np.float32)
        if self.detour:
            return self.detour.popleft()
        if goal is not None and self._no_progress(goal):  # oscillating in front of an obstacle: go round it (a detour)
            side = (1.0 if goal[1] >= 0 else -1.0) * (-1.0) ** self.detours  # alternate sides
            self.detours += 1
            self.detour.extend(np.array([v_, side * w_, 0.0], np.float32) for v_, w_ in DETOUR)
            return self.detour.popleft()
        # waypoint k lies 2(k+1) control steps ahead (qrobot.vla.data.future_waypoints):
        # follow the second one's forward distance and heading change over 0.4 s
        horizon = 4 * 0.1
        if goal is not None and goal[0] < APPROACH_RADIUS:
            rho, phi = float(goal[0]), float(goal[1])
            x, theta = rho * max(np.cos(phi), 0.0), phi  # turn in place while the goal is behind
        else:
            waypoints = self.predict_waypoints([obs])[0]
            x, _, theta = waypoints[1]
            if goal is None and np.hypot(*waypoints[-1][:2]) < STILL_XY and abs(waypoints[-1][2]) < STILL_TH:
                return np.array([0.0, 0.0, 1.0], np.float32)
        v = np.clip(x / horizon / MAX_V, -1.0, 1.0)
        w = np.clip(theta / horizon / MAX_W, -1.0, 1.0)
        # recovery behaviour (as nav stacks have): the memoryless model keeps pushing into
        # an obstacle it touches, so a blocked base backs off before following it again
        if self.backing:  # reverse while turning the way the model wanted to turn
            self.backing -= 1
            return np.array([-0.5, self.backing_turn, 0.0], np.float32)
        self.stuck = self.stuck + 1 if v > 0.05 and abs(float(obs["proprio"][0])) < 0.02 else 0
        if self.stuck >= STUCK_STEPS:
            self.stuck, self.backing = 0, BACKUP_STEPS
            self.backing_turn = 0.6 if theta >= 0 else -0.6
        return np.array([v, w, 0.0], np.float32)

    def _no_progress(self, goal: np.ndarray | None) -> bool:
        """Nav stacks' progress checker: True when the goal distance has not shrunk by
        PROGRESS in NO_PROGRESS_STEPS steps (then the count starts again)."""
        if goal is None:
            return False
        if goal[0] < self.best - PROGRESS:
            self.best, self.no_progress = float(goal[0]), 0
            return False
        self.no_progress += 1
        if self.no_progress < NO_PROGRESS_STEPS:
            return False
        self.best, self.no_progress = float(goal[0]), 0
        return True
