"""Foresight vs reactive rules alone: a noisy driver in a cluttered room.

    .venv/bin/python benchmarks/foresight.py --checkpoint DIR [--episodes 50] [--seed 10000] [--record]

Runs the same seeded episodes of `noisy-expert` (the scripted expert with random drifts)
on `pointnav_clutter` twice: behind the supervisor's reactive rules only, then with the
world-model foresight rule added. Prints episodes with a collision, collision onsets,
success rate, steps, foresight interventions and the wall time per control step (the
added latency of foresight is the difference, measured in the same run). `--record`
stores the figures in the checkpoint's results.json and regenerates its model card.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch

from qrobot.runner import run, wilson_interval

BAR = 0.5  # foresight must cut collision onsets by at least this share


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


def records(rows: dict[str, dict[str, Any]], scenario: str, seed: int, command: str) -> list[Any]:
    """The figures of one run, as records for the checkpoint's results.json (qrobot.cards)."""
    from qrobot import cards

    base, fs = rows["reactive rules"], rows["reactive + foresight"]
    n = base["episodes"]
    kw: dict[str, Any] = {"split": cards.split_of(seed), "seeds": [seed, seed + n - 1]}
    out = []
    for who, r in (("reactive", base), ("foresight", fs)):
        out.append(
            cards.Record(scenario, f"episodes_with_collision_{who}", r["with_collision"], command, episodes=n, **kw)
        )
        out.append(cards.Record(scenario, f"collision_onsets_{who}", r["collisions"], command, episodes=n, **kw))
    if base["collisions"]:
        cut = 1 - fs["collisions"] / base["collisions"]
        out.append(cards.Record(scenario, "collision_onset_cut", cut, command, episodes=n, bar=BAR, **kw))
    out += [
        cards.rate(scenario, f"success_rate_{who}", r["successes"], n, command, **kw)
        for who, r in (("reactive", base), ("foresight", fs))
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="world-model checkpoint (qrobot wm-train)")
    ap.add_argument("--scenario", default="pointnav_clutter")
    ap.add_argument("--policy", default="noisy-expert")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--record", action="store_true", help="store the figures with the checkpoint (model card)")
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
        f"\ncollision onsets reduced by {cut:.0%} (episodes with a collision by {cut_eps:.0%}; bar {100 * BAR:.0f} %); "
        f"success {base['successes']} -> {fs['successes']} of {args.episodes}; foresight adds "
        f"{fs['ms_per_step'] - base['ms_per_step']:.2f} ms per control step "
        f"({fs['ms_per_step'] / base['ms_per_step']:.2f}x the reactive loop); predictor faults {fs['faults']}"
    )
    if args.record:
        from qrobot.cards import record_result

        command = f"python benchmarks/foresight.py --checkpoint {args.checkpoint} --episodes {args.episodes}"
        command += f" --seed {args.seed}"
        defaults = {"scenario": "pointnav_clutter", "policy": "noisy-expert", "threads": 1}
        command += "".join(f" --{k} {getattr(args, k)}" for k, v in defaults.items() if getattr(args, k) != v)
        if record_result(args.checkpoint, records(rows, args.scenario, args.seed, command)):
            print(f"\nrecorded in {args.checkpoint}/results.json and its model card")


if __name__ == "__main__":
    main()
