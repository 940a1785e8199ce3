"""Batched policy serving (issue 20): `VLAPolicy.act_batch` against `act` on real observations
with the shipped checkpoints, a policy actor batching concurrent requests, and
`qrobot bench --executor ray --policy-gpus 1` against the in-process rows.

Batched float32 matrix products add up in another order than one row's (here: the heads'
small matrix products; the backbone's hidden states came out bit-identical), so the
continuous outputs agree within TOL (measured on this VM: 5.0e-6 for pick_place action
chunks, 3.6e-7 for pointnav waypoints) and the thresholded ones (gripper open, stop) are
identical. Over an episode the differences add up in the closed loop: a row's metrics
agree within ROW_REL (measured: 2.6e-5 relative, a pointnav path length), its success, end
reason, steps and safety counts are equal.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from qrobot.policies import SHIPPED, make_policy

from qrobot.cli import main

TOL = 1e-4  # max abs difference of actions and waypoints, action units ([-1, 1])
ROW_REL = 1e-3  # an episode's metrics: the action differences add up over a closed loop
SEEDS = (10000, 10001, 10002)  # held-out seeds (docs/evaluation.md)
STEPS = {"pick_place": 60, "pointnav": 40}  # expert steps per episode; every 4th observation kept


def _episodes(scenario: str) -> tuple[Any, list[tuple[int, list[dict[str, Any]]]]]:
    """The VLA for `scenario` and, per seed, observations of an expert's episode (rendered)."""
    from qrobot.envs.core import QRobotEnv

    from qrobot.scenario import load_scenario

    if scenario not in SHIPPED:
        pytest.skip(f"no shipped checkpoint for {scenario}")
    env = QRobotEnv(load_scenario(scenario), images=True)
    try:
        policy, expert = make_policy("qwen-vla", env), make_policy("expert", env)
        out = []
        for seed in SEEDS:
            obs, _ = env.reset(seed=seed)
            expert.reset(obs["instruction"])
            kept = []
            for t in range(STEPS[scenario]):
                if t % 4 == 0:
                    kept.append(obs)
                obs, _, terminated, truncated, _ = env.step(expert.act(obs))
                if terminated or truncated:
                    break
            out.append((seed, kept + [obs]))
    finally:
        env.close()
    return policy, out


@pytest.fixture(scope="module", params=["pick_place", "pointnav"])
def episodes(request: pytest.FixtureRequest) -> tuple[str, Any, list[tuple[int, list[dict[str, Any]]]]]:
    return (request.param, *_episodes(request.param))


def _chosen(scenario: str, action: np.ndarray) -> bool:
    """The thresholded part of an action: gripper open (arm: > 0), stop (base: > 0.5)."""
    return bool(action[4] > 0) if scenario.startswith("pick") else bool(action[2] > 0.5)


def test_one_batch_gives_each_rows_model_output(episodes: tuple) -> None:
    """The model itself: every observation alone against all of them in one forward pass
    (arm: each row's noise from its own generator, as one episode's would be)."""
    scenario, policy, eps = episodes
    obs = [o for _, kept in eps for o in kept]
    if policy.nav:
        alone = np.concatenate([policy.predict_waypoints([o]) for o in obs])
        batch = policy.predict_waypoints(obs)
    else:
        gens = [torch.Generator().manual_seed(i) for i in range(len(obs))]
        alone = np.concatenate([policy.predict_chunk([o], [g]) for o, g in zip(obs, gens, strict=True)])
        for i, o in enumerate(obs[:4]):  # one row, per-row noise: as act's own path (QwenVLA.predict_chunk)
            policy.seed_episode(i)
            assert np.array_equal(policy.predict_chunk([o])[0], alone[i])
        batch = policy.predict_chunk(obs, [torch.Generator().manual_seed(i) for i in range(len(obs))])
        assert np.array_equal(alone[..., 4] > 0, batch[..., 4] > 0)  # the gripper's choices
        assert (alone[..., 4] > 0).any() and (alone[..., 4] <= 0).any()  # (both occur)
    diff = float(np.abs(alone - batch).max())
    print(f"{scenario}: {len(obs)} observations, max abs difference batched vs alone {diff:.2e}")
    assert diff <= TOL


def test_act_batch_follows_each_episode_as_act_does(episodes: tuple) -> None:
    """Three episodes as three clients, the third started two steps after the others (so
    that arm chunks are asked for by two rows at once, and by one while the others play
    their queues), against each episode alone through `act`."""
    scenario, policy, eps = episodes
    start = [0, 0, 2]
    alone: dict[int, list[np.ndarray]] = {}
    for seed, kept in eps:
        policy.seed_episode(seed)
        policy.reset(kept[0]["instruction"])
        alone[seed] = [policy.act(o) for o in kept]
    clients = {seed: f"worker-{k}" for k, (seed, _) in enumerate(eps)}
    for seed, kept in eps:
        policy.seed_episode(seed, client=clients[seed])
        policy.reset(kept[0]["instruction"], client=clients[seed])
    batched: dict[int, list[np.ndarray]] = {seed: [] for seed, _ in eps}
    rows: list[int] = []  # observations in each forward pass
    name = "predict_waypoints" if policy.nav else "predict_chunk"
    model = getattr(policy, name)
    setattr(policy, name, lambda obs, *rest: rows.append(len(obs)) or model(obs, *rest))
    try:
        for t in range(max(s + len(kept) for s, (_, kept) in zip(start, eps, strict=True))):
            now = [(seed, kept[t - s]) for s, (seed, kept) in zip(start, eps, strict=True) if 0 <= t - s < len(kept)]
            for (seed, _), a in zip(
                now, policy.act_batch([o for _, o in now], [clients[sd] for sd, _ in now]), strict=True
            ):
                batched[seed].append(a)
    finally:
        delattr(policy, name)
    assert max(rows) == (3 if policy.nav else 2) and min(rows) == 1
    diff = 0.0
    for seed, ref in alone.items():
        assert len(batched[seed]) == len(ref)
        assert [_chosen(scenario, a) for a in batched[seed]] == [_chosen(scenario, a) for a in ref]
        diff = max(diff, float(np.abs(np.stack(batched[seed]) - np.stack(ref)).max()))
    print(f"{scenario}: act_batch vs act, max abs difference {diff:.2e}")
    assert diff <= TOL
    with pytest.raises(ValueError):
        policy.act_batch([eps[0][1][0]] * 2, ["twice", "twice"])


