"""`make lerobot-check`, the policy part (scripts/lerobot_check.py runs it in .venv-lerobot
after the dataset check, given the export): a real LeRobot ACT benchmarked by qrobot.

- ACT (lerobot.policies.act) set up as lerobot-train sets one up for qrobot's export of
  pick_place: `make_policy(cfg, ds_meta=...)` takes its features from the dataset's
  (observation.images.scene/wrist, observation.state, action) and `make_pre_post_processors`
  its normalization from the dataset's stats; small, random weights, saved with its
  processors (`save_pretrained`) to a temporary directory;
- loaded from there by qrobot's adapter (`make_policy("lerobot", env, checkpoint=DIR)`) and
  driven in the pick_place env beside a second copy run the way LeRobot's own rollout runs
  a policy (lerobot_eval: `preprocess_observation`, the task, preprocessor, `select_action`,
  postprocessor): the same actions (clipped to the box) at every step, the model run once
  per `n_action_steps`, and a fresh chunk after each reset;
- served by `qrobot serve-policy lerobot --checkpoint DIR` from this venv and benchmarked from
  qrobot's own venv (`qrobot bench --policies remote=...`): every episode ends without a
  policy_error.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SCENARIO, REPO_ID = "pick_place", "qrobot/pick_place"  # the export lerobot_check.sh makes
ACT = dict(  # small: the check is about the wiring, not the model
    chunk_size=10, n_action_steps=8, dim_model=64, n_heads=4, dim_feedforward=128, n_encoder_layers=1,
    n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8, pretrained_backbone_weights=None, device="cpu",
)  # fmt: skip
EPISODES, STEPS = 2, 20  # side by side in-process (20 steps: 2 chunks and half of one)


def build(export: Path, out: Path) -> Any:
    """ACT for the export's features and stats, random weights, saved with its processors."""
    from lerobot.datasets.lerobot_dataset import LeRobotDatasetMetadata
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.factory import make_policy, make_pre_post_processors

    meta = LeRobotDatasetMetadata(REPO_ID, root=export)
    cfg = ACTConfig(**ACT, push_to_hub=False)
    torch.manual_seed(0)
    policy = make_policy(cfg, ds_meta=meta)
    pre, post = make_pre_post_processors(cfg, dataset_stats=meta.stats)
    for part in (policy, pre, post):
        part.save_pretrained(out)
    return policy.config


