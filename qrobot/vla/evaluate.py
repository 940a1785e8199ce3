"""`qrobot eval`: a trained VLA on held-out seeds, with instruction-following checks.

Success comes from the task. For tabletop tasks it also reports which cube moved:
`followed` = the cube the instruction names is the one displaced most; the swap test
re-runs the same seed with the instruction naming a different cube of the scene and
checks that a different cube moves (and whether it is the newly named one). The
evaluator reads the scene's colours from the task to build the swapped instruction;
the policy only ever sees observations.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy
from qrobot.runner import EpisodeResult, run_episode, summarize, wilson_interval


class _Renamed:
    """The same policy, told a different object name than the env's instruction."""

    def __init__(self, policy: Any, old: str, new: str) -> None:
        self.policy, self.old, self.new = policy, old, new
        self.name = policy.name

    def reset(self, instruction: str) -> None:
        self.policy.reset(instruction.replace(self.old, self.new))

    def act(self, obs: dict[str, Any]) -> Any:
        return self.policy.act({**obs, "instruction": obs["instruction"].replace(self.old, self.new)})


@dataclass
class TabletopOutcome:
    named: str
    moved: str
    swap_named: str = ""
    swap_moved: str = ""


def _cube_names(env: QRobotEnv) -> tuple[str, list[str]]:
    task = env.task
    return f"{task.colors[task.target_name]} cube", [f"{task.colors[c]} cube" for c in task.cubes]


def evaluate(checkpoint: str | Path, scenario: str, episodes: int, seed: int = 10000, swap: bool = True,
             device: str = "cpu", on_episode: Callable[[str], None] | None = None) -> dict[str, Any]:
    env = QRobotEnv(scenario, images=True)
    policy = make_policy("qwen-vla", env, checkpoint=str(checkpoint), device=device, seed=seed)
    tabletop = hasattr(env.task, "moved_object")
    results: list[EpisodeResult] = []
    outcomes: list[TabletopOutcome] = []
    try:
        for k in range(episodes):
            res = run_episode(env, policy, k, seed + k)
            results.append(res)
            line = f"seed {seed + k}: {res.end_reason} in {res.steps} steps"
            if tabletop:
                named, cubes = _cube_names(env)
                out = TabletopOutcome(named, env.task.moved_object())
                if swap:
                    other = next(c for c in cubes[1:] + cubes[:1] if c != named)
                    run_episode(env, _Renamed(policy, named, other), k, seed + k)
                    out.swap_named, out.swap_moved = other, env.task.moved_object()
                outcomes.append(out)
                line += f"; named {out.named}, moved {out.moved or 'nothing'}"
                if swap:
                    line += f"; swap: named {out.swap_named}, moved {out.swap_moved or 'nothing'}"
            if on_episode is not None:
                on_episode(line)
    finally:
        env.close()
    report: dict[str, Any] = {"scenario": env.scenario.name, "checkpoint": str(checkpoint),
                              "seeds": [seed, seed + episodes - 1], **summarize(results)}
    if outcomes:
        n = len(outcomes)
        followed = sum(o.moved == o.named for o in outcomes)
        report |= {"followed": followed / n, "followed_ci": wilson_interval(followed, n)}
        if swap:
            diff = sum(bool(o.swap_moved) and o.swap_moved != o.moved for o in outcomes)
            renamed = sum(o.swap_moved == o.swap_named for o in outcomes)
            report |= {"swap_different": diff / n, "swap_named": renamed / n}
    return report


def to_markdown(r: dict[str, Any]) -> str:
    head = "| scenario | seeds | episodes | success | 95% CI | SPL |"
    spl = f"{r['spl']:.2f}" if "spl" in r else "-"
    row = (f"| {r['scenario']} | {r['seeds'][0]}-{r['seeds'][1]} | {r['episodes']} | {r['success_rate']:.0%} "
           f"| {r['ci_low']:.0%}-{r['ci_high']:.0%} | {spl} |")
    if "followed" in r:
        head += " named cube moved |"
        row += f" {r['followed']:.0%} |"
    if "swap_different" in r:
        head += " swap: other cube moved | swap: newly named cube moved |"
        row += f" {r['swap_different']:.0%} | {r['swap_named']:.0%} |"
    return "\n".join([head, "|" + "---|" * head.count(" |"), row])
