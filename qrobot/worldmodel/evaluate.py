"""`qrobot wm-eval`: the world model against copy-last-frame on held-out episodes.

Per horizon h (1, 4, 8): PSNR and SSIM over whole frames (mean over windows) and over the
pixels that change between the last context frame and the true frame h (pooled over all
windows, so a window whose robot stands still adds nothing). ΔtPSNR: PSNR with the true
actions minus PSNR with uniform random actions (does the model listen to its actions?).
Collision AUROC over every (window, horizon) the episode still covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from qrobot.errors import QrobotError
from qrobot.progress import Progress
from qrobot.worldmodel.data import batch_of, load_wm_episodes
from qrobot.worldmodel.model import WorldModel, to_tensor
from qrobot.worldmodel.train import changed_mask

HORIZONS = (1, 4, 8)
BARS = {"changed_psnr_gain_h8": 3.0, "delta_t_psnr": 1.0, "collision_auroc": 0.85}


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


class _Scores:
    """Accumulates one predictor's errors per horizon."""

    def __init__(self) -> None:
        self.psnr: dict[int, list[float]] = {h: [] for h in HORIZONS}
        self.ssim: dict[int, list[float]] = {h: [] for h in HORIZONS}
        self.ch_se = {h: 0.0 for h in HORIZONS}
        self.ch_n = {h: 0.0 for h in HORIZONS}
        self.ch_ssim = {h: 0.0 for h in HORIZONS}

    def add(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
        """pred/target (B, H, 3, S, S); mask (B, H, 1, S, S) of changed pixels."""
        for h in HORIZONS:
            p, t, m = pred[:, h - 1], target[:, h - 1], mask[:, h - 1]
            self.psnr[h] += _psnr(((p - t) ** 2).mean((1, 2, 3))).tolist()
            _, smap = ssim(p, t, data_range=1.0, return_full_image=True, reduction="none")
            self.ssim[h] += smap.mean((1, 2, 3)).tolist()
            self.ch_se[h] += float((((p - t) ** 2).mean(1, keepdim=True) * m).sum())
            self.ch_n[h] += float(m.sum())
            self.ch_ssim[h] += float((smap.mean(1, keepdim=True) * m).sum())

    def table(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for h in HORIZONS:
            n = max(self.ch_n[h], 1.0)
            out[f"psnr_h{h}"] = float(np.mean(self.psnr[h]))
            out[f"ssim_h{h}"] = float(np.mean(self.ssim[h]))
            out[f"changed_psnr_h{h}"] = float(_psnr(torch.tensor(self.ch_se[h] / n)))
            out[f"changed_ssim_h{h}"] = self.ch_ssim[h] / n
        return out


def wm_evaluate(
    checkpoint: str | Path, dataset: str | Path, stride: int = 4, batch: int = 64, seed: int = 0, show: bool = False
) -> dict[str, Any]:
    model = WorldModel.from_pretrained(checkpoint)
    cfg = model.config
    _, eps = load_wm_episodes(Path(dataset))
    h = cfg.horizon
    picks = [(e, t) for e, ep in enumerate(eps) for t in range(0, len(ep.actions) - h + 1, stride)]
    if not picks:
        raise QrobotError(f"{dataset}: no episode is longer than the model's horizon ({h} steps)")
    rng = np.random.default_rng(seed)
    model_s, copy_s, rand_s = _Scores(), _Scores(), _Scores()
    probs, labels = [], []
    bar = Progress("wm-eval", len(picks), unit="window", enabled=show)
    with torch.no_grad():
        for i in range(0, len(picks), batch):
            bar.step(i)
            b = batch_of(eps, picks[i : i + batch], cfg.context, h)
            ctx, target = to_tensor(b["context"]), to_tensor(b["target"])
            last = ctx[:, -1:].expand(-1, h, -1, -1, -1)
            mask = changed_mask(target, ctx[:, -1])
            out = model.imagine(ctx, torch.as_tensor(b["actions"]))
            rand_actions = torch.as_tensor(rng.uniform(-1, 1, b["actions"].shape).astype(np.float32))
            rand_out = model.imagine(ctx, rand_actions)
            model_s.add(out["frames"], target, mask)
            copy_s.add(last, target, mask)
            rand_s.add(rand_out["frames"], target, mask)
            probs.append(out["collision"].flatten())
            labels.append(torch.as_tensor(b["collision"]).flatten())
    bar.close()
    p, y = torch.cat(probs), torch.cat(labels).long()
    auroc = float(binary_auroc(p, y)) if 0 < int(y.sum()) < len(y) else float("nan")
    m, c, r = model_s.table(), copy_s.table(), rand_s.table()
    result: dict[str, Any] = {
        "windows": len(picks),
        "episodes": len(eps),
        "model": m,
        "copy_last": c,
        "delta_t_psnr": m[f"psnr_h{h}"] - r[f"psnr_h{h}"],
        "delta_t_changed_psnr": m[f"changed_psnr_h{h}"] - r[f"changed_psnr_h{h}"],
        "changed_psnr_gain_h8": m["changed_psnr_h8"] - c["changed_psnr_h8"],
        "collision_auroc": auroc,
        "collision_positives": int(y.sum()),
        "collision_steps": len(y),
        "threshold": cfg.threshold,
        **_threshold_stats(p, y, cfg.threshold),
    }
    result["bars_met"] = {k: bool(float(result[k]) >= v) for k, v in BARS.items()}  # NaN compares False
    return result


def _threshold_stats(p: torch.Tensor, y: torch.Tensor, threshold: float) -> dict[str, float]:
    flagged = p >= threshold
    tp = int((flagged & (y == 1)).sum())
    return {"recall_at_threshold": tp / max(int(y.sum()), 1), "precision_at_threshold": tp / max(int(flagged.sum()), 1)}


def to_markdown(res: dict[str, Any]) -> str:
    rows = ["| metric | " + " | ".join(f"h={h}" for h in HORIZONS) + " |", "|---|" + "---|" * len(HORIZONS)]
    for name, key in (
        ("PSNR dB", "psnr"),
        ("SSIM", "ssim"),
        ("changed-pixel PSNR dB", "changed_psnr"),
        ("changed-pixel SSIM", "changed_ssim"),
    ):
        for who in ("model", "copy_last"):
            vals = " | ".join(
                f"{res[who][f'{key}_h{h}']:.3f}" if "ssim" in key else f"{res[who][f'{key}_h{h}']:.2f}"
                for h in HORIZONS
            )
            rows.append(f"| {name}, {who.replace('_', '-')} | {vals} |")
    met = res["bars_met"]
    lines = [
        f"{res['windows']} windows from {res['episodes']} held-out episodes",
        "",
        *rows,
        "",
        f"- changed-pixel PSNR gain at h=8 over copy-last: {res['changed_psnr_gain_h8']:+.2f} dB "
        f"(bar +3.0: {'met' if met['changed_psnr_gain_h8'] else 'NOT met'})",
        f"- ΔtPSNR (true vs random actions, h=8): {res['delta_t_psnr']:+.2f} dB whole frame, "
        f"{res['delta_t_changed_psnr']:+.2f} dB changed pixels (bar 1.0: {'met' if met['delta_t_psnr'] else 'NOT met'})",
        f"- collision AUROC: {res['collision_auroc']:.3f} over {res['collision_steps']} steps, "
        f"{res['collision_positives']} in contact (bar 0.85: {'met' if met['collision_auroc'] else 'NOT met'})",
        f"- at threshold {res['threshold']:.2f}: recall {res['recall_at_threshold']:.2f}, "
        f"precision {res['precision_at_threshold']:.2f}",
    ]
    return "\n".join(lines)
