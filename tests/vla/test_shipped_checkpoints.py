"""The tiny checkpoints shipped in qrobot/checkpoints: they load through the policy
registry (no --checkpoint needed), stay within the size budget, and succeed on a few
held-out seeds (the 50-seed figures are in the README, from `qrobot eval`)."""

from __future__ import annotations

import numpy as np

from qrobot.envs.core import QRobotEnv
from qrobot.policies import CHECKPOINTS, SHIPPED, make_policy
from qrobot.policies.vla import REPLAN
from qrobot.vla.evaluate import evaluate


def test_shipped_checkpoints_fit_the_budget() -> None:
    assert set(SHIPPED) == {"pick_place", "pointnav"}
    total = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert total <= 25 * 2**20, f"{total / 2**20:.1f} MB"
    for kind, path in SHIPPED.items():
        card = (path / "README.md").read_text()
        assert "success" in card and kind in card  # the model card reports what was measured


def test_shipped_pointnav_checkpoint_succeeds_on_held_out_seeds() -> None:
    # seeds 20000+ are neither training (0-799) nor the README's evaluation seeds (10000+)
    lines: list[str] = []
    report = evaluate(SHIPPED["pointnav"], "pointnav", episodes=4, seed=20000, workers=2, on_episode=lines.append)
    assert report["successes"] >= 2, report
    assert [line.split(":")[0] for line in lines] == [f"seed {s}" for s in range(20000, 20004)]  # 2 workers, in order


def test_shipped_pick_place_checkpoint_picks_the_named_cube_on_held_out_seeds() -> None:
    # README: 44/50 on seeds 10000+; seeds 20000-20003 gave 3/4 when the checkpoint shipped
    report = evaluate(SHIPPED["pick_place"], "pick_place", episodes=4, seed=20000, swap=False, workers=2)
    assert report["successes"] >= 2, report
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
        policy.predict_chunk = lambda o: calls.append(1) or predict(o)
        policy.reset(obs["instruction"])
        for _ in range(6):
            policy.act(obs)
        assert len(calls) == -(-6 // policy.replan)   # a new chunk on the first act and after each replan
    env.close()
