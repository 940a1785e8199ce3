"""One VLA checkpoint for several embodiments: a shared backbone and tokenizer, and per
embodiment its heads, config and normalisation (the arm's action expert and grounding,
the base's waypoint head), as generalist VLAs keep one backbone with per-embodiment
action heads. The embodiment is the robot the policy drives, never the task.

Layout of DIR (one embodiment saves QwenVLA's own flat layout instead):
    DIR/backbone/                the transformers checkpoint, shared
    DIR/instruction_vocab.json   the tokenizer, shared
    DIR/embodiments.json         {"embodiments": ["panda", "diffbot"]}
    DIR/<robot>/                 vla_config.json, heads.safetensors, norm_stats.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from qrobot.vla.model import QwenVLA

INDEX = "embodiments.json"


def embodiments(directory: Path) -> list[str] | None:
    """The embodiments of a multi-embodiment checkpoint (None: a flat, one-model checkpoint)."""
    path = Path(directory) / INDEX
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise QrobotError(f"{path}: not valid JSON ({str(exc)[:120]})") from None
    names = raw.get("embodiments") if isinstance(raw, dict) else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) and n.isidentifier() for n in names)):
        raise QrobotError(f"{path}: field 'embodiments': a non-empty list of robot names")
    return names


def embodiment_dir(directory: Path, robot: str | None) -> Path:
    """Where the config, heads and normalisation for `robot` lie in a checkpoint."""
    names = embodiments(directory)
    if names is None:
        return Path(directory)
    if robot not in names:
        raise QrobotError(
            f"{Path(directory) / INDEX}: no model for robot {robot!r} (this checkpoint drives {', '.join(names)})"
        )
    return Path(directory) / robot


def save_models(directory: Path, models: list[QwenVLA]) -> None:
    """One model: its own flat layout; several sharing a backbone: the layout above."""
    d = Path(directory)
    if len(models) == 1:
        models[0].save_pretrained(d)
        return
    robots = [m.config.robot for m in models]
    if len(set(robots)) != len(robots) or not all(robots):
        raise ValueError(f"one model per embodiment, each named (got {robots})")
    if any(m.backbone is not models[0].backbone for m in models):
        raise ValueError("the models of one checkpoint share one backbone")
    d.mkdir(parents=True, exist_ok=True)
    models[0].backbone.save_pretrained(d / "backbone")
    models[0].tokenizer.save(d)
    for m in models:
        m.save_heads(d / m.config.robot)
    (d / INDEX).write_text(json.dumps({"embodiments": robots}) + "\n")
