"""Offline training of QwenVLA from a `qrobot collect` dataset (behaviour cloning:
flow matching on action chunks for the arm, waypoint regression for the base)."""

from __future__ import annotations

import itertools
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
from qrobot.checks import read_meta
from qrobot.errors import QrobotError
from qrobot.progress import Progress
from qrobot.scenario import Camera, load_scenario, render
from qrobot.vla.backbones import FAMILIES, TINY, build_backbone
from qrobot.vla.data import Episode, action_chunk, camera_point, future_waypoints, load_datasets, relative_grounding
from qrobot.vla.finetune import FinetuneSpec, autocast, prepare, restore, save
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
    resume: bool = False  # go on from the last snapshot (checkpoint-N) in `out`, if there is one
    device: str = "cpu"  # cpu | cuda | cuda:N | mps
    finetune: str = "none"  # none (tiny-* from scratch) | lora | full (qrobot/vla/finetune.py)
    lora_rank: int = 16
    bf16: bool = False  # bf16 autocast; under LoRA the frozen backbone is stored in bf16
    gradient_checkpointing: bool = False


def _corpus(scenarios: list[str], episodes: list[Episode]) -> list[str]:
    """Every instruction the scenarios can produce (every template with every combination of
    the names it can be filled with), so held-out seeds have no unknown words."""
    texts = [ep.instruction for ep in episodes]
    for name in scenarios:
        task = load_scenario(name).task
        slots: dict[str, list[tuple[str, str]]] = {}
        objs = getattr(task, "objects", None)
        if objs is not None:
            slots["object"] = slots["base"] = [(c, "cube") for c in objs.colors]
        recs = getattr(task, "receptacles", None)
        if recs is not None:
            slots["receptacle"] = [(c, "bowl") for c in recs.colors]
        lms = getattr(task, "landmarks", None)
        if lms is not None:
            slots["landmark"] = [(c, k) for c in lms.colors for k in lms.kinds]
        for tpl in [*task.instructions, *task.held_out_instructions]:
            used = [k for k in slots if "{" + k + "}" in tpl or "{" + k + "_color}" in tpl]
            for combo in itertools.product(*(slots[k] for k in used)):
                texts.append(render(tpl, **dict(zip(used, combo))))
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
    cube's median start height in the tabletop demonstrations (absolute grounding labels;
    reach's floating sphere does not rest on the table)."""
    floating = {name for name in meta["scenarios"] if load_scenario(name).task.kind == "reach"}
    resting = [ep.grounding[0, 2] for ep in episodes if ep.grounding.shape[1] and ep.scenario not in floating]
    if not resting:
        return {}
    return ray_config(cameras, meta["robot"], float(np.median(resting)))


def _rig(meta: dict[str, Any], same: bool) -> list[Camera]:
    """The cameras of the embodiment's scenarios; `same`: they must be placed alike (the
    camera rays place what they see by this geometry)."""
    rigs = {name: {c.name: c for c in load_scenario(name).cameras} for name in meta["scenarios"]}
    first = rigs[meta["scenarios"][0]]
    for name, rig in rigs.items() if same else ():
        for cam in meta["cameras"]:
            if rig.get(cam) != first.get(cam):
                raise QrobotError(
                    f"scenario {name!r}: camera {cam!r} differs from scenario {meta['scenarios'][0]!r}'s; "
                    "scenarios trained into one model must share their camera rig"
                )
    return [first[c] for c in meta["cameras"]]


@dataclass
class _Part:
    """One embodiment's share of a training: its episodes, normalisation and heads (the
    backbone and the tokenizer are shared by all parts)."""

    meta: dict[str, Any]
    eps: list[Episode]
    index: list[tuple[int, int]]
    weights: np.ndarray  # sampling probability per index entry: every task (scenario) equally often
    far: list[tuple[int, int]]
    seen_at: list[np.ndarray] | None
    norm: dict[str, Any]
    model: QwenVLA | None = None

    @property
    def nav(self) -> bool:
        return bool(self.meta["robot"] == "diffbot")


