"""The video world model: dataset, shapes, save/load, a smoke train, eval, foresight in the env."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.cli import main
from qrobot.errors import QrobotError
from qrobot.record import EpisodeRecorder, summarize_rrd
from qrobot.runner import run_episode
from qrobot.scenario import load_scenario
from qrobot.worldmodel.data import batch_of, load_wm_episodes, windows
from qrobot.worldmodel.model import WMConfig, WorldModel, to_tensor
from qrobot.worldmodel.train import CHANGED, moving_windows, wm_loss


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """3 episodes (expert, noisy-expert, wander) and a 20-step model, through the CLI."""
    root = tmp_path_factory.mktemp("wm")
    ds, ckpt = root / "ds", root / "ckpt"
    assert main(["wm-collect", "pointnav_clutter", "--episodes", "3", "--max-steps", "40", "--out", str(ds)]) == 0
    assert main(["wm-train", "--dataset", str(ds), "--out", str(ckpt), "--steps", "20", "--batch", "8"]) == 0
    return ds, ckpt


def test_dataset_aligns_frames_actions_and_labels(trained: tuple[Path, Path]) -> None:
    meta, eps = load_wm_episodes(trained[0])
    assert meta["policies"] == ["expert", "noisy-expert", "wander"] and [e.policy for e in eps] == meta["policies"]
    ep = eps[2]
    t_len = len(ep.actions)
    assert ep.frames.shape == (t_len + 1, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.collision.shape == ep.success.shape == (t_len + 1,)
    assert np.abs(ep.frames[1:].astype(int) - ep.frames[:-1]).max() > 0  # the robot shows up moving
    w = windows(ep, 0, 3, 8)
    assert np.array_equal(w["context"][0], ep.frames[0]) and np.array_equal(w["context"][-1], ep.frames[0])
    assert np.array_equal(w["target"][0], ep.frames[1]) and np.array_equal(w["actions"][0], ep.actions[0])
    end = windows(ep, t_len - 2, 3, 8)
    assert end["valid"].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert np.array_equal(end["target"][1], ep.frames[t_len])


def test_untrained_model_is_copy_last_frame_and_shapes_hold() -> None:
    model = WorldModel(WMConfig())
    ctx, actions = torch.rand(2, 3, 3, 64, 64), torch.rand(2, 8, 3) * 2 - 1
    out = model(ctx, actions)
    assert out["frames"].shape == (2, 8, 3, 64, 64) and out["collision"].shape == out["success"].shape == (2, 8)
    assert torch.equal(out["frames"], ctx[:, -1:].expand(-1, 8, -1, -1, -1))
    assert model(ctx, actions, decode=[0, 7])["frames"].shape == (2, 2, 3, 64, 64)
    probs = model.imagine(ctx, actions)["collision"]
    assert torch.all((probs >= 0) & (probs <= 1))


def test_loss_falls_on_a_real_batch(trained: tuple[Path, Path]) -> None:
    _, eps = load_wm_episodes(trained[0])
    torch.manual_seed(0)
    model = WorldModel(WMConfig())
    picks = [(e, t) for e in range(len(eps)) for t in range(0, 30, 5)]
    batch = batch_of(eps, picks, 3, 8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = wm_loss(model, batch, list(range(8)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_moving_windows_are_the_ones_whose_view_changes(trained: tuple[Path, Path]) -> None:
    _, eps = load_wm_episodes(trained[0])
    moving = set(moving_windows(eps, 8))
    all_windows = [(e, t) for e, ep in enumerate(eps) for t in range(len(ep.actions))]
    assert 0 < len(moving) < len(all_windows)
    for e, t in all_windows[::7]:
        ep = eps[e]
        later = ep.frames[min(t + 8, len(ep.actions))].astype(int)
        changed = int((np.abs(ep.frames[t].astype(int) - later).max(-1) > CHANGED * 255).sum())
        assert ((e, t) in moving) == (changed >= 30), (e, t, changed)


def test_log_mse_term_asks_a_still_frame_to_be_exact(trained: tuple[Path, Path]) -> None:
    # the same small error costs more under the log term when the rest of the frame is exact
    _, eps = load_wm_episodes(trained[0])
    batch = batch_of(eps, [(0, 5)], 3, 8)
    batch["target"] = np.repeat(batch["context"][:, -1:], 8, 1)  # a still future: copy-last is exact
    model = WorldModel(WMConfig())
    exact, _ = wm_loss(model, batch, [0], log_weight=0.01)
    plain, _ = wm_loss(model, batch, [0], log_weight=0.0)
    with torch.no_grad():
        model.out.bias.fill_(0.003)  # a faint change everywhere (about 1 grey level)
    faint, _ = wm_loss(model, batch, [0], log_weight=0.01)
    faint_plain, _ = wm_loss(model, batch, [0], log_weight=0.0)
    assert (faint - exact) > 10 * (faint_plain - plain)


def test_save_load_round_trip_and_bad_config(trained: tuple[Path, Path], tmp_path: Path) -> None:
    _, ckpt = trained
    model = WorldModel.from_pretrained(ckpt)
    assert model.config.card["steps"] == 20 and model.config.scenario == "pointnav_clutter"
    ctx, actions = torch.rand(1, 3, 3, 64, 64), torch.rand(1, 8, 3)
    model.save_pretrained(tmp_path / "again")
    again = WorldModel.from_pretrained(tmp_path / "again")
    a, b = model.imagine(ctx, actions), again.imagine(ctx, actions)
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["collision"], b["collision"])
    cfg = json.loads((ckpt / "wm_config.json").read_text())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "wm_config.json").write_text(json.dumps({**cfg, "horizn": 8}))
    (tmp_path / "bad" / "world_model.safetensors").write_bytes((ckpt / "world_model.safetensors").read_bytes())
    with pytest.raises(QrobotError, match=r"wm_config.json: unknown fields \['horizn'\]"):
        WorldModel.from_pretrained(tmp_path / "bad")


def test_wm_eval_reports_model_and_copy_last(trained: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ds, ckpt = trained
    out = tmp_path / "eval.json"
    assert main(["wm-eval", "--checkpoint", str(ckpt), "--dataset", str(ds), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "changed-pixel PSNR dB, copy-last" in text and "collision AUROC" in text
    res = json.loads(out.read_text())
    # copy-last at h=1 by hand, over the same windows
    _, eps = load_wm_episodes(ds)
    picks = [(e, t) for e, ep in enumerate(eps) for t in range(0, len(ep.actions) - 7, 4)]
    b = batch_of(eps, picks, 3, 8)
    mse = ((to_tensor(b["context"][:, -1]) - to_tensor(b["target"][:, 0])) ** 2).mean((1, 2, 3))
    assert res["copy_last"]["psnr_h1"] == pytest.approx(
        float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()), rel=1e-4
    )
    assert res["windows"] == len(picks) and set(res["bars_met"]) == {
        "changed_psnr_gain_h8",
        "delta_t_psnr",
        "collision_auroc",
    }


def test_foresight_in_the_env_is_recorded(trained: tuple[Path, Path], tmp_path: Path) -> None:
    sc = load_scenario("pointnav_clutter").model_copy(update={"max_steps": 12})
    env = QRobotEnv(sc, images=False, foresight=trained[1])
    path = tmp_path / "ep.rrd"
    res = run_episode(env, make_policy("wander", env, seed=1), 0, 1, EpisodeRecorder(path, sc.name, "fs"))
    s = summarize_rrd(path)
    assert s["complete"] and res.steps == 12
    assert s["rows"]["/foresight/actual"] == 13  # the reset frame, then one per step
    assert s["rows"]["/foresight/predicted_h1"] >= 10 and s["rows"]["/foresight/predicted_h8"] >= 4
    assert s["rows"]["/foresight/collision_prob"] == 13
    env.close()


def test_foresight_refuses_an_arm_and_a_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(QrobotError, match="mobile base"):
        QRobotEnv("reach", images=False, foresight=tmp_path)
    with pytest.raises(QrobotError, match="not a world-model checkpoint"):
        QRobotEnv("pointnav", images=False, foresight=tmp_path)
