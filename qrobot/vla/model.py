"""QwenVLA: a Qwen vision-language backbone with a flow-matching action-chunk head
(arm) and a waypoint head (mobile base).

Inputs are only what the env observes: camera images, the instruction (tokenised with
the genuine Qwen BPE), proprioception and, for PointNav, the goal vector (the last two
enter as a projected state token in the heads). Outputs are in normalised units; the
q01/q99 statistics saved with the model map them back to actions.

Saved layout (`save_pretrained(dir)`): backbone/ (the transformers checkpoint),
heads.safetensors, vla_config.json, norm_stats.json, instruction_vocab.json, README.md.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from qrobot.errors import QrobotError
from qrobot.vla.backbones import (
    FAMILIES,
    Backbone,
    build_backbone,
    family_of,
    text_hidden_size,
    vision_hidden_size,
)
from qrobot.vla.geometry import TableRays
from qrobot.vla.heads import FlowMatchingHead, GroundingHead, KeypointPool, WaypointHead
from qrobot.vla.tokenizer import PAD, InstructionTokenizer, TextTokenizer
from qrobot.vla.vision import patchify, tokens_per_image


@dataclass
class VLAConfig:
    """Everything needed to rebuild a QwenVLA (the backbone's own config lives in backbone/)."""

    backbone: str = "tiny-qwen2.5-vl"  # tiny-<family>, a local checkpoint dir or a hub id
    family: str = "qwen2.5-vl"
    cameras: list[str] = field(default_factory=lambda: ["scene", "wrist"])
    image_side: int = 112  # multiple of patch * merge (28 for Qwen2.5-VL, 32 otherwise)
    state_dim: int = 13  # proprio (+ goal vector for PointNav)
    action_dim: int = 5
    chunk: int = 8  # H actions per flow-matching sample
    waypoints: int = 8
    head_width: int = 128
    head_layers: int = 2
    flow_steps: int = 10
    max_text: int = 24  # instruction tokens (padded / truncated)
    grounding_dim: int = 0  # > 0: a grounding head feeds the action expert (tabletop)
    scenario: str = ""  # what the training data came from (informational)
    spatial_pool: bool = False  # position codes + instruction-conditioned pooling queries
    fine_grounding: bool = False  # grounding also reads instruction-asked soft-argmax points on the patches
    rays: dict[str, Any] = field(default_factory=dict)  # fine grounding: camera geometry (geometry.ray_config); {}: off
    robot: str = ""  # the embodiment (panda, diffbot); "": a one-task checkpoint (state_dim exact)
    tasks: list[str] = field(default_factory=list)  # task kinds trained on ([]: from `scenario`)
    # the base without a goal vector (ObjectNav) stops when its last waypoint stays within
    # nav_stop[0] m and nav_stop[1] rad for nav_stop[2] steps running: chosen on validation
    # seeds (`qrobot eval --nav-stop`) and stored with the model it was chosen for
    nav_stop: list[float] = field(default_factory=lambda: [0.06, 0.15, 1])

    def __post_init__(self) -> None:
        fam = FAMILIES.get(self.family)
        if fam is None:
            raise ValueError(f"family must be one of {sorted(FAMILIES)} (got {self.family!r})")
        if self.image_side % fam.side_multiple:
            raise ValueError(
                f"image_side {self.image_side} must be a multiple of {fam.side_multiple} "
                f"for {self.family}; e.g. {4 * fam.side_multiple}"
            )


class Normalizer:
    """OpenVLA-style: q01/q99 per dimension map to [-1, 1] (clipped)."""

    def __init__(self, q01: np.ndarray, q99: np.ndarray) -> None:
        self.q01, self.q99 = np.asarray(q01, np.float32), np.asarray(q99, np.float32)

    @classmethod
    def fit(cls, x: np.ndarray) -> Normalizer:
        x = np.asarray(x, np.float32).reshape(-1, np.shape(x)[-1])
        return cls(np.quantile(x, 0.01, axis=0), np.quantile(x, 0.99, axis=0))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        span = np.maximum(self.q99 - self.q01, 1e-6)
        return np.clip(2 * (np.asarray(x, np.float32) - self.q01) / span - 1, -1, 1)

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        return (np.clip(y, -1, 1) + 1) / 2 * (self.q99 - self.q01) + self.q01

    def to_dict(self) -> dict[str, list[float]]:
        return {"q01": self.q01.tolist(), "q99": self.q99.tolist()}


def _quantiles(norm: dict[str, Normalizer] | None, key: str) -> tuple[np.ndarray, np.ndarray]:
    if not norm or key not in norm:
        raise ValueError(f"camera rays need the {key!r} normalisation statistics (norm_stats.json)")
    return norm[key].q01, norm[key].q99


class QwenVLA(nn.Module):
    def __init__(
        self,
        config: VLAConfig,
        tokenizer: TextTokenizer,
        backbone: Backbone | None = None,
        norm: dict[str, Normalizer] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.backbone: Backbone = (
            backbone if backbone is not None else build_backbone(config.backbone, vocab_size=tokenizer.vocab_size)
        )
        fam = family_of(self.backbone.config)
        if fam.name != config.family:
            raise ValueError(f"backbone is {fam.name}, config says {config.family}")
        self.family = fam
        hidden = text_hidden_size(self.backbone.config)
        self.flow = FlowMatchingHead(
            hidden,
            config.state_dim + config.grounding_dim,
            config.action_dim,
            config.chunk,
            config.head_width,
            config.head_layers,
        )
        n_ctx = (
            len(config.cameras) * (tokens_per_image(config.image_side, fam.patch_size, fam.merge) + 2) + config.max_text
        )
        pool: dict[str, Any] = dict(positions=n_ctx, spatial=config.spatial_pool)
        self._patches: torch.Tensor | None = None
        fine = bool(config.fine_grounding and config.grounding_dim)
        if fine:  # keep the per-patch embeddings of the one vision pass (processor order, known xy)
            self.backbone.model.visual.patch_embed.register_forward_hook(self._keep_patches)
        keypoints = (
            dict(
                patch_dim=vision_hidden_size(self.backbone.config),
                cameras=len(config.cameras),
                grid=config.image_side // fam.patch_size,
                merge=fam.merge,
            )
            if fine
            else None
        )
        rays = (
            TableRays(config.rays, _quantiles(norm, "state"), _quantiles(norm, "grounding"))
            if fine and config.rays
            else None
        )
        self.grounding = (
            GroundingHead(
                hidden,
                config.state_dim,
                config.grounding_dim,
                config.head_width,
                keypoints=keypoints,
                rays=rays,
                **pool,
            )
            if config.grounding_dim
            else None
        )
        self.last_losses: dict[str, float] = {}
        self.last_grounding: torch.Tensor | None = None  # normalised, from the last predict_chunk
        self.waypoint = WaypointHead(hidden, config.state_dim, config.waypoints, config.head_width, **pool)
        self.norm = norm or {}

    # ------------------------------------------------------------- encoding
    def _keep_patches(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self._patches = output  # (images * patches, d_vision) in the processor's patch order

    def ground(self, context: torch.Tensor, context_pad: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """The grounding head on the last `encode` (and its vision patches if configured)."""
        assert self.grounding is not None
        patches = None
        if self.config.fine_grounding and self._patches is not None:
            patches = self._patches.reshape(context.shape[0], -1, self._patches.shape[-1])
        return self.grounding(context, context_pad, state, patches)

    def _prompt(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token ids: per camera <vision_start> <image>*n <vision_end>, then the instruction."""
        bc = self.backbone.config
        n_img = tokens_per_image(self.config.image_side, self.family.patch_size, self.family.merge)
        vision = ([bc.vision_start_token_id] + [bc.image_token_id] * n_img + [bc.vision_end_token_id]) * len(
            self.config.cameras
        )
        rows, masks = [], []
        for t in texts:
            text_ids = self.tokenizer.encode(t)[: self.config.max_text]
            pad = self.config.max_text - len(text_ids)
            rows.append(vision + text_ids + [PAD] * pad)
            masks.append([1] * (len(vision) + len(text_ids)) + [0] * pad)
        ids = torch.tensor(rows, dtype=torch.long)
        return ids, torch.tensor(masks, dtype=torch.long), (ids == bc.image_token_id).long()

    def encode(self, images: torch.Tensor, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, cams, H, W, 3) uint8 -> hidden states (B, T, d) and their padding mask."""
        b, cams = images.shape[:2]
        dev = next(self.parameters()).device
        pix, grid = patchify(
            images.reshape(b * cams, *images.shape[2:]),
            self.config.image_side,
            self.family.patch_size,
            self.family.merge,
            self.family.mean,
            self.family.std,
        )
        ids, mask, mm = self._prompt(texts)
        kw: dict[str, Any] = dict(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), pixel_values=pix.to(dev), image_grid_thw=grid.to(dev)
        )
        if self.family.needs_mm_token_types:
            kw["mm_token_type_ids"] = mm.to(dev)
        out = self.backbone.model(**kw)
        return out.last_hidden_state, (mask == 0).to(dev)

    # ---------------------------------------------------------------- train
    def loss(
        self,
        batch: dict[str, Any],
        generator: torch.Generator | None = None,
        teacher_noise: float = 0.05,
        teacher_share: float = 0.5,
        insulate: bool = False,
        keypoint_weight: float = 0.1,
    ) -> torch.Tensor:
        """batch: images (B,cams,H,W,3) uint8, texts, state (B,S); `actions` (B,H,A) and/or
        `waypoints` (B,8,3), both normalised; `grounding` (B,G) labels when grounding_dim > 0;
        optionally `keypoint` (B,cams,2): where each camera sees the named cube, in [-1, 1]
        (NaN: no label), which the first keypoint's attention is taught to pick (cross-entropy
        on the patch it falls in; ECoT labels object boxes in the image the same way).
        The action expert reads the true grounding (plus noise) for `teacher_share` of the
        samples and the head's own detached prediction for the rest, so it learns to act on
        what it will be given at run time. `insulate` keeps the action expert's gradient out
        of the backbone (pi0.5 knowledge insulation): the backbone then learns only from the
        grounding labels, which the far-from-the-cube samples would otherwise lose to the
        action loss."""
        ctx, pad = self.encode(batch["images"], batch["texts"])
        state = flow_state = batch["state"].to(ctx.device)
        total = ctx.new_zeros(())
        self.last_losses = {}
        if self.grounding is not None:
            truth = batch["grounding"].to(ctx.device)
            pred = self.ground(ctx, pad, state)
            g_loss = torch.mean((pred - truth) ** 2)
            noisy = truth + teacher_noise * torch.randn(truth.shape, generator=generator, device=ctx.device)
            teach = torch.rand(truth.shape[0], 1, generator=generator, device=ctx.device) < teacher_share
            flow_state = torch.cat([state, torch.where(teach, noisy, pred.detach())], dim=-1)
            total = total + g_loss
            self.last_losses["grounding"] = g_loss.item()
            if "keypoint" in batch and self.grounding.keypoints is not None:
                k_loss = self._keypoint_loss(self.grounding.keypoints, batch["keypoint"].to(ctx.device))
                total = total + keypoint_weight * k_loss
                self.last_losses["keypoint"] = k_loss.item()
        if "actions" in batch:
            flow_ctx = ctx.detach() if insulate else ctx
            a_loss = self.flow.loss(flow_ctx, pad, flow_state, batch["actions"].to(ctx.device), generator)
            total = total + a_loss
            self.last_losses["actions"] = a_loss.item()
        if "waypoints" in batch:
            w_loss = self.waypoint.loss(ctx, pad, state, batch["waypoints"].to(ctx.device))
            total = total + w_loss
            self.last_losses["waypoints"] = w_loss.item()
        return total

    @staticmethod
    def _keypoint_loss(kp: KeypointPool, points: torch.Tensor) -> torch.Tensor:
        assert kp.last_attention is not None  # the grounding head's forward pass has just set it
        att = kp.last_attention[:, :, 0]  # (B, cams, patches): keypoint 0
        seen = torch.isfinite(points).all(-1) & (points.abs() <= 1).all(-1)  # (B, cams)
        if not seen.any():
            return att.new_zeros(())
        idx = kp.patch_at(points[seen])
        return -torch.log(att[seen].gather(1, idx[:, None]) + 1e-6).mean()

    @torch.no_grad()
    def predict_chunk(
        self, images: torch.Tensor, texts: list[str], state: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        ctx, pad = self.encode(images, texts)
        state = state.to(ctx.device)
        if self.grounding is not None:
            self.last_grounding = self.ground(ctx, pad, state)
            state = torch.cat([state, self.last_grounding], dim=-1)
        return self.flow.sample(ctx, pad, state, self.config.flow_steps, generator)

    @torch.no_grad()
    def predict_waypoints(self, images: torch.Tensor, texts: list[str], state: torch.Tensor) -> torch.Tensor:
        ctx, pad = self.encode(images, texts)
        return self.waypoint(ctx, pad, state.to(ctx.device))

    # ------------------------------------------------------------ save/load
    def save_heads(self, directory: str | Path) -> None:
        """What is this model's own beside a shared backbone: heads, config, normalisation."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        heads = {f"flow.{k}": v for k, v in self.flow.state_dict().items()}
        heads |= {f"waypoint.{k}": v for k, v in self.waypoint.state_dict().items()}
        if self.grounding is not None:
            heads |= {f"grounding.{k}": v for k, v in self.grounding.state_dict().items()}
        save_file({k: v.contiguous() for k, v in heads.items()}, str(d / "heads.safetensors"))
        (d / "vla_config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        (d / "norm_stats.json").write_text(json.dumps({k: n.to_dict() for k, n in self.norm.items()}) + "\n")

    def save_pretrained(self, directory: str | Path, card: dict[str, Any] | None = None) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(d / "backbone")
        self.save_heads(d)
        self.tokenizer.save(d)
        params = sum(p.numel() for p in self.parameters())
        lines = [
            f"# QwenVLA ({self.config.family})",
            "",
            f"- backbone: `{self.config.backbone}` ({type(self.backbone).__name__}), {params:,} parameters in all",
            f"- cameras: {', '.join(self.config.cameras)} at {self.config.image_side} px",
            f"- heads: flow matching, chunk {self.config.chunk} x {self.config.action_dim}; "
            f"{self.config.waypoints} waypoints",
            f"- normalisation: q01/q99 for {sorted(self.norm)}",
        ]
        lines += [f"- {k}: {v}" for k, v in (card or {}).items()]
        (d / "README.md").write_text("\n".join(lines) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu", robot: str | None = None) -> QwenVLA:
        """Load a saved VLA; a missing, truncated or malformed file is one QrobotError naming it.
        A multi-embodiment checkpoint (qrobot.vla.multi) gives the model of `robot`."""
        from qrobot.vla.checkpoint import check_finite, load_backbone, load_heads, load_norm, read_config
        from qrobot.vla.multi import embodiment_dir

        d = Path(directory)
        own = embodiment_dir(d, robot)
        if own != d and (own / "backbone").is_dir():  # one whole model per embodiment (multi.bundle)
            return cls.from_pretrained(own, device=device)
        config = read_config(own)
        norm = load_norm(own / "norm_stats.json", config)
        backbone = load_backbone(d, config)
        tokenizer = InstructionTokenizer.load(d)
        rows = backbone.get_input_embeddings().num_embeddings
        if tokenizer.vocab_size > rows:
            raise QrobotError(
                f"{d / 'instruction_vocab.json'}: {tokenizer.vocab_size} token ids for a backbone "
                f"embedding of {rows} rows"
            )
        model = cls(config, tokenizer, backbone=backbone, norm=norm)
        load_heads(model, own / "heads.safetensors")
        check_finite(model, d)
        return model.to(device).eval()
