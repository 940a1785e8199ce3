"""Camera frames -> Qwen-VL `pixel_values` / `image_grid_thw`, laid out exactly as the
Qwen2-VL image processor does (so a real checkpoint sees what it was trained on)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The normalisation constants of the Qwen2-VL / Qwen2.5-VL image processor.
QWEN_MEAN = (0.48145466, 0.4578275, 0.40821073)
QWEN_STD = (0.26862954, 0.26130258, 0.27577711)
TEMPORAL = 2  # a still image is repeated over the temporal patch


def patchify(
    images: torch.Tensor,
    side: int,
    patch: int,
    merge: int,
    mean: tuple[float, ...] = QWEN_MEAN,
    std: tuple[float, ...] = QWEN_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """images (N, H, W, 3) uint8 -> pixel_values (N*gh*gw, 3*2*p*p), grid_thw (N, 3)."""
    if side % (patch * merge):
        raise ValueError(f"image side {side} must be a multiple of patch*merge = {patch * merge}")
    x = images.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-2:] != (side, side):
        x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    n, c = x.shape[:2]
    g = side // patch
    x = x[:, None, None].expand(n, 1, TEMPORAL, c, side, side)
    x = x.reshape(n, 1, TEMPORAL, c, g // merge, merge, patch, g // merge, merge, patch)
    x = x.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    pixel_values = x.reshape(n * g * g, c * TEMPORAL * patch * patch)
    grid = torch.tensor([[1, g, g]] * n, dtype=torch.long)
    return pixel_values, grid


def tokens_per_image(side: int, patch: int, merge: int) -> int:
    return (side // patch) ** 2 // (merge * merge)
