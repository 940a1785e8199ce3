"""`make lerobot-check` (scripts/lerobot_check.sh builds .venv-lerobot and runs this): the
LeRobot adapter against lerobot 0.4.4 itself.

- a real `lerobot.robots.robot.Robot` subclass, with its own `RobotConfig` subclass
  registered as LeRobot registers its robots (`RobotConfig.register_subclass`), over the
  PyBullet Panda of the tests' stand-in (tests/bridge/lerobot_standin.py);
- built the way `qrobot robot-lerobot` builds a robot (`make_robot`: its config class,
  decoded by draccus from JSON), connected, and driven by `LeRobotArm` through plans of
  growing speed, then a brake;
- for every step, LeRobot's own `ensure_safe_goal_position` (lerobot.robots.utils), given
  the same requested targets, present positions and cap, gives the targets the adapter sent.

With `SOURCE EXPORT` (a dataset `qrobot collect` made, and its `qrobot export lerobot`, both
made with qrobot's own venv), the export against lerobot 0.4.4's `LeRobotDataset`:

- `LeRobotDataset(repo_id, root=EXPORT)` loads it offline; every frame it returns has the
  source's action and state bit for bit, its task, indices, timestamp and success flag, and
  camera images (decoded by lerobot's default backend) within the export's stated tolerance;
  a torch DataLoader batches it;
- LeRobot's own writer (`LeRobotDataset.create`, `add_frame`, `save_episode`, `finalize`),
  given the same episodes and features, writes the same info.json, the same data parquet
  (schema, metadata and values), the same episodes columns and tasks, and stats that agree
  (exactly but for its histogram quantiles).

Then (scripts/lerobot_policy_check.py) a LeRobot ACT made for that export, served by
`qrobot serve-policy lerobot` from this venv and benchmarked by qrobot's own venv through
`remote`, its actions checked against LeRobot's own rollout path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bridge"))

# PyPI's torchvision 0.28 (the one for torch 2.13) is a CUDA build: its compiled ops do not
# load beside the CPU torch, and its meta registrations then fail on two missing operators.
# lerobot.robots imports torchvision (through lerobot.processor); nothing here runs these ops.
for _op in ("nms", "qnms"):
    torch.library.define(f"torchvision::{_op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import lerobot  # noqa: E402
from lerobot.robots import Robot, RobotConfig  # noqa: E402
from lerobot.robots.utils import ensure_safe_goal_position  # noqa: E402
from lerobot_standin import MOTORS, PandaSim  # noqa: E402

from qrobot.bridge.lerobot_arm import LeRobotArm, make_robot  # noqa: E402
from qrobot.robots.panda import FINGER_OPEN  # noqa: E402

CAP = 0.1  # rad per step, the adapter's default


class Warnings(logging.Handler):
    """Counts LeRobot's own clamp warnings (ensure_safe_goal_position logs one per clamped call)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.clamped = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.clamped += "had to be clamped" in record.getMessage()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


CLOCK = Clock()  # the physics and the adapter on one clock the check moves: deterministic


@RobotConfig.register_subclass("qrobot_panda_sim")
@dataclass(kw_only=True)
class PandaSimConfig(RobotConfig):
    gripper: bool = True


class PandaSimRobot(Robot):
    """A LeRobot robot: 7 arm motors in degrees (joint1..joint7) and a gripper 0..100."""

    config_class = PandaSimConfig
    name = "qrobot_panda_sim"

    def __init__(self, config: PandaSimConfig) -> None:
        super().__init__(config)
        self.config = config
        self.motors = MOTORS + (("gripper",) if config.gripper else ())
        self.physics: PandaSim | None = None

    @property
    def observation_features(self) -> dict[str, Any]:
        return {f"{m}.pos": float for m in self.motors}

    @property
    def action_features(self) -> dict[str, Any]:
        return {f"{m}.pos": float for m in self.motors}

    @property
    def is_connected(self) -> bool:
        return self.physics is not None

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        self.physics = PandaSim(CLOCK)
        self.configure()

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict[str, Any]:
        assert self.physics is not None, "not connected"
        q, _, width = self.physics.read()
        obs = {f"{m}.pos": math.degrees(v) for m, v in zip(MOTORS, q.tolist())}
        if self.config.gripper:
            obs["gripper.pos"] = 100.0 * width / (2 * FINGER_OPEN)
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        assert self.physics is not None, "not connected"
        goal = {k.removesuffix(".pos"): float(v) for k, v in action.items() if k.endswith(".pos")}
        target = np.radians([goal[m] for m in MOTORS])
        width = 2 * FINGER_OPEN * goal.get("gripper", 100.0) / 100.0
        self.physics.command(target, width)
        return {f"{m}.pos": v for m, v in goal.items()}

    def disconnect(self) -> None:
        assert self.physics is not None, "not connected"
        self.physics.close()
        self.physics = None


