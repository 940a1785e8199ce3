"""Foresight vs reactive rules alone: a noisy driver in a cluttered room.

    .venv/bin/python benchmarks/foresight.py --checkpoint DIR [--episodes 50] [--seed 10000]

Runs the same seeded episodes of `noisy-expert` (the scripted expert with random drifts)
on `pointnav_clutter` twice: behind the supervisor's reactive rules only, then with the
world-model foresight rule added. Prints episodes with a collision, collision onsets,
success rate, steps, foresight interventions and the wall time per control step (the
added latency of foresight is the difference, measured in the same run).
"""

from __future__ import annotations

import argparse
import time

import torch

from qrobot.runner import run, wilson_interval


def measure(scenario: str, policy: str, episodes: int, seed: int, foresight: str | None) -> dict:
    start = time.perf_counter()
    results = run(scenario, policy, episodes, seed, progress=False, foresight=foresight)
    elapsed = time.perf_counter() - start
    steps = sum(r.steps for r in results)
    hits = [r.metrics.get("collisions", 0.0) for r in results]
    return {
        "episodes": len(results),
        "with_collision": sum(h > 0 for h in hits),
        "collisions": sum(hits),
        "successes": sum(r.success for r in results),
        "steps": steps,
        "foresight_events": sum(r.safety.get("foresight", 0) for r in results),
        "faults": sum(r.safety.get("foresight_fault", 0) for r in results),
        "ms_per_step": 1000 * elapsed / max(steps, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="world-model checkpoint (qrobot wm-train)")
    ap.add_argument("--scenario", default="pointnav_clutter")
    ap.add_argument("--policy", default="noisy-expert")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {
        "reactive rules": measure(args.scenario, args.policy, args.episodes, args.seed, None),
        "reactive + foresight": measure(args.scenario, args.policy, args.episodes, args.seed, args.checkpoint),
    }
    print(
        f"{args.policy} on {args.scenario}, seeds {args.seed}-{args.seed + args.episodes - 1}, "
        f"{args.threads} torch thread(s)\n"
    )
    print(
        "| supervisor | episodes with a collision | collision onsets | success (95 % CI) | steps | "
        "foresight slow-downs | ms per step |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        lo, hi = wilson_interval(r["successes"], r["episodes"])
        print(
            f"| {name} | {r['with_collision']}/{r['episodes']} | {r['collisions']:.0f} | "
            f"{r['successes']}/{r['episodes']} ({lo:.0%}-{hi:.0%}) | {r['steps']} | {r['foresight_events']} | "
            f"{r['ms_per_step']:.2f} |"
        )
    base, fs = rows["reactive rules"], rows["reactive + foresight"]
    cut = 1 - fs["collisions"] / base["collisions"] if base["collisions"] else float("nan")
    cut_eps = 1 - fs["with_collision"] / base["with_collision"] if base["with_collision"] else float("nan")
    print(
        f"\ncollision onsets reduced by {cut:.0%} (episodes with a collision by {cut_eps:.0%}; bar 50 %); "
        f"success {base['successes']} -> {fs['successes']} of {args.episodes}; foresight adds "
        f"{fs['ms_per_step'] - base['ms_per_step']:.2f} ms per control step "
        f"({fs['ms_per_step'] / base['ms_per_step']:.2f}x the reactive loop); predictor faults {fs['faults']}"
    )


if __name__ == "__main__":
    main()
