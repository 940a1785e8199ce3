"""`qrobot wm-collect | wm-train | wm-eval`: the world model's commands."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError


def add_parsers(
    sub: Any, positive: Callable[[str], int], rate: Callable[[str], float], path: Callable[[str], Path]
) -> None:
    c = sub.add_parser("wm-collect", help="record world-model episodes (expert, noisy-expert, wander)")
    c.add_argument("scenario", help="a scenario with a mobile base in a room (e.g. pointnav_clutter)")
    c.add_argument("--episodes", type=positive, default=200)
    c.add_argument("--seed", type=int, default=0, help="seed of the first episode (held-out: 10000)")
    c.add_argument("--out", type=path, required=True, help="dataset directory")
    c.add_argument("--size", type=int, choices=(64, 96), default=64, help="scene-camera image side")
    c.add_argument("--max-steps", type=positive, default=200, help="episode cap")
    c.add_argument("--workers", type=positive, default=1, help="parallel collector processes")
    t = sub.add_parser("wm-train", help="train the video world model on a wm-collect dataset")
    t.add_argument("--dataset", type=path, required=True)
    t.add_argument("--out", type=path, required=True, help="checkpoint directory")
    t.add_argument("--minutes", type=rate, default=45.0, help="wall-clock budget")
    t.add_argument("--steps", type=positive, default=100_000)
    t.add_argument("--batch", type=positive, default=32)
    t.add_argument("--lr", type=rate, default=2e-3)
    t.add_argument("--threads", type=positive, default=2, help="torch CPU threads")
    e = sub.add_parser("wm-eval", help="world model vs copy-last-frame on held-out episodes")
    e.add_argument("--checkpoint", type=path, required=True)
    e.add_argument("--dataset", type=path, required=True, help="held-out episodes (never trained on)")
    e.add_argument("--stride", type=positive, default=4, help="evaluate every n-th step of each episode")
    e.add_argument("--json", type=path, default=None, help="also write the figures as JSON here")
    e.add_argument(
        "--no-card",
        dest="card",
        action="store_false",
        help="leave the checkpoint as it is (default: the figures go to its results.json and model card)",
    )


def dispatch(args: argparse.Namespace) -> int:
    from qrobot.checks import check_dataset_out, check_out_dir, check_seeds

    if args.cmd == "wm-collect":
        from qrobot.scenario import load_scenario
        from qrobot.worldmodel.data import wm_collect

        check_seeds("wm-collect --seed", args.seed, args.episodes)
        sc = load_scenario(args.scenario)
        check_dataset_out(
            "wm-collect --out", args.out, {"scenario": sc.name, "image_size": args.size, "robot": sc.robot}
        )

        meta = wm_collect(
            args.scenario,
            args.episodes,
            args.out,
            args.seed,
            args.size,
            args.workers,
            max_steps=args.max_steps,
            show=not args.quiet,
        )
        print(
            f"{args.out}: {meta['episodes']} episodes of {meta['scenario']} ({', '.join(meta['policies'])}), "
            f"{meta['episodes_with_collision']} with a collision, {meta['successes']} successful"
        )
        return 0
    if args.cmd == "wm-train":
        from qrobot.worldmodel.train import wm_train

        check_out_dir("wm-train --out", args.out)

        wm_train(args.dataset, args.out, args.minutes, args.steps, args.batch, args.lr, args.threads)
        return 0
    from qrobot.worldmodel.evaluate import to_markdown, wm_evaluate

    if args.json is not None and (args.json.is_dir() or not args.json.parent.is_dir()):
        raise QrobotError(f"wm-eval --json: {args.json}: a file path in an existing folder")

    res = wm_evaluate(args.checkpoint, args.dataset, args.stride, show=not args.quiet)
    print(to_markdown(res))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.card:
        _record(args, res)
    return 0


def _record(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """Store the figures with the checkpoint (results.json) and regenerate its model card."""
    import logging
    import re
    import shlex

    from qrobot import cards

    names = (re.fullmatch(r"ep\d+-seed(\d+)\.npz", f.name) for f in args.dataset.glob("ep*.npz"))
    seeds = sorted(int(m.group(1)) for m in names if m)
    argv = ["qrobot", "wm-eval", "--checkpoint", str(args.checkpoint), "--dataset", str(args.dataset)]
    argv += ["--stride", str(args.stride)] if args.stride != 4 else []
    scenario = json.loads((args.dataset / "meta.json").read_text())["scenario"]  # (read by wm_evaluate)
    records = cards.wm_records(res, shlex.join(argv), scenario, [seeds[0], seeds[-1]] if seeds else None)
    if cards.record_result(args.checkpoint, records):
        logging.getLogger("qrobot").info(
            "figures stored in %s (model card: %s)", *(args.checkpoint / f for f in cards.FILES)
        )
