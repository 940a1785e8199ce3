"""People walking into the robot's path: the scripted expert behind the supervisor, with
the separation rule (default profile) and without it (test-only-no-ssm profile).

    .venv/bin/python benchmarks/ssm_ablation.py [--episodes 30]
"""

from __future__ import annotations

import argparse

import numpy as np
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.runner import run_episode
from qrobot.scenario import Limits, load_scenario


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=30)
    args = p.parse_args()
    print(
        f"{'scenario':<18s} {'profile':<18s} {'success':>8s} {'intrusions':>11s} {'collisions':>11s} "
        f"{'min clearance m':>16s} {'mean steps':>11s}"
    )
    for name in ("pointnav_people", "objectnav_people"):
        for profile in ("default", "test-only-no-ssm"):
            sc = load_scenario(name).model_copy(update={"limits": Limits(profile=profile)})
            env = QRobotEnv(sc, images=False)
            pol = make_policy("expert", env)
            rs = [run_episode(env, pol, k, k) for k in range(args.episodes)]
            env.close()
            print(
                f"{name:<18s} {profile:<18s} {np.mean([r.success for r in rs]):8.0%} "
                f"{sum(r.metrics['intrusions'] for r in rs):11.0f} {sum(r.metrics['collisions'] for r in rs):11.0f} "
                f"{min(r.metrics['min_person_clearance'] for r in rs):16.2f} {np.mean([r.steps for r in rs]):11.1f}"
            )


if __name__ == "__main__":
    main()
