"""Datasets in LeRobot's format: a LeRobotDataset v3.0, the layout lerobot 0.4.4 reads.

`qrobot export lerobot DATASET OUT` writes one from a dataset `qrobot collect` made (and
`qrobot collect --format lerobot` writes one directly); `read_lerobot` reads such an export
back into qrobot's episodes, so `qrobot train --dataset OUT` trains from it.

    OUT/meta/info.json          codebase_version "v3.0", fps (the scenario's control rate),
                                features (dtype, shape, names; each video's codec info),
                                totals, splits, the data and video path templates
    OUT/meta/stats.json         per feature: min, max, mean, std, count, q01 q10 q50 q90 q99
    OUT/meta/tasks.parquet      the instructions (the index, as pandas writes it) -> task_index
    OUT/meta/episodes/chunk-000/file-000.parquet
                                one row per episode: tasks, length, its rows of the data
                                (dataset_from_index, dataset_to_index) and their file, per
                                camera its video file and from/to timestamps, its stats
    OUT/data/chunk-000/file-000.parquet
                                one row per frame: observation.state (proprio ++ goal),
                                action, next.done, next.success, qrobot.base_pose,
                                qrobot.grounding (tabletop), qrobot.action_chunks (DART),
                                timestamp, frame_index, episode_index, index, task_index
    OUT/videos/observation.images.<camera>/chunk-000/file-000.mp4
                                the episodes one after another, h264 in yuv420p (lossy: see
                                VIDEO_TOLERANCE), a key frame every 2 frames
    OUT/meta.json               qrobot's own metadata, as a collected dataset has it (scenario,
                                robot, cameras, sizes, seeds, control rate), plus per episode
                                its source file, seed and DART noise

Files roll over as LeRobot's do (1000 files a chunk; 100 MB of data, 200 MB of video a
file). Frame t is observation t and the action taken after it; the `qrobot.*` features
(labels qrobot trains on, never policy inputs) keep the round trip exact: `read_lerobot`
gives back the source's states, actions, poses, labels, instructions and success flags
bit for bit, and its images within the video codec's tolerance.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qrobot.checks import check_out_dir, read_meta
from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from qrobot.scenario import Scenario
    from qrobot.vla.data import Episode

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk folder
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
DATA_PATH = "data/" + CHUNK_FILE + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE + ".parquet"
INFO_PATH, STATS_PATH, TASKS_PATH = "meta/info.json", "meta/stats.json", "meta/tasks.parquet"
IMAGE_KEY = "observation.images.{}"
# h264 (libx264) as LeRobot encodes it (a key frame every 2 frames), at a higher quality
# than its default crf 30: these are small synthetic renders, and sharp edges are most of them
VCODEC, PIX_FMT, GOP, CRF = "h264", "yuv420p", 2, 18
# what decoding gives back, against the source pixels (0-255), as tests/test_lerobot_export.py
# and scripts/lerobot_check.py check it: 4:2:0 chroma blurs colour edges, so single pixels
# there differ more than the mean
VIDEO_TOLERANCE = {"mean": 3.0, "p99": 40.0}
QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
STAGING = ".qrobot-collect"  # `collect --format lerobot`: the npz episodes, until exported
DEFAULT_FEATURES = {  # lerobot.datasets.utils.DEFAULT_FEATURES, after the dataset's own
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
PROPRIO_NAMES = {
    "panda": ["ee_x", "ee_y", "ee_z", "ee_cos_yaw", "ee_sin_yaw", "gripper_width", *(f"joint{i}" for i in range(1, 8))],
    "diffbot": ["v", "omega"],
}
GROUNDING_NAMES = ["cube_x", "cube_y", "cube_z", "sin_4yaw", "cos_4yaw", "place_x", "place_y", "place_z"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise QrobotError("LeRobot datasets: the MP4 videos need PyAV (pip install 'qrobot[lerobot]')") from None
    return av


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise QrobotError("LeRobot datasets: the parquet files need pyarrow (pip install 'qrobot[lerobot]')") from None
    return pa, pq


# ------------------------------------------------------------------------- checks


def check_repo_id(flag: str, repo_id: str) -> None:
    if not _REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id:
        raise QrobotError(
            f"{flag}: {repo_id!r} is not a Hugging Face repo id; give NAMESPACE/NAME "
            "(letters, digits, '.', '_', '-'), e.g. qrobot/reach"
        )


def check_export_out(flag: str, out: Path, staging_ok: bool = False) -> None:
    """A new directory, or an empty one (`staging_ok`: one holding only the staging folder of
    an interrupted `collect --format lerobot`). Nothing is created here."""
    check_out_dir(flag, out)
    out = Path(out)
    if out.is_dir():
        held = sorted(p.name for p in out.iterdir() if not (staging_ok and p.name == STAGING))
        if held:
            more = ", ..." if len(held) > 3 else ""
            raise QrobotError(
                f"{flag}: {out} is not empty ({', '.join(held[:3])}{more}); give a new or empty directory"
            )


def collect_target(flag: str, out: Path, fmt: str, scenario: Scenario) -> Path:
    """Where `qrobot collect --out OUT --format FMT` records its npz episodes: OUT itself
    (npz), or OUT/.qrobot-collect until they are exported into OUT (lerobot), so that an
    interrupted collection goes on where it stopped, as an npz one does. Checked before
    anything runs: a LeRobot dataset's fps is whole, its h264 videos have even sides."""
    out = Path(out)
    if fmt == "lerobot":
        check_export_out(flag, out, staging_ok=True)
        _av()
        _arrow()
        if scenario.control_hz != round(scenario.control_hz):
            raise QrobotError(
                f"collect --format lerobot: {scenario.name} runs at {scenario.control_hz} Hz; "
                "a LeRobot dataset needs a whole number of frames per second"
            )
        odd = [c.name for c in scenario.cameras if c.width % 2 or c.height % 2]
        if odd:
            raise QrobotError(
                f"collect --format lerobot: camera {odd[0]} of {scenario.name} has an odd side; "
                "the h264 videos (yuv420p) need even ones"
            )
        return out / STAGING
    if (out / INFO_PATH).is_file():
        raise QrobotError(f"{flag}: {out} is a LeRobot dataset (meta/info.json); give a new directory")
    return out


