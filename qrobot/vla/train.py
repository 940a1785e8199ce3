"""Offline training of QwenVLA from a `qrobot collect` dataset (behaviour cloning:
flow matching on action chunks for the arm, waypoint regression for the base)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qrobot.cards import record_training
from qrobot.progress import Progress
from qrobot.scenario import Camera, load_scenario
from qrobot.vla.backbones import FAMILIES, TINY, build_backbone
from qrobot.vla.data import Episode, action_chunk, camera_point, future_waypoints, load_datasets, relative_grounding
from qrobot.vla.geometry import ray_config
from qrobot.vla.hub import checkpoint_family, image_settings
from qrobot.vla.model import Normalizer, QwenVLA, VLAConfig
from qrobot.vla.tokenizer import tokenizer_for

LOG = logging.getLogger("qrobot")


FAR = 0.08  # m between the gripper and the named cube (xy) beyond which a step counts as far


@dataclass
class TrainConfig:
    dataset: Path | list[Path]  # one `qrobot collect` directory, or several of one scenario
    out: Path
    backbone: str = "tiny-qwen2.5-vl"
    steps: int = 2000
    batch: int = 16
    lr: float = 3e-4
    minutes: float = 45.0  # wall-clock budget; training stops early when it is spent
    save_every: int = 500
    seed: int = 0
    threads: int = 2
    layers: int = 2  # tiny backbones: language-model layers
    spatial_pool: bool = True  # position codes + instruction-conditioned queries in the pools
    fine_grounding: bool = True  # tabletop: grounding also reads soft-argmax keypoints on the patches
    far_share: float = 0.25  # tabletop: batch share from steps with the gripper far from the cube
    insulate: bool = True  # tabletop: the action loss does not train the backbone (grounding does)
    keypoint_weight: float = 0.1  # tabletop + fine grounding: teach keypoint 0 where the named cube is seen
    rays: bool = True  # tabletop + fine grounding: place keypoints on the table by camera geometry


def _corpus(meta: dict[str, Any], episodes: list[Episode]) -> list[str]:
    """Every instruction the scenario can produce, so held-out seeds have no unknown words."""
    texts = [ep.instruction for ep in episodes]
    task = load_scenario(meta["scenario"]).task
    names: dict[str, list[str]] = {"object": [], "receptacle": [], "base": [], "landmark": []}
    objs = getattr(task, "objects", None)
    if objs is not None:
        names["object"] = names["base"] = [f"{c} cube" for c in objs.colors]
    recs = getattr(task, "receptacles", None)
    if recs is not None:
        names["receptacle"] = [f"{c} bowl" for c in recs.colors]
    lms = getattr(task, "landmarks", None)
    if lms is not None:
        names["landmark"] = [f"{c} {k}" for c in lms.colors for k in lms.kinds]
    for tpl in task.instructions:
        for key, values in names.items():
            for v in values:
                texts.append(tpl.replace("{" + key + "}", v))
    return texts


def _keypoint_labels(meta: dict[str, Any], cameras: list[Camera], episodes: list[Episode]) -> list[np.ndarray] | None:
    """Per episode (T, cameras, 2): where each camera sees the named cube (from the absolute
    grounding label); NaN where unknown."""
    if not episodes or episodes[0].grounding.shape[1] == 0:
        return None
    return [
        np.stack([camera_point(cam, ep.grounding[:, :3], ep.state, meta["robot"]) for cam in cameras], axis=1)
        for ep in episodes
    ]


def _ray_spec(meta: dict[str, Any], cameras: list[Camera], episodes: list[Episode]) -> dict[str, Any]:
    """Camera geometry for the grounding head; the objects' resting height is the named
    cube's median start height in the demonstrations (absolute grounding labels)."""
    if not episodes or episodes[0].grounding.shape[1] == 0:
        return {}
    plane_z = float(np.median([ep.grounding[0, 2] for ep in episodes]))
    return ray_config(cameras, meta["robot"], plane_z)