def side_by_side(directory: Path) -> None:
    """qrobot's adapter and LeRobot's rollout path, on one env's observations."""
    from lerobot.envs.utils import preprocess_observation
    from lerobot.policies.act.modeling_act import ACTPolicy
    from lerobot.policies.factory import make_pre_post_processors
    from qrobot.envs.core import QRobotEnv
    from qrobot.policies import make_policy

    env = QRobotEnv(SCENARIO, images=True)
    ours = make_policy("lerobot", env, checkpoint=str(directory))
    ref = ACTPolicy.from_pretrained(str(directory))
    pre, post = make_pre_post_processors(ref.config, pretrained_path=str(directory))
    runs: list[int] = []  # the steps at which the adapter's ACT ran its model
    predict = ours.policy.predict_action_chunk
    ours.policy.predict_action_chunk = lambda batch: (runs.append(step), predict(batch))[1]
    worst = 0.0
    for episode in range(EPISODES):
        obs, _ = env.reset(seed=10000 + episode)
        ours.seed_episode(10000 + episode)
        ours.reset(obs["instruction"])
        ref.reset()
        runs.clear()
        for step in range(STEPS):
            batch = preprocess_observation({"pixels": obs["images"], "agent_pos": obs["proprio"]})
            with torch.inference_mode():
                theirs = post(ref.select_action(pre({**batch, "task": [obs["instruction"]]})))
            want = np.clip(theirs.numpy().reshape(-1), -1.0, 1.0)
            got = ours.act(obs)
            worst = max(worst, float(np.abs(got - want).max()))
            assert np.array_equal(got, want), (episode, step, got, want)
            obs, *_ = env.step(got)
        chunk = ours.policy.config.n_action_steps
        assert runs == list(range(0, STEPS, chunk)), runs  # (the previous episode left a part chunk)
    env.close()
    print(
        f"qrobot's adapter and LeRobot's rollout path (preprocess_observation, task, preprocessor, select_action, "
        f"postprocessor), {EPISODES} episodes x {STEPS} steps of {SCENARIO}: the same actions (max difference "
        f"{worst:g}); the model ran at steps {runs} of each episode ({chunk} actions per chunk, a fresh chunk "
        "after each reset)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served(directory: Path, work: Path) -> None:
    """`qrobot serve-policy lerobot` here, `qrobot bench` with `remote` from qrobot's venv."""
    from qrobot.bridge import keys as certs

    keys = work / "keys"
    certs.init(keys)
    endpoint = f"tls/127.0.0.1:{_free_port()}"
    qrobot_here = str(Path(sys.executable).parent / "qrobot")
    cmd = [qrobot_here, "serve-policy", "lerobot", "--checkpoint", str(directory), "--scenario", SCENARIO]
    server = subprocess.Popen(
        [*cmd, "--listen", endpoint, "--keys", str(keys)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    assert server.stdout is not None
    out = server.stdout
    threading.Thread(target=lambda: [lines.put(line) for line in out], daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + 180
    while not (seen and seen[-1].startswith("serving ")):
        assert time.monotonic() < deadline and server.poll() is None, "serve-policy did not start:\n" + "".join(seen)
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            pass
    print(f"$ .venv-lerobot/bin/qrobot {' '.join(cmd[1:])} --listen {endpoint} --keys KEYS\n  {seen[-1].strip()}")
    try:
        qrobot = os.environ.get("QROBOT", str(ROOT / ".venv" / "bin" / "qrobot"))
        bench = [qrobot, "bench", "--scenarios", SCENARIO, "--policies", f"remote={endpoint}?keys={keys}&timeout=60"]
        bench += [
            "--episodes",
            "2",
            "--seed",
            "10000",
            "--workers",
            "1",
            "--no-record",
            "--runs-dir",
            str(work / "runs"),
        ]
        t = time.monotonic()
        done = subprocess.run([*bench, "-q"], capture_output=True, text=True)
        took = time.monotonic() - t
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    runs = list((work / "runs").iterdir())
    rows = [json.loads(line) for run in runs for line in (run / "episodes.jsonl").read_text().splitlines()]
    ended = [(r["seed"], r["end_reason"], r["error"]) for r in rows]
    assert done.returncode == 0, f"qrobot bench exited {done.returncode}: {ended}\n{done.stdout}\n{done.stderr}"
    assert len(rows) == 2 and all(r["end_reason"] != "policy_error" and not r["error"] for r in rows), ended
    print(f"$ .venv/bin/qrobot bench --scenarios {SCENARIO} --policies remote=... --episodes 2 --seed 10000")
    for r in rows:
        print(f"  seed {r['seed']}: {r['end_reason']} after {r['steps']} steps, success {r['success']}, error none")
    steps = sum(r["steps"] for r in rows)
    print(
        f"{len(rows)} episodes, {steps} steps, each a request to the served ACT, in {took:.1f} s "
        f"({steps / took:.1f} steps/s, qrobot's start-up and camera rendering included). OK"
    )


def policy_check(export: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="lerobot-policy-") as tmp:
        work = Path(tmp)
        directory = work / "act"
        cfg = build(export, directory)
        feats = {k: tuple(ft.shape) for k, ft in {**cfg.input_features, **cfg.output_features}.items()}
        print(
            f"\nlerobot ACT for {REPO_ID}'s features {feats}: chunk_size {cfg.chunk_size}, n_action_steps "
            f"{cfg.n_action_steps}, random weights, saved with its processors: {sorted(p.name for p in directory.iterdir())}"
        )
        side_by_side(directory)
        served(directory, work)


if __name__ == "__main__":
    policy_check(Path(sys.argv[1]))