def _by_embodiment(datasets: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for d in datasets:
        groups.setdefault(str(read_meta(Path(d) / "meta.json", {"robot": str})["robot"]), []).append(Path(d))
    return groups


def _part(cfg: TrainConfig, datasets: list[Path]) -> _Part:
    meta, eps = load_datasets(datasets)
    index = [(e, t) for e, ep in enumerate(eps) for t in range(len(ep.actions))]
    per_task = {name: sum(len(ep.actions) for ep in eps if ep.scenario == name) for name in meta["scenarios"]}
    weights = np.array([1.0 / per_task[eps[e].scenario] for e, _ in index])
    norm: dict[str, Any] = {"state": Normalizer.fit(np.concatenate([ep.state for ep in eps]))}
    if meta["robot"] == "diffbot":
        norm["waypoints"] = Normalizer.fit(np.stack([future_waypoints(eps[e], t) for e, t in index]))
    else:
        norm["actions"] = Normalizer.fit(np.concatenate([ep.actions for ep in eps]))
    cameras = _rig(meta, same=cfg.rays and cfg.fine_grounding and eps[0].grounding.shape[1] > 0)
    seen_at = _keypoint_labels(meta, cameras, eps) if cfg.fine_grounding and cfg.keypoint_weight > 0 else None
    meta["rays"] = _ray_spec(meta, cameras, eps) if cfg.rays and cfg.fine_grounding else {}
    for ep in eps:  # the model predicts the cube and the place point relative to the gripper
        ep.grounding = relative_grounding(ep.state, ep.grounding)
    ground = eps[0].grounding.shape[1]
    # far from the named cube only the scene camera shows it: few steps, so drawn more often
    far = [(e, t) for e, t in index if np.linalg.norm(eps[e].grounding[t, :2]) > FAR] if ground else []
    if ground:
        norm["grounding"] = Normalizer.fit(np.concatenate([ep.grounding for ep in eps]))
    return _Part(meta, eps, index, weights / weights.sum(), far, seen_at, norm)


def _batch(part: _Part, cfg: TrainConfig, rng: np.random.Generator) -> dict[str, Any]:
    model = part.model
    assert model is not None
    eps, norm = part.eps, part.norm
    n_far = round(cfg.batch * cfg.far_share) if part.far else 0
    pick = [part.index[i] for i in rng.choice(len(part.index), size=cfg.batch - n_far, p=part.weights)]
    pick += [part.far[i] for i in rng.integers(len(part.far), size=n_far)] if n_far else []
    batch: dict[str, Any] = {
        "images": torch.from_numpy(np.stack([eps[e].images[t] for e, t in pick])),
        "texts": [eps[e].instruction for e, _ in pick],
        "state": torch.from_numpy(norm["state"].normalize(np.stack([eps[e].state[t] for e, t in pick]))),
    }
    if part.nav:
        batch["waypoints"] = torch.from_numpy(
            norm["waypoints"].normalize(np.stack([future_waypoints(eps[e], t) for e, t in pick]))
        )
    else:
        batch["actions"] = torch.from_numpy(
            norm["actions"].normalize(np.stack([action_chunk(eps[e], t, model.config.chunk) for e, t in pick]))
        )
    if model.config.grounding_dim:
        batch["grounding"] = torch.from_numpy(
            norm["grounding"].normalize(np.stack([eps[e].grounding[t] for e, t in pick]))
        )
    if part.seen_at is not None:
        batch["keypoint"] = torch.from_numpy(np.stack([part.seen_at[e][t] for e, t in pick]))
    return batch


TRAINER_STATE = "trainer_state.pt"


def _snapshot(
    d: Path, models: list[QwenVLA], opt: Any, sched: Any, rng: np.random.Generator, step: int, elapsed: float
) -> None:
    """A resumable snapshot: the models, and the optimiser, schedule, random streams and the
    training time spent; older snapshots beyond the last two are removed."""
    save(models, d)
    state = {"step": step, "elapsed": elapsed, "opt": opt.state_dict(), "sched": sched.state_dict()}
    state |= {"rng": rng.bit_generator.state, "torch": torch.get_rng_state()}
    torch.save(state, d / f".{TRAINER_STATE}")
    (d / f".{TRAINER_STATE}").replace(d / TRAINER_STATE)  # a snapshot is complete once this exists
    import shutil

    for old in _snapshots(d.parent)[:-2]:
        shutil.rmtree(old, ignore_errors=True)


def _snapshots(out: Path) -> list[Path]:
    found = [p for p in Path(out).glob("checkpoint-*") if (p / TRAINER_STATE).is_file() and p.name[11:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[11:]))


def _latest_snapshot(out: Path) -> Path | None:
    found = _snapshots(out)
    return found[-1] if found else None


def _restore(snapshot: Path, models: list[QwenVLA]) -> dict[str, Any]:
    """The snapshot's weights into the (shared-backbone) models; its trainer state."""
    restore(models, snapshot)
    try:
        state: dict[str, Any] = torch.load(snapshot / TRAINER_STATE, weights_only=False)
    except Exception as exc:  # a damaged file: one line naming it
        raise QrobotError(f"{snapshot / TRAINER_STATE}: unreadable ({str(exc)[:120]}); remove the snapshot") from None
    return state


def train(cfg: TrainConfig, log: Callable[[str], None] = LOG.info) -> Path:
    """One model for every dataset given: a shared backbone and tokenizer, and per
    embodiment (arm, base) its heads and normalisation. Each step trains one embodiment,
    drawn in proportion to its number of tasks; within it every task is drawn equally often."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    datasets = [Path(d) for d in (cfg.dataset if isinstance(cfg.dataset, list) else [cfg.dataset])]
    parts = {robot: _part(cfg, dirs) for robot, dirs in _by_embodiment(datasets).items()}
    if cfg.backbone in TINY:
        family, side = TINY[cfg.backbone], FAMILIES[TINY[cfg.backbone]].side_multiple * 4
    else:  # a real checkpoint: its own processor decides the smallest side it accepts unchanged
        settings = image_settings(cfg.backbone)
        family = checkpoint_family(cfg.backbone, settings).name
        side = max(settings.min_side, settings.side_multiple * 4)
    scenarios = sorted({name for p in parts.values() for name in p.meta["scenarios"]})
    tok = tokenizer_for(cfg.backbone, _corpus(scenarios, [ep for p in parts.values() for ep in p.eps]))
    tiny: dict[str, Any] = {"layers": cfg.layers} if cfg.backbone in TINY else {}
    backbone = build_backbone(cfg.backbone, vocab_size=tok.vocab_size, **tiny)
    for robot, part in parts.items():
        ground = part.eps[0].grounding.shape[1]
        vcfg = VLAConfig(
            backbone=cfg.backbone,
            family=family,
            cameras=part.meta["cameras"],
            image_side=side,
            state_dim=part.eps[0].state.shape[1],
            action_dim=part.meta["action_dim"],
            grounding_dim=ground,
            scenario=part.meta["scenarios"][0] if len(part.meta["scenarios"]) == 1 else "",
            spatial_pool=cfg.spatial_pool,
            fine_grounding=cfg.fine_grounding and ground > 0,
            rays=part.meta["rays"],
            robot=robot,
            tasks=sorted({load_scenario(n).task.kind for n in part.meta["scenarios"]}),
        )
        part.model = QwenVLA(vcfg, tok, backbone=backbone, norm=part.norm)
    models = [p.model for p in parts.values() if p.model is not None]
    spec = FinetuneSpec(
        mode=cfg.finetune,
        lora_rank=cfg.lora_rank,
        dtype="bf16" if cfg.bf16 else "fp32",
        gradient_checkpointing=cfg.gradient_checkpointing,
        device=cfg.device,
    )
    for m in models:
        prepare(m, spec)  # the shared backbone is set up once
    # (the shared backbone once; under LoRA only the adapters and the heads train)
    params = [q for q in {id(q): q for m in models for q in m.parameters()}.values() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    snapshot = _latest_snapshot(cfg.out) if cfg.resume else None
    state: dict[str, Any] = _restore(snapshot, models) if snapshot is not None else {"step": 0, "elapsed": 0.0}
    if snapshot is not None:
        log(f"resuming from {snapshot} (step {state['step']}, {state['elapsed'] / 60:.1f} min of training done)")
    start, seen = time.time() - state["elapsed"], 0  # the time budget counts every session of a training

    def progress(s: int) -> float:  # whichever budget, steps or minutes, runs out first
        return min(1.0, max(s / cfg.steps, (time.time() - start) / (60 * cfg.minutes)))

    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * progress(s)))
    )
    if snapshot is not None:
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch"])
    for robot, part in parts.items():
        if part.seen_at is not None:
            inside = np.concatenate([(np.abs(k) <= 1).all(-1) for k in part.seen_at]).mean(0)
            log(
                f"{robot} keypoint labels: the named object in view in "
                + ", ".join(f"{n} {100 * v:.0f} %" for n, v in zip(part.meta["cameras"], inside))
                + " of the steps"
            )
        log(
            f"{robot}: {', '.join(part.meta['scenarios'])}: {len(part.eps)} episodes / {len(part.index)} samples "
            f"({len(part.far)} far from the named object)"
        )
    log(
        f"training {family} ({sum(q.numel() for q in params):,} trainable parameters, {cfg.finetune}), "
        f"{cfg.steps} steps x batch {cfg.batch}"
    )
    names = list(parts)
    share = np.array([len(parts[r].meta["scenarios"]) for r in names], float)
    step = state["step"]
    bar = Progress("train", cfg.steps, unit="step", enabled=LOG.isEnabledFor(logging.INFO))
    for step in range(state["step"] + 1, cfg.steps + 1):
        part = parts[names[int(rng.choice(len(names), p=share / share.sum()))]]
        model = part.model
        assert model is not None
        ground = model.config.grounding_dim > 0
        with autocast(spec):
            loss = model.loss(
                _batch(part, cfg, rng), insulate=cfg.insulate and ground, keypoint_weight=cfg.keypoint_weight
            )
        bar.step(step, note=f"loss {loss.item():.4f}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        seen += cfg.batch
        elapsed = time.time() - start
        if step % 50 == 0 or step == 1:
            losses = " ".join(f"{k} {v:.4f}" for k, v in model.last_losses.items())
            log(
                f"step {step:5d} {model.config.robot or ''} loss {loss.item():.4f} ({losses}) "
                f"lr {sched.get_last_lr()[0]:.2e} {seen / elapsed:.1f} samples/s {elapsed / 60:.1f} min"
            )
        if step % cfg.save_every == 0:
            _snapshot(cfg.out / f"checkpoint-{step}", models, opt, sched, rng, step, elapsed)
        if elapsed > cfg.minutes * 60:
            log(f"time budget of {cfg.minutes} min spent at step {step}")
            break
    for m in models:
        m.eval()
    save(models, cfg.out)
    # the model card (README.md) is generated from the config, the weights and these facts
    record_training(
        cfg.out,
        {
            "datasets": [d.name for d in datasets],
            "data": "; ".join(
                f"{', '.join(p.meta['scenarios'])}: {len(p.eps)} expert episodes, " + "; ".join(p.meta["sources"])
                for p in parts.values()
            ),
            "steps": step,
            "batch": cfg.batch,
            "minutes": round((time.time() - start) / 60, 1),
            "threads": cfg.threads,
            "options": {k: v for k, v in asdict(cfg).items() if k not in ("dataset", "out", "save_every", "resume")},
        },
    )
    return cfg.out
