"""Named colours that scenario files and instructions may use."""

from __future__ import annotations

from typing import Literal

COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.1, 0.1, 1.0),
    "green": (0.1, 0.7, 0.15, 1.0),
    "blue": (0.1, 0.25, 0.9, 1.0),
    "yellow": (0.95, 0.85, 0.1, 1.0),
    "purple": (0.55, 0.15, 0.7, 1.0),
    "orange": (1.0, 0.5, 0.05, 1.0),
    "cyan": (0.1, 0.8, 0.85, 1.0),
    "white": (0.95, 0.95, 0.95, 1.0),
    "black": (0.08, 0.08, 0.08, 1.0),
    "pink": (1.0, 0.45, 0.7, 1.0),
    "brown": (0.5, 0.3, 0.12, 1.0),
    "grey": (0.5, 0.5, 0.5, 1.0),
}

ColorName = Literal[
    "red", "green", "blue", "yellow", "purple", "orange", "cyan", "white", "black", "pink", "brown", "grey"
]
