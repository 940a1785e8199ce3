"""The `qrobot` command: run, list, bench. User mistakes print one line and exit 2."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from qrobot.errors import QrobotError


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _names(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qrobot", description="qrobot: policies behind a safety "
                                "supervisor in PyBullet scenarios.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a policy on a scenario for N episodes")
    r.add_argument("scenario", help="scenario name (see `qrobot list`) or path to a .toml file")
    r.add_argument("--policy", default="expert", help="policy name (default: expert)")
    r.add_argument("--episodes", type=_positive, default=1)
    r.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    r.add_argument("--gui", action="store_true", help="open the PyBullet GUI")
    sub.add_parser("list", help="list scenarios, policies and gymnasium env ids")
    b = sub.add_parser("bench", help="scenarios x policies x episodes into a Markdown/CSV table")
    b.add_argument("--scenarios", type=_names, default=None, help="comma-separated (default: all)")
    b.add_argument("--policies", type=_names, default=["expert"], help="comma-separated")
    b.add_argument("--episodes", type=_positive, default=10)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", type=Path, default=None, help="output dir (default: runs/bench-<time>)")
    return p


def _cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from qrobot.runner import format_episode, format_summary, run, summarize

    results = run(args.scenario, args.policy, args.episodes, args.seed, gui=args.gui,
                  on_episode=lambda r: tqdm.write(format_episode(r)))
    print(format_summary(f"{results[0].scenario} / {args.policy}", summarize(results)))
    return 0


def _cmd_list() -> int:
    from qrobot.envs import env_id
    from qrobot.policies import POLICY_NAMES
    from qrobot.scenario import load_scenario, scenario_names

    print("scenarios:")
    for name in scenario_names():
        sc = load_scenario(name)
        print(f"  {name:<20s} {env_id(name):<28s} {sc.robot:<8s} {sc.task.kind:<11s} {sc.description}")
    print("policies:")
    for name in POLICY_NAMES:
        print(f"  {name}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from qrobot import bench
    from qrobot.policies import POLICY_NAMES
    from qrobot.scenario import load_scenario, scenario_names

    scenarios = args.scenarios or scenario_names()
    for name in scenarios:
        load_scenario(name)  # fail fast, before hours of running
    for pol in args.policies:
        if pol not in POLICY_NAMES:
            raise QrobotError(f"unknown policy {pol!r}; valid names: {', '.join(POLICY_NAMES)}")
    rows = bench.bench(scenarios, args.policies, args.episodes, args.seed)
    out = args.out or Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    md, cs = bench.write(rows, out)
    print(bench.to_markdown(rows))
    print(f"wrote {md} and {cs}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "run":
            return _cmd_run(args)
        if args.cmd == "list":
            return _cmd_list()
        return _cmd_bench(args)
    except QrobotError as exc:
        print(f"qrobot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qrobot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