def main() -> int:
    robot_check()
    if len(sys.argv) == 3:
        dataset_check(Path(sys.argv[1]), Path(sys.argv[2]))
        from lerobot_policy_check import policy_check  # (this script's directory)

        policy_check(Path(sys.argv[2]))
    return 0


def robot_check() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="lerobot-check-"))
    log = tmp / "arm.jsonl"
    assert RobotConfig.get_choice_class("qrobot_panda_sim") is PandaSimConfig  # registered as LeRobot's are
    robot = make_robot(
        "__main__:PandaSimRobot", json.dumps({"id": "check", "calibration_dir": str(tmp / "calibration")})
    )
    assert isinstance(robot, Robot) and isinstance(robot.config, PandaSimConfig)
    assert robot.config.type == "qrobot_panda_sim" and isinstance(robot.config.calibration_dir, Path)
    robot.connect()
    arm = LeRobotArm(robot, MOTORS, "gripper", "deg", CAP, log, clock=CLOCK)
    direction = np.array([1.0, -0.6, 0.4, 0.8, -0.5, -1.0, 1.2])
    for k, speed in enumerate([0.2, 0.6, 1.0, 1.4, 1.8, 1.8, 1.0, 0.4]):  # rad/s scale: up past the cap, down
        st = arm.state()
        values = np.concatenate([st["joint_pos"], st["cmd_vel"], speed * direction, [0.04 if k < 5 else 0.0]])
        arm.execute(values, arm.max_rates)
        CLOCK.t += arm.control_dt
    for _ in range(3):
        arm.brake(arm.max_rates)
        CLOCK.t += arm.control_dt
    arm.close()

    cap_deg = math.degrees(CAP)
    warned = Warnings()
    logging.getLogger().handlers[:] = [warned]  # (counted, not printed)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    rows = []
    for n, line in enumerate(lines):
        keys = [f"{m}.pos" for m in MOTORS]
        theirs = ensure_safe_goal_position({k: (line["requested"][k], line["present"][k]) for k in keys}, cap_deg)
        ours = np.array([line["sent"][k] for k in keys])
        diff = float(np.abs(ours - np.array([theirs[k] for k in keys])).max())
        assert diff < 1e-9, f"step {n}: the adapter sent {ours}, LeRobot's clamp gives {theirs}"
        moved = float(np.abs(np.array([line["requested"][k] - line["present"][k] for k in keys])).max())
        rows.append((n, line["kind"], moved, line["clamped"], diff, line["sent"]["gripper.pos"]))
    final = np.array(list(robot.get_observation().values())[:7])
    held = [np.array([line["present"][f"{m}.pos"] for m in MOTORS]) for line in lines[-2:]]
    assert np.abs(held[1] - held[0]).max() < 0.01 and np.abs(final - held[1]).max() < 0.01, "the brake did not hold"
    robot.disconnect()

    print(f"lerobot {lerobot.__version__} (torch {torch.__version__}): Robot subclass {PandaSimRobot.__name__}, "
          f"config type {PandaSimConfig().type!r}; cap {CAP} rad = {cap_deg:.3f} deg per step")  # fmt: skip
    print(" step  kind     max |requested - present| (deg)  clamped  |adapter - ensure_safe_goal_position|  gripper")
    for n, kind, moved, clamped, diff, grip in rows:
        print(f" {n:4d}  {kind:7s}  {moved:31.3f}  {'yes' if clamped else 'no':7s}  {diff:37.1e}  {grip:7.1f}")
    clamped = sum(r[3] for r in rows)
    assert 0 < clamped < len(rows), "the run should show both clamped and unclamped steps"
    assert warned.clamped == clamped, f"LeRobot warned of {warned.clamped} clamped steps, the adapter logged {clamped}"
    print(f"{len(rows)} steps, {clamped} clamped (LeRobot's own clamp warned on the same {warned.clamped}):")
    print("every target the adapter sent equals lerobot.robots.utils.ensure_safe_goal_position's for the same request;")
    print(f"the arm moved to {np.round(final, 2).tolist()} deg and the brakes held it there. OK")


