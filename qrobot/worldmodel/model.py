"""An action-conditioned video world model small enough for a CPU.

k context frames -> a 16x16 latent; each future action moves the latent one step (a
residual conv block modulated by the action, FiLM); every latent decodes to a frame as a
residual on the last context frame (U-Net skip from 32x32), plus collision and success
logits. Rolling out in latent space keeps H frames cheap: encode once, step H times.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from qrobot.errors import QrobotError

CONFIG_FILE, WEIGHTS_FILE = "wm_config.json", "world_model.safetensors"


@dataclass
class WMConfig:
    image_size: int = 64
    context: int = 3
    horizon: int = 8
    action_dim: int = 3
    width: int = 16  # channels at 64x64 and 32x32
    latent: int = 48  # channels of the 16x16 latent
    scenario: str = ""
    camera: dict[str, Any] = field(default_factory=dict)
    threshold: float = 0.5  # foresight: collision probability that slows the robot
    card: dict[str, Any] = field(default_factory=dict)  # data, training, measured figures


def _coords(size: int) -> torch.Tensor:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    return torch.stack([x, y])[None]


def _zero_init(layer: nn.Conv2d) -> None:
    """Zero weights and bias: the layer starts out adding nothing."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class _Step(nn.Module):
    """z + f(z, action): one imagined control period."""

    def __init__(self, ch: int, action_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch + 2, ch, 3, padding=1)
        self.norm = nn.GroupNorm(8, ch)
        self.film = nn.Sequential(nn.Linear(action_dim, 64), nn.SiLU(), nn.Linear(64, 2 * ch))
        self.conv2 = nn.Conv2d(ch, ch, 1)
        _zero_init(self.conv2)

    def forward(self, z: torch.Tensor, action: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.conv1(torch.cat([z, coords.expand(len(z), -1, -1, -1)], 1)))
        scale, shift = self.film(action)[:, :, None, None].chunk(2, 1)
        return z + self.conv2(F.silu(h * (1 + scale) + shift))


