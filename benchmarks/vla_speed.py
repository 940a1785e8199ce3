"""Tiny Qwen VLA speed on CPU: control rate with and without action chunking, and
training throughput per backbone family.

    .venv/bin/python benchmarks/vla_speed.py [--checkpoint DIR] [--steps 40] [--threads 1]

Control rate: policy.act() on real observations of the scenario the checkpoint was
trained on, re-planning every step (no chunking) vs every `replan` steps (the chunk
queue); figures are actions per second of the policy alone and of the whole loop
(policy + env with rendering). Without --checkpoint an untrained pick_place model of
the shipped size is built (speed does not depend on the weights).
Training: forward + backward + AdamW step on real-shaped batches, samples/s, for each
family's tiny config; ratio against tiny-qwen2.5-vl in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from qrobot.envs.core import QRobotEnv
from qrobot.policies.vla import REPLAN, VLAPolicy

from qrobot.vla.backbones import FAMILIES, build_backbone
from qrobot.vla.model import Normalizer, QwenVLA, VLAConfig
from qrobot.vla.tokenizer import InstructionTokenizer

TEXTS = ["put the red cube in the white bowl", "place the blue cube into the cyan bowl"]


def fresh_model(family: str, grounding: int = 8) -> QwenVLA:
    fam = FAMILIES[family]
    tok = InstructionTokenizer.from_corpus(fam.bpe, TEXTS)
    cfg = VLAConfig(backbone=f"tiny-{family}", family=family, image_side=4 * fam.side_multiple, grounding_dim=grounding)
    norm = {
        "state": Normalizer(-np.ones(13), np.ones(13)),
        "actions": Normalizer(-np.ones(5), np.ones(5)),
        "grounding": Normalizer(-np.ones(grounding), np.ones(grounding)),
    }
    return QwenVLA(cfg, tok, backbone=build_backbone(cfg.backbone, vocab_size=tok.vocab_size), norm=norm)


def control_rate(checkpoint: Path, steps: int) -> list[tuple[str, float, float]]:
    multi = (checkpoint / "embodiments.json").is_file()  # one checkpoint for every task: its arm
    own = checkpoint / "panda" if multi else checkpoint
    scenario = json.loads((own / "vla_config.json").read_text()).get("scenario") or "pick_place"
    env = QRobotEnv(scenario, images=True)
    rows = []
    for replan in sorted({1, 2, REPLAN}):
        label = (
            "no chunking (replan 1)"
            if replan == 1
            else f"chunking (replan {replan}" + (", the default)" if replan == REPLAN else ")")
        )
        policy = VLAPolicy(checkpoint, replan=replan, robot="panda" if multi else None)
        obs, _ = env.reset(seed=0)
        policy.reset(obs["instruction"])
        t_policy = 0.0
        t0 = time.perf_counter()
        for _ in range(steps):
            t = time.perf_counter()
            action = policy.act(obs)
            t_policy += time.perf_counter() - t
            obs, *_ = env.step(action)
        rows.append((label, steps / t_policy, steps / (time.perf_counter() - t0)))
    env.close()
    return rows


def train_rate(family: str, batches: int, batch: int) -> float:
    model = fresh_model(family)
    fam = FAMILIES[family]
    side = 4 * fam.side_multiple
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    data = {
        "images": torch.from_numpy(rng.integers(0, 255, (batch, 2, side, side, 3), dtype=np.uint8)),
        "texts": [TEXTS[i % 2] for i in range(batch)],
        "state": torch.rand(batch, 13) * 2 - 1,
        "actions": torch.rand(batch, 8, 5) * 2 - 1,
        "grounding": torch.rand(batch, 8) * 2 - 1,
    }
    for k in range(batches + 2):  # two warm-up steps
        if k == 2:
            t0 = time.perf_counter()
        loss = model.loss(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return batches * batch / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--steps", type=int, default=40, help="control steps per setting")
    p.add_argument("--batches", type=int, default=15, help="training batches per family")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = Path(tmp) / "fresh"
            fresh_model("qwen2.5-vl").save_pretrained(ckpt)
        rows = control_rate(ckpt, args.steps)
    print(f"\ncontrol rate ({ckpt.name}, {args.steps} steps each)")
    print("| setting | policy actions/s | loop steps/s (policy + env) |\n|---|---|---|")
    for label, pol, loop in rows:
        print(f"| {label} | {pol:.1f} | {loop:.1f} |")
    print(
        f"chunking speed-up (policy, replan {REPLAN}): {next(r[1] for r, k in zip(rows, sorted({1, 2, REPLAN})) if k == REPLAN) / rows[0][1]:.2f}x"
    )
    print(f"\ntraining throughput (batch {args.batch}, two {4 * 28}-{4 * 32} px cameras, flow + grounding heads)")
    print("| backbone | samples/s | ratio to tiny-qwen2.5-vl |\n|---|---|---|")
    base = None
    for family in FAMILIES:
        rate = train_rate(family, args.batches, args.batch)
        base = base or rate
        print(f"| tiny-{family} | {rate:.1f} | {rate / base:.2f} |")


if __name__ == "__main__":
    main()