def _source(src: Path) -> list[dict[str, np.ndarray]]:
    """The qrobot episodes (npz, in load_episodes' order), read with numpy alone."""
    episodes = []
    for f in sorted(src.glob("ep*.npz")):
        with np.load(f) as z:
            episodes.append({k: z[k] for k in z.files})
    return episodes


def _values(z: dict[str, np.ndarray], features: dict[str, Any], t: int) -> dict[str, Any]:
    """Frame t of a source episode as the export's features hold it (LeRobot's add_frame)."""
    n = len(z["actions"])
    values: dict[str, Any] = {
        "observation.state": np.concatenate([z["proprio"][t], z["goal"][t]]).astype(np.float32),
        "action": z["actions"][t].astype(np.float32),
        "next.done": np.array([t == n - 1]),
        "next.success": np.array([t == n - 1 and bool(z["success"])]),
        "qrobot.base_pose": z["base_pose"][t].astype(np.float32),
    }
    if "qrobot.grounding" in features:
        values["qrobot.grounding"] = z["grounding"][t].astype(np.float32)
    if "qrobot.action_chunks" in features:
        values["qrobot.action_chunks"] = z["action_chunks"][t].reshape(-1).astype(np.float32)
    for key, ft in features.items():
        if ft["dtype"] == "video":
            values[key] = z["images_" + key.removeprefix("observation.images.")][t]
    return values


