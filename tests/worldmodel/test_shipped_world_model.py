"""The world model shipped in qrobot/checkpoints/world_model: it predicts fresh held-out
episodes better than copy-last-frame, ranks collisions, and its foresight keeps a driver
that heads straight on out of obstacles (the 150-episode and 50-seed figures are in
docs/world_model.md, from `qrobot wm-eval` and `benchmarks/foresight.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qrobot.envs.core import QRobotEnv
from qrobot.policies import CHECKPOINTS

from qrobot.runner import run_episode
from qrobot.scenario import load_scenario
from qrobot.worldmodel.data import wm_collect
from qrobot.worldmodel.evaluate import wm_evaluate

SHIPPED_WM = CHECKPOINTS / "world_model"


@pytest.mark.models  # make check-models (about 100 s); CI runs the small version below
def test_shipped_world_model_beats_copy_last_on_fresh_episodes(tmp_path: Path) -> None:
    # seeds 30000+: neither training (0-1199) nor docs/world_model.md's held-out set (10000-10149)
    wm_collect("pointnav_clutter", 9, tmp_path / "ds", seed=30000, max_steps=120)
    res = wm_evaluate(SHIPPED_WM, tmp_path / "ds", stride=2)
    assert res["changed_psnr_gain_h8"] >= 1.5, res["changed_psnr_gain_h8"]
    assert res["collision_positives"] > 0 and res["collision_auroc"] >= 0.8, res["collision_auroc"]


def test_shipped_world_model_beats_copy_last_small(tmp_path: Path) -> None:
    wm_collect("pointnav_clutter", 3, tmp_path / "ds", seed=30100, max_steps=60)
    res = wm_evaluate(SHIPPED_WM, tmp_path / "ds", stride=4)
    assert res["changed_psnr_gain_h8"] > 0.5, res["changed_psnr_gain_h8"]


class StraightAhead:
    """Full speed ahead, whatever is in front (a careless driver)."""

    name = "straight"

    def reset(self, instruction: str) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        return np.array([1.0, 0.0, 0.0], np.float32)


def _collisions(foresight: Path | None, seeds: range | list[int]) -> list[float]:
    sc = load_scenario("pointnav_clutter").model_copy(update={"max_steps": 60})
    env = QRobotEnv(sc, images=False, foresight=foresight)
    hits = [run_episode(env, StraightAhead(), k, seed).metrics["collisions"] for k, seed in enumerate(seeds)]
    env.close()
    return hits


@pytest.mark.models
def test_foresight_stops_a_straight_driver_short_of_obstacles() -> None:
    without, with_foresight = _collisions(None, range(8)), _collisions(SHIPPED_WM, range(8))
    assert sum(h > 0 for h in without) >= 3, without  # this driver does collide on these seeds
    assert sum(h > 0 for h in with_foresight) <= sum(h > 0 for h in without) // 2, with_foresight


def test_foresight_stops_a_straight_driver_small() -> None:
    seeds = [0, 4, 5, 7]  # of seeds 0-11, those where this driver collides without foresight
    without, with_foresight = _collisions(None, seeds), _collisions(SHIPPED_WM, seeds)
    assert sum(h > 0 for h in without) == 4, without
    assert sum(h > 0 for h in with_foresight) < sum(h > 0 for h in without), with_foresight