def finish_collect(staged: Path, out: Path) -> str:
    """`collect --format lerobot`: the staged npz episodes exported into OUT, then removed."""
    summary = export_lerobot(staged, out)
    shutil.rmtree(staged)
    return describe(out, summary)


# ------------------------------------------------------------------------- source


def _source(dataset: Path) -> tuple[dict[str, Any], list[Path], int]:
    """The source's meta, episode files (in load_episodes' order) and whole frames per second."""
    if (dataset / INFO_PATH).is_file():
        raise QrobotError(
            f"export lerobot: {dataset}: already a LeRobot dataset (meta/info.json); give one `qrobot collect` made"
        )
    if not (dataset / "meta.json").is_file():
        raise QrobotError(
            f"export lerobot: {dataset}: not a qrobot dataset (no meta.json; make one with `qrobot collect`)"
        )
    meta = read_meta(
        dataset / "meta.json",
        {
            "scenario": str,
            "robot": str,
            "cameras": list,
            "image_size": list,
            "seeds": list,
            "proprio_dim": int,
            "goal_dim": int,
            "action_dim": int,
        },
    )
    if not meta["cameras"] or not all(isinstance(c, str) for c in meta["cameras"]):
        raise QrobotError(f"{dataset / 'meta.json'}: 'cameras' must be a list of names")
    files = sorted(dataset.glob("ep*.npz"))
    if not files:
        raise QrobotError(f"export lerobot: {dataset}: holds no episodes (ep*.npz); record some with `qrobot collect`")
    hz = meta.get("control_hz")
    if hz is None:  # collected before meta.json named it: the scenario's
        from qrobot.scenario import load_scenario

        hz = load_scenario(str(meta["scenario"])).control_hz
    if not isinstance(hz, (int, float)) or float(hz) != round(float(hz)) or hz < 1:
        raise QrobotError(
            f"export lerobot: {dataset}: a control rate of {hz} Hz; a LeRobot dataset needs a whole number of frames per second"
        )
    size = meta["image_size"]
    if len(size) != 2 or any(not isinstance(s, int) or s < 2 or s % 2 for s in size):
        raise QrobotError(f"export lerobot: {dataset}: image size {size}; the h264 videos (yuv420p) need even sides")
    return meta, files, round(float(hz))


