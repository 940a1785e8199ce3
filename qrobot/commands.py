"""What `qrobot run | eval | bench | collect | train | list` do, once the CLI has parsed them.

Every check of what the user typed happens before anything is built or written; then the
env and policy are made (a bad checkpoint fails here); only then does a run directory
exist. Results go to stdout (`--json`: one JSON document), progress and logs to stderr.
Exit status: 0 clean, 2 a user error (nothing run), 3 finished with an episode that ended
in policy_error or env_error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qrobot.checks import check_dataset_out, check_device, check_gui, check_out_dir, check_seeds
from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from qrobot.record import RunDir

LOG = logging.getLogger("qrobot")
EXIT_OK, EXIT_USER, EXIT_EPISODE_FAILED = 0, 2, 3
LEARNED = ("qwen-vla",)
HELD_OUT_SEED = 10000  # learned policies: the validation range, never trained on (training: 0-9999)


def _check_policy(name: str) -> None:
    from qrobot.policies import policy_names

    if name not in policy_names():
        raise QrobotError(f"unknown policy {name!r}; valid names: {', '.join(policy_names())}")


def _first_seed(args: argparse.Namespace, policy: str) -> int:
    if args.seed is not None:
        return args.seed
    if policy in LEARNED:  # said once the run starts (an error must stay the only line)
        return HELD_OUT_SEED
    return 0


def _policy_flags(cmd: str, args: argparse.Namespace) -> dict[str, Any]:
    """--checkpoint and --device apply to learned policies only: refused otherwise."""
    if args.policy not in LEARNED:
        for flag in ("checkpoint", "device"):
            if getattr(args, flag) is not None:
                raise QrobotError(f"{cmd}: --{flag} applies to policy qwen-vla only, not {args.policy!r}")
        return {}
    device = args.device or "cpu"
    check_device(f"{cmd} --device", device)
    return {"checkpoint": args.checkpoint, "device": device}


def _checkpoint_used(policy: str, kwargs: dict[str, Any], task: str) -> str | None:
    if policy not in LEARNED:
        return None
    from qrobot.policies import SHIPPED

    return str(kwargs.get("checkpoint") or SHIPPED.get(task, ""))


def _exit_status(results: list[Any]) -> int:
    from qrobot.runner import FAILED_REASONS

    failed = [r for r in results if r.end_reason in FAILED_REASONS]
    if failed:
        LOG.warning(
            "%d episode(s) ended in %s: exit status 3", len(failed), ", ".join(sorted({r.end_reason for r in failed}))
        )
        return EXIT_EPISODE_FAILED
    return EXIT_OK


def _emit(args: argparse.Namespace, summary: dict[str, Any], human: Callable[[], None]) -> None:
    if args.json:
        from qrobot.record.rundir import strict_json

        print(json.dumps(strict_json(summary), indent=2))
    else:
        human()


def run_cmd(args: argparse.Namespace) -> int:
    from qrobot.scenario import load_scenario

    sc = load_scenario(args.scenario)  # names are checked before anything heavy is imported
    _check_policy(args.policy)
    from qrobot.bridge.cli import refuse_remote_flags, run_remote

    if args.robot is not None:
        return run_remote(args, sc)
    refuse_remote_flags(args)
    kwargs = _policy_flags("run", args)
    seed = _first_seed(args, args.policy)
    check_seeds("run --seed", seed, args.episodes)
    if args.gui:
        check_gui("run --gui")
    check_out_dir("run --runs-dir", args.runs_dir)

    from qrobot.progress import Progress
    from qrobot.record import RunDir
    from qrobot.runner import EpisodeResult, format_episode, format_summary, prepare, run_episodes, summarize

    session = prepare(args.scenario, args.policy, args.gui, args.record, kwargs, args.foresight, seed)
    checkpoint = _checkpoint_used(args.policy, kwargs, sc.task.kind)
    try:
        run_dir = RunDir(
            args.runs_dir,
            flag="run --runs-dir",
            command="run",
            scenario=sc.name,
            scenario_path=sc.path,
            policy=args.policy,
            checkpoint=checkpoint,
            episodes=args.episodes,
            seed=seed,
            record=args.record,
            limits_profile=sc.limits.profile,
            limits_overrides=dict(sc.limits.overrides),
        )
    except BaseException:
        session.close()
        raise
    if args.seed is None and args.policy in LEARNED:
        LOG.info(
            "seeds from %d: held out from the shipped checkpoints' training seeds (0-9999); --seed chooses others",
            HELD_OUT_SEED,
        )
    out = sys.stderr if args.json else sys.stdout
    bar = Progress(f"{sc.name}/{args.policy}", args.episodes, enabled=not args.quiet)
    results: list[Any] = []

    def on_episode(r: EpisodeResult) -> None:
        results.append(r)
        bar.result(format_episode(r), out)

    status = "crashed"
    try:
        run_episodes(
            session,
            args.episodes,
            seed,
            run_dir,
            args.record,
            on_episode=on_episode,
            progress=bar,
            row_extra={"checkpoint": checkpoint},
        )
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        bar.close()
        session.close()
        summary = {
            "command": "run",
            "status": status,
            "scenario": sc.name,
            "policy": args.policy,
            "checkpoint": checkpoint,
            "seeds": [seed, seed + args.episodes - 1],
            **summarize(results),
            "run_dir": str(run_dir.path),
        }
        summary = run_dir.write_summary(summary)
        run_dir.finish(status)
    _emit(args, summary, lambda: print(format_summary(f"{sc.name} / {args.policy}", summarize(results))))
    LOG.info(
        "results: %s/episodes.jsonl and summary.json%s",
        run_dir.path,
        f"; recordings: {run_dir.path}/{sc.name}/ (open one with: qrobot view {results[0].recording})"
        if args.record and results and results[0].recording
        else "",
    )
    return _exit_status(results)


def eval_cmd(args: argparse.Namespace) -> int:
    from qrobot.scenario import load_scenario

    sc = load_scenario(args.scenario)
    _choose_split(args)
    device = args.device or "cpu"
    check_device("eval --device", device)
    check_out_dir("eval --runs-dir", args.runs_dir)
    from qrobot.record import RunDir
    from qrobot.splits import TUNING_FLAGS
    from qrobot.vla.checkpoint import fits_scenario
    from qrobot.vla.evaluate import evaluate, to_markdown

    if args.replan is not None and sc.robot != "panda":
        raise QrobotError(
            f"eval --replan: applies to arm scenarios (the base re-plans every step); {sc.name} has robot {sc.robot}"
        )
    if args.nav_stop is not None and (sc.robot != "diffbot" or sc.task.kind == "pointnav"):
        raise QrobotError(
            f"eval --nav-stop: applies to a base without a goal vector (objectnav); {sc.name} is a {sc.task.kind} task"
        )
    reason = fits_scenario(Path(args.checkpoint), sc)
    if reason:
        raise QrobotError(f"eval --checkpoint: {reason}")
    if args.phrasing == "held-out" and not sc.task.held_out_instructions:
        raise QrobotError(f"eval --phrasing held-out: {sc.path}: task.held_out_instructions: none listed")
    run_dir = RunDir(
        args.runs_dir,
        flag="eval --runs-dir",
        command="eval",
        scenario=sc.name,
        policy="qwen-vla",
        checkpoint=str(args.checkpoint),
        replan=args.replan,
        nav_stop=list(args.nav_stop) if args.nav_stop is not None else None,
        episodes=args.episodes,
        seed=args.seed,
        split=args.split,
        phrasing=args.phrasing,
        record=False,
    )
    out = sys.stderr if args.json else sys.stdout
    print(
        f"split: {args.split} (seeds {args.seed}-{args.seed + args.episodes - 1}), phrasing: {args.phrasing}",
        file=out,
        flush=True,
    )
    status = "crashed"
    report: dict[str, Any] = {}
    try:
        report = evaluate(
            args.checkpoint,
            args.scenario,
            args.episodes,
            args.seed,
            args.swap,
            device,
            on_episode=lambda line: print(line, file=out, flush=True),
            workers=args.workers,
            replan=args.replan,
            nav_stop=args.nav_stop,
            run_dir=run_dir,
            show=not args.quiet,
            phrasing=args.phrasing,
        )
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except QrobotError:
        run_dir.discard()
        raise
    finally:
        summary = {"command": "eval", "status": status, "split": args.split, **report, "run_dir": str(run_dir.path)}
        if run_dir.path.exists():
            summary = run_dir.write_summary(summary)
            run_dir.finish(status)
    _emit(args, summary, lambda: print(to_markdown(report)))
    failed = report.get("policy_errors", 0) + report.get("env_errors", 0)
    variant = [flag for flag in TUNING_FLAGS if getattr(args, flag[2:].replace("-", "_"), None) is not None]
    if args.card and variant:  # a variant's figures are not the checkpoint's: they never reach its card
        print(f"eval {variant[0]}: a variant under validation; the model card is left as it is", file=sys.stderr)
    elif args.card:
        _record_eval(args, device, report, failed)
    return EXIT_EPISODE_FAILED if failed else EXIT_OK


def _choose_split(args: argparse.Namespace) -> None:
    """--split and --seed agree; the test split runs the model as shipped, once (per phrasing)."""
    from qrobot.splits import TUNING_FLAGS, check_split, first_seed, split_of

    if args.seed is None:
        args.split = args.split or "validation"
        args.seed = first_seed(args.split)
    check_seeds("eval --seed", args.seed, args.episodes)
    args.split = args.split or split_of(args.seed)
    check_split("eval --seed", args.split, args.seed, args.episodes)
    if args.split != "test":
        return
    for flag in TUNING_FLAGS:
        if getattr(args, flag[2:].replace("-", "_"), None) is not None:  # (each is a value flag, default None)
            raise QrobotError(
                f"eval {flag}: the test split runs the checkpoint as shipped; choose {flag} on --split validation"
            )
    from qrobot import cards

    if args.card and (Path(args.checkpoint) / cards.RESULTS_FILE).is_file():
        _, records = cards.load(args.checkpoint)
        held_out = args.phrasing == "held-out"
        done = [
            r
            for r in records
            if r.split == "test"
            and r.scenario == args.scenario
            and r.metric.endswith(cards.HELD_OUT_PHRASING) == held_out
        ]
        if done:
            raise QrobotError(
                f"eval --split test: {args.checkpoint} was already measured on the test split for {args.scenario} "
                f"(command: {done[0].command}; in {cards.RESULTS_FILE}); a test figure is measured "
                "once per checkpoint and phrasing: evaluate on --split validation, or --no-card to look without recording"
            )


def _record_eval(args: argparse.Namespace, device: str, report: dict[str, Any], failed: int) -> None:
    """Store the figures with the checkpoint (results.json) and regenerate its model card."""
    import dataclasses
    import shlex

    from qrobot import cards

    if failed:
        cards.warn(f"{args.checkpoint}: the model card was not updated ({failed} episodes ended in an error)")
        return
    argv = ["qrobot", "eval", args.scenario, "--split", args.split, "--episodes", str(args.episodes)]
    argv += ["--seed", str(args.seed)]
    argv += ["--checkpoint", str(args.checkpoint)] + (["--workers", str(args.workers)] if args.workers != 1 else [])
    argv += (["--replan", str(args.replan)] if args.replan else []) + ([] if args.swap else ["--no-swap"])
    argv += ["--device", device] if device != "cpu" else []
    argv += ["--phrasing", args.phrasing] if args.phrasing != "seen" else []
    records = cards.vla_records(report, shlex.join(argv))
    if args.phrasing != "seen":  # beside the seen figures of the same seeds, not in their place
        records = [dataclasses.replace(r, metric=r.metric + cards.HELD_OUT_PHRASING, bar=None) for r in records]
    if cards.record_result(args.checkpoint, records):
        LOG.info("figures stored in %s (model card: %s)", *(args.checkpoint / f for f in cards.FILES))


def _bench_args(args: argparse.Namespace) -> RunDir | None:
    """--resume takes the run's own arguments; a flag that contradicts them is refused."""
    from qrobot.record import RunDir

    if args.resume is None:
        args.policies = args.policies or ["expert"]
        args.episodes = args.episodes or 10
        args.seed = 0 if args.seed is None else args.seed
        return None
    run = RunDir.reopen(args.resume, flag="bench --resume")
    if run.info.get("command") != "bench":
        raise QrobotError(f"bench --resume {args.resume}: a {run.info.get('command')!r} run, not a bench run")
    for flag in ("scenarios", "policies", "episodes", "seed"):
        given, kept = getattr(args, flag), run.info.get(flag)
        if given is not None and given != kept:
            raise QrobotError(f"bench --resume: --{flag} {given} differs from the run's own ({kept}); drop the flag")
        setattr(args, flag, kept)
    args.record = bool(run.info.get("record", args.record))  # recordings as the run began
    return run


