"""A table of user mistakes walked through the real CLI: each gives exactly one line on
stderr naming the file, field or flag, exit status 2, no traceback, nothing on stdout,
and leaves nothing behind (no run directory, no dataset, no output file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from qrobot.policies import CHECKPOINTS

from qrobot.cli import main

NAV = CHECKPOINTS / "qwen-vla" / "diffbot"  # the shipped base model, a whole one-embodiment checkpoint
WM = CHECKPOINTS / "world_model"


def _ckpt(root: Path, name: str, src: Path = NAV) -> Path:
    d = root / name
    shutil.copytree(src, d)
    return d


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _scenario(root: Path, name: str, text: str) -> Path:
    p = root / f"{name}.toml"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Damaged checkpoints, bad scenario files, a file where a folder is wanted."""
    root = tmp_path_factory.mktemp("bad")
    _truncate(_ckpt(root, "heads_cut") / "heads.safetensors")
    _truncate(_ckpt(root, "backbone_cut") / "backbone" / "model.safetensors")
    (_ckpt(root, "config_bad") / "vla_config.json").write_text('{"family": "qwen2.5-vl", "chunk": ')
    (_ckpt(root, "norm_missing") / "norm_stats.json").unlink()
    cfg = json.loads((NAV / "vla_config.json").read_text())
    (_ckpt(root, "config_field") / "vla_config.json").write_text(json.dumps({**cfg, "chunk": "eight"}))
    (_ckpt(root, "config_unknown") / "vla_config.json").write_text(json.dumps({**cfg, "layers_x": 3}))
    (_ckpt(root, "config_dims") / "vla_config.json").write_text(
        json.dumps({**cfg, "scenario": "", "robot": "", "state_dim": 7})
    )
    (_ckpt(root, "vocab_escape") / "instruction_vocab.json").write_text(
        json.dumps({"kind": "checkpoint", "source": "x", "files": "/etc"})
    )
    (_ckpt(root, "norm_nan") / "norm_stats.json").write_text('{"state": {"q01": [NaN], "q99": [1.0]}}')
    norm = json.loads((NAV / "norm_stats.json").read_text())
    (_ckpt(root, "norm_partial") / "norm_stats.json").write_text(json.dumps({"state": norm["state"]}))
    norm["state"]["q01"], norm["state"]["q99"] = norm["state"]["q99"], norm["state"]["q01"]
    (_ckpt(root, "norm_inverted") / "norm_stats.json").write_text(json.dumps(norm))
    (_ckpt(root, "pointnav_only") / "vla_config.json").write_text(json.dumps({**cfg, "tasks": ["pointnav"]}))
    (_ckpt(root, "family") / "vla_config.json").write_text(json.dumps({**cfg, "family": "qwen3-vl", "image_side": 128}))
    for k, stop in enumerate(([0.06, 0.15], [0.06, -1, 1], [0.06, 0.15, 2.5], [True, 0.15, 1])):
        (_ckpt(root, f"nav_stop{k}") / "vla_config.json").write_text(json.dumps({**cfg, "nav_stop": stop}))
    vocab = json.loads((NAV / "instruction_vocab.json").read_text())
    (_ckpt(root, "vocab_many") / "instruction_vocab.json").write_text(
        json.dumps({**vocab, "qwen_ids": list(range(100, 5100))})
    )
    from safetensors.numpy import load_file, save_file

    heads = load_file(str(NAV / "heads.safetensors"))
    first = sorted(heads)[0]
    save_file({**heads, first: heads[first] * float("nan")}, str(_ckpt(root, "heads_nan") / "heads.safetensors"))
    weights = load_file(str(NAV / "backbone" / "model.safetensors"))
    layer = sorted(k for k in weights if ".layers.1." in k)[0]
    save_file(
        {k: v for k, v in weights.items() if k != layer},
        str(_ckpt(root, "backbone_hole") / "backbone" / "model.safetensors"),
        metadata={"format": "pt"},
    )
    wm_cfg = json.loads((WM / "wm_config.json").read_text())
    (_ckpt(root, "wm_camera", WM) / "wm_config.json").write_text(json.dumps({**wm_cfg, "camera": {}}))
    (root / "keys_blocked" / "policy.pem").mkdir(parents=True)
    corrupt = root / "corrupt_dataset"
    corrupt.mkdir()
    (corrupt / "meta.json").write_text(
        json.dumps({"scenario": "reach", "robot": "panda", "cameras": ["scene"], "seeds": [0, 0]})
    )
    (corrupt / "ep0-seed0.npz").write_bytes(b"PK\x03\x04 not really a zip")
    _truncate(_ckpt(root, "wm_cut", WM) / "world_model.safetensors")
    (root / "afile").write_text("not a directory\n")
    other = root / "pick_dataset"
    other.mkdir()
    (other / "meta.json").write_text(json.dumps({"scenario": "pick_place"}))
    s = root / "sc"
    s.mkdir()
    (s / "nested").mkdir()
    for name, text in {
        "nan": 'extends = "reach"\n[task]\nkind = "reach"\nsuccess_distance = nan\n',
        "inf": 'extends = "pick_place"\ncontrol_hz = inf\n',
        "negative": 'extends = "pick_place"\n[task.objects]\nsize = -0.04\n',
        "huge_room": 'extends = "pointnav"\n[room]\nsize = [2000.0, 2000.0]\n',
        "coord": 'extends = "reach"\n[[cameras]]\nname = "far"\neye = [1e9, 0.0, 1.0]\ntarget = [0.0, 0.0, 0.0]\n',
        "geodesic": 'extends = "pointnav"\n[task]\nkind = "pointnav"\ngeodesic_range = [30.0, 40.0]\n',
        "geo_order": 'extends = "pointnav"\n[task]\nkind = "pointnav"\ngeodesic_range = [5.0, 2.0]\n',
        "packed": 'extends = "pick_place"\n[task.objects]\ncount = 5\nmin_spacing = 0.5\n',
        "landmarks": 'extends = "objectnav"\n[room]\nsize = [3.0, 3.0]\n',
        "person": 'extends = "pointnav_people"\n[[people]]\nwaypoints = [[0.0, 0.0], [40.0, 0.0]]\n',
        "obstacles": 'extends = "pointnav"\n[room]\nrandom_obstacle_size = [2.0, 0.5]\n',
        "toml": 'extends = "reach"\nmax_steps = = 3\n',
        "many_steps": 'extends = "reach"\nmax_steps = 10000000\n',
        "named": 'extends = "reach"\nname = "../../escaped"\n',
        "self_cycle": 'extends = "../sc/self_cycle.toml"\n',
        "deep_toml": 'extends = "reach"\nx = ' + "[" * 3000 + "]" * 3000 + "\n",
        "reach_2d": 'extends = "reach"\n[task.target_region]\nlow = [0.4, -0.2]\nhigh = [0.6, 0.2]\n',
    }.items():
        _scenario(s, name, text)
    _scenario(s / "nested", "rel", 'extends = "../missing_parent.toml"\n')
    reach = root / "reach_dataset"
    reach.mkdir()
    (reach / "meta.json").write_text(json.dumps({"scenario": "reach", "robot": "panda", "task": "reach"}))
    (root / "impostor").mkdir()
    _scenario(root / "impostor", "reach", 'extends = "stack"\n')  # called reach, is a stack
    return root