def _scan(f: Path) -> dict[str, Any]:
    """What the features depend on, read before anything is written (a damaged file is
    refused here)."""
    try:
        with np.load(f) as z:
            scan: dict[str, Any] = {
                "length": len(z["actions"]),
                "grounding": int(z["grounding"].shape[1]) if "grounding" in z.files else 0,
                "chunks": int(z["action_chunks"].shape[1]) if "action_chunks" in z.files else 0,
                "instruction": str(z["instruction"]),
                "success": bool(z["success"]),
                "seed": int(z["seed"]),
                "action_noise": float(z["action_noise"]) if "action_noise" in z.files else 0.0,
            }
    except Exception as exc:  # zip, npz and key errors: a damaged or foreign file
        raise QrobotError(f"{f}: not a readable qrobot episode ({type(exc).__name__}: {str(exc)[:120]})") from None
    if scan["length"] < 1:
        raise QrobotError(f"{f}: an episode without steps")
    return scan


@dataclass
class _Recorded:
    """One source episode as load_episodes reads it (without importing the training stack)."""

    images: np.ndarray  # (T, cams, H, W, 3) uint8
    state: np.ndarray  # (T, S) float32: proprio ++ goal
    actions: np.ndarray
    base_pose: np.ndarray
    grounding: np.ndarray
    instruction: str
    success: bool
    chunks: np.ndarray | None