def bench_cmd(args: argparse.Namespace) -> int:
    from qrobot.scenario import load_scenario, scenario_names

    resumed = _bench_args(args)
    scenarios = args.scenarios or scenario_names()
    loaded = {name: load_scenario(name) for name in scenarios}  # fail fast on a bad name
    named: dict[str, str] = {}
    for given, sc in loaded.items():  # episode rows carry the scenario's name, not the path given
        if named.setdefault(sc.name, given) != given:
            raise QrobotError(
                f"bench --scenarios: {named[sc.name]} and {given} are both scenario {sc.name!r}; "
                "give each scenario file its own name"
            )
    from qrobot import bench, matrix
    from qrobot.record import RunDir

    specs = [matrix.PolicySpec.parse(p) for p in args.policies]
    if args.address is not None and args.executor != "ray":
        raise QrobotError("bench --address: applies to --executor ray only")
    policy_gpus = getattr(args, "policy_gpus", None) or 0
    if policy_gpus:
        from qrobot.policy_server_ray import check_policy_gpus

        check_policy_gpus(policy_gpus, args.executor, [s.name for s in specs])
    check_seeds("bench --seed", args.seed, args.episodes)
    check_out_dir("bench --runs-dir", args.runs_dir)
    if args.out is not None:
        check_out_dir("bench --out", args.out)
    pairs, skipped = bench.plan(loaded, specs)
    if not pairs:
        raise QrobotError(
            "bench: no scenario fits any given policy: " + "; ".join(f"{s}/{p}: {why}" for s, p, why in skipped)
        )
    if args.executor == "ray":  # before a run directory exists: no Ray, no cluster is one line
        from qrobot.ray_executor import connect

        connect(args.address, policy_gpus)
    run_dir = resumed or RunDir(
        args.runs_dir,
        flag="bench --runs-dir",
        command="bench",
        scenarios=scenarios,
        policies=args.policies,
        episodes=args.episodes,
        seed=args.seed,
        record=args.record,
        limits_profiles={n: s.limits.profile for n, s in loaded.items()},
    )
    status, rows = "crashed", []
    try:
        rows = bench.bench(
            pairs,
            args.episodes,
            args.seed,
            run_dir,
            args.record,
            args.workers,
            show=not args.quiet,
            executor=args.executor,
            address=args.address,
            policy_gpus=policy_gpus,
        )
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        summary = {
            "command": "bench",
            "status": status,
            "rows": rows,
            "skipped": [{"scenario": s, "policy": p, "reason": why} for s, p, why in skipped],
            "run_dir": str(run_dir.path),
        }
        summary = run_dir.write_summary(summary)
        run_dir.finish(status)
        from qrobot.report import report_after_bench  # Ctrl-C too: the partial report

        report_after_bench(run_dir.path)
        if status != "finished":
            LOG.warning("finished episodes are kept; continue with: qrobot bench --resume %s", run_dir.path)
    md, cs = bench.write(rows, args.out or run_dir.path)
    parquet = matrix.write_parquet(run_dir.path)
    _emit(args, summary, lambda: print(bench.to_markdown(rows)))
    for s, p, why in skipped:
        LOG.info("skipped %s / %s: %s", s, p, why)
    LOG.info("wrote %s, %s and %s; per-episode results in %s/episodes.jsonl", md, cs, parquet, run_dir.path)
    failed = sum(r["policy_errors"] + r.get("env_errors", 0) for r in rows)
    return EXIT_EPISODE_FAILED if failed else EXIT_OK