def test_a_policy_actor_answers_concurrent_requests_with_one_batch(episodes: tuple) -> None:
    """The actor class without Ray: three clients ask at once, it waits for all three (its
    window is long here) and answers them with one act_batch, as act would have."""
    from qrobot.matrix import PolicySpec
    from qrobot.policy_server_ray import PolicyActor

    scenario, policy, eps = episodes
    spec = PolicySpec.parse("qwen-vla")
    first = [(seed, kept[0]) for seed, kept in eps]
    want = []
    for seed, o in first:
        policy.seed_episode(seed)
        policy.reset(o["instruction"])
        want.append(policy.act(o))

    async def ask() -> list[Any]:
        actor = PolicyActor(clients=len(first), window_s=60.0)
        await actor.prepare(scenario, spec)
        got = await asyncio.gather(
            *(
                actor.act(scenario, spec, f"c{seed}", [("seed_episode", seed), ("reset", o["instruction"])], o)
                for seed, o in first
            )
        )
        return [got, await actor.stats()]

    got, stats = asyncio.run(ask())
    assert stats == {"requests": 3, "batches": 1, "largest": 3}
    assert [_chosen(scenario, a) for a in got] == [_chosen(scenario, a) for a in want]
    assert float(np.abs(np.stack(got) - np.stack(want)).max()) <= TOL


# ----------------------------------------------------------------------------- bench on Ray
KEYS = ("success", "steps", "end_reason", "instruction", "safety")


def _rows(run_dir: Path) -> dict[tuple[str, str, int], dict[str, Any]]:
    rows = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    return {(r["scenario"], r["policy"], r["seed"]): r for r in rows}


def _bench(runs: Path, *argv: str) -> Path:
    before = set(runs.iterdir()) if runs.exists() else set()
    assert main(["bench", *argv, "--no-record", "--runs-dir", str(runs), "-q"]) == 0
    (new,) = set(runs.iterdir()) - before
    return new


@pytest.mark.xdist_group("ray")  # the same worker, and so the same local Ray, as tests/test_ray_executor.py
def test_policy_gpus_gives_the_in_process_rows(tmp_path: Path, cluster: str) -> None:
    """Two seeds of pointnav (waypoints, whole episodes) and of pick_place cut to 16 steps
    (four action chunks each), in this process and on Ray with one policy actor (the fake
    GPU of the `cluster` fixture) serving both env workers; the expert beside it runs in
    the env workers, its rows bit for bit the same. pick_place stops before the
    gripper reaches the cube: contact turns a 1e-6 difference into centimetres (a grasped
    cube dropped into a bowl lands elsewhere; docs/benchmarking.md, Tolerance)."""
    from qrobot import policy_server_ray

    if not {"pointnav", "pick_place"} <= set(SHIPPED):
        pytest.skip("needs the shipped pointnav and pick_place checkpoints")
    short = tmp_path / "pick_place_16.toml"
    short.write_text('extends = "pick_place"\nmax_steps = 16\n')
    matrix = ["--scenarios", f"pointnav,{short}", "--policies", "qwen-vla,expert", "--episodes", "2", "--seed", "10000"]
    here = _rows(_bench(tmp_path / "here", *matrix, "--workers", "1"))
    served = _rows(_bench(tmp_path / "ray", *matrix, "--executor", "ray", "--policy-gpus", "1"))
    assert len(here) == 8 and here.keys() == served.keys()
    drift = 0.0
    for key, row in here.items():
        assert {k: served[key][k] for k in KEYS} == {k: row[k] for k in KEYS}, key
        if key[1] == "expert":
            assert served[key]["metrics"] == row["metrics"], key
            continue
        assert served[key]["metrics"].keys() == row["metrics"].keys()
        for name, value in row["metrics"].items():
            assert served[key]["metrics"][name] == pytest.approx(value, rel=ROW_REL, abs=1e-9), (key, name)
            drift = max(drift, abs(served[key]["metrics"][name] - value) / max(abs(value), 1e-9))
    vla = [r for r in served.values() if r["policy"] == "qwen-vla"]
    assert any(r["success"] for r in vla) and not all(r["success"] for r in vla)
    stats = policy_server_ray.STATS  # every control step of the VLA was one request to the policy actor
    assert stats["requests"] == sum(r["steps"] for r in vla) and stats["batches"] <= stats["requests"]
    print(f"policy actor: {stats}; metrics: max relative difference {drift:.1e}")


def test_policy_gpus_without_ray_or_act_batch_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["bench", "--scenarios", "pointnav", "--episodes", "1", "--runs-dir", str(tmp_path)]
    assert main([*base, "--policies", "qwen-vla", "--policy-gpus", "1"]) == 2  # --executor local
    assert main([*base, "--policies", "expert,random", "--executor", "ray", "--policy-gpus", "1"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("qrobot: error: bench --policy-gpus 1: ") for e in errors)
    assert "--executor ray" in errors[0] and "act_batch" in errors[1]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())