def train(cfg: TrainConfig, log: Callable[[str], None] = LOG.info) -> Path:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    datasets = cfg.dataset if isinstance(cfg.dataset, list) else [cfg.dataset]
    meta, eps = load_datasets(datasets)
    if not eps:
        raise ValueError(f"{', '.join(map(str, datasets))}: no successful episodes to learn from")
    nav = meta["robot"] == "diffbot"
    if cfg.backbone in TINY:
        family, side = TINY[cfg.backbone], FAMILIES[TINY[cfg.backbone]].side_multiple * 4
    else:  # a real checkpoint: its own processor decides the smallest side it accepts unchanged
        settings = image_settings(cfg.backbone)
        family = checkpoint_family(cfg.backbone, settings).name
        side = max(settings.min_side, settings.side_multiple * 4)
    tok = tokenizer_for(cfg.backbone, _corpus(meta, eps))
    index = [(e, t) for e, ep in enumerate(eps) for t in range(len(ep.actions))]
    states = np.concatenate([ep.state for ep in eps])
    norm = {"state": Normalizer.fit(states)}
    if nav:
        norm["waypoints"] = Normalizer.fit(np.stack([future_waypoints(eps[e], t) for e, t in index]))
    else:
        norm["actions"] = Normalizer.fit(np.concatenate([ep.actions for ep in eps]))
    specs = {c.name: c for c in load_scenario(meta["scenario"]).cameras}
    cameras = [specs[name] for name in meta["cameras"]]
    seen_at = _keypoint_labels(meta, cameras, eps) if cfg.fine_grounding and cfg.keypoint_weight > 0 else None
    rays = _ray_spec(meta, cameras, eps) if cfg.rays and cfg.fine_grounding else {}
    for ep in eps:  # the model predicts the cube and the place point relative to the gripper
        ep.grounding = relative_grounding(ep.state, ep.grounding)
    ground_dim = eps[0].grounding.shape[1]
    # far from the named cube only the scene camera shows it: few steps, so drawn more often
    far = [(e, t) for e, t in index if np.linalg.norm(eps[e].grounding[t, :2]) > FAR] if ground_dim else []
    if ground_dim:
        norm["grounding"] = Normalizer.fit(np.concatenate([ep.grounding for ep in eps]))
    vcfg = VLAConfig(
        backbone=cfg.backbone,
        family=family,
        cameras=meta["cameras"],
        image_side=side,
        state_dim=states.shape[1],
        action_dim=meta["action_dim"],
        grounding_dim=ground_dim,
        scenario=meta["scenario"],
        spatial_pool=cfg.spatial_pool,
        fine_grounding=cfg.fine_grounding and ground_dim > 0,
        rays=rays,
    )
    backbone = (
        build_backbone(cfg.backbone, vocab_size=tok.vocab_size, layers=cfg.layers) if cfg.backbone in TINY else None
    )
    model = QwenVLA(vcfg, tok, backbone=backbone, norm=norm)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    start, seen = time.time(), 0

    def progress(s: int) -> float:  # whichever budget, steps or minutes, runs out first
        return min(1.0, max(s / cfg.steps, (time.time() - start) / (60 * cfg.minutes)))

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * progress(s)))
    )
    if seen_at is not None:
        inside = np.concatenate([(np.abs(k) <= 1).all(-1) for k in seen_at]).mean(0)
        log(
            "keypoint labels: the named cube in view in "
            + ", ".join(f"{n} {100 * v:.0f} %" for n, v in zip(meta["cameras"], inside))
            + " of the steps"
        )
    log(
        f"training {family} ({sum(p.numel() for p in model.parameters()):,} parameters) on {len(eps)} "
        f"episodes / {len(index)} samples ({len(far)} far from the named cube), {cfg.steps} steps x batch {cfg.batch}"
    )
    step = 0
    bar = Progress("train", cfg.steps, unit="step", enabled=LOG.isEnabledFor(logging.INFO))
    for step in range(1, cfg.steps + 1):
        n_far = round(cfg.batch * cfg.far_share) if far else 0
        pick = [index[i] for i in rng.integers(len(index), size=cfg.batch - n_far)]
        pick += [far[i] for i in rng.integers(len(far), size=n_far)] if n_far else []
        batch: dict[str, Any] = {
            "images": torch.from_numpy(np.stack([eps[e].images[t] for e, t in pick])),
            "texts": [eps[e].instruction for e, _ in pick],
            "state": torch.from_numpy(norm["state"].normalize(np.stack([eps[e].state[t] for e, t in pick]))),
        }
        if nav:
            batch["waypoints"] = torch.from_numpy(
                norm["waypoints"].normalize(np.stack([future_waypoints(eps[e], t) for e, t in pick]))
            )
        else:
            batch["actions"] = torch.from_numpy(
                norm["actions"].normalize(np.stack([action_chunk(eps[e], t, vcfg.chunk) for e, t in pick]))
            )
        if ground_dim:
            batch["grounding"] = torch.from_numpy(
                norm["grounding"].normalize(np.stack([eps[e].grounding[t] for e, t in pick]))
            )
        if seen_at is not None:
            batch["keypoint"] = torch.from_numpy(np.stack([seen_at[e][t] for e, t in pick]))
        loss = model.loss(batch, insulate=cfg.insulate and ground_dim > 0, keypoint_weight=cfg.keypoint_weight)
        bar.step(step, note=f"loss {loss.item():.4f}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        seen += cfg.batch
        elapsed = time.time() - start
        if step % 50 == 0 or step == 1:
            parts = " ".join(f"{k} {v:.4f}" for k, v in model.last_losses.items())
            log(
                f"step {step:5d} loss {loss.item():.4f} ({parts}) lr {sched.get_last_lr()[0]:.2e} "
                f"{seen / elapsed:.1f} samples/s {elapsed / 60:.1f} min"
            )
        if step % cfg.save_every == 0:
            model.save_pretrained(cfg.out / f"checkpoint-{step}")
        if elapsed > cfg.minutes * 60:
            log(f"time budget of {cfg.minutes} min spent at step {step}")
            break
    model.eval()
    model.save_pretrained(cfg.out)
    # the model card (README.md) is generated from the config, the weights and these facts
    record_training(
        cfg.out,
        {
            "datasets": [Path(d).name for d in datasets],
            "data": f"{meta['scenario']}: {len(eps)} expert episodes, " + "; ".join(meta["sources"]),
            "steps": step,
            "batch": cfg.batch,
            "minutes": round((time.time() - start) / 60, 1),
            "threads": cfg.threads,
            "options": {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "out", "save_every")},
        },
    )
    return cfg.out
