"""The `qrobot` command. User mistakes print one line and exit 2 (see qrobot.commands).

Only argparse and the scenario loader are imported before a name is checked, so help
and a bad name answer quickly.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path

import qrobot
from qrobot.errors import QrobotError


class _Parser(argparse.ArgumentParser):
    """A usage mistake is one line on stderr, exit 2 (argparse prints the usage too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("qrobot").strip()
        self.exit(2, f"qrobot: error: {where + ': ' if where else ''}{message} (see {self.prog} --help)\n")


class _Defaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already states one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or action.default in (None, argparse.SUPPRESS, False)
            or not action.option_strings
            or isinstance(action, argparse._HelpAction)
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _chunk_share(text: str) -> int:
    value = _positive(text)
    if value > 64:
        raise argparse.ArgumentTypeError(f"expected 1 to 64 (actions of one chunk), got {value}")
    return value


def _nav_stop(text: str) -> tuple[float, float, int]:
    """XY,TH,K: stop when the last waypoint stays within XY m and TH rad for K steps running."""
    want = "XY,TH,K: 0 < XY <= 1 (m), 0 < TH <= 3.15 (rad), K an integer 1 to 50 (steps)"
    try:
        xy, th, k = (p.strip() for p in text.split(","))
        value = (float(xy), float(th), int(k))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
    if not (0 < value[0] <= 1 and 0 < value[1] <= 3.15 and 1 <= value[2] <= 50):
        raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
    return value


def _number(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] ((low, high] with `low_open`)."""
    want = f"a finite number {'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not ((value > low if low_open else value >= low) and value <= high and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {want}, got {value}")
        return value

    return parse


_share = _number(0.0, 1.0)  # shares of a batch, noise scales
_rate = _number(0.0, math.inf, True)  # learning rates, minutes
_weight = _number(0.0, math.inf)  # loss weights


def _names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return names


def _path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def _text(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a value, got an empty string")
    return text


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="qrobot",
        formatter_class=_Defaults,
        description="qrobot: policies behind a safety "
        "supervisor in PyBullet scenarios. Exit status: 0 clean, 2 a user error (nothing ran), "
        "3 finished but an episode ended in policy_error or env_error.",
    )
    p.add_argument("--version", action="version", version=f"qrobot {qrobot.__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a policy on a scenario for N episodes")
    r.add_argument("scenario", help="scenario name (see `qrobot list`) or path to a .toml file")
    r.add_argument("--policy", default="expert", help="policy name (see `qrobot list`)")
    r.add_argument("--episodes", type=_positive, default=1)
    r.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the first episode (default: 0; 10000 for learned policies, held out from training)",
    )
    r.add_argument("--gui", action="store_true", help="open the PyBullet GUI (press e for e-stop)")
    r.add_argument(
        "--checkpoint",
        default=None,
        type=_text,
        help="trained model directory (policy qwen-vla; default: the shipped one for the scenario's task)",
    )
    r.add_argument(
        "--device", default=None, type=_text, help="torch device for qwen-vla: cpu, cuda, cuda:N, mps (default: cpu)"
    )
    r.add_argument(
        "--foresight",
        default=None,
        type=_text,
        metavar="WM_CHECKPOINT",
        help="world-model checkpoint: the supervisor slows the base before predicted collisions",
    )
    from qrobot.bridge.cli import add_remote_flags

    add_remote_flags(r)
    _record_flags(r)
    _json_flag(r)
    c = sub.add_parser("collect", help="record scripted-expert demonstrations to a dataset")
    c.add_argument("scenario")
    c.add_argument("--episodes", type=_positive, default=100)
    c.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    c.add_argument("--out", type=_path, required=True, help="dataset directory")
    c.add_argument("--workers", type=_positive, default=1, help="parallel collector processes")
    c.add_argument("--no-randomize", dest="randomize", action="store_false", help="no lighting/colour randomisation")
    c.add_argument(
        "--action-noise",
        type=_share,
        default=0.0,
        metavar="SIGMA",
        help="DART: execute the expert's action plus correlated noise of scale up to SIGMA "
        "(0-1, normalised action units) and record the clean one, so the data shows recoveries",
    )
    c.add_argument(
        "--format",
        choices=["npz", "lerobot"],
        default="npz",
        help="npz: qrobot's episodes (ep<k>-seed<s>.npz); lerobot: a LeRobotDataset v3.0 "
        "(parquet and MP4; docs/robots/lerobot.md)",
    )
    x = sub.add_parser("export", help="write a collected dataset in another format (lerobot: LeRobotDataset v3.0)")
    x.add_argument("format", choices=["lerobot"], help="lerobot: a LeRobotDataset v3.0 (docs/robots/lerobot.md)")
    x.add_argument("dataset", type=_path, help="a dataset made by `qrobot collect`")
    x.add_argument("out", type=_path, help="the directory to write: new or empty")
    x.add_argument("--repo-id", type=_text, default=None, help="its Hugging Face id (default: qrobot/<scenario>)")
    t = sub.add_parser("train", help="train the Qwen VLA on a collected dataset")
    t.add_argument(
        "--dataset",
        type=_path,
        required=True,
        nargs="+",
        help="dataset directory; several (of one scenario) are trained on together",
    )
    t.add_argument("--out", type=_path, required=True, help="checkpoint directory")
    t.add_argument(
        "--backbone",
        default="tiny-qwen2.5-vl",
        help="tiny-qwen2.5-vl | tiny-qwen3-vl | tiny-qwen3.5 | checkpoint dir | hub id",
    )
    t.add_argument("--steps", type=_positive, default=2000)
    t.add_argument("--batch", type=_positive, default=16)
    t.add_argument("--lr", type=_rate, default=3e-4)
    t.add_argument("--minutes", type=_rate, default=45.0, help="wall-clock budget")
    t.add_argument("--layers", type=_positive, default=2, help="language-model layers of a tiny backbone")
    t.add_argument("--threads", type=_positive, default=2, help="torch CPU threads")
    t.add_argument(
        "--resume",
        action="store_true",
        help="go on from the last snapshot (checkpoint-N) in --out: weights, optimiser, schedule and the time spent",
    )
    t.add_argument(
        "--no-spatial-pool",
        dest="spatial_pool",
        action="store_false",
        help="plain attention pooling (no position codes, no instruction-conditioned queries)",
    )
    t.add_argument(
        "--no-fine-grounding",
        dest="fine_grounding",
        action="store_false",
        help="tabletop: no keypoints on the vision patches in the grounding head",
    )
    t.add_argument(
        "--far-share",
        type=_share,
        default=0.25,
        help="tabletop: batch share drawn from steps with the gripper > 8 cm from the named cube",
    )
    t.add_argument(
        "--keypoint-weight",
        type=_weight,
        default=0.1,
        help="tabletop: weight of the loss teaching a keypoint where the named cube is seen (0: off)",
    )
    t.add_argument(
        "--no-insulate",
        dest="insulate",
        action="store_false",
        help="tabletop: let the action loss train the backbone too (default: only grounding does)",
    )
    t.add_argument(
        "--no-rays",
        dest="rays",
        action="store_false",
        help="tabletop: do not place the keypoints on the table by camera geometry",
    )
    t.add_argument("--device", default="cpu", type=_text, help="torch device: cpu, cuda, cuda:N, mps")
    t.add_argument(
        "--finetune",
        choices=("none", "lora", "full"),
        default=None,
        help="what of the backbone trains: lora (adapters on the language model; default for a "
        "checkpoint dir or hub id), full, or none (everything as built; default for tiny-*)",
    )
    t.add_argument("--lora-rank", type=_positive, default=None, help="LoRA rank (default: 16)")
    t.add_argument("--bf16", action="store_true", help="bf16 autocast (under LoRA the frozen backbone in bf16 too)")
    t.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute each layer's activations in the backward pass (less memory, more compute)",
    )
    e = sub.add_parser("eval", help="evaluate a trained VLA on held-out seeds (success, instruction following)")
    e.add_argument("scenario")
    e.add_argument("--checkpoint", required=True, type=_path, help="trained model directory")
    e.add_argument("--episodes", type=_positive, default=50)
    e.add_argument(
        "--split",
        choices=("validation", "ci", "test"),
        default=None,
        help="the seed range to evaluate on (docs/evaluation.md): validation 10000-19999 and 30000-39999 "
        "(choosing between variants), ci 20000-29999, test 40000+ (once per checkpoint, no tuning flags); "
        "default: the split --seed falls in, else validation",
    )
    e.add_argument("--seed", type=int, default=None, help="first seed (default: the first of --split)")
    e.add_argument("--no-swap", dest="swap", action="store_false", help="skip the tabletop swap test")
    e.add_argument(
        "--phrasing",
        choices=("seen", "held-out"),
        default="seen",
        help="instruction templates: the scenario's training ones (seen) or its held_out_instructions, "
        "never in training (same seeds, same scenes; default: seen)",
    )
    e.add_argument("--device", default=None, type=_text, help="torch device: cpu, cuda, cuda:N, mps (default: cpu)")
    e.add_argument("--workers", type=_positive, default=1, help="parallel evaluation processes (one thread each)")
    e.add_argument(
        "--replan",
        type=_chunk_share,
        default=None,
        help="arm: actions of each predicted chunk executed before predicting again (default 4)",
    )
    e.add_argument(
        "--nav-stop",
        type=_nav_stop,
        default=None,
        metavar="XY,TH,K",
        help="objectnav: stop when the last predicted waypoint stays within XY m and TH rad for K steps "
        "running (default: the checkpoint's nav_stop; a validation-split choice)",
    )
    e.add_argument(
        "--runs-dir", type=_path, default=Path("runs"), help="where episodes.jsonl and summary.json go (runs/<run-id>/)"
    )
    e.add_argument(
        "--no-card",
        dest="card",
        action="store_false",
        help="leave the checkpoint as it is (default: the figures go to its results.json and model card)",
    )
    _json_flag(e)
    from qrobot.worldmodel.cli import add_parsers

    add_parsers(sub, _positive, _rate, _path)
    sub.add_parser("list", help="list scenarios, policies and gymnasium env ids")
    v = sub.add_parser("view", help="open a recording in the Rerun viewer")
    v.add_argument("path", type=_path)
    i = sub.add_parser("inspect", help="summarise a run directory or one recording (headless)")
    i.add_argument("path", type=_path, help="runs/<run-id> (success table, recordings) or one .rrd file")
    sn = sub.add_parser(
        "snapshot", help="render a recording to PNG with the real Rerun viewer, headless (needs a Vulkan driver)"
    )
    sn.add_argument("path", type=_path, help="an .rrd file")
    sn.add_argument("out", type=_path, help="the PNG to write")
    sn.add_argument("--step", type=int, default=None, help="the step to show (default: the last)")
    rp = sub.add_parser("report", help="a run as a static HTML page with PNG plots (success, SPL, safety)")
    rp.add_argument("run_dir", type=_path, help="runs/<run-id> (a partial or killed run too)")
    rp.add_argument("--out", type=_path, default=None, help="where index.html goes (default: RUN_DIR/report)")
    cp = sub.add_parser("compare", help="two runs cell by cell: Fisher's exact test on success, Holm-corrected")
    cp.add_argument("run_a", type=_path)
    cp.add_argument("run_b", type=_path)
    cp.add_argument("--alpha", type=_number(0.0, 1.0, True), default=0.05, help="family-wise error rate")
    cp.add_argument("--policy-a", default=None, type=_text, help="compare this policy of RUN_A ...")
    cp.add_argument("--policy-b", default=None, type=_text, help="... with this one of RUN_B, scenario by scenario")
    cp.add_argument(
        "--out", type=_path, default=None, help="where index.html goes (default: compare-A-vs-B beside RUN_B)"
    )
    b = sub.add_parser("bench", help="scenarios x policies x episodes into a Markdown/CSV table")
    b.add_argument("--scenarios", type=_names, default=None, help="comma-separated (default: all)")
    b.add_argument(
        "--policies",
        type=_names,
        default=None,
        help="comma-separated; qwen-vla=DIR for a checkpoint of your own (default: expert)",
    )
    b.add_argument("--episodes", type=_positive, default=None, help="seeds per (scenario, policy) pair (default: 10)")
    b.add_argument("--seed", type=int, default=None, help="first seed (default: 0)")
    b.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="processes, one torch thread each (1: in this process; default: the core count); "
        "with --executor ray: actors (default: the cluster's CPUs)",
    )
    b.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: this machine; ray: an existing Ray cluster (pip install 'qrobot[ray]')",
    )
    b.add_argument(
        "--address",
        type=_text,
        default=None,
        help="with --executor ray: the cluster, auto (this machine's) or HOST:PORT (default: auto)",
    )
    b.add_argument(
        "--policy-gpus",
        type=_positive,
        default=None,
        metavar="N",
        help="with --executor ray: serve the policies that have act_batch (qwen-vla) from N policy actors, "
        "one GPU each, batching the env workers' requests",
    )
    b.add_argument(
        "--resume",
        type=_path,
        default=None,
        metavar="RUN_DIR",
        help="continue a bench run: its unfinished (scenario, policy, seed) cells only, with its own arguments",
    )
    b.add_argument(
        "--out", type=_path, default=None, help="where bench.md and bench.csv go (default: the run directory)"
    )
    _record_flags(b)
    _json_flag(b)
    sp = sub.add_parser("serve-policy", help="serve a policy to `remote` policies over the bridge's transport")
    sp.add_argument("policy", help="a policy that sees observations only (qwen-vla, random, hold, a plugin)")
    sp.add_argument("--listen", "--endpoint", required=True, type=_text, help="tls/HOST:PORT to listen on")
    sp.add_argument("--keys", type=_path, default=Path("keys"), help="`qrobot keys init` directory (policy.pem)")
    sp.add_argument("--scenario", type=_names, default=None, help="comma-separated: serve only these (default: any)")
    sp.add_argument("--checkpoint", type=_path, default=None, help="qwen-vla: trained model directory")
    sp.add_argument("--device", type=_text, default=None, help="qwen-vla: torch device (default: cpu)")
    sp.add_argument("--seed", type=int, default=0, help="the policies' seed before any episode re-seeds them")
    sp.add_argument("--threads", type=_positive, default=1, help="torch CPU threads")
    k = sub.add_parser("keys", help="certificates for the bridge's mutual TLS")
    k.add_argument("action", choices=["init"])
    k.add_argument("dir", type=_path, help="where ca.pem and one ROLE.pem/ROLE.key per role go")
    k.add_argument("--force", action="store_true", help="replace keys already in DIR")
    from qrobot.bridge.cli import add_parsers as bridge_parsers

    bridge_parsers(sub)
    for command in sub.choices.values():
        command.formatter_class = _Defaults
        for action in command._actions:  # options without help still show their default
            if action.help is None and action.option_strings and action.default not in (None, False):
                action.help = "(default: %(default)s)"
        loud = command.add_mutually_exclusive_group()
        loud.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr, no progress")
        loud.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    return p


def _json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON document on stdout (episode lines go to stderr)",
    )


def _record_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-record",
        dest="record",
        action="store_false",
        help="do not record episodes to Rerun (.rrd files; on by default); results are written either way",
    )
    p.add_argument(
        "--runs-dir",
        type=_path,
        default=Path("runs"),
        help="where runs/<run-id>/ (run.json, episodes.jsonl, summary.json, recordings) goes",
    )


def _cmd_view(path: Path) -> int:
    import os
    import shutil
    import subprocess

    from qrobot.record import summarize_rrd

    summarize_rrd(path)  # a clear error for a missing or unreadable file
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"):
        raise QrobotError(
            f"no display to open the viewer on; serve it to a browser: rerun {path} --serve-web "
            f"(then open http://localhost:9090), a picture: qrobot snapshot {path} out.png, "
            f"a summary: qrobot inspect {path}"
        )
    viewer = shutil.which("rerun") or shutil.which("rerun", path=str(Path(sys.executable).parent))
    if viewer is None:
        raise QrobotError("the Rerun viewer (`rerun`, from rerun-sdk) is not on PATH")
    return subprocess.call([viewer, str(path)])


def _cmd_inspect(path: Path) -> int:
    if path.is_dir():
        from qrobot.record.inspect_run import format_run, summarize_run

        print(format_run(summarize_run(path)))
        return 0
    from qrobot.record.readback import format_summary, summarize_rrd

    print(format_summary(summarize_rrd(path)))
    return 0


def _cmd_snapshot(path: Path, out: Path, step: int | None) -> int:
    from qrobot.record.snapshot import snapshot

    if out.suffix.lower() != ".png":
        raise QrobotError(f"snapshot: {out}: the picture is written as PNG; give a name ending in .png")
    if step is not None and step < 0:
        raise QrobotError(f"snapshot --step: {step} is not a step (0 or more)")
    problems = {view: r for view, r in snapshot(path, out, step=step).items() if r}
    print(f"wrote {out}" + "".join(f"\n  view {v}: {'; '.join(r)}" for v, r in problems.items()))
    return 0


def _cmd_keys(directory: Path, force: bool) -> int:
    from qrobot.bridge.keys import ROLES, init

    if (directory / "ca.pem").exists() and not force:
        raise QrobotError(
            f"keys init: {directory} already holds keys (ca.pem); --force replaces them, "
            "and every peer then needs the new certificates"
        )
    from qrobot.checks import check_out_dir

    check_out_dir("keys init", directory)
    names = ["ca.pem", "ca.key"] + [f"{role}.{ext}" for role in ROLES for ext in ("pem", "key")]
    blocked = [n for n in names if (directory / n).exists() and not (directory / n).is_file()]
    if blocked:
        raise QrobotError(f"keys init: {directory}: {', '.join(blocked)} in the way (not files)")
    paths = init(directory)
    print(
        f"wrote {paths['ca']} and a certificate per role ({', '.join(ROLES)}) in {directory}; "
        "keep ca.key offline, give each machine only its role's ROLE.pem/ROLE.key and ca.pem"
    )
    return 0


def _logging(args: argparse.Namespace) -> None:
    level = (
        logging.WARNING
        if getattr(args, "quiet", False)
        else (logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("qrobot")
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _logging(args)
    try:
        if args.cmd in ("run", "eval", "bench", "collect", "export", "train", "list"):
            from qrobot import commands

            if args.cmd == "list":
                return commands.list_cmd()
            return getattr(commands, f"{args.cmd}_cmd")(args)
        if args.cmd == "view":
            return _cmd_view(args.path)
        if args.cmd == "inspect":
            return _cmd_inspect(args.path)
        if args.cmd == "snapshot":
            return _cmd_snapshot(args.path, args.out, args.step)
        if args.cmd == "keys":
            return _cmd_keys(args.dir, args.force)
        if args.cmd == "serve-policy":
            from qrobot.policies.remote import serve_cmd

            return serve_cmd(args)
        if args.cmd == "report":
            from qrobot.report import report_cmd

            return report_cmd(args.run_dir, args.out)
        if args.cmd == "compare":
            from qrobot.compare import compare_cmd

            return compare_cmd(args.run_a, args.run_b, args.alpha, args.out, args.policy_a, args.policy_b)
        if args.cmd in (
            "robot-sim",
            "agent",
            "operator",
            "agent-replay",
            "console",
            "robot-ros2",
            "robot-franka",
            "robot-lerobot",
        ):
            from qrobot.bridge.cli import dispatch as bridge

            return bridge(args)
        from qrobot.worldmodel.cli import dispatch

        return dispatch(args)
    except QrobotError as exc:
        print(f"qrobot: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path the system cannot use (too long, a loop, a device, ...)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"qrobot: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qrobot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
