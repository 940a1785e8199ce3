"""The tiny checkpoints shipped in qrobot/checkpoints: they load through the policy
registry (no --checkpoint needed), stay within the size budget, and succeed on a few
held-out seeds (the 50-seed figures are in docs/vla.md, from `qrobot eval`)."""

from __future__ import annotations

import numpy as np
from qrobot.envs.core import QRobotEnv
from qrobot.policies import CHECKPOINTS, SHIPPED, make_policy
from qrobot.policies.vla import REPLAN

from qrobot.runner import binomial_floor
from qrobot.vla.evaluate import evaluate

# successes / episodes of `make vla-eval` (seeds 10000-10049) with the current dynamics; the
# CI floors below are binomial: a checkpoint at that rate fails them with probability <= 1e-3.
REPORTED = {"pointnav": (38, 50), "pick_place": (32, 50)}


def test_shipped_checkpoints_fit_the_budget() -> None:
    assert set(SHIPPED) == {"pick_place", "pointnav"}
    total = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert total <= 25 * 2**20, f"{total / 2**20:.1f} MB"
    for kind, path in SHIPPED.items():
        card = (path / "README.md").read_text()
        assert "success" in card and kind in card  # the model card reports what was measured


def _floor(kind: str, episodes: int) -> int:
    k, n = REPORTED[kind]
    floor = binomial_floor(k / n, episodes)
    assert floor >= 1  # enough episodes for the floor to mean something
    return floor


def test_shipped_pointnav_checkpoint_succeeds_on_held_out_seeds() -> None:
    # seeds 20000+ (CI floors) are neither training (0-799) nor validation (10000+, 30000+)
    lines: list[str] = []
    report = evaluate(SHIPPED["pointnav"], "pointnav", episodes=6, seed=20000, workers=2, on_episode=lines.append)
    assert report["successes"] >= _floor("pointnav", 6), report
    assert [line.split()[3] for line in lines] == [str(s) for s in range(20000, 20006)]  # 2 workers, in order


def test_shipped_pick_place_checkpoint_picks_the_named_cube_on_held_out_seeds() -> None:
    report = evaluate(SHIPPED["pick_place"], "pick_place", episodes=7, seed=20000, swap=False, workers=2)
    assert report["successes"] >= _floor("pick_place", 7), report
    assert report["followed"] >= 0.5, report


def test_shipped_pick_place_checkpoint_drives_the_arm_through_the_supervisor() -> None:
    # loads by task (no --checkpoint), acts from observations only, moves the arm through the supervisor
    env = QRobotEnv("pick_place", images=True)
    policy = make_policy("qwen-vla", env)
    obs, _ = env.reset(seed=20000)
    policy.reset(obs["instruction"])
    start = obs["proprio"][:3].copy()
    for _ in range(12):
        action = policy.act(obs)
        assert action.shape == (5,) and np.all(np.isfinite(action)) and np.all(np.abs(action) <= 1.0)
        obs, *_ = env.step(action)
    assert np.linalg.norm(obs["proprio"][:3] - start) > 0.03  # the gripper moved
    assert not env.supervisor.latched
    env.close()


def test_arm_policy_predicts_again_after_replan_actions() -> None:
    env = QRobotEnv("pick_place", images=True)
    obs, _ = env.reset(seed=20001)
    for replan in (None, 3):
        policy = make_policy("qwen-vla", env, replan=replan)
        assert policy.replan == (replan or REPLAN)
        calls = []
        predict = policy.predict_chunk
        policy.predict_chunk = lambda o, c=calls, f=predict: c.append(1) or f(o)
        policy.reset(obs["instruction"])
        for _ in range(6):
            policy.act(obs)
        assert len(calls) == -(-6 // policy.replan)  # a new chunk on the first act and after each replan
    env.close()
