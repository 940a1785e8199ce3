"""Camera geometry for the grounding head: where a keypoint's ray meets the table.

A tiny MLP learns the projective map from a wrist-camera pixel and the arm's pose to
"the cube is 9 cm ahead" poorly (traced: keypoint right, grounding 7 cm off at the grasp).
That map is known calibration, as on a real robot (camera extrinsics + the table the
objects rest on), so it is computed here exactly and the head only chooses and corrects.
Inputs are the model's own keypoints and the proprio; no privileged state.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from qrobot.envs.core import MOUNT_UP
from qrobot.robots.panda import HAND_BELOW_EE


def ray_config(cameras: list[Any], robot: str, plane_z: float) -> dict[str, Any]:
    """What `TableRays` needs, JSON-ready (saved in vla_config.json); {} when a camera
    cannot be placed from the proprio (a non-square image, a wrist camera off the Panda)."""
    spec = []
    for cam in cameras:
        placed = cam.mount == "world" or (cam.mount == "wrist" and robot == "panda")
        if not placed or cam.width != cam.height:
            return {}
        spec.append({"mount": cam.mount, "eye": list(cam.eye), "target": list(cam.target), "fov": cam.fov})
    return {"cameras": spec, "plane_z": float(plane_z)}


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-9)


class TableRays(nn.Module):
    """Per camera: image point in [-1, 1] (x right, y down) + normalised Panda proprio ->
    the point on the plane z = plane_z it shows, relative to the gripper, in the grounding
    head's normalised x, y units (the inverse of qrobot.vla.data.image_point)."""

    # buffers (per camera, then the proprio's and the grounding's normalisation ranges)
    wrist: torch.Tensor
    eye: torch.Tensor
    target: torch.Tensor
    up: torch.Tensor
    scale: torch.Tensor
    state_lo: torch.Tensor
    state_span: torch.Tensor
    ground_lo: torch.Tensor
    ground_span: torch.Tensor

    def __init__(
        self, spec: dict[str, Any], state_q: tuple[np.ndarray, np.ndarray], ground_q: tuple[np.ndarray, np.ndarray]
    ) -> None:
        super().__init__()
        cams = spec["cameras"]
        self.plane_z = float(spec["plane_z"])
        self.register_buffer("wrist", torch.tensor([c["mount"] == "wrist" for c in cams]), persistent=False)
        for name in ("eye", "target"):
            self.register_buffer(name, torch.tensor([c[name] for c in cams], dtype=torch.float32), persistent=False)
        self.register_buffer(
            "up", torch.tensor([MOUNT_UP[c["mount"]] for c in cams], dtype=torch.float32), persistent=False
        )
        self.register_buffer(
            "scale",
            torch.tensor([1 / np.tan(np.radians(c["fov"]) / 2) for c in cams], dtype=torch.float32),
            persistent=False,
        )
        for name, (lo, hi) in (("state", state_q), ("ground", ground_q)):
            self.register_buffer(f"{name}_lo", torch.tensor(lo, dtype=torch.float32), persistent=False)
            self.register_buffer(
                f"{name}_span", torch.tensor(np.maximum(hi - lo, 1e-6), dtype=torch.float32), persistent=False
            )

    def forward(self, points: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """points (B, cams, 2), state (B, S) normalised -> (B, cams, 2) normalised x, y."""
        raw = (state.clamp(-1, 1) + 1) / 2 * self.state_span + self.state_lo
        ee = raw[:, :3]
        yaw = torch.atan2(raw[:, 4], raw[:, 3])
        c, s, z = torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw)
        rot = torch.stack(
            [torch.stack([c, s, z], -1), torch.stack([s, -c, z], -1), torch.stack([z, z, z - 1], -1)], -2
        )  # hand: Rz(yaw) Rx(pi), as panda.hand_frame
        hand = ee + rot[:, :, 2] * -HAND_BELOW_EE
        wrist = self.wrist[None, :, None]

        def place(p: torch.Tensor) -> torch.Tensor:  # (cams, 3) in the mount frame -> (B, cams, 3)
            in_hand = hand[:, None] + torch.einsum("bij,cj->bci", rot, p)
            return torch.where(wrist, in_hand, p[None].expand_as(in_hand))

        eye, target = place(self.eye), place(self.target)
        up = torch.where(wrist, torch.einsum("bij,cj->bci", rot, self.up), self.up[None].expand_as(eye))
        f = _unit(target - eye)
        r = _unit(torch.cross(f, up, dim=-1))
        u = torch.cross(r, f, dim=-1)
        k = self.scale[None, :, None]
        ray = f + points[..., :1] / k * r - points[..., 1:] / k * u
        # a ray that does not go down (or points nowhere sensible) meets the table nowhere: 3 m out
        down = (-ray[..., 2]).clamp(min=1e-3)
        dist = ((eye[..., 2] - self.plane_z) / down).clamp(0.0, 3.0)
        hit = eye + dist[..., None] * ray
        rel = hit[..., :2] - ee[:, None, :2]
        return (2 * (rel - self.ground_lo[:2]) / self.ground_span[:2] - 1).clamp(-3.0, 3.0)
