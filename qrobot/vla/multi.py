"""One VLA checkpoint for several embodiments: a shared backbone and tokenizer, and per
embodiment its heads, config and normalisation (the arm's action expert and grounding,
the base's waypoint head), as generalist VLAs keep one backbone with per-embodiment
action heads. The embodiment is the robot the policy drives, never the task.

Layout of DIR (one embodiment saves QwenVLA's own flat layout instead):
    DIR/backbone/                the transformers checkpoint, shared
    DIR/instruction_vocab.json   the tokenizer, shared
    DIR/embodiments.json         {"embodiments": ["panda", "diffbot"]}
    DIR/<robot>/                 vla_config.json, heads.safetensors, norm_stats.json

or, one model per embodiment (`bundle`: separate backbones, when sharing one measurably
hurts at equal compute; docs/vla.md), each DIR/<robot>/ a whole flat checkpoint of its own.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

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


FLAT_FILES = ("backbone", "instruction_vocab.json", "vla_config.json", "heads.safetensors", "norm_stats.json")


def bundle(
    directory: str | Path, models: Sequence[str | Path], nav_stop: tuple[float, float, int] | None = None
) -> list[str]:
    """One checkpoint from separately trained one-embodiment checkpoints (flat layouts):
    DIR/<robot>/ each, and the index. Returns the robots; a model that is not a flat
    one-embodiment checkpoint, or two for one robot, is a QrobotError naming it. Writes
    the bundle's model card. `nav_stop`: the base's stop rule chosen on validation, stored
    in its config (None: as trained)."""
    from qrobot.vla.checkpoint import nav_stop_ok

    if nav_stop is not None and not nav_stop_ok(list(nav_stop)):
        raise QrobotError(f"--nav-stop {nav_stop}: XY,TH,K with 0 < XY <= 1 m, 0 < TH <= 3.15 rad, K 1..50 steps")
    robots: list[str] = []
    for src in map(Path, models):
        missing = [f for f in FLAT_FILES if not (src / f).exists()]
        if missing or (src / INDEX).exists():
            raise QrobotError(f"{src}: not a one-embodiment checkpoint (missing {', '.join(missing) or 'nothing'})")
        try:
            robot = json.loads((src / "vla_config.json").read_text()).get("robot")
        except (OSError, ValueError) as exc:
            raise QrobotError(f"{src / 'vla_config.json'}: not valid JSON ({str(exc)[:120]})") from None
        if not (isinstance(robot, str) and robot.isidentifier()) or robot in robots:
            raise QrobotError(f"{src / 'vla_config.json'}: field 'robot': {robot!r} (one model per named robot)")
        robots.append(robot)
    if nav_stop is not None and "diffbot" not in robots:
        raise QrobotError("--nav-stop: the stop rule is the mobile base's, and no diffbot model is bundled")
    d = Path(directory)
    if d.exists() and any(d.iterdir()):  # its results and card would describe other models
        raise QrobotError(f"{d}: exists and is not empty (remove it first)")
    d.mkdir(parents=True, exist_ok=True)
    for src, robot in zip(map(Path, models), robots):
        (d / robot).mkdir()
        for f in (*FLAT_FILES, "README.md", "results.json"):  # not the training's checkpoint-N snapshots
            if (src / f).is_dir():
                shutil.copytree(src / f, d / robot / f)
            elif (src / f).is_file():
                shutil.copy2(src / f, d / robot / f)
    if nav_stop is not None:  # the base's stop rule (a diffbot is bundled: checked above)
        path = d / "diffbot" / "vla_config.json"
        config = json.loads(path.read_text())
        config["nav_stop"] = [float(nav_stop[0]), float(nav_stop[1]), int(nav_stop[2])]
        path.write_text(json.dumps(config, indent=2) + "\n")
    (d / INDEX).write_text(json.dumps({"embodiments": robots, "backbones": "per-embodiment"}) + "\n")
    from qrobot.cards import write_card

    write_card(d)  # each model's training under its robot; evaluations of the whole go to d's results.json
    return robots


if __name__ == "__main__":  # make checkpoints: python -m qrobot.vla.multi OUT MODEL_DIR... [--nav-stop XY,TH,K]
    import argparse
    import sys

    from qrobot.cli import _nav_stop

    class _OneLine(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            print(f"qrobot: error: {message} (usage: OUT MODEL_DIR... [--nav-stop XY,TH,K])", file=sys.stderr)
            sys.exit(2)

    p = _OneLine(prog="python -m qrobot.vla.multi")
    p.add_argument("out")
    p.add_argument("models", nargs="+")
    p.add_argument("--nav-stop", type=_nav_stop, default=None)
    args = p.parse_args()
    try:
        print(f"{args.out}: one model per embodiment: {', '.join(bundle(Path(args.out), args.models, args.nav_stop))}")
    except QrobotError as exc:
        print(f"qrobot: error: {exc}", file=sys.stderr)
        sys.exit(2)