def collect_cmd(args: argparse.Namespace) -> int:
    from qrobot.scenario import load_scenario

    sc = load_scenario(args.scenario)
    check_seeds("collect --seed", args.seed, args.episodes)
    from qrobot.vla.checkpoint import scenario_dims

    proprio, goal, action = scenario_dims(sc)
    from qrobot.export.lerobot import collect_target

    fmt = getattr(args, "format", "npz")
    dest = collect_target("collect --out", args.out, fmt, sc)  # lerobot: npz staged in OUT, then exported
    check_dataset_out(
        "collect --out",
        dest,
        {
            "scenario": sc.name,
            "robot": sc.robot,
            "task": sc.task.kind,
            "cameras": [c.name for c in sc.cameras],
            "image_size": [sc.cameras[0].height, sc.cameras[0].width],
            "proprio_dim": proprio,
            "goal_dim": goal,
            "action_dim": action,
        },
    )
    from qrobot.vla.data import collect

    meta = collect(
        args.scenario,
        args.episodes,
        dest,
        args.seed,
        args.randomize,
        show=not args.quiet,
        workers=args.workers,
        action_noise=args.action_noise,
    )
    print(f"{args.out}: {meta['successful']}/{meta['episodes']} successful episodes of {meta['scenario']}")
    if fmt == "lerobot":
        from qrobot.export.lerobot import finish_collect

        print(finish_collect(dest, args.out))
    return EXIT_OK


