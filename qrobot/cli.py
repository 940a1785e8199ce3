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


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
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
    r.add_argument("--gui", action="store_true", help="open the PyBullet GUI (press e for e-stop)")
    r.add_argument("--checkpoint", default=None, help="trained model directory (policy qwen-vla)")
    r.add_argument("--device", default="cpu", help="torch device for learned policies (default: cpu)")
    r.add_argument("--foresight", default=None, metavar="WM_CHECKPOINT",
                   help="world-model checkpoint: the supervisor slows the base before predicted collisions")
    from qrobot.bridge.cli import add_remote_flags

    add_remote_flags(r)
    _record_flags(r)
    c = sub.add_parser("collect", help="record scripted-expert demonstrations to a dataset")
    c.add_argument("scenario")
    c.add_argument("--episodes", type=_positive, default=100)
    c.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    c.add_argument("--out", type=Path, required=True, help="dataset directory")
    c.add_argument("--workers", type=_positive, default=1, help="parallel collector processes")
    c.add_argument("--no-randomize", dest="randomize", action="store_false",
                   help="no lighting/colour randomisation")
    c.add_argument("--action-noise", type=_share, default=0.0, metavar="SIGMA",
                   help="DART: execute the expert's action plus correlated noise of scale up to SIGMA "
                        "(0-1, normalised action units) and record the clean one, so the data shows recoveries")
    t = sub.add_parser("train", help="train the Qwen VLA on a collected dataset")
    t.add_argument("--dataset", type=Path, required=True, nargs="+",
                   help="dataset directory; several (of one scenario) are trained on together")
    t.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    t.add_argument("--backbone", default="tiny-qwen2.5-vl",
                   help="tiny-qwen2.5-vl | tiny-qwen3-vl | tiny-qwen3.5 | checkpoint dir | hub id")
    t.add_argument("--steps", type=_positive, default=2000)
    t.add_argument("--batch", type=_positive, default=16)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--minutes", type=float, default=45.0, help="wall-clock budget")
    t.add_argument("--layers", type=_positive, default=2, help="language-model layers of a tiny backbone")
    t.add_argument("--threads", type=_positive, default=2, help="torch CPU threads")
    t.add_argument("--no-spatial-pool", dest="spatial_pool", action="store_false",
                   help="plain attention pooling (no position codes, no instruction-conditioned queries)")
    t.add_argument("--no-fine-grounding", dest="fine_grounding", action="store_false",
                   help="tabletop: no keypoints on the vision patches in the grounding head")
    t.add_argument("--far-share", type=_share, default=0.25,
                   help="tabletop: batch share drawn from steps with the gripper > 8 cm from the named cube")
    t.add_argument("--keypoint-weight", type=float, default=0.1,
                   help="tabletop: weight of the loss teaching a keypoint where the named cube is seen (0: off)")
    t.add_argument("--no-insulate", dest="insulate", action="store_false",
                   help="tabletop: let the action loss train the backbone too (default: only grounding does)")
    t.add_argument("--no-rays", dest="rays", action="store_false",
                   help="tabletop: do not place the keypoints on the table by camera geometry")
    e = sub.add_parser("eval", help="evaluate a trained VLA on held-out seeds (success, instruction following)")
    e.add_argument("scenario")
    e.add_argument("--checkpoint", required=True, help="trained model directory")
    e.add_argument("--episodes", type=_positive, default=50)
    e.add_argument("--seed", type=int, default=10000, help="first held-out seed (collect uses 0..N-1)")
    e.add_argument("--no-swap", dest="swap", action="store_false", help="skip the tabletop swap test")
    e.add_argument("--device", default="cpu")
    e.add_argument("--workers", type=_positive, default=1, help="parallel evaluation processes (one thread each)")
    e.add_argument("--replan", type=_positive, default=None,
                   help="arm: actions of each predicted chunk executed before predicting again (default 4)")
    from qrobot.worldmodel.cli import add_parsers

    add_parsers(sub, _positive)
    sub.add_parser("list", help="list scenarios, policies and gymnasium env ids")
    v = sub.add_parser("view", help="open a recording in the Rerun viewer")
    v.add_argument("path", type=Path)
    i = sub.add_parser("inspect", help="print a summary read back from a recording (headless)")
    i.add_argument("path", type=Path)
    b = sub.add_parser("bench", help="scenarios x policies x episodes into a Markdown/CSV table")
    b.add_argument("--scenarios", type=_names, default=None, help="comma-separated (default: all)")
    b.add_argument("--policies", type=_names, default=["expert"], help="comma-separated")
    b.add_argument("--episodes", type=_positive, default=10)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", type=Path, default=None, help="output dir (default: runs/bench-<time>)")
    _record_flags(b)
    k = sub.add_parser("keys", help="certificates for the bridge's mutual TLS")
    k.add_argument("action", choices=["init"])
    k.add_argument("dir", type=Path, help="where ca.pem and one ROLE.pem/ROLE.key per role go")
    k.add_argument("--force", action="store_true", help="replace keys already in DIR")
    from qrobot.bridge.cli import add_parsers as bridge_parsers

    bridge_parsers(sub)
    return p


def _record_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-record", dest="record", action="store_false",
                   help="do not record episodes to Rerun (.rrd files; on by default)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where recordings go (default: runs)")


