"""Randomisation a reset can satisfy, checked when a scenario file is loaded.

A scenario whose objects cannot fit their region, whose landmarks cannot fit the room, or
whose start-goal distance is longer than the room allows is refused in one line (a
ValueError the scenario loader reports with the file), instead of a long search at reset.
"""

from __future__ import annotations

import math
from typing import Any

HEX_PACKING = 0.9069  # the densest packing of equal discs in the plane


def _fits(n: int, spacing: float, width: float, depth: float) -> bool:
    """Whether n points at least `spacing` apart can lie in a width x depth box: n discs of
    diameter `spacing` in the box grown by spacing/2 on each side, at best hexagonal density."""
    area = (max(width, 0.0) + spacing) * (max(depth, 0.0) + spacing)
    return n * math.pi * (spacing / 2) ** 2 <= HEX_PACKING * area


def feasible(sc: Any) -> None:
    """Randomisation a reset can satisfy; refused here, in one line, instead of a long search."""
    task = sc.task
    if task.kind in ("pick_place", "stack"):
        w, d = (task.region.high[i] - task.region.low[i] for i in (0, 1))
        bowls = getattr(task, "receptacles", None)
        if bowls is not None and not _fits(bowls.count, bowls.size + 0.04, w, d):
            raise ValueError(
                f"task.region: {w:.2f} x {d:.2f} m cannot hold {bowls.count} receptacles of size {bowls.size} apart"
            )
        if not _fits(task.objects.count, max(task.objects.min_spacing, task.objects.size), w, d):
            raise ValueError(
                f"task.region: {w:.2f} x {d:.2f} m cannot hold {task.objects.count} objects "
                f"{task.objects.min_spacing} m apart (widen the region or lower the count)"
            )
    if task.kind in ("pointnav", "objectnav") and sc.room is not None:
        lo, hi = task.geodesic_range
        sx, sy = sc.room.size
        if lo > hi:
            raise ValueError(f"task.geodesic_range: [min, max] with min <= max (got {task.geodesic_range})")
        if lo > sx + sy:
            raise ValueError(
                f"task.geodesic_range: min {lo} m is longer than any path in a {sx} x {sy} m "
                f"room allows (at most {sx + sy:g})"
            )
        if task.kind == "objectnav" and not _fits(task.landmarks.count, 1.6, sx - 1.6, sy - 1.6):
            raise ValueError(
                f"task.landmarks.count: {task.landmarks.count} landmarks 1.6 m apart do not fit a {sx} x {sy} m room"
            )
        for k, person in enumerate(sc.people):
            if any(abs(x) > sx / 2 or abs(y) > sy / 2 for x, y in person.waypoints):
                raise ValueError(f"people[{k}].waypoints: outside the {sx} x {sy} m room")