def _episode(f: Path, cameras: list[str], size: list[int]) -> _Recorded:
    try:
        with np.load(f) as z:
            state = np.concatenate([z["proprio"], z["goal"]], axis=1).astype(np.float32)
            n = len(state)
            ep = _Recorded(
                np.stack([z[f"images_{c}"] for c in cameras], axis=1),
                state,
                z["actions"].astype(np.float32),
                z["base_pose"].astype(np.float32),
                z["grounding"].astype(np.float32) if "grounding" in z.files else np.zeros((n, 0), np.float32),
                str(z["instruction"]),
                bool(z["success"]),
                z["action_chunks"].astype(np.float32) if "action_chunks" in z.files else None,
            )
    except Exception as exc:  # zip, npz, key and shape errors: a damaged or foreign file
        raise QrobotError(f"{f}: not a readable qrobot episode ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not (len(ep.images) == n == len(ep.actions) > 0) or list(ep.images.shape[2:]) != [*size, 3]:
        raise QrobotError(f"{f}: images {ep.images.shape[2:]}, state and actions do not fit meta.json's sizes")
    return ep


def _names(prefix: str, n: int, known: list[str] | tuple[str, ...] | None = None) -> list[str]:
    return list(known) if known is not None and len(known) == n else [f"{prefix}_{i}" for i in range(n)]


def _action_names(robot: str, n: int) -> list[str]:
    from qrobot.robots.diffbot import DiffDriveBase
    from qrobot.robots.panda import PandaArm

    known = {"panda": PandaArm.action_names, "diffbot": DiffDriveBase.action_names}.get(robot)
    return _names("action", n, known)


def _features(meta: dict[str, Any], scans: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    h, w = meta["image_size"]
    p, g, a = int(meta["proprio_dim"]), int(meta["goal_dim"]), int(meta["action_dim"])
    robot = str(meta["robot"])
    actions = _action_names(robot, a)
    features: dict[str, dict[str, Any]] = {
        IMAGE_KEY.format(cam): {"dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"]}
        for cam in meta["cameras"]
    }
    features["observation.state"] = {
        "dtype": "float32",
        "shape": [p + g],
        "names": _names("proprio", p, PROPRIO_NAMES.get(robot)) + _names("goal", g),
    }
    features["action"] = {"dtype": "float32", "shape": [a], "names": actions}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    features["qrobot.base_pose"] = {"dtype": "float32", "shape": [3], "names": ["x", "y", "theta"]}
    ground = {s["grounding"] for s in scans}
    if len(ground) > 1:
        raise QrobotError(f"episodes with grounding labels of {sorted(ground)} values; one dataset has one kind")
    if (g_dim := ground.pop()) > 0:
        features["qrobot.grounding"] = {
            "dtype": "float32",
            "shape": [g_dim],
            "names": _names("grounding", g_dim, GROUNDING_NAMES),
        }
    if chunk := max(s["chunks"] for s in scans):  # DART: the expert's clean next actions, (chunk, A) flattened
        features["qrobot.action_chunks"] = {
            "dtype": "float32",
            "shape": [chunk * a],
            "names": [f"t{k}.{n}" for k in range(chunk) for n in actions],
        }
    return features | {k: dict(v) for k, v in DEFAULT_FEATURES.items()}


# ------------------------------------------------------------------------- stats


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """lerobot's per-feature statistics of (N, ...) values over N: min and max keep the
    dtype, the others are float. Quantiles by lerobot's definition, the smallest value with
    at least that share of the values at or below it (numpy's inverted_cdf), exact where
    lerobot estimates it from a 5000-bin histogram."""
    flat = x.reshape(len(x), -1)
    wide = flat.astype(np.float64)
    stats = {
        "min": flat.min(0),
        "max": flat.max(0),
        "mean": wide.mean(0),
        "std": wide.std(0),
        "count": np.array([len(x)]),
    }
    for key, q in zip(QUANTILES, np.quantile(wide, list(QUANTILES.values()), axis=0, method="inverted_cdf")):
        stats[key] = q
    return stats


def _image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """As lerobot's compute_episode_stats for a camera: frames sampled (sample_indices),
    sides over 300 px subsampled, per channel in [0, 1], shaped (3, 1, 1)."""
    n = len(frames)
    samples = n if n < 100 else max(100, min(int(n**0.75), 10_000))
    picked = frames[np.round(np.linspace(0, n - 1, samples)).astype(int)]
    h, w = picked.shape[1:3]
    if max(h, w) >= 300:
        step = int(w / 150) if w > h else int(h / 150)
        picked = picked[:, ::step, ::step]
    stats = _stats(picked.reshape(-1, 3))
    out = {k: (v / 255.0).reshape(3, 1, 1) for k, v in stats.items() if k != "count"}
    return out | {"count": np.array([len(picked)])}


def _aggregate(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """lerobot.datasets.compute_stats.aggregate_feature_stats: count-weighted mean, pooled
    variance, extreme min and max, count-weighted quantiles."""
    means = np.stack([s["mean"] for s in per_episode])
    variances = np.stack([s["std"] ** 2 for s in per_episode])
    counts = np.stack([s["count"] for s in per_episode])
    total = counts.sum(axis=0)
    while counts.ndim < means.ndim:
        counts = np.expand_dims(counts, axis=-1)
    mean = (means * counts).sum(axis=0) / total
    variance = ((variances + (means - mean) ** 2) * counts).sum(axis=0) / total
    out = {
        "min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": total,
    }
    for key in QUANTILES:
        out[key] = (np.stack([s[key] for s in per_episode]) * counts).sum(axis=0) / total
    return out


def _listed(stats: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: np.asarray(v).tolist() for k, v in stats.items()}


# ------------------------------------------------------------------------- writers


def _next_file(chunk: int, file: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == CHUNKS_SIZE - 1 else (chunk, file + 1)


class _DataFiles:
    """The frames' parquet files: one row group per episode, a new file past the size cap."""

    def __init__(self, root: Path, schema: Any) -> None:
        self.root, self.schema = root, schema
        self.chunk = self.file = 0
        self.writer: Any = None
        self.bytes = 0

    def add(self, table: Any) -> tuple[int, int]:
        _, pq = _arrow()
        if self.writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self.chunk, file_index=self.file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(path, self.schema, compression="snappy", use_dictionary=True)
        self.writer.write_table(table)
        where = (self.chunk, self.file)
        self.bytes += table.nbytes
        if self.bytes >= DATA_FILES_SIZE_IN_MB * 1024**2:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        return where

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.bytes = None, 0


class _VideoFiles:
    """One camera's MP4 files: episodes appended to the open one (one stream, frame n at
    n / fps), a new file past the size cap."""

    def __init__(self, root: Path, key: str, fps: int, size: tuple[int, int]) -> None:
        self.av = _av()
        self.root, self.key, self.fps, self.size = root, key, fps, size
        self.chunk = self.file = 0
        self.container: Any = None
        self.stream: Any = None
        self.frames = 0
        self.first: Path | None = None

    def _path(self) -> Path:
        return self.root / VIDEO_PATH.format(video_key=self.key, chunk_index=self.chunk, file_index=self.file)

    def add(self, frames: np.ndarray) -> dict[str, Any]:
        if self.container is None:
            path = self._path()
            path.parent.mkdir(parents=True, exist_ok=True)
            self.first = self.first or path
            self.container = self.av.open(str(path), "w")
            self.stream = self.container.add_stream(VCODEC, rate=self.fps, options={"g": str(GOP), "crf": str(CRF)})
            self.stream.height, self.stream.width = self.size
            self.stream.pix_fmt = PIX_FMT
            self.frames = 0
        start = self.frames
        for img in frames:
            frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            frame.pts, frame.time_base = self.frames, Fraction(1, self.fps)
            self.container.mux(self.stream.encode(frame))
            self.frames += 1
        where = {
            f"videos/{self.key}/chunk_index": self.chunk,
            f"videos/{self.key}/file_index": self.file,
            f"videos/{self.key}/from_timestamp": start / self.fps,
            f"videos/{self.key}/to_timestamp": self.frames / self.fps,
        }
        if self._path().stat().st_size >= VIDEO_FILES_SIZE_IN_MB * 1024**2:
            self.close()
            self.chunk, self.file = _next_file(self.chunk, self.file)
        return where

    def close(self) -> None:
        if self.container is not None:
            self.container.mux(self.stream.encode(None))  # flush the encoder
            self.container.close()
            self.container = self.stream = None

    def info(self) -> dict[str, Any]:
        """lerobot.datasets.video_utils.get_video_info of the first file."""
        assert self.first is not None
        with self.av.open(str(self.first)) as c:
            s = c.streams.video[0]
            ctx = s.codec_context
            return {
                "video.height": ctx.height,
                "video.width": ctx.width,
                "video.codec": ctx.codec.canonical_name,
                "video.pix_fmt": ctx.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": int(s.base_rate),
                "video.channels": 3,
                "has_audio": len(c.streams.audio) > 0,
            }


def _hf_feature(ft: dict[str, Any]) -> dict[str, Any]:
    """The `datasets` feature lerobot declares for a non-video feature (its parquet metadata)."""
    value = {"dtype": ft["dtype"], "_type": "Value"}
    return value if ft["shape"] == [1] else {"feature": value, "length": ft["shape"][0], "_type": "List"}


def _schema(features: dict[str, dict[str, Any]]) -> Any:
    pa, _ = _arrow()
    kinds = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}
    fields = []
    for key, ft in features.items():
        if ft["dtype"] == "video":
            continue
        kind = kinds[ft["dtype"]]
        fields.append(pa.field(key, kind if ft["shape"] == [1] else pa.list_(kind, ft["shape"][0])))
    hf = {"info": {"features": {k: _hf_feature(ft) for k, ft in features.items() if ft["dtype"] != "video"}}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(hf)})


def _column(pa: Any, values: np.ndarray, kind: Any) -> Any:
    if isinstance(kind, pa.FixedSizeListType):
        flat = np.ascontiguousarray(values).reshape(-1)
        return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=kind.value_type), kind.list_size)
    return pa.array(values, type=kind)