def _cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from qrobot.record import RunDir
    from qrobot.runner import format_episode, format_summary, run, summarize
    from qrobot.scenario import load_scenario

    from qrobot.policies import POLICY_NAMES

    sc = load_scenario(args.scenario)  # bad names fail before a run directory is made
    if args.policy not in POLICY_NAMES:
        raise QrobotError(f"unknown policy {args.policy!r}; valid names: {', '.join(POLICY_NAMES)}")
    from qrobot.bridge.cli import refuse_remote_flags, run_remote

    if args.robot is not None:
        return run_remote(args, sc)
    refuse_remote_flags(args)
    run_dir = RunDir(args.runs_dir, command="run", scenario=args.scenario, policy=args.policy,
                     episodes=args.episodes, seed=args.seed, limits_profile=sc.limits.profile,
                     limits_overrides=dict(sc.limits.overrides)) if args.record else None
    kwargs = {"checkpoint": args.checkpoint, "device": args.device} if args.policy == "qwen-vla" else {}
    results = run(args.scenario, args.policy, args.episodes, args.seed, gui=args.gui,
                  on_episode=lambda r: tqdm.write(format_episode(r)), run_dir=run_dir, policy_kwargs=kwargs,
                  foresight=args.foresight)
    print(format_summary(f"{results[0].scenario} / {args.policy}", summarize(results)))
    if run_dir is not None:
        print(f"recordings: {run_dir.path}/{results[0].scenario}/ (open one with: qrobot view "
              f"{results[0].recording})")
    return 0


def _cmd_collect(args: argparse.Namespace) -> int:
    from qrobot.vla.data import collect

    meta = collect(args.scenario, args.episodes, args.out, args.seed, args.randomize,
                   progress=lambda k, ok: print(f"episode {k} {'ok' if ok else 'failed'}", flush=True),
                   workers=args.workers, action_noise=args.action_noise)
    print(f"{args.out}: {meta['successful']}/{meta['episodes']} successful episodes of {meta['scenario']}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from qrobot.vla.train import TrainConfig, train

    out = train(TrainConfig(args.dataset, args.out, args.backbone, args.steps, args.batch, args.lr, args.minutes,
                            threads=args.threads, layers=args.layers, spatial_pool=args.spatial_pool,
                            fine_grounding=args.fine_grounding, far_share=args.far_share,
                            insulate=args.insulate, keypoint_weight=args.keypoint_weight, rays=args.rays))
    print(f"saved {out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from qrobot.vla.evaluate import evaluate, to_markdown

    report = evaluate(args.checkpoint, args.scenario, args.episodes, args.seed, args.swap, args.device,
                      on_episode=lambda line: print(line, flush=True), workers=args.workers, replan=args.replan)
    print(to_markdown(report))
    return 0


def _cmd_view(path: Path) -> int:
    import os
    import shutil
    import subprocess

    from qrobot.record import summarize_rrd

    summarize_rrd(path)  # a clear error for a missing or unreadable file
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"):
        raise QrobotError(f"no display to open the viewer on; summary: qrobot inspect {path}")
    viewer = shutil.which("rerun") or shutil.which("rerun", path=str(Path(sys.executable).parent))
    if viewer is None:
        raise QrobotError("the Rerun viewer (`rerun`, from rerun-sdk) is not on PATH")
    return subprocess.call([viewer, str(path)])


def _cmd_inspect(path: Path) -> int:
    from qrobot.record.readback import format_summary, summarize_rrd

    print(format_summary(summarize_rrd(path)))
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
    profiles = {name: load_scenario(name).limits.profile for name in scenarios}  # fail fast
    for pol in args.policies:
        if pol not in POLICY_NAMES:
            raise QrobotError(f"unknown policy {pol!r}; valid names: {', '.join(POLICY_NAMES)}")
    from qrobot.record import RunDir

    run_dir = RunDir(args.runs_dir, command="bench", scenarios=scenarios, policies=args.policies,
                     episodes=args.episodes, seed=args.seed, limits_profiles=profiles) if args.record else None
    rows = bench.bench(scenarios, args.policies, args.episodes, args.seed, run_dir=run_dir)
    out = args.out or (run_dir.path if run_dir else Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S"))
    md, cs = bench.write(rows, out)
    print(bench.to_markdown(rows))
    print(f"wrote {md} and {cs}")
    return 0


def _cmd_keys(directory: Path, force: bool) -> int:
    from qrobot.bridge.keys import ROLES, init

    if (directory / "ca.pem").exists() and not force:
        raise QrobotError(f"keys init: {directory} already holds keys (ca.pem); --force replaces them, "
                          "and every peer then needs the new certificates")
    if directory.exists() and not directory.is_dir():
        raise QrobotError(f"keys init: {directory} is a file; give a directory")
    paths = init(directory)
    print(f"wrote {paths['ca']} and a certificate per role ({', '.join(ROLES)}) in {directory}; "
          "keep ca.key offline, give each machine only its role's ROLE.pem/ROLE.key and ca.pem")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "run":
            return _cmd_run(args)
        if args.cmd == "list":
            return _cmd_list()
        if args.cmd == "view":
            return _cmd_view(args.path)
        if args.cmd == "inspect":
            return _cmd_inspect(args.path)
        if args.cmd == "collect":
            return _cmd_collect(args)
        if args.cmd == "train":
            return _cmd_train(args)
        if args.cmd == "eval":
            return _cmd_eval(args)
        if args.cmd == "keys":
            return _cmd_keys(args.dir, args.force)
        if args.cmd in ("robot-sim", "agent", "operator", "agent-replay"):
            from qrobot.bridge.cli import dispatch as bridge

            return bridge(args)
        if args.cmd.startswith("wm-"):
            from qrobot.worldmodel.cli import dispatch

            return dispatch(args)
        return _cmd_bench(args)
    except QrobotError as exc:
        print(f"qrobot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qrobot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
