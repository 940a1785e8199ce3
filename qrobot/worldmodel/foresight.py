"""Foresight: the world model imagines the next action chunk before the base moves.

The env feeds it the fixed scene camera every step; the supervisor asks `speed_scale(action)`
each control period. It imagines the command held for the next H steps at forward-speed
scales 1, 1/2, 1/4 and 0 in one batch and returns the largest scale whose
predicted collision probability (max over the horizon) stays below the threshold (or
below standing still's, when that is already above it).
Turning is never scaled: a round base turning in place does not run into things.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from qrobot.sim import Camera
from qrobot.worldmodel.data import camera_from_dict
from qrobot.worldmodel.model import WorldModel, to_tensor

SCALES = (1.0, 0.5, 0.25, 0.0)


class Foresight:
    def __init__(
        self, model: WorldModel, render: Callable[[Camera], np.ndarray], threshold: float | None = None
    ) -> None:
        self.model = model.eval()
        c = model.config
        self.camera = camera_from_dict(c.camera, c.image_size)
        self.render = render
        self.threshold = c.threshold if threshold is None else float(threshold)
        self.horizon, self.context = c.horizon, c.context
        self.reset()

    @classmethod
    def load(
        cls, checkpoint: str | Path, render: Callable[[Camera], np.ndarray], threshold: float | None = None
    ) -> Foresight:
        return cls(WorldModel.from_pretrained(checkpoint), render, threshold)

    def reset(self) -> None:
        self.frames: deque[np.ndarray] = deque(maxlen=self.context)
        self.predictions: dict[int, dict[int, np.ndarray]] = {}  # step index -> {h: frame imagined from it}
        self.step_index = -1
        self.last_probability = 0.0
        self.last_scale = 1.0

    def observe(self) -> None:
        """Render the scene camera after a reset or a step."""
        frame = self.render(self.camera)
        self.step_index += 1
        self.predictions.pop(self.step_index - self.horizon - 1, None)
        if not self.frames:
            self.frames.extend([frame] * self.context)
        self.frames.append(frame)

    def _chunk(self, action: np.ndarray) -> np.ndarray:
        return np.clip(np.repeat(np.asarray(action, np.float32)[None], self.horizon, 0), -1.0, 1.0)

    def speed_scale(self, action: np.ndarray) -> tuple[float, float]:
        """(largest safe forward-speed scale, predicted collision probability at that scale)."""
        if not self.frames:
            self.observe()
        base = self._chunk(action)
        chunks = np.repeat(base[None], len(SCALES), 0)
        chunks[:, :, 0] *= np.asarray(SCALES, np.float32)[:, None]
        ctx = to_tensor(np.stack(self.frames))[None]
        risks = self.model.imagine(ctx.expand(len(SCALES), -1, -1, -1, -1), torch.as_tensor(chunks), decode=[])
        # Going faster the same way is never safer against static obstacles: take the
        # envelope over slower scales (the model learned from data where full speed was
        # mostly the careful expert's, and can rank a full-speed command as the safest).
        risk = np.maximum.accumulate(risks["collision"].amax(1).numpy()[::-1])[::-1]
        # Already touching (standing still is risky too): allow what is no worse than stopping,
        # or a robot against a wall could never back away from it.
        limit = max(self.threshold, float(risk[-1]) + 0.05)
        i = next(k for k in range(len(SCALES)) if risk[k] < limit)  # scale 0 always qualifies
        # only the chosen chunk is decoded, and only the frames that get recorded (h = 1 and H)
        shown = self.model.imagine(ctx, torch.as_tensor(chunks[i : i + 1]), decode=[0, self.horizon - 1])
        frames = (shown["frames"][0].movedim(1, -1) * 255).round().to(torch.uint8).numpy()
        self.predictions[self.step_index] = {1: frames[0], self.horizon: frames[1]}
        self.last_probability, self.last_scale = float(risk[0]), SCALES[i]
        return SCALES[i], float(risk[i])

    def predicted_now(self, h: int) -> np.ndarray | None:
        """The frame predicted h (1 or H) steps ago for the current step, if one was."""
        return self.predictions.get(self.step_index - h, {}).get(h)
