"""The Qwen VLA as a qrobot policy: an action-chunk queue with a re-planning interval
(LeRobot's select_action / predict_action_chunk), batched inference, CPU by default.

It sees only the observation: images, proprio, instruction and (PointNav) the goal
vector. For the base, the predicted waypoints are tracked by a pure-pursuit controller.

`act_batch(observations, clients)` serves several episodes with one forward pass (the
policy actors of `qrobot bench --policy-gpus`): each client has its own EpisodeState, and
its actions equal those `act` gives for the same episode within float32 tolerance
(tests/test_policy_batching.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qrobot.robots.diffbot import MAX_V, MAX_W
from qrobot.vla.checkpoint import nav_stop_ok
from qrobot.vla.model import QwenVLA

REPLAN = 4  # arm: actions of a chunk executed before predicting again (docs/vla.md: 1, 2, 4 compared)
STOP_RADIUS = 0.12  # PointNav: stop when the goal vector says we are this close
APPROACH_RADIUS = 0.5  # ... and steer straight at it from this close (see _drive)
STUCK_STEPS = 5  # driving forward yet not moving for this long: blocked ...
BACKUP_STEPS = 6  # ... so reverse this many steps, then let the model re-plan
NO_PROGRESS_STEPS = 40  # the goal no nearer (by PROGRESS m) for this long: a detour ...
PROGRESS = 0.1
DETOUR = [(-0.5, 0.0)] * 6 + [(0.0, 1.0)] * 14 + [(1.0, 0.0)] * 16  # back, turn ~90 deg, drive ~0.8 m
# no goal vector (ObjectNav): stop where the model foresees the base standing still, i.e. its
# last waypoint (1.6 s ahead) within a distance (m) and heading change (rad) for some steps
# running; the demonstrations' waypoints shrink to zero where the expert stopped. The three
# numbers are the checkpoint's (VLAConfig.nav_stop), chosen on validation seeds.
STOP = np.array([0.0, 0.0, 1.0], np.float32)


@dataclass
class EpisodeState:
    """What one episode carries from step to step: `reset` starts it afresh, except for the
    sampling noise's generator (re-seeded by `seed_episode` only, as before batching)."""

    generator: torch.Generator
    instruction: str = ""
    queue: deque[np.ndarray] = field(default_factory=deque)  # arm: the rest of the chunk
    stuck: int = 0
    backing: int = 0
    backing_turn: float = 0.0
    detour: deque[np.ndarray] = field(default_factory=deque)
    best: float = np.inf
    no_progress: int = 0
    detours: int = 0
    still: int = 0  # steps running the model has foreseen standing still (no goal vector)


