"""`qrobot export lerobot` and `collect --format lerobot`: a LeRobotDataset v3.0 as lerobot
0.4.4 lays it out (checked here against the format, its videos decoded with PyAV; lerobot
itself loads one in `make lerobot-check`), read back into qrobot's own training exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from qrobot.cli import main
from qrobot.errors import QrobotError
from qrobot.export.lerobot import STAGING, VIDEO_TOLERANCE, read_lerobot
from qrobot.vla.data import LABEL_CHUNK, load_episodes

NOISE = "0.1"  # DART: the episodes carry the expert's clean action chunks too
DEFAULTS = ["timestamp", "frame_index", "episode_index", "index", "task_index"]
STATS = {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two real reach episodes (DART-noised) collected, and their export."""
    root = tmp_path_factory.mktemp("lerobot")
    src, out = root / "src", root / "v3"
    assert main(["collect", "reach", "--episodes", "2", "--action-noise", NOISE, "--out", str(src), "-q"]) == 0
    assert main(["export", "lerobot", str(src), str(out), "--repo-id", "test/reach", "-q"]) == 0
    return src, out


def _table(path: Path) -> pa.Table:
    return pq.read_table(path)


def _rows(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False)


def _decode(path: Path) -> tuple[np.ndarray, list[float]]:
    with av.open(str(path)) as c:
        frames = [(float(f.pts * f.time_base), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    frames.sort(key=lambda x: x[0])
    return np.stack([f for _, f in frames]), [t for t, _ in frames]


def _close(decoded: np.ndarray, source: np.ndarray) -> tuple[float, float]:
    diff = np.abs(decoded.astype(np.int16) - source.astype(np.int16))
    return float(diff.mean()), float(np.percentile(diff, 99))


def test_layout_and_metadata_are_lerobot_v3(dataset: tuple[Path, Path]) -> None:
    src, out = dataset
    meta = json.loads((src / "meta.json").read_text())
    _, eps = load_episodes(src, successful_only=False)
    lengths = [len(ep.actions) for ep in eps]
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["robot_type"] == "panda"
    assert info["fps"] == 10 == meta["control_hz"] and isinstance(info["fps"], int)
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"]) == (
        2,
        sum(lengths),
        len({ep.instruction for ep in eps}),
    )
    assert info["splits"] == {"train": "0:2"}
    assert (info["chunks_size"], info["data_files_size_in_mb"], info["video_files_size_in_mb"]) == (1000, 100, 200)
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    ft = info["features"]
    cams = ["observation.images.scene", "observation.images.wrist"]
    assert list(ft)[:2] == cams and list(ft)[-5:] == DEFAULTS
    for cam in cams:
        assert ft[cam]["dtype"] == "video" and ft[cam]["shape"] == [128, 128, 3]
        assert ft[cam]["names"] == ["height", "width", "channels"]
        assert ft[cam]["info"] == {
            "video.height": 128,
            "video.width": 128,
            "video.codec": "h264",
            "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False,
            "video.fps": 10,
            "video.channels": 3,
            "has_audio": False,
        }
    assert ft["observation.state"] == {"dtype": "float32", "shape": [16], "names": ft["observation.state"]["names"]}
    assert (
        ft["observation.state"]["names"][:3] == ["ee_x", "ee_y", "ee_z"] and len(ft["observation.state"]["names"]) == 16
    )
    assert ft["action"] == {"dtype": "float32", "shape": [5], "names": ["dx", "dy", "dz", "dyaw", "gripper"]}
    assert ft["next.done"]["dtype"] == ft["next.success"]["dtype"] == "bool"
    assert ft["qrobot.grounding"]["shape"] == [8] and ft["qrobot.action_chunks"]["shape"] == [LABEL_CHUNK * 5]
    for key in DEFAULTS:
        assert ft[key]["shape"] == [1] and ft[key]["dtype"] == ("float32" if key == "timestamp" else "int64")

    # the frames: one parquet file, a column per non-video feature in the features' order
    data = _table(out / "data" / "chunk-000" / "file-000.parquet")
    assert data.column_names == [k for k, f in ft.items() if f["dtype"] != "video"]
    assert data.num_rows == info["total_frames"]
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 16)
    assert data.schema.field("timestamp").type == pa.float32() and data.schema.field("index").type == pa.int64()
    hf = json.loads(data.schema.metadata[b"huggingface"])["info"]["features"]
    assert hf["action"] == {"feature": {"dtype": "float32", "_type": "Value"}, "length": 5, "_type": "List"}
    assert _rows(data, "index").tolist() == list(range(sum(lengths)))
    frame = np.concatenate([np.arange(n) for n in lengths])
    assert _rows(data, "frame_index").tolist() == frame.tolist()
    assert np.array_equal(_rows(data, "timestamp"), (frame / 10).astype(np.float32))
    assert _rows(data, "episode_index").tolist() == [e for e, n in enumerate(lengths) for _ in range(n)]
    assert _rows(data, "next.done").tolist() == [t == n - 1 for n in lengths for t in range(n)]

    # the episodes: rows, video spans, tasks
    episodes = _table(out / "meta" / "episodes" / "chunk-000" / "file-000.parquet").to_pylist()
    tasks = _table(out / "meta" / "tasks.parquet")
    index = tasks.schema.pandas_metadata["index_columns"][0]  # pandas reads the tasks back as its index
    task_of = dict(zip(tasks.column("task_index").to_pylist(), tasks.column(index).to_pylist()))
    start = 0
    for e, (row, ep) in enumerate(zip(episodes, eps)):
        n = len(ep.actions)
        assert (row["episode_index"], row["length"], row["tasks"]) == (e, n, [ep.instruction])
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (start, start + n)
        assert (row["data/chunk_index"], row["data/file_index"], row["meta/episodes/chunk_index"]) == (0, 0, 0)
        for cam in cams:
            assert row[f"videos/{cam}/from_timestamp"] == pytest.approx(start / 10)
            assert row[f"videos/{cam}/to_timestamp"] == pytest.approx((start + n) / 10)
            assert (row[f"videos/{cam}/chunk_index"], row[f"videos/{cam}/file_index"]) == (0, 0)
        assert row["stats/action/count"] == [n] and len(row["stats/observation.state/mean"]) == 16
        assert task_of[_rows(data, "task_index")[start]] == ep.instruction
        start += n

    # the statistics: every feature, lerobot's keys and shapes
    stats = json.loads((out / "meta" / "stats.json").read_text())
    assert set(stats) == set(ft)
    for key, s in stats.items():
        assert set(s) == STATS, key
        assert s["count"] == [sum(lengths)], key  # (cameras: every frame of episodes under 100)
        if ft[key]["dtype"] == "video":
            assert np.array(s["mean"]).shape == (3, 1, 1) and 0 <= np.min(s["min"]) <= np.max(s["max"]) <= 1
        else:
            assert np.array(s["mean"]).shape == (ft[key]["shape"][0],), key
    states = np.concatenate([ep.state for ep in eps])
    assert np.allclose(stats["observation.state"]["mean"], states.mean(0), atol=1e-6)
    assert np.allclose(stats["observation.state"]["min"], states.min(0))
    # quantiles as lerobot aggregates them: the episodes' own, weighted by their lengths
    q99 = sum(len(ep.actions) * np.quantile(ep.actions, 0.99, axis=0, method="inverted_cdf") for ep in eps) / sum(
        lengths
    )
    assert np.allclose(stats["action"]["q99"], q99)