def export_cmd(args: argparse.Namespace) -> int:
    """`qrobot export lerobot DATASET OUT`: a collected dataset as a LeRobotDataset v3.0."""
    from qrobot.export.lerobot import describe, export_lerobot

    print(describe(args.out, export_lerobot(args.dataset, args.out, repo_id=args.repo_id)))
    return EXIT_OK


def train_cmd(args: argparse.Namespace) -> int:
    for d in args.dataset:
        if not (Path(d) / "meta.json").is_file():
            raise QrobotError(
                f"train --dataset: {d}: not a qrobot dataset (no meta.json; make one with `qrobot collect`)"
            )
    check_out_dir("train --out", args.out)
    check_device("train --device", args.device)
    from qrobot.vla.backbones import TINY

    tiny = args.backbone in TINY
    finetune = args.finetune or ("none" if tiny else "lora")
    if finetune == "lora" and tiny:
        raise QrobotError(
            f"train --finetune lora: {args.backbone} is trained from scratch; LoRA needs a pretrained "
            "backbone (a checkpoint directory or a hub id)"
        )
    if args.lora_rank is not None and finetune != "lora":
        raise QrobotError(f"train --lora-rank: applies to --finetune lora only (here: {finetune})")
    if finetune == "lora":
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise QrobotError("train --finetune lora: needs peft (pip install 'qrobot[finetune]')")
    from qrobot.vla.train import TrainConfig, train

    out = train(
        TrainConfig(
            args.dataset,
            args.out,
            args.backbone,
            args.steps,
            args.batch,
            args.lr,
            args.minutes,
            threads=args.threads,
            layers=args.layers,
            spatial_pool=args.spatial_pool,
            fine_grounding=args.fine_grounding,
            far_share=args.far_share,
            insulate=args.insulate,
            keypoint_weight=args.keypoint_weight,
            rays=args.rays,
            resume=args.resume,
            device=args.device,
            finetune=finetune,
            lora_rank=args.lora_rank or 16,
            bf16=args.bf16,
            gradient_checkpointing=args.gradient_checkpointing,
        )
    )
    print(f"saved {out}")
    return EXIT_OK


def list_cmd() -> int:
    from qrobot.envs import env_id
    from qrobot.policies import SHIPPED, policy_names, unfit_reason
    from qrobot.scenario import load_scenario, scenario_names

    scenarios = [load_scenario(n) for n in scenario_names()]
    print("scenarios:")
    for sc in scenarios:
        print(f"  {sc.name:<20s} {env_id(sc.name):<28s} {sc.robot:<8s} {sc.task.kind:<11s} {sc.description}")
    print("policies, and the scenarios each drives:")
    for name in policy_names():
        try:
            fit = [sc.name for sc in scenarios if unfit_reason(name, sc) is None]
        except QrobotError as exc:  # a plugin that cannot be loaded: said, not fatal
            print(f"  {name:<14s} ({exc})")
            continue
        print(f"  {name:<14s} {'all' if len(fit) == len(scenarios) else ', '.join(fit) or 'none'}")
    print("shipped checkpoints:")
    for task, path in sorted(SHIPPED.items()):
        print(f"  qwen-vla for {task}: {path}")
    wm = Path(__file__).resolve().parent / "checkpoints" / "world_model"
    if (wm / "wm_config.json").is_file():
        print(f"  world model (run --foresight): {wm}")
    return EXIT_OK
