"""What a person sees when a recording opens: the default blueprint.

Left: the 3D scene framed on the workspace, the instruction and the result, and the
safety events that need a person's eye (warnings and worse). Right: the cameras, then
one time-series panel per unit, so metres, speeds and counts never share an axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import rerun.blueprint as rrb

# metrics/<key>: the panel each scalar goes to (one unit per panel)
METRIC_PANELS = {
    "distance (m)": ("distance", "distance_to_goal", "min_person_clearance"),
    "speed (m/s)": ("speed",),
    "reward": ("reward",),
}


def slug(text: str) -> str:
    """An entity-path part for a panel title: 'joint velocity (rad/s)' -> 'joint_velocity'."""
    return text.split(" (")[0].replace(" ", "_")


def frame_view(lo: np.ndarray, hi: np.ndarray, steep: bool = False) -> rrb.EyeControls3D:
    """An eye that frames the box lo..hi from the front left, above; `steep` looks down
    into a room, so that its walls do not hide a base standing beside them."""
    centre = (lo + hi) / 2
    span = max(float(np.linalg.norm(hi - lo)), 0.5)
    eye = centre + (np.array([-0.3, -0.45, 0.85]) if steep else np.array([-0.55, -0.75, 0.6])) * span
    return rrb.EyeControls3D(position=eye.tolist(), look_target=centre.tolist(), eye_up=[0.0, 0.0, 1.0])


def blueprint(
    cameras: Sequence[str], command_panels: Sequence[str], framing: rrb.EyeControls3D | None, foresight: int = 0
) -> rrb.Blueprint:
    cams: list[rrb.View] = [rrb.Spatial2DView(origin=f"cameras/{c}", name=c) for c in cameras]
    if foresight:
        cams += [
            rrb.Spatial2DView(origin=f"foresight/{n}", name=n.replace("_", " "))
            for n in ("actual", "predicted_h1", f"predicted_h{foresight}")
        ]
    metrics = [
        rrb.TimeSeriesView(name=title, contents=[f"metrics/{k}" for k in keys]) for title, keys in METRIC_PANELS.items()
    ]
    command = [rrb.TimeSeriesView(origin=f"supervisor/command/{slug(t)}", name=f"issued: {t}") for t in command_panels]
    tabs: list[rrb.View] = [
        rrb.TimeSeriesView(origin="policy/action", name="policy action (normalised)"),
        *command,
        rrb.TimeSeriesView(origin="supervisor/clamps", name="routine clamps per step"),
        rrb.TimeSeriesView(origin="recording", name="recording: dropped camera frames"),
    ]
    if foresight:
        tabs.append(
            rrb.TimeSeriesView(
                origin="foresight", contents=["foresight/collision_prob", "foresight/speed_scale"], name="foresight"
            )
        )
    scene = rrb.Spatial3DView(origin="world", name="scene", eye_controls=framing)
    text = rrb.Horizontal(
        rrb.TextDocumentView(origin="task/instruction", name="instruction"),
        rrb.TextDocumentView(origin="result", name="result"),
    )
    left = rrb.Vertical(
        scene, text, rrb.TextLogView(origin="supervisor/events", name="safety events"), row_shares=[5, 1.3, 2]
    )
    right = rrb.Vertical(rrb.Horizontal(*cams), rrb.Tabs(*metrics), rrb.Tabs(*tabs, active_tab=0), row_shares=[2, 2, 2])
    return rrb.Blueprint(rrb.Horizontal(left, right, column_shares=[3, 2]), collapse_panels=True)