def test_videos_decode_to_the_source_frames(dataset: tuple[Path, Path]) -> None:
    """Each camera's MP4, decoded with PyAV: every frame at its timestamp, and the pixels
    within the tolerance the export states (h264, yuv420p: lossy)."""
    src, out = dataset
    _, eps = load_episodes(src, successful_only=False)
    for c, cam in enumerate(["scene", "wrist"]):
        frames, stamps = _decode(out / "videos" / f"observation.images.{cam}" / "chunk-000" / "file-000.mp4")
        source = np.concatenate([ep.images[:, c] for ep in eps])
        assert frames.shape == source.shape
        assert stamps == pytest.approx([k / 10 for k in range(len(source))])
        mean, p99 = _close(frames, source)
        assert mean < VIDEO_TOLERANCE["mean"] and p99 < VIDEO_TOLERANCE["p99"], (cam, mean, p99)


def test_round_trip_into_qrobot_is_exact(dataset: tuple[Path, Path]) -> None:
    src, out = dataset
    meta_src, theirs = load_episodes(src, successful_only=False)
    meta, ours = load_episodes(out, successful_only=False)  # meta/info.json: read_lerobot
    assert {k: meta[k] for k in meta_src} == meta_src and meta["lerobot"]["repo_id"] == "test/reach"
    assert len(ours) == len(theirs) == 2
    for a, b in zip(ours, theirs):
        for field in ("state", "actions", "base_pose", "grounding", "chunks"):
            x, y = getattr(a, field), getattr(b, field)
            assert x.dtype == y.dtype and np.array_equal(x, y), field
        assert b.chunks is not None and b.chunks.shape[1:] == (LABEL_CHUNK, 5)
        assert (a.instruction, a.success, a.scenario) == (b.instruction, b.success, b.scenario)
        assert a.images.shape == b.images.shape and a.images.dtype == np.uint8
        assert _close(a.images, b.images)[0] < VIDEO_TOLERANCE["mean"]
    successful = [ep.success for ep in theirs]
    assert len(load_episodes(out)[1]) == sum(successful)