class VLAPolicy:
    """`reset`/`act`/`seed_episode` drive the default client (None); `act_batch` any
    number of clients (each an env worker's episode), with the same arguments' `client=`."""

    name = "qwen-vla"
    needs_images = True

    def __init__(
        self,
        checkpoint: str | Path,
        device: str = "cpu",
        replan: int = REPLAN,
        seed: int = 0,
        robot: str | None = None,
        nav_stop: tuple[float, float, int] | None = None,
    ) -> None:
        self.model = QwenVLA.from_pretrained(checkpoint, device=device, robot=robot)
        self.device = device
        self.seed = seed
        self.replan = max(1, min(replan, self.model.config.chunk))
        if nav_stop is not None and not nav_stop_ok(list(nav_stop)):
            raise ValueError(f"nav_stop {nav_stop}: [XY, TH, K] with 0 < XY <= 1 m, 0 < TH <= 3.15 rad, K 1..50")
        xy, th, steps = nav_stop if nav_stop is not None else self.model.config.nav_stop
        self.nav_stop = (float(xy), float(th), max(1, int(steps)))  # (a variant under validation, or the model's)
        self.nav = "waypoints" in self.model.norm
        self.clients: dict[Hashable, EpisodeState] = {}
        self.reset("")

    def state(self, client: Hashable = None) -> EpisodeState:
        """A client's episode state (a new client's generator starts from the policy's seed)."""
        if client not in self.clients:
            self.clients[client] = EpisodeState(torch.Generator(device=self.device).manual_seed(self.seed))
        return self.clients[client]

    def forget(self, client: Hashable) -> None:
        """Drop a client that will not come back (a server's clients come and go)."""
        self.clients.pop(client, None)

    @property
    def generator(self) -> torch.Generator:  # (the default client's; qrobot.vla.evaluate re-seeds it)
        return self.state().generator

    @property
    def instruction(self) -> str:
        return self.state().instruction

    def seed_episode(self, seed: int, client: Hashable = None) -> None:
        """The flow-matching noise from the episode's seed (benchmarks: order-independent)."""
        self.state(client).generator.manual_seed(seed)

    def reset(self, instruction: str, client: Hashable = None) -> None:
        self.clients[client] = EpisodeState(self.state(client).generator, instruction)

    def _inputs(self, observations: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, list[str], torch.Tensor]:
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

    def predict_chunk(
        self, observations: Sequence[dict[str, Any]], generators: Sequence[torch.Generator] | None = None
    ) -> np.ndarray:
        """Batched: one chunk (H, A) of actions per observation. `generators`: one per row,
        each row's noise drawn from its own (several episodes in one batch); else the
        default client's generator draws the whole batch's (vector envs)."""
        images, texts, state = self._inputs(observations)
        if generators is None:
            chunk = self.model.predict_chunk(images, texts, state, self.generator)
        else:
            chunk = self._sample_rows(images, texts, state, generators)
        return self.model.norm["actions"].unnormalize(chunk.cpu().numpy())

    @torch.no_grad()
    def _sample_rows(
        self, images: torch.Tensor, texts: list[str], state: torch.Tensor, generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """QwenVLA.predict_chunk (FlowMatchingHead.sample) with row i's starting noise from
        generators[i]: the draws one-row calls make, so each episode's noise does not depend
        on who shares its batch. (act's own path is the reference the test compares with.)"""
        model, flow = self.model, self.model.flow
        ctx, pad = model.encode(images, texts)
        state = state.to(ctx.device)
        if model.grounding is not None:
            model.last_grounding = model.ground(ctx, pad, state)
            state = torch.cat([state, model.last_grounding], dim=-1)
        shape = (1, flow.chunk, flow.action_dim)
        x = torch.cat([torch.randn(shape, generator=g, device=ctx.device) for g in generators])
        steps = model.config.flow_steps
        dt = 1.0 / steps
        for k in range(steps):
            t = torch.full((x.shape[0],), 1.0 - k * dt, device=ctx.device)
            x = x - dt * flow.velocity(ctx, pad, state, x, t)
        return x

    def predict_waypoints(self, observations: Sequence[dict[str, Any]]) -> np.ndarray:
        images, texts, state = self._inputs(observations)
        w = self.model.predict_waypoints(images, texts, state).cpu().numpy()
        return self.model.norm["waypoints"].unnormalize(w)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        st = self.state()
        if self.nav:
            action = self._plan(obs, st)
            if action is not None:
                return action
            return self._drive(obs, st, self.predict_waypoints([obs])[0] if self._needs_model(obs) else None)
        if not st.queue:
            st.queue.extend(self.predict_chunk([obs])[0][: self.replan])
        return np.asarray(st.queue.popleft(), np.float32)

    def act_batch(self, observations: Sequence[dict[str, Any]], clients: Sequence[Hashable]) -> list[np.ndarray]:
        """One action per observation, observations[i] from the episode of clients[i]; one
        forward pass for all rows that need the model this step (the others play a queued
        action, a detour, a stop). Each client's state advances as `act` would advance it."""
        if len(observations) != len(clients) or len(set(clients)) != len(clients):
            raise ValueError("act_batch: one observation per client, each client once")
        states = [self.state(c) for c in clients]
        if self.nav:
            out: list[np.ndarray | None] = [self._plan(o, st) for o, st in zip(observations, states, strict=True)]
            ask = [i for i, a in enumerate(out) if a is None and self._needs_model(observations[i])]
            waypoints = dict(
                zip(ask, self.predict_waypoints([observations[i] for i in ask]) if ask else [], strict=True)
            )
            for i, a in enumerate(out):
                if a is None:
                    out[i] = self._drive(observations[i], states[i], waypoints.get(i))
            return [a for a in out if a is not None]
        ask = [i for i, st in enumerate(states) if not st.queue]
        if ask:
            chunks = self.predict_chunk([observations[i] for i in ask], [states[i].generator for i in ask])
            for i, chunk in zip(ask, chunks, strict=True):
                states[i].queue.extend(chunk[: self.replan])
        return [np.asarray(st.queue.popleft(), np.float32) for st in states]

    # --------------------------------------------------------- the mobile base
    # Waypoints are in the robot frame of the moment they were predicted, so the base re-plans
    # every step (one forward pass) and steers at the second waypoint. In the last
    # APPROACH_RADIUS the tracker docks on the goal vector itself: demonstrations hold few
    # frames that close, and there the waypoint head is least reliable. The steps are split
    # around the model (_plan, the model, _drive) so that act_batch can batch the middle one.

    def _plan(self, obs: dict[str, Any], st: EpisodeState) -> np.ndarray | None:
        """An action decided without the model (at the goal, on a detour), else None."""
        goal = obs.get("goal")
        if goal is not None and goal[0] < STOP_RADIUS:
            return STOP.copy()
        if st.detour:
            return st.detour.popleft()
        if goal is not None and self._no_progress(goal, st):  # oscillating in front of an obstacle: go round it
            side = (1.0 if goal[1] >= 0 else -1.0) * (-1.0) ** st.detours  # alternate sides
            st.detours += 1
            st.detour.extend(np.array([v_, side * w_, 0.0], np.float32) for v_, w_ in DETOUR)
            return st.detour.popleft()
        return None

    @staticmethod
    def _needs_model(obs: dict[str, Any]) -> bool:
        goal = obs.get("goal")
        return goal is None or goal[0] >= APPROACH_RADIUS

    def _drive(self, obs: dict[str, Any], st: EpisodeState, waypoints: np.ndarray | None) -> np.ndarray:
        """Steer at the waypoints (None: at the near goal itself), with the recovery rules."""
        # waypoint k lies 2(k+1) control steps ahead (qrobot.vla.data.future_waypoints):
        # follow the second one's forward distance and heading change over 0.4 s
        horizon = 4 * 0.1
        if waypoints is None:
            goal = obs["goal"]
            rho, phi = float(goal[0]), float(goal[1])
            x, theta = rho * max(np.cos(phi), 0.0), phi  # turn in place while the goal is behind
        else:
            x, _, theta = waypoints[1]
            if obs.get("goal") is None:
                xy, th, steps = self.nav_stop
                still = np.hypot(*waypoints[-1][:2]) < xy and abs(waypoints[-1][2]) < th
                st.still = st.still + 1 if still else 0
                if st.still >= steps:
                    return STOP.copy()
        v = np.clip(x / horizon / MAX_V, -1.0, 1.0)
        w = np.clip(theta / horizon / MAX_W, -1.0, 1.0)
        # recovery behaviour (as nav stacks have): the memoryless model keeps pushing into
        # an obstacle it touches, so a blocked base backs off before following it again
        if st.backing:  # reverse while turning the way the model wanted to turn
            st.backing -= 1
            return np.array([-0.5, st.backing_turn, 0.0], np.float32)
        st.stuck = st.stuck + 1 if v > 0.05 and abs(float(obs["proprio"][0])) < 0.02 else 0
        if st.stuck >= STUCK_STEPS:
            st.stuck, st.backing = 0, BACKUP_STEPS
            st.backing_turn = 0.6 if theta >= 0 else -0.6
        return np.array([v, w, 0.0], np.float32)

    @staticmethod
    def _no_progress(goal: np.ndarray, st: EpisodeState) -> bool:
        """Nav stacks' progress checker: True when the goal distance has not shrunk by
        PROGRESS in NO_PROGRESS_STEPS steps (then the count starts again)."""
        if goal[0] < st.best - PROGRESS:
            st.best, st.no_progress = float(goal[0]), 0
            return False
        st.no_progress += 1
        if st.no_progress < NO_PROGRESS_STEPS:
            return False
        st.best, st.no_progress = float(goal[0]), 0
        return True