def _tasks_table(tasks: list[str]) -> Any:
    """meta/tasks.parquet as lerobot writes it (`DataFrame({"task_index": ...}, index=tasks)
    .to_parquet`): the task strings are the pandas index, which pandas reads back as such."""
    pa, _ = _arrow()
    index = "__index_level_0__"
    pandas = {
        "index_columns": [index],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": None}
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {"name": None, "field_name": index, "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()), index: pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({"pandas": json.dumps(pandas)})


def _write_json(data: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4, ensure_ascii=False))


# ------------------------------------------------------------------------- export


def export_lerobot(dataset: Path, out: Path, repo_id: str | None = None) -> dict[str, Any]:
    """Write the qrobot dataset `dataset` (made by `qrobot collect`) to `out` as a
    LeRobotDataset v3.0; returns a summary (repo_id, episodes, successful, frames, fps,
    cameras, tasks). `out` must be new or empty; on failure what was written is removed."""
    dataset, out = Path(dataset), Path(out)
    meta, files, fps = _source(dataset)
    repo_id = repo_id or f"qrobot/{meta['scenario']}"
    check_repo_id("export lerobot --repo-id", repo_id)
    staged = dataset.parent.resolve() == out.resolve() and dataset.name == STAGING
    check_export_out("export lerobot", out, staging_ok=staged)
    _av()
    _arrow()
    scans = [_scan(f) for f in files]
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write(dataset, out, repo_id, meta, files, scans, fps)
    except BaseException:
        if made:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for p in out.iterdir():
                if p.name == STAGING:
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        raise


def _write(
    dataset: Path,
    out: Path,
    repo_id: str,
    meta: dict[str, Any],
    files: list[Path],
    scans: list[dict[str, Any]],
    fps: int,
) -> dict[str, Any]:
    pa, pq = _arrow()
    features = _features(meta, scans)
    schema = _schema(features)
    cameras = [str(c) for c in meta["cameras"]]
    keys = [IMAGE_KEY.format(c) for c in cameras]
    h, w = meta["image_size"]
    data = _DataFiles(out, schema)
    videos = {k: _VideoFiles(out, k, fps, (h, w)) for k in keys}
    tasks: dict[str, int] = {}
    rows: list[dict[str, Any]] = []
    episode_stats: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in features}
    total = 0
    try:
        for e, f in enumerate(files):
            ep = _episode(f, cameras, meta["image_size"])
            n = len(ep.actions)
            task = tasks.setdefault(ep.instruction, len(tasks))
            last = np.arange(n) == n - 1
            values: dict[str, np.ndarray] = {
                "observation.state": ep.state,
                "action": ep.actions,
                "next.done": last,
                "next.success": last & ep.success,
                "qrobot.base_pose": ep.base_pose,
                "timestamp": (np.arange(n) / fps).astype(np.float32),
                "frame_index": np.arange(n, dtype=np.int64),
                "episode_index": np.full(n, e, np.int64),
                "index": np.arange(total, total + n, dtype=np.int64),
                "task_index": np.full(n, task, np.int64),
            }
            if "qrobot.grounding" in features:
                values["qrobot.grounding"] = ep.grounding
            if "qrobot.action_chunks" in features:  # an episode without: the actions it would repeat
                width = features["qrobot.action_chunks"]["shape"][0] // len(ep.actions[0])
                chunks = ep.chunks if ep.chunks is not None else _repeat_chunks(ep.actions, width)
                values["qrobot.action_chunks"] = chunks.reshape(n, -1)
            table = pa.Table.from_arrays(
                [_column(pa, values[field.name], field.type) for field in schema],
                schema=schema,
            )
            chunk, file = data.add(table)
            row: dict[str, Any] = {
                "episode_index": e,
                "tasks": [ep.instruction],
                "length": n,
                "data/chunk_index": chunk,
                "data/file_index": file,
                "dataset_from_index": total,
                "dataset_to_index": total + n,
            }
            stats: dict[str, dict[str, np.ndarray]] = {}
            for c, key in enumerate(keys):
                frames = ep.images[:, c]
                row |= videos[key].add(frames)
                stats[key] = _image_stats(frames)
            for key, v in values.items():
                stats[key] = _stats(v)
            for key in features:
                episode_stats[key].append(stats[key])
            row |= {f"stats/{key}/{k}": v.tolist() for key in features for k, v in stats[key].items()}
            row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            rows.append(row)
            total += n
    finally:
        data.close()
        for video in videos.values():
            video.close()
    for key in keys:
        features[key]["info"] = videos[key].info()
    path = out / EPISODES_PATH.format(chunk_index=0, file_index=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, compression="snappy")
    pq.write_table(_tasks_table(list(tasks)), out / TASKS_PATH)
    info = {
        "codebase_version": CODEBASE_VERSION,
        "robot_type": meta["robot"],
        "total_episodes": len(rows),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": CHUNKS_SIZE,
        "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB,
        "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
        "fps": fps,
        "splits": {"train": f"0:{len(rows)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH,
        "features": features,
    }
    _write_json(info, out / INFO_PATH)
    _write_json({key: _listed(_aggregate(s)) for key, s in episode_stats.items()}, out / STATS_PATH)
    qmeta = dict(meta) | {
        "format": f"lerobot {CODEBASE_VERSION}",
        "lerobot": {
            "repo_id": repo_id,
            "video": {"codec": VCODEC, "pix_fmt": PIX_FMT, "crf": CRF, "gop": GOP, "tolerance": VIDEO_TOLERANCE},
            "episodes": [
                {"source": f.name, "seed": s["seed"], "action_noise": s["action_noise"], "chunks": s["chunks"] > 0}
                for f, s in zip(files, scans)
            ],
        },
    }
    (out / "meta.json").write_text(json.dumps(qmeta, indent=2) + "\n")
    return {
        "repo_id": repo_id,
        "episodes": len(rows),
        "successful": sum(s["success"] for s in scans),
        "frames": total,
        "fps": fps,
        "cameras": cameras,
        "tasks": len(tasks),
    }


def _repeat_chunks(actions: np.ndarray, chunk: int) -> np.ndarray:
    """(T, chunk, A): actions t .. t+chunk-1, the last repeated (what action_chunk gives
    an episode without DART labels)."""
    idx = np.minimum(np.arange(len(actions))[:, None] + np.arange(chunk), len(actions) - 1)
    return actions[idx]


def describe(out: Path, summary: dict[str, Any]) -> str:
    return (
        f"{out}: LeRobotDataset {CODEBASE_VERSION}, {summary['episodes']} episodes "
        f"({summary['successful']} successful), {summary['frames']} frames at {summary['fps']} fps, "
        f"cameras {', '.join(summary['cameras'])} ({VCODEC}); load it with "
        f"LeRobotDataset({summary['repo_id']!r}, root={str(out)!r})"
    )


# ------------------------------------------------------------------------- read back


def read_lerobot(directory: Path, successful_only: bool = True) -> tuple[dict[str, Any], list[Episode]]:
    """A LeRobotDataset v3.0 that qrobot exported, as `load_episodes` gives a collected
    dataset: its meta (meta.json) and its episodes in the source's order (the successful
    ones only, by default)."""
    directory = Path(directory)
    try:
        info = json.loads((directory / INFO_PATH).read_text())
        version = str(info["codebase_version"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise QrobotError(f"{directory / INFO_PATH}: unreadable LeRobot metadata ({str(exc)[:120]})") from None
    if not version.startswith("v3."):
        raise QrobotError(
            f"{directory}: a LeRobot {version} dataset; qrobot reads v3 (convert it with LeRobot's tools)"
        )
    if not (directory / "meta.json").is_file():
        raise QrobotError(
            f"{directory}: a LeRobot dataset that qrobot did not export (no meta.json naming its scenario, "
            "robot and sizes); qrobot trains on datasets it collected or exported"
        )
    meta = read_meta(directory / "meta.json", {"scenario": str, "cameras": list, "seeds": list, "action_dim": int})
    if len(meta["seeds"]) != 2 or not all(isinstance(c, str) for c in meta["cameras"]):
        raise QrobotError(f"{directory / 'meta.json'}: 'seeds' must be [first, last] and 'cameras' a list of names")
    try:
        episodes = _read(directory, info, meta, successful_only)
    except QrobotError:
        raise
    except Exception as exc:  # parquet, video and key errors: a damaged or foreign export
        raise QrobotError(
            f"{directory}: not a readable LeRobot v3 dataset ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    return meta, episodes


def _array(pa: Any, table: Any, name: str) -> np.ndarray:
    """A column as numpy: (N,) for scalars, (N, width) for (fixed-size) lists."""
    column = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(column.type) or pa.types.is_list(column.type):
        return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(column), -1)
    return np.asarray(column.to_numpy(zero_copy_only=False))


def _tasks(pq: Any, path: Path) -> list[str]:
    table = pq.read_table(path)
    index = (table.schema.pandas_metadata or {}).get("index_columns") or ["task"]
    names = table.column(index[0] if isinstance(index[0], str) else "task").to_pylist()
    order = table.column("task_index").to_pylist()
    tasks = [""] * len(names)
    for name, i in zip(names, order):
        tasks[i] = name
    return tasks


def _decode(path: Path, fps: int) -> np.ndarray:
    """Every frame of an MP4, frame k at k / fps (by its timestamp), as (N, H, W, 3) uint8."""
    av = _av()
    frames: dict[int, np.ndarray] = {}
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in c.decode(stream):
            frames[round(float(frame.pts * frame.time_base) * fps)] = frame.to_ndarray(format="rgb24")
    if sorted(frames) != list(range(len(frames))):
        raise QrobotError(f"{path}: frames missing or out of step with {fps} fps")
    return np.stack([frames[k] for k in range(len(frames))])


def _read(directory: Path, info: dict[str, Any], meta: dict[str, Any], successful_only: bool) -> list[Episode]:
    from qrobot.vla.data import Episode

    pa, pq = _arrow()
    fps = int(info["fps"])
    paths = sorted((directory / "data").glob("*/*.parquet"))
    if not paths:
        raise QrobotError(f"{directory}: no data files (data/chunk-*/file-*.parquet)")
    data = pa.concat_tables([pq.read_table(p) for p in paths]).sort_by("index")
    columns = {name: _array(pa, data, name) for name in data.column_names}
    index = columns["index"].reshape(-1)
    tasks = _tasks(pq, directory / TASKS_PATH)
    listed = pa.concat_tables(
        [pq.read_table(p) for p in sorted((directory / "meta" / "episodes").glob("*/*.parquet"))],
        promote_options="default",
    )
    listed = listed.select([c for c in listed.column_names if not c.startswith("stats/")])
    rows = sorted(listed.to_pylist(), key=lambda r: r["episode_index"])
    # DART labels per episode (an episode without has its repeated actions in the column)
    has_chunks = [bool(e.get("chunks", True)) for e in meta.get("lerobot", {}).get("episodes", [])]
    keys = [IMAGE_KEY.format(c) for c in meta["cameras"]]
    decoded: dict[Path, np.ndarray] = {}
    episodes = []
    for row in rows:
        lo, hi = np.searchsorted(index, [row["dataset_from_index"], row["dataset_to_index"]])
        if hi - lo != row["length"] or hi - lo < 1:
            raise QrobotError(f"{directory}: episode {row['episode_index']} has {hi - lo} frames, not {row['length']}")
        part = {name: values[lo:hi] for name, values in columns.items()}
        success = bool(part["next.success"][-1]) if "next.success" in part else True
        if successful_only and not success:
            continue
        stamps = np.rint(part["timestamp"].reshape(-1).astype(np.float64) * fps).astype(int)
        images = []
        for key in keys:
            path = directory / info["video_path"].format(
                video_key=key, chunk_index=row[f"videos/{key}/chunk_index"], file_index=row[f"videos/{key}/file_index"]
            )
            if path not in decoded:
                decoded[path] = _decode(path, fps)
            start = round(row[f"videos/{key}/from_timestamp"] * fps)
            images.append(decoded[path][start + stamps])
        n, a = hi - lo, int(meta["action_dim"])
        chunks = None
        e = int(row["episode_index"])
        if "qrobot.action_chunks" in part and (has_chunks[e] if e < len(has_chunks) else True):
            chunks = part["qrobot.action_chunks"].reshape(n, -1, a).astype(np.float32)
        episodes.append(
            Episode(
                np.stack(images, axis=1),
                part["observation.state"].astype(np.float32),
                part["action"].astype(np.float32),
                part["qrobot.base_pose"].astype(np.float32)
                if "qrobot.base_pose" in part
                else np.zeros((n, 3), np.float32),
                part["qrobot.grounding"].astype(np.float32)
                if "qrobot.grounding" in part
                else np.zeros((n, 0), np.float32),
                tasks[int(part["task_index"].reshape(-1)[0])],
                success,
                chunks,
                scenario=str(meta["scenario"]),
            )
        )
    return episodes