def test_train_reads_the_export(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = dataset
    ckpt = tmp_path / "ckpt"
    args = ["train", "--dataset", str(out), "--out", str(ckpt), "--steps", "2", "--batch", "2", "-q"]
    assert main(args) == 0
    assert (ckpt / "vla_config.json").is_file()


def test_collect_format_lerobot_writes_the_same_dataset(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    """`collect --format lerobot` = collect, then export: the same frames as the export of
    the same seed, and no staging folder left."""
    _, out = dataset
    direct = tmp_path / "direct"
    argv = ["collect", "reach", "--episodes", "1", "--action-noise", NOISE, "--format", "lerobot", "--out", str(direct)]
    assert main([*argv, "-q"]) == 0
    assert not (direct / STAGING).exists() and (direct / "meta" / "info.json").is_file()
    assert json.loads((direct / "meta.json").read_text())["lerobot"]["repo_id"] == "qrobot/reach"
    mine = _table(direct / "data" / "chunk-000" / "file-000.parquet")
    first = _table(out / "data" / "chunk-000" / "file-000.parquet")
    first = first.filter(pc.equal(first.column("episode_index"), 0))
    assert mine.equals(first.select(mine.column_names))


def _one_line_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "Traceback" not in err[0], err


def test_bad_exports_are_one_line_and_write_nothing(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, out = dataset
    new = tmp_path / "new"
    _one_line_exit_2(["export", "lerobot", str(tmp_path), str(new)], capsys, "not a qrobot dataset")
    _one_line_exit_2(["export", "lerobot", str(out), str(new)], capsys, "already a LeRobot dataset")
    _one_line_exit_2(["export", "lerobot", str(src), str(out)], capsys, "is not empty")
    _one_line_exit_2(["export", "lerobot", str(src), str(src / "meta.json")], capsys, "is a file")
    _one_line_exit_2(["export", "lerobot", str(src), str(new), "--repo-id", "no slash"], capsys, "repo id")
    (tmp_path / "locked").mkdir(mode=0o500)
    if not os.access(tmp_path / "locked", os.W_OK):  # (root writes anyway)
        _one_line_exit_2(["export", "lerobot", str(src), str(tmp_path / "locked" / "x")], capsys, "not writable")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "meta.json").write_text((src / "meta.json").read_text())
    (broken / "ep0-seed0.npz").write_bytes(b"not a zip")
    _one_line_exit_2(["export", "lerobot", str(broken), str(new)], capsys, "ep0-seed0.npz")
    assert not new.exists()
    _one_line_exit_2(["collect", "reach", "--format", "lerobot", "--out", str(src)], capsys, "is not empty")
    _one_line_exit_2(["collect", "reach", "--out", str(out)], capsys, "is a LeRobot dataset")


def test_a_foreign_v3_dataset_is_refused_with_its_reason(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = dataset
    foreign = tmp_path / "foreign"
    (foreign / "meta").mkdir(parents=True)
    (foreign / "meta" / "info.json").write_text((out / "meta" / "info.json").read_text())
    with pytest.raises(QrobotError, match="did not export"):
        read_lerobot(foreign)
    (foreign / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v2.1", "features": {}}))
    with pytest.raises(QrobotError, match=r"LeRobot v2\.1 dataset"):
        load_episodes(foreign)