def _cases(b: Path) -> list[tuple[list[str], str]]:
    s, f = b / "sc", str(b / "afile")
    q = ["--policy", "qwen-vla", "--checkpoint"]
    return [
        (["run", "reach", "--seed", "-1"], "--seed"),
        (["run", "pointnav", "--policy", "qwen-vla", "--seed", "99999999999999999999"], "--seed"),
        (["run", "reach", "--episodes", "3", "--seed", "2147483646"], "--seed"),
        (["run", "pointnav", *q, str(b / "heads_cut")], "heads.safetensors"),
        (["run", "pointnav", *q, str(b / "backbone_cut")], "backbone"),
        (["run", "pointnav", *q, str(b / "config_bad")], "vla_config.json"),
        (["run", "pointnav", *q, str(b / "norm_missing")], "norm_stats.json"),
        (["run", "pointnav", *q, str(b / "config_field")], "'chunk'"),
        (["run", "pointnav", *q, str(b / "config_unknown")], "layers_x"),
        (["run", "pointnav", *q, str(b / "config_dims")], "state_dim"),
        (["run", "pointnav", *q, str(b / "vocab_escape")], "'files'"),
        (["run", "pointnav", *q, str(b / "norm_nan")], "norm_stats.json"),
        (["run", "pointnav", *q, str(b / "nowhere")], "--checkpoint"),
        (["run", "objectnav", *q, str(b / "pointnav_only")], "task"),
        (["run", "pick_place", *q, str(NAV)], "task"),
        (["eval", "reach", "--checkpoint", str(NAV), "--episodes", "1"], "task"),
        (["eval", "pointnav", "--checkpoint", str(b / "config_bad"), "--episodes", "1"], "vla_config.json"),
        (["eval", "pointnav", "--checkpoint", str(NAV), "--seed", "-5"], "--seed"),
        (["eval", "pointnav", "--checkpoint", str(NAV), "--device", "banana"], "--device"),
        (["run", "pointnav", "--policy", "qwen-vla", "--device", "cuda"], "--device"),
        (["run", "pointnav", "--policy", "qwen-vla", "--device", "banana"], "--device"),
        (["run", "reach", "--checkpoint", "/nonexistent", "--device", "banana"], "--checkpoint"),
        (["run", "reach", "--device", "cpu"], "--device"),
        (["run", "reach", "--runs-dir", f], "--runs-dir"),
        (["run", "reach", "--runs-dir", f + "/sub"], "--runs-dir"),
        (["run", "reach", "--runs-dir", "/proc/qrobot-runs"], "--runs-dir"),
        (["collect", "reach", "--episodes", "1", "--out", f], "--out"),
        (["collect", "reach", "--episodes", "1", "--out", str(b / "pick_dataset")], "pick_place"),
        (["collect", "reach", "--seed", "-1", "--out", str(b / "new_dataset")], "--seed"),
        (["bench", "--scenarios", "reach", "--episodes", "1", "--out", f], "--out"),
        (["bench", "--scenarios", "reach", "--episodes", "1", "--runs-dir", f], "--runs-dir"),
        (["bench", "--scenarios", "nosuch"], "nosuch"),
        (["bench", "--scenarios", "reach", "--policies", "nosuch"], "nosuch"),
        (["bench", "--scenarios", "reach", "--policies", "wander"], "mobile base"),
        (["run", "reach", "--gui"], "--gui"),
        (["run", str(s / "nan.toml")], "success_distance"),
        (["run", str(s / "inf.toml")], "control_hz"),
        (["run", str(s / "negative.toml")], "task.objects.size"),
        (["run", str(s / "huge_room.toml")], "room.size"),
        (["run", str(s / "coord.toml")], "cameras"),
        (["run", str(s / "geodesic.toml")], "geodesic_range"),
        (["run", str(s / "geo_order.toml")], "geodesic_range"),
        (["run", str(s / "packed.toml")], "task.region"),
        (["run", str(s / "landmarks.toml")], "landmarks"),
        (["run", str(s / "person.toml")], "people"),
        (["run", str(s / "obstacles.toml")], "random_obstacle_size"),
        (["run", str(s / "toml.toml")], "invalid TOML"),
        (["run", str(s / "many_steps.toml")], "max_steps"),
        (["run", str(s / "nested" / "rel.toml")], str(s / "nested" / ".." / "missing_parent.toml")),
        (["run", str(s / "missing.toml")], "not found"),
        (["run", "nosuch"], "unknown scenario"),
        (["run", "reach", "--policy", "nosuch"], "unknown policy"),
        (["run", "reach", "--episodes", "0"], "--episodes"),
        (["run", "reach", "--speed-scale", "0.5"], "--speed-scale"),
        (["run", "reach", "--foresight", str(WM)], "foresight"),
        (["run", "pointnav", "--foresight", str(b / "wm_cut")], "world_model.safetensors"),
        (["run", "pointnav", "--foresight", str(b / "nowhere")], "world-model checkpoint"),
        (["wm-eval", "--checkpoint", str(b / "wm_cut"), "--dataset", str(b)], "world_model.safetensors"),
        (["train", "--dataset", str(b / "nowhere"), "--out", str(b / "new_ckpt")], "--dataset"),
        (["inspect", str(b / "missing.rrd")], "missing.rrd"),
        (["run", str(s / "named.toml")], "name"),
        (["run", str(s / "self_cycle.toml")], "cycle"),
        (["run", str(s / "deep_toml.toml")], "nested too deeply"),
        (["run", str(s / "reach_2d.toml")], "target_region"),
        (["run", "reach", "--runs-dir", str(b / ("x" * 300))], "File name too long"),
        (["run", "pointnav", *q, str(b / "norm_inverted")], "q01"),
        (["run", "pointnav", *q, str(b / "norm_partial")], "'waypoints'"),
        (["run", "pointnav", *q, str(b / "family")], "model_type"),
        *[(["run", "pointnav", *q, str(b / f"nav_stop{k}")], "'nav_stop'") for k in range(4)],
        (["run", "pointnav", *q, str(b / "vocab_many")], "instruction_vocab.json"),
        (["run", "pointnav", *q, str(b / "heads_nan")], "NaN"),
        (["run", "pointnav", *q, str(b / "backbone_hole")], "missing keys"),
        (["run", "pointnav", "--foresight", str(b / "wm_camera")], "'camera'"),
        (["train", "--dataset", str(b / "corrupt_dataset"), "--out", str(b / "new_ckpt")], "ep0-seed0.npz"),
        (["train", "--dataset", str(NAV), "--out", str(b / "new_ckpt"), "--lr", "nan"], "--lr"),
        (["collect", str(b / "impostor" / "reach.toml"), "--episodes", "1", "--out", str(b / "reach_dataset")], "task"),
        (["keys", "init", str(b / "keys_blocked")], "policy.pem"),
        (["run", "reach", "--checkpoint", ""], "--checkpoint"),
        (["bench", "--scenarios", ",,,"], "--scenarios"),
        (["eval", "pointnav", "--checkpoint", str(NAV), "--replan", "3"], "--replan"),
        (["eval", "pointnav", "--checkpoint", str(NAV), "--nav-stop", "0.06,0.15,3"], "--nav-stop"),
        (["eval", "objectnav", "--checkpoint", str(NAV), "--nav-stop", "0.06,0.15"], "--nav-stop"),
        (["eval", "objectnav", "--checkpoint", str(NAV), "--nav-stop", "0.06,nan,2"], "--nav-stop"),
        (["eval", "objectnav", "--checkpoint", str(NAV), "--nav-stop", "0.06,0.15,0"], "--nav-stop"),
        (
            ["wm-train", "--dataset", str(b / "corrupt_dataset"), "--out", str(b / "wm_new"), "--minutes", "0"],
            "--minutes",
        ),
        (["run", "reach", "--bogus"], "--bogus"),
    ]


def test_the_table_is_large_enough(bad: Path) -> None:
    assert len(_cases(bad)) >= 40


@pytest.mark.parametrize("k", range(len(_cases(Path(".")))))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    k: int, bad: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, needle = _cases(bad)[k]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    before = sorted(p.relative_to(bad) for p in bad.rglob("*"))
    if argv[0] in ("run", "eval", "bench") and "--runs-dir" not in argv:
        argv = [*argv, "--runs-dir", str(tmp_path / "runs")]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (argv, err)
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert needle in lines[0], (argv, lines[0])
    assert out == "", (argv, out)
    assert not (tmp_path / "runs").exists() and list(tmp_path.iterdir()) == [], (argv, list(tmp_path.iterdir()))
    assert sorted(p.relative_to(bad) for p in bad.rglob("*")) == before, argv
