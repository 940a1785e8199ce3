"""DART demonstrations on a real PyBullet world: a perturbed action is executed, the expert's
clean one is recorded, and each step's chunk label is the expert's own unperturbed
continuation, rolled out and undone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.cli import main
from qrobot.vla.data import ActionNoise, action_chunk, expert_continuation, load_episodes


def _expert_run(images: bool, seed: int, continuation_at: set[int] = frozenset()) -> tuple[np.ndarray, dict]:
    """Proprio of a clean expert episode, and the continuations asked for on the way."""
    env = QRobotEnv("pick_place", images=images)
    expert = make_policy("expert", env)
    obs, _ = env.reset(seed=seed)
    expert.reset(obs["instruction"])
    proprio, actions, conts, done, t = [obs["proprio"]], [], {}, False, 0
    while not done:
        action = np.asarray(expert.act(obs), np.float32)
        if t in continuation_at:
            conts[t] = expert_continuation(env, expert, action, 8)
        actions.append(action)
        obs, _, term, trunc, _ = env.step(action)
        proprio.append(obs["proprio"])
        done, t = term or trunc, t + 1
    env.close()
    return np.array(proprio), {"actions": np.array(actions), "continuations": conts}


def test_expert_continuation_is_what_the_expert_then_does_and_leaves_the_world_as_it_was() -> None:
    plain, run = _expert_run(images=False, seed=3)
    asked = {0, 10, 20, len(run["actions"]) - 3}
    probed, probed_run = _expert_run(images=False, seed=3, continuation_at=asked)
    np.testing.assert_allclose(probed, plain, atol=1e-4)  # the rollouts were undone
    acts = run["actions"]
    for t, chunk in probed_run["continuations"].items():
        expected = acts[np.minimum(np.arange(t, t + 8), len(acts) - 1)]  # the last repeats past the end
        np.testing.assert_allclose(chunk, expected, atol=1e-3)


def test_panda_state_is_the_same_whether_or_not_cameras_render() -> None:
    with_images, _ = _expert_run(images=True, seed=5)
    without, _ = _expert_run(images=False, seed=5)
    np.testing.assert_array_equal(with_images, without)


def test_dart_collection_executes_noise_records_the_expert_and_trains_with_a_clean_set(tmp_path: Path) -> None:
    noisy, clean, ckpt = tmp_path / "noisy", tmp_path / "clean", tmp_path / "ckpt"
    assert (
        main(
            [
                "collect",
                "pick_place",
                "--episodes",
                "1",
                "--seed",
                "7",
                "--out",
                str(noisy),
                "--action-noise",
                "0.5",
                "--no-randomize",
            ]
        )
        == 0
    )
    assert json.loads((noisy / "meta.json").read_text())["action_noise"] == 0.5
    _, (ep,) = load_episodes(noisy, successful_only=False)
    z = np.load(noisy / "ep0-seed7.npz")
    assert 0.25 <= float(z["action_noise"]) <= 0.5
    assert ep.chunks.shape == (len(ep.actions), 8, 5)
    np.testing.assert_array_equal(ep.chunks[:, 0], ep.actions)  # a chunk starts with the step's label
    np.testing.assert_array_equal(action_chunk(ep, 4, 8), ep.chunks[4])

    # replaying the recorded labels plus the episode's noise retraces the episode; the labels alone do not
    def replay(noise: ActionNoise | None) -> np.ndarray:
        env = QRobotEnv("pick_place", images=False)
        obs, _ = env.reset(seed=7)
        out = [obs["proprio"]]
        for a in ep.actions[:-1]:
            obs, *_ = env.step(noise(a) if noise else a)
            out.append(obs["proprio"])
        env.close()
        return np.array(out)

    recorded = ep.state[:, :3]
    # (to a millimetre: a PyBullet state restore after each continuation is not bit-exact)
    assert np.abs(replay(ActionNoise(0.5, 7))[:, :3] - recorded).max() < 0.002
    assert np.abs(replay(None)[:, :3] - recorded).max() > 0.02

    assert main(["collect", "pick_place", "--episodes", "1", "--out", str(clean)]) == 0
    assert main(["train", "--dataset", str(clean), str(noisy), "--out", str(ckpt), "--steps", "5", "--batch", "4"]) == 0
    card = (ckpt / "README.md").read_text()
    assert "seeds 0-0" in card and "seeds 7-7, DART action noise 0.5" in card