class WorldModel(nn.Module):
    def __init__(self, config: WMConfig) -> None:
        super().__init__()
        self.config = c = config
        if c.image_size % 4:
            raise QrobotError(f"world model: image_size must be a multiple of 4, got {c.image_size}")
        w, lat = c.width, c.latent
        # Full resolution only through space-to-depth: every conv runs at 32x32 or 16x16.
        self.stem = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12 * c.context, w, 3, padding=1), nn.SiLU())
        self.down = nn.Sequential(
            nn.Conv2d(w, lat, 4, 2, 1), nn.GroupNorm(8, lat), nn.SiLU(), nn.Conv2d(lat, lat, 3, padding=1)
        )
        self.step = _Step(lat, c.action_dim)
        self.up = nn.ConvTranspose2d(lat, w, 4, 2, 1)
        self.mix = nn.Sequential(nn.Conv2d(2 * w, w, 3, padding=1), nn.SiLU())
        self.out = nn.Conv2d(w, 12, 3, padding=1)
        self.to_pixels = nn.PixelShuffle(2)
        _zero_init(self.out)  # starts as copy-last-frame
        self.collision = nn.Sequential(nn.Conv2d(lat, 32, 1), nn.SiLU())
        self.success = nn.Sequential(nn.Conv2d(lat, 32, 1), nn.SiLU())
        self.collision_out, self.success_out = nn.Linear(32, 1), nn.Linear(32, 1)
        self.register_buffer("coords", _coords(c.image_size // 4), persistent=False)

    # ------------------------------------------------------------------ rollout
    def forward(
        self, context: torch.Tensor, actions: torch.Tensor, decode: list[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """context (B, k, 3, S, S) in [0, 1], actions (B, H, A) -> frames (B, len(decode), 3, S, S)
        for the horizons in `decode` (0-based; all by default), collision/success logits (B, H)."""
        b, k = context.shape[:2]
        last = context[:, -1]
        skip = self.stem(context.reshape(b, k * 3, *context.shape[-2:]))
        z = self.down(skip)
        latents = []
        for h in range(actions.shape[1]):
            z = self.step(z, actions[:, h], self.coords)
            latents.append(z)
        zs = torch.stack(latents, 1)  # (B, H, C, s, s)
        flat = zs.flatten(0, 1)
        collision = self.collision_out(self.collision(flat).amax((2, 3))).view(b, -1)
        success = self.success_out(self.success(flat).mean((2, 3))).view(b, -1)
        idx = list(range(actions.shape[1])) if decode is None else decode
        sel = zs[:, idx].flatten(0, 1)
        n = len(idx)
        frames = last[:, None].expand(-1, n, -1, -1, -1)
        if n == 0:
            return {"frames": frames, "collision": collision, "success": success}
        up = self.up(sel)
        skips = skip[:, None].expand(-1, n, -1, -1, -1).flatten(0, 1)
        delta = self.to_pixels(self.out(self.mix(torch.cat([up, skips], 1))))
        frames = frames + delta.view(b, n, *delta.shape[1:])
        return {"frames": frames, "collision": collision, "success": success}

    @torch.no_grad()
    def imagine(
        self, context: torch.Tensor, actions: torch.Tensor, decode: list[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Inference: frames clamped to [0, 1], probabilities instead of logits."""
        out = self.forward(context, actions, decode)
        return {
            "frames": out["frames"].clamp(0, 1),
            "collision": torch.sigmoid(out["collision"]),
            "success": torch.sigmoid(out["success"]),
        }

    # --------------------------------------------------------------- save/load
    def save_pretrained(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / WEIGHTS_FILE))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> WorldModel:
        d = Path(directory)
        if not (d / CONFIG_FILE).is_file() or not (d / WEIGHTS_FILE).is_file():
            raise QrobotError(
                f"{d}: not a world-model checkpoint (needs {CONFIG_FILE} and {WEIGHTS_FILE}; "
                f"train one with `qrobot wm-train`)"
            )
        try:
            raw = json.loads((d / CONFIG_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise QrobotError(f"{d / CONFIG_FILE}: not valid JSON ({str(exc)[:120]})") from None
        if not isinstance(raw, dict):
            raise QrobotError(f"{d / CONFIG_FILE}: must be a JSON object")
        known = set(WMConfig.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise QrobotError(f"{d / CONFIG_FILE}: unknown fields {unknown}; accepted: {sorted(known)}")
        for name, value in raw.items():
            kind = str(WMConfig.__dataclass_fields__[name].type)  # (a string: postponed annotations)
            ok = {
                "int": lambda v: type(v) is int and 0 < v <= 4096,
                "float": lambda v: type(v) in (int, float) and 0.0 <= v <= 1.0,
                "str": lambda v: isinstance(v, str),
            }.get(kind, lambda v: isinstance(v, dict))(value)
            if not ok:
                want = {"int": "an integer 1..4096", "float": "a number 0..1", "str": "a string"}.get(kind, "an object")
                raise QrobotError(f"{d / CONFIG_FILE}: field {name!r}: {want} (got {value!r})")
        _check_geometry(d / CONFIG_FILE, raw)
        try:
            model = cls(WMConfig(**raw))
        except (ValueError, RuntimeError) as exc:
            raise QrobotError(f"{d / CONFIG_FILE}: {str(exc)[:160]}") from None
        try:
            state = load_file(str(d / WEIGHTS_FILE))
        except Exception as exc:  # SafetensorError (truncated, bad header) is not an OSError
            raise QrobotError(f"{d / WEIGHTS_FILE}: unreadable ({str(exc)[:120]}); damaged or truncated") from None
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise QrobotError(
                f"{d / WEIGHTS_FILE}: does not match {CONFIG_FILE} ({str(exc).splitlines()[0][:160]})"
            ) from None
        return model.eval()


def _check_geometry(path: Path, raw: dict[str, Any]) -> None:
    """Sizes the network and foresight can use, and a scene camera that can render."""
    if raw.get("image_size", 64) not in (64, 96):
        raise QrobotError(f"{path}: field 'image_size': 64 or 96 (what wm-collect records; got {raw['image_size']!r})")
    if raw.get("horizon", 8) < 2:
        raise QrobotError(f"{path}: field 'horizon': at least 2 predicted frames (got {raw['horizon']!r})")
    cam = raw.get("camera")
    if cam is None:
        return
    vec = lambda v: (
        isinstance(v, list)
        and len(v) == 3
        and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and abs(x) <= 100 for x in v
        )
    )
    num = lambda v, lo, hi: isinstance(v, (int, float)) and not isinstance(v, bool) and lo < v < hi
    ok = (
        isinstance(cam, dict)
        and all(vec(cam.get(k)) for k in ("eye", "target", "up"))
        and num(cam.get("fov"), 10, 170)
        and num(cam.get("near"), 0, 100)
        and num(cam.get("far"), 0, 1000)
        and cam["near"] < cam["far"]
        and cam["eye"] != cam["target"]
    )
    if not ok:
        raise QrobotError(
            f"{path}: field 'camera': eye, target, up (3 finite numbers each, eye != target), "
            "fov in (10, 170) degrees, 0 < near < far"
        )


def to_tensor(frames: Any) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float (..., 3, S, S) in [0, 1]."""
    t = torch.as_tensor(frames)
    return t.movedim(-1, -3).float() / 255.0
