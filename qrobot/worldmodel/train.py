"""`qrobot wm-train`: fit the world model to a `wm-collect` dataset within a time budget."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from qrobot.cards import record_training
from qrobot.progress import Progress
from qrobot.worldmodel.data import batch_of, load_wm_episodes
from qrobot.worldmodel.model import WMConfig, WorldModel, to_tensor

LOG = logging.getLogger("qrobot")

CHANGED = 0.04  # a pixel "changes" when a channel moves by more than this (0..1 scale)


def changed_mask(target: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """(B, H, 1, S, S): pixels whose colour differs from the last context frame."""
    return ((target - last[:, None]).abs().amax(2, keepdim=True) > CHANGED).float()


def moving_windows(eps: list[Any], horizon: int, pixels: int = 30) -> list[tuple[int, int]]:
    """(episode, step) windows where at least `pixels` pixels change between frame t and
    t + horizon: the ones whose future depends on the actions."""
    out = []
    for e, ep in enumerate(eps):
        last = len(ep.actions)
        now = ep.frames[:last].astype(np.int16)
        later = ep.frames[np.minimum(np.arange(last) + horizon, last)].astype(np.int16)
        count = (np.abs(now - later).max(-1) > CHANGED * 255).sum((1, 2))
        out += [(e, int(t)) for t in np.nonzero(count >= pixels)[0]]
    return out


def wm_loss(
    model: WorldModel,
    batch: dict[str, np.ndarray],
    decode: list[int],
    changed_weight: float = 8.0,
    pos_weight: float = 5.0,
    log_weight: float = 0.01,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Frame MSE (changed pixels weighted up: the robot is a few pixels of the frame)
    + collision and success BCE, all masked past the episode's end."""
    ctx, target = to_tensor(batch["context"]), to_tensor(batch["target"][:, decode])
    valid = torch.as_tensor(batch["valid"])
    out = model(ctx, torch.as_tensor(batch["actions"]), decode)
    weight = (1.0 + changed_weight * changed_mask(target, ctx[:, -1])) * valid[:, decode, None, None, None]
    frame = (weight * (out["frames"] - target) ** 2).sum() / (weight.sum() * 3).clamp_min(1.0) * 3
    # per-frame log MSE (= -PSNR / 4.34): an almost still frame must be almost exact, which the
    # pooled MSE barely asks for; floor 1e-5 (50 dB) so exact frames do not dominate
    per_frame = ((out["frames"] - target) ** 2).mean((2, 3, 4))
    v = valid[:, decode]
    log_mse = (torch.log(per_frame + 1e-5) * v).sum() / v.sum().clamp_min(1.0)
    coll = F.binary_cross_entropy_with_logits(
        out["collision"], torch.as_tensor(batch["collision"]), weight=valid, pos_weight=torch.tensor(pos_weight)
    )
    succ = F.binary_cross_entropy_with_logits(out["success"], torch.as_tensor(batch["success"]), weight=valid)
    loss = frame * 10 + log_weight * log_mse + coll + 0.5 * succ
    return loss, {"frame": frame.item(), "log_mse": log_mse.item(), "collision": coll.item(), "success": succ.item()}


def wm_train(
    dataset: Path,
    out: Path,
    minutes: float = 45.0,
    steps: int = 100_000,
    batch: int = 32,
    lr: float = 2e-3,
    threads: int | None = None,
    seed: int = 0,
    config: WMConfig | None = None,
    log: Callable[[str], None] | None = None,
    save_every: int = 1000,
) -> dict[str, Any]:
    """Train until `steps` or `minutes` run out (cosine LR over whichever ends first)."""
    log = log or LOG.info
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    meta, eps = load_wm_episodes(dataset)
    cfg = config or WMConfig()
    cfg.image_size, cfg.action_dim, cfg.scenario = meta["image_size"], meta["action_dim"], meta["scenario"]
    cfg.camera = meta["camera"]
    model = WorldModel(cfg)
    picks = [(e, t) for e, ep in enumerate(eps) for t in range(len(ep.actions))]
    risky = [(e, t) for e, t in picks if eps[e].collision[t + 1 : t + 1 + cfg.horizon].any()]
    moving = moving_windows(eps, cfg.horizon)
    log(
        f"training world model ({sum(p.numel() for p in model.parameters()):,} parameters) on "
        f"{len(eps)} episodes / {len(picks)} windows ({len(risky)} with a collision ahead, {len(moving)} moving), "
        f"batch {batch}, up to {steps} steps or {minutes} min"
    )
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    start, step, budget = time.time(), 0, minutes * 60.0
    seen = 0
    bar = Progress("wm-train", steps, unit="step", enabled=LOG.isEnabledFor(logging.INFO))
    while step < steps:
        frac = max(step / steps, (time.time() - start) / budget)
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 200) * 0.5 * (1 + math.cos(math.pi * frac))
        n_risky = batch // 4 if risky else 0  # a quarter from windows with a collision ahead
        chosen = [picks[i] for i in rng.integers(0, len(picks), batch - n_risky)]
        chosen += [risky[i] for i in rng.integers(0, len(risky), n_risky)] if n_risky else []
        n_moving = batch // 4 if moving else 0  # and a quarter from windows where the view changes
        chosen = chosen[n_moving:] + [moving[i] for i in rng.integers(0, len(moving), n_moving)]
        h = cfg.horizon
        decode = sorted({0, int(rng.integers(1, h - 1)), h - 1})  # all latents step; 3 frames decode
        loss, parts = wm_loss(model, batch_of(eps, chosen, cfg.context, h), decode)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        seen += batch
        bar.step(step, note=f"loss {loss.item():.4f}")
        if step % 50 == 0 or step == 1:
            el = time.time() - start
            log(
                f"step {step:5d} loss {loss.item():.4f} (frame {parts['frame']:.5f} collision "
                f"{parts['collision']:.3f} success {parts['success']:.3f}) {seen / el:.1f} samples/s {el / 60:.1f} min"
            )
        if step % save_every == 0:
            model.save_pretrained(Path(out) / f"checkpoint-{step}")
    elapsed = time.time() - start
    cfg.card = {
        "dataset": str(dataset),
        "episodes": len(eps),
        "windows": len(picks),
        "steps": step,
        "batch": batch,
        "minutes": round(elapsed / 60, 1),
        "threads": torch.get_num_threads(),
        "policies": meta.get("policies", []),
    }
    model.save_pretrained(out)
    record_training(out, {"datasets": [Path(dataset).name]})  # a new model: no figures yet; writes the card
    log(f"saved {out} after {step} steps ({elapsed / 60:.1f} min)")
    return cfg.card
