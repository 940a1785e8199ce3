"""Action heads on top of the Qwen backbone's hidden states.

FlowMatchingHead: a small DiT-style transformer (GR00T / pi0 style). Tokens are one
projected state token and H noisy-action tokens with a timestep embedding; they
cross-attend to the backbone's hidden states and predict the flow velocity
(x_t = t * noise + (1 - t) * action, target velocity = noise - action).

GroundingHead: predicts what the instruction refers to (the named object's position and
yaw, the place point) from attention-pooled hidden states; the flow head reads it as
part of its state token (an embodied chain of thought, trained on simulator labels).

WaypointHead: an MLP on the attention-pooled hidden states and the state token producing
8 (x, y, theta) waypoints in the robot frame (Qwen-RobotNav style).

All actions and waypoints are in normalised units ([-1, 1] via q01/q99 statistics).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time t in [0, 1], shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


class FlowMatchingHead(nn.Module):
    def __init__(
        self,
        context_dim: int,
        state_dim: int,
        action_dim: int,
        chunk: int,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        self.action_dim, self.chunk, self.width = action_dim, chunk, width
        self.context = nn.Linear(context_dim, width)
        self.state = nn.Linear(state_dim, width)
        self.action_in = nn.Linear(action_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.pos = nn.Parameter(torch.zeros(1, chunk + 1, width))
        layer = nn.TransformerDecoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.out = nn.Linear(width, action_dim)
        nn.init.normal_(self.pos, std=0.02)

    def velocity(
        self, context: torch.Tensor, context_pad: torch.Tensor, state: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Predicted velocity (B, H, action_dim) for noisy actions x_t at flow time t."""
        tokens = torch.cat([self.state(state)[:, None], self.action_in(x_t)], dim=1) + self.pos
        tokens = tokens + self.time(timestep_embedding(t, self.width))[:, None]
        h = self.decoder(tokens, self.context(context), memory_key_padding_mask=context_pad)
        return self.out(h[:, 1:])

    def loss(
        self,
        context: torch.Tensor,
        context_pad: torch.Tensor,
        state: torch.Tensor,
        actions: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        b = actions.shape[0]
        noise = torch.randn(actions.shape, generator=generator, device=actions.device)
        # pi0 samples flow time from a Beta favouring noisy times; a uniform one is enough here
        t = torch.rand(b, generator=generator, device=actions.device)
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
        v = self.velocity(context, context_pad, state, x_t, t)
        return torch.mean((v - (noise - actions)) ** 2)

    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        context_pad: torch.Tensor,
        state: torch.Tensor,
        steps: int = 10,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Integrate from noise (t = 1) to actions (t = 0) with `steps` Euler steps."""
        b = state.shape[0]
        x = torch.randn((b, self.chunk, self.action_dim), generator=generator, device=state.device)
        dt = 1.0 / steps
        for k in range(steps):
            t = torch.full((b,), 1.0 - k * dt, device=state.device)
            x = x - dt * self.velocity(context, context_pad, state, x, t)
        return x


def last_token(context_pad: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (the instruction's last word)."""
    return (~context_pad).long().sum(1).clamp(min=1) - 1


class AttentionPool(nn.Module):
    """Learned queries cross-attend to the backbone's hidden states (pooling that can pick
    out the tokens an instruction refers to, unlike a mean), plus the last real token.

    spatial=True adds what RoPE-only hidden states lack for localisation: a learned
    absolute code per context position (the token layout is fixed, so this is where in
    which camera a token sits; attention then acts as a soft-argmax), and queries shifted
    by the instruction's last token (so "the red cube" looks for red)."""

    def __init__(
        self, context_dim: int, width: int, queries: int = 4, heads: int = 4, positions: int = 0, spatial: bool = False
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(context_dim, width)
        self.queries = nn.Parameter(torch.randn(1, queries, width) * 0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.out_dim = (queries + 1) * width
        self.pos = nn.Parameter(torch.randn(1, positions, width) * 0.02) if spatial else None
        self.cond = nn.Linear(width, queries * width) if spatial else None

    def forward(self, context: torch.Tensor, context_pad: torch.Tensor) -> torch.Tensor:
        kv = self.proj(context)
        summary = kv[torch.arange(kv.shape[0]), last_token(context_pad)]
        q = self.queries.expand(kv.shape[0], -1, -1)
        if self.pos is not None and self.cond is not None:  # (both or neither: spatial)
            kv = kv + self.pos[:, : kv.shape[1]]
            q = q + self.cond(summary).view_as(q)
        pooled, _ = self.attn(q, kv, kv, key_padding_mask=context_pad, need_weights=False)
        return torch.cat([pooled.flatten(1), summary], dim=-1)


def _mlp(inp: int, width: int, out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inp, 2 * width), nn.GELU(), nn.Linear(2 * width, width), nn.GELU(), nn.Linear(width, out)
    )


class KeypointPool(nn.Module):
    """Spatial soft-argmax (deep spatial autoencoders, Levine et al.) asked by the
    instruction: per camera, K queries made from the instruction score every vision patch,
    and the softmax-weighted mean of the patches' image coordinates is where that query's
    object is. Coordinates are explicit, so a few thousand steps suffice to localise a
    small cube that a 2x2-merged token blurs with its neighbours."""

    xy: torch.Tensor  # buffer: each patch's image (x, y) in [-1, 1]

    def __init__(
        self, patch_dim: int, summary_dim: int, cameras: int, grid: int, merge: int, width: int = 64, keypoints: int = 4
    ) -> None:
        super().__init__()
        self.cameras, self.keypoints, self.width = cameras, keypoints, width
        self.feat = nn.Sequential(nn.Linear(patch_dim, width), nn.GELU(), nn.Linear(width, width))
        self.query = nn.Linear(summary_dim, keypoints * width)
        # patch (row, col) in the Qwen processor's order: merge blocks row-major, then within
        u = torch.arange(grid // merge)
        s = torch.arange(merge)
        rows = (u[:, None, None, None] * merge + s[None, None, :, None]).expand(-1, grid // merge, merge, merge)
        cols = (u[None, :, None, None] * merge + s[None, None, None, :]).expand(grid // merge, -1, merge, -1)
        xy = torch.stack([cols.reshape(-1), rows.reshape(-1)], -1).float()
        self.register_buffer("xy", (xy + 0.5) / grid * 2 - 1, persistent=False)  # (patches, 2) in [-1, 1]
        self.out_dim = cameras * keypoints * 2
        self.last_attention: torch.Tensor | None = None  # (B, cameras, K, patches), for supervision

    def patch_at(self, point: torch.Tensor) -> torch.Tensor:
        """Image points (B, 2) in [-1, 1] -> the index of the patch (processor order) they fall in."""
        return torch.cdist(point.float(), self.xy).argmin(-1)

    def forward(self, patches: torch.Tensor, summary: torch.Tensor) -> torch.Tensor:
        """patches (B, cameras * patches, patch_dim), summary (B, summary_dim) -> (B, out_dim)."""
        b = summary.shape[0]
        keys = self.feat(patches.view(b, self.cameras, -1, patches.shape[-1]))  # (B, c, n, w)
        q = self.query(summary).view(b, 1, self.keypoints, self.width)
        att = torch.softmax(q @ keys.transpose(-1, -2) / self.width**0.5, dim=-1)  # (B, c, K, n)
        self.last_attention = att
        return (att @ self.xy).flatten(1)


class GroundingHead(nn.Module):
    """Embodied chain of thought: where the named object is and where it must go, relative
    to the gripper (normalised), predicted from images + instruction + proprio and fed to
    the action expert. With `keypoints` it also reads instruction-asked soft-argmax points
    on the vision patches; with `rays` (qrobot.vla.geometry.TableRays) each camera's first
    keypoint is also placed on the table by camera geometry, and the object's x, y is a
    learned mix of those placements plus a learned correction."""

    def __init__(
        self,
        context_dim: int,
        state_dim: int,
        out_dim: int,
        width: int = 128,
        positions: int = 0,
        spatial: bool = False,
        keypoints: dict | None = None,
        rays: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.pool = AttentionPool(context_dim, width, positions=positions, spatial=spatial)
        self.keypoints = KeypointPool(summary_dim=context_dim, **keypoints) if keypoints else None
        if rays is not None and self.keypoints is None:
            raise ValueError("camera rays place keypoints: the grounding head needs `keypoints` too")
        self.rays = rays
        self.out_dim = out_dim
        extra = self.keypoints.out_dim if self.keypoints is not None else 0
        cams = self.keypoints.cameras if self.rays is not None and self.keypoints is not None else 0
        self.net = _mlp(self.pool.out_dim + extra + 2 * cams + state_dim, width, out_dim + cams)

    def forward(
        self, context: torch.Tensor, context_pad: torch.Tensor, state: torch.Tensor, patches: torch.Tensor | None = None
    ) -> torch.Tensor:
        parts = [self.pool(context, context_pad)]
        if self.keypoints is not None:
            if patches is None:
                raise ValueError("this grounding head needs the vision patches (QwenVLA.ground)")
            summary = context[torch.arange(context.shape[0]), last_token(context_pad)]
            parts.append(self.keypoints(patches, summary))
        kp = self.keypoints
        if self.rays is None or kp is None:  # (rays need keypoints: __init__ refuses rays alone)
            return self.net(torch.cat([*parts, state], dim=-1))
        placed = self.rays(parts[-1].view(-1, kp.cameras, kp.keypoints, 2)[:, :, 0], state)  # (B, cams, 2)
        out = self.net(torch.cat([*parts, placed.flatten(1), state], dim=-1))
        pred, gate = out[:, : self.out_dim], torch.softmax(out[:, self.out_dim :], dim=-1)
        xy = pred[:, :2] + (gate[..., None] * placed).sum(1)
        return torch.cat([xy, pred[:, 2:]], dim=-1)


class WaypointHead(nn.Module):
    def __init__(
        self,
        context_dim: int,
        state_dim: int,
        waypoints: int = 8,
        width: int = 128,
        positions: int = 0,
        spatial: bool = False,
    ) -> None:
        super().__init__()
        self.waypoints = waypoints
        self.pool = AttentionPool(context_dim, width, positions=positions, spatial=spatial)
        self.net = _mlp(self.pool.out_dim + state_dim, width, waypoints * 3)

    def forward(self, context: torch.Tensor, context_pad: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([self.pool(context, context_pad), state], dim=-1)).view(-1, self.waypoints, 3)

    def loss(
        self, context: torch.Tensor, context_pad: torch.Tensor, state: torch.Tensor, waypoints: torch.Tensor
    ) -> torch.Tensor:
        return torch.mean((self(context, context_pad, state) - waypoints) ** 2)