@contextlib.contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _uint8_std(source: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """lerobot 0.4.4's camera std, per channel: per episode the mean of squares of uint8
    pixels (squared in uint8), then pooled over episodes as aggregate_feature_stats does."""
    cam = key.removeprefix("observation.images.")
    means, variances, counts = [], [], []
    for z in source:
        batch = z["images_" + cam].reshape(-1, 3)
        mean, squares = batch.mean(0), (batch**2).mean(0)  # batch**2 stays uint8
        means.append(mean / 255)
        variances.append((np.sqrt(np.maximum(0, squares - mean**2)) / 255) ** 2)
        counts.append(len(z["images_" + cam]))
    m, v, c = np.array(means), np.array(variances), np.array(counts)[:, None]
    total = (m * c).sum(0) / c.sum()
    return np.sqrt(((v + (m - total) ** 2) * c).sum(0) / c.sum())


def dataset_check(src: Path, export: Path) -> None:
    import pandas as pd
    import pyarrow.parquet as pq
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.datasets.utils import DEFAULT_FEATURES

    qmeta = json.loads((export / "meta.json").read_text())
    repo_id, tolerance = qmeta["lerobot"]["repo_id"], qmeta["lerobot"]["video"]["tolerance"]
    source = _source(src)
    ds = LeRobotDataset(repo_id, root=export)
    fps, cams = ds.fps, ds.meta.video_keys
    print(
        f"\nLeRobotDataset({repo_id!r}, root=EXPORT): codebase {ds.meta.info['codebase_version']}, "
        f"{ds.num_episodes} episodes, {ds.num_frames} frames at {fps} fps, tasks {ds.meta.total_tasks}, "
        f"video backend {ds.video_backend}, cameras {cams} "
        f"({ds.meta.features[cams[0]]['info']['video.codec']}, {ds.meta.features[cams[0]]['info']['video.pix_fmt']})"
    )
    errors: dict[str, list[np.ndarray]] = {cam: [] for cam in cams}
    k = 0
    for e, z in enumerate(source):
        n = len(z["actions"])
        for t in range(n):
            item, want = ds[k], _values(z, ds.meta.features, t)
            assert (item["episode_index"].item(), item["frame_index"].item(), item["index"].item()) == (e, t, k)
            assert abs(item["timestamp"].item() - t / fps) < 1e-6 and item["task"] == str(z["instruction"])
            for key in ("action", "observation.state", "qrobot.base_pose", "qrobot.grounding"):
                if key in want:
                    assert torch.equal(item[key], torch.from_numpy(want[key])), (key, e, t)
            assert bool(item["next.success"]) == bool(want["next.success"][0]), (e, t)
            for cam in cams:
                got = (item[cam].permute(1, 2, 0).numpy() * 255).round()
                assert got.shape == want[cam].shape, (cam, got.shape)
                errors[cam].append(np.abs(got - want[cam].astype(np.float64)))
            k += 1
    assert k == len(ds), f"lerobot has {len(ds)} frames, the source {k}"
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True)))
    assert batch["action"].shape == (8, ds.meta.shapes["action"][0]) and len(batch["task"]) == 8
    print(f"{k} frames: action, observation.state, qrobot.base_pose, qrobot.grounding equal to the source bit for bit;")
    print("task, episode_index, frame_index, index, timestamp and next.success as the source; a DataLoader batches it")
    for cam in cams:
        diff = np.stack(errors[cam])
        mean, p99, worst = float(diff.mean()), float(np.percentile(diff, 99)), float(diff.max())
        print(
            f"  {cam}: decoded by lerobot vs the source pixels (0-255): mean {mean:.2f}, 99th percentile "
            f"{p99:.1f}, max {worst:.0f} (tolerance: mean < {tolerance['mean']}, 99th percentile < {tolerance['p99']})"
        )
        assert mean < tolerance["mean"] and p99 < tolerance["p99"], cam

    # LeRobot's own writer, given the same episodes: the same files (quietly: its progress
    # bars, the encoder's log, and a warning of its own statistics code about bool features)
    import datasets

    datasets.disable_progress_bars()
    warnings.filterwarnings("ignore", "Converting input from bool", RuntimeWarning)
    features = {
        key: {"dtype": ft["dtype"], "shape": tuple(ft["shape"]), "names": ft["names"]}
        for key, ft in ds.meta.features.items()
        if key not in DEFAULT_FEATURES
    }
    ref_root = export.parent / "lerobot-writer"
    ref = LeRobotDataset.create(
        repo_id, fps, features, root=ref_root, robot_type=ds.meta.robot_type, use_videos=True, vcodec="h264"
    )
    with _stderr_to_devnull():  # FFmpeg's encoder log (lerobot hands it FFmpeg's own callback)
        for z in source:
            for t in range(len(z["actions"])):
                ref.add_frame(_values(z, features, t) | {"task": str(z["instruction"])})
            ref.save_episode(parallel_encoding=False)
        ref.finalize()
    ours = json.loads((export / "meta" / "info.json").read_text())
    theirs = json.loads((ref_root / "meta" / "info.json").read_text())
    assert ours == theirs, {
        k: (ours.get(k), theirs.get(k)) for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)
    }
    print(
        "LeRobot's own writer (LeRobotDataset.create, add_frame, save_episode, finalize), same episodes and features:"
    )
    print("  meta/info.json: identical (features, video info, totals, paths, splits)")
    data = [pq.read_table(root / "data" / "chunk-000" / "file-000.parquet") for root in (export, ref_root)]
    assert data[0].schema.equals(data[1].schema, check_metadata=False), (data[0].schema, data[1].schema)
    hf = [json.loads(d.schema.metadata[b"huggingface"]) for d in data]
    hf[1].pop("fingerprint", None)  # (a random id `datasets` gives each table it writes)
    assert hf[0] == hf[1], hf
    assert data[0].equals(data[1]), "the data values differ"
    print(
        f"  data/chunk-000/file-000.parquet: same schema, same Hugging Face features metadata, same {data[0].num_rows} rows"
    )
    eps = [pq.read_table(root / "meta" / "episodes" / "chunk-000" / "file-000.parquet") for root in (export, ref_root)]
    assert set(eps[0].column_names) == set(eps[1].column_names), set(eps[0].column_names) ^ set(eps[1].column_names)
    for name in eps[0].column_names:
        a, b = eps[0].column(name).to_pylist(), eps[1].column(name).to_pylist()
        if name.startswith("stats/"):
            continue
        if name.endswith("_timestamp"):
            assert np.allclose(a, b, atol=1e-6), (name, a, b)
        else:
            assert a == b, (name, a, b)
    types = [n for n in eps[0].column_names if eps[0].schema.field(n).type != eps[1].schema.field(n).type]
    print(f"  meta/episodes: the same {len(eps[0].column_names)} columns, the same values outside stats/"
          + (f" (types differ: {types})" if types else ", the same types"))  # fmt: skip
    tasks = [pd.read_parquet(root / "meta" / "tasks.parquet") for root in (export, ref_root)]
    assert tasks[0].equals(tasks[1]), tasks
    print(f"  meta/tasks.parquet: the same table as pandas reads it ({len(tasks[0])} tasks, instructions as index)")
    stats = [json.loads((root / "meta" / "stats.json").read_text()) for root in (export, ref_root)]
    assert stats[0].keys() == stats[1].keys()
    worst = 0.0
    for key in stats[0]:
        assert stats[0][key].keys() == stats[1][key].keys(), key
        for stat in stats[0][key]:
            a, b = np.asarray(stats[0][key][stat], float), np.asarray(stats[1][key][stat], float)
            assert a.shape == b.shape, (key, stat, a.shape, b.shape)
            if ds.meta.features[key]["dtype"] == "video" and stat == "std":
                continue  # below
            if stat == "std":  # lerobot's is sqrt(E[x^2] - E[x]^2) in float32: a rounding off in variance
                scale = np.asarray(stats[0][key]["mean"], float) ** 2 + a**2
                assert np.allclose(a**2, b**2, rtol=0, atol=1e-6 * scale.max() + 1e-12), (key, a, b)
                continue
            if stat.startswith("q"):  # lerobot's come from 5000-bin histograms, ours are exact
                span = np.asarray(stats[0][key]["max"], float) - np.asarray(stats[0][key]["min"], float)
                worst = max(worst, float((np.abs(a - b) / np.maximum(span, 1e-9)).max()))
            else:
                assert np.allclose(a, b, rtol=1e-5, atol=1e-6), (key, stat, a, b)
    assert worst < 0.002, worst  # (a bin is 0.02 % of an episode's range)
    print(
        f"  meta/stats.json: min, max, mean, count equal, std up to float32 rounding (lerobot's E[x^2] - E[x]^2), "
        f"quantiles within {100 * worst:.2f} % of each range (lerobot's are histogram estimates);"
    )
    for cam in cams:  # the export's is the pixels' true std; lerobot 0.4.4 squares uint8 pixels, which wrap
        pixels = np.concatenate([z["images_" + cam.removeprefix("observation.images.")] for z in source])
        true = pixels.reshape(-1, 3).astype(np.float64).std(0) / 255
        assert np.allclose(np.ravel(stats[0][cam]["std"]), true, atol=1e-9), cam
        assert np.allclose(np.ravel(stats[1][cam]["std"]), _uint8_std(source, cam), atol=1e-9), cam
    print(
        "  but for the cameras' std: the export's is the pixels' true std; lerobot 0.4.4's own writer squares "
        "uint8 pixels (compute_stats.RunningQuantileStats), which wrap mod 256 - its value is reproduced so"
    )
    print("the export loads in lerobot 0.4.4 and is what its own writer makes of the same episodes. OK")


if __name__ == "__main__":
    raise SystemExit(main())
