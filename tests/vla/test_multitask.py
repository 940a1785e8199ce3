"""One checkpoint for several tasks and both embodiments: a shared backbone and tokenizer,
per-embodiment heads; trained by the real commands on real collected episodes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.cli import main
from qrobot.vla.data import load_datasets
from qrobot.vla.model import QwenVLA
from qrobot.vla.train import TrainConfig, _part

TASKS = ("reach", "pick_place", "pointnav", "objectnav")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("multi")
    for name in TASKS:
        assert main(["collect", name, "--episodes", "1", "--out", str(root / name)]) == 0
    args = ["train", "--dataset", *(str(root / n) for n in TASKS), "--out", str(root / "ck")]
    assert main([*args, "--steps", "6", "--batch", "2"]) == 0
    return root


def test_one_checkpoint_holds_a_shared_backbone_and_a_head_set_per_embodiment(trained: Path) -> None:
    ck = trained / "ck"
    assert json.loads((ck / "embodiments.json").read_text()) == {"embodiments": ["panda", "diffbot"]}
    panda = json.loads((ck / "panda" / "vla_config.json").read_text())
    base = json.loads((ck / "diffbot" / "vla_config.json").read_text())
    assert panda["tasks"] == ["pick_place", "reach"] and base["tasks"] == ["objectnav", "pointnav"]
    assert panda["state_dim"] == 13 + 3  # proprio ++ reach's goal, zero-padded for pick_place
    assert base["cameras"] == ["front"] and panda["cameras"] == ["scene", "wrist"]
    assert not (ck / "panda" / "backbone").exists()  # one backbone, at the top
    arm, nav = QwenVLA.from_pretrained(ck, robot="panda"), QwenVLA.from_pretrained(ck, robot="diffbot")
    a, b = arm.backbone.state_dict(), nav.backbone.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert arm.tokenizer.encode("go to the red crate") == nav.tokenizer.encode("go to the red crate")
    card = (ck / "README.md").read_text()
    assert "one checkpoint for" in card and "**panda** (pick_place, reach)" in card


@pytest.mark.parametrize("scenario", TASKS)
def test_the_checkpoint_drives_each_task_it_was_trained_on(trained: Path, scenario: str) -> None:
    env = QRobotEnv(scenario, images=True)
    policy = make_policy("qwen-vla", env, checkpoint=str(trained / "ck"))
    obs, _ = env.reset(seed=20_000)
    policy.reset(obs["instruction"])
    for _ in range(3):
        action = policy.act(obs)
        assert env.action_space.contains(np.asarray(action, np.float32))
        obs, *_ = env.step(action)
    env.close()


def test_a_task_it_was_not_trained_on_is_refused_in_one_line(trained: Path, capsys) -> None:
    args = ["run", "stack", "--policy", "qwen-vla", "--checkpoint", str(trained / "ck"), "--episodes", "1"]
    assert main([*args, "--no-record"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pick_place/reach" in err and "'stack'" in err


def test_every_task_of_an_embodiment_is_drawn_equally_often(trained: Path) -> None:
    """pick_place episodes are 3x longer than reach's: samples are weighted per task."""
    cfg = TrainConfig(dataset=[], out=trained / "unused")
    part = _part(cfg, [trained / "reach", trained / "pick_place"])
    by_task: dict[str, float] = {}
    for (e, _), w in zip(part.index, part.weights):
        by_task[part.eps[e].scenario] = by_task.get(part.eps[e].scenario, 0.0) + w
    assert by_task == pytest.approx({"reach": 0.5, "pick_place": 0.5})
    assert len([i for i in part.index if part.eps[i[0]].scenario == "pick_place"]) > 2 * len(
        [i for i in part.index if part.eps[i[0]].scenario == "reach"]
    )


def test_datasets_of_one_embodiment_must_agree_on_cameras(trained: Path, tmp_path: Path, capsys) -> None:
    import shutil

    odd = tmp_path / "odd"
    shutil.copytree(trained / "reach", odd)
    meta = json.loads((odd / "meta.json").read_text())
    (odd / "meta.json").write_text(json.dumps({**meta, "cameras": ["scene"]}))
    with pytest.raises(Exception, match="cameras"):
        load_datasets([trained / "pick_place", odd])
    assert main(["train", "--dataset", str(trained / "pick_place"), str(odd), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(odd / "meta.json") in err and "cameras" in err


def test_an_interrupted_training_resumes_where_its_last_snapshot_left_off(trained: Path, tmp_path: Path) -> None:
    """Resuming from the step-4 snapshot of a 6-step run ends with the weights of the
    uninterrupted run: optimiser, schedule, random streams and time spent are restored."""
    import shutil

    from qrobot.vla.train import TRAINER_STATE, train

    data = [trained / "reach", trained / "pick_place"]
    whole = train(TrainConfig(dataset=data, out=tmp_path / "whole", steps=6, batch=2, save_every=2, threads=1))
    assert sorted(p.name for p in whole.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-6"]  # the last two
    shutil.copytree(whole / "checkpoint-4", tmp_path / "resumed" / "checkpoint-4")
    cfg = TrainConfig(dataset=data, out=tmp_path / "resumed", steps=6, batch=2, save_every=2, threads=1, resume=True)
    resumed = train(cfg, log=lambda line: None)
    a = QwenVLA.from_pretrained(whole).state_dict()
    b = QwenVLA.from_pretrained(resumed).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((resumed / "results.json").read_text())["training"]["steps"] == 6
    state = torch.load(resumed / "checkpoint-6" / TRAINER_STATE, weights_only=False)
    assert state["step"] == 6 and state["elapsed"] > 0


def test_one_model_per_embodiment_bundles_into_one_checkpoint(trained: Path, tmp_path: Path, capsys) -> None:
    """Separately trained arm and base models (own backbones) ship as one checkpoint that
    `qwen-vla` loads per robot; a bundle of two arm models, or of a shared-backbone
    checkpoint, is refused in one line with exit status 2."""
    import subprocess
    import sys

    from qrobot.vla.multi import bundle
    from qrobot.vla.train import train

    arm, base = tmp_path / "arm", tmp_path / "base"
    for out, sets in ((arm, ("reach", "pick_place")), (base, ("pointnav",))):
        train(TrainConfig(dataset=[trained / n for n in sets], out=out, steps=2, batch=2, save_every=2, threads=1))
    assert (arm / "checkpoint-2").is_dir()
    ck = tmp_path / "ck"
    assert bundle(ck, [arm, base]) == ["panda", "diffbot"]
    chosen = tmp_path / "chosen"  # the stop rule chosen on validation goes into the base's config
    assert bundle(chosen, [arm, base], nav_stop=(0.05, 0.1, 3)) == ["panda", "diffbot"]
    assert json.loads((chosen / "diffbot" / "vla_config.json").read_text())["nav_stop"] == [0.05, 0.1, 3]
    assert QwenVLA.from_pretrained(chosen, robot="diffbot").config.nav_stop == [0.05, 0.1, 3]
    assert QwenVLA.from_pretrained(ck, robot="diffbot").config.nav_stop == [0.06, 0.15, 1]  # as trained
    assert sorted(p.name for p in (ck / "panda").iterdir()) == sorted(
        ["backbone", "instruction_vocab.json", "vla_config.json", "heads.safetensors", "norm_stats.json"]
        + ["README.md", "results.json"]
    )  # the snapshots stay behind
    card = (ck / "README.md").read_text()
    assert "one model per embodiment" in card and "- **diffbot**:" in card and "steps x batch 2" in card
    a, b = QwenVLA.from_pretrained(ck, robot="panda"), QwenVLA.from_pretrained(ck, robot="diffbot")
    assert a.config.tasks == ["pick_place", "reach"] and b.config.tasks == ["pointnav"]
    for own, m in ((arm, a), (base, b)):
        ref = QwenVLA.from_pretrained(own).state_dict()
        assert all(torch.equal(ref[k], v) for k, v in m.state_dict().items())
    env = QRobotEnv("pointnav", images=True)
    policy = make_policy("qwen-vla", env, checkpoint=str(ck))
    obs, _ = env.reset(seed=20_000)
    policy.reset(obs["instruction"])
    assert env.action_space.contains(np.asarray(policy.act(obs), np.float32))
    env.close()
    run = ["run", "objectnav", "--policy", "qwen-vla", "--checkpoint", str(ck), "--episodes", "1", "--no-record"]
    assert main(run) == 2 and "'objectnav'" in capsys.readouterr().err
    bad = [("bad", [arm, arm]), ("bad", [trained / "ck"]), ("bad", [tmp_path / "no"]), ("ck", [arm])]
    bad += [("bad", [arm, base, "--nav-stop", "0.05,0.1"]), ("bad", [arm, base, "--nav-stop", "9,0.1,1"])]
    bad += [("bad", [arm, "--nav-stop", "0.05,0.1,3"])]  # no base to take it
    for out, models in bad:
        cmd = [sys.executable, "-m", "qrobot.vla.multi", str(tmp_path / out), *map(str, models)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_the_base_without_a_goal_stops_after_k_still_predictions(trained: Path) -> None:
    """ObjectNav's stop rule: the last waypoint within XY m and TH rad for K predictions
    running (a moving prediction starts the count again); old checkpoints keep one."""
    from qrobot.policies import SHIPPED
    from qrobot.policies.vla import STOP, VLAPolicy

    still, moving = np.zeros((8, 3), np.float32), np.zeros((8, 3), np.float32)
    moving[:, 0] = np.linspace(0.1, 0.8, 8)
    near = still.copy()
    near[-1] = [0.05, 0.0, 0.1]  # inside 6 cm and 0.15 rad
    obs = {"proprio": np.zeros(2, np.float32)}  # no goal vector
    policy = VLAPolicy(trained / "ck", robot="diffbot", nav_stop=(0.06, 0.15, 3))
    st = policy.state()
    acts = [policy._drive(obs, st, w) for w in (still, near, moving, still, near, still, still)]
    assert [bool(np.array_equal(a, STOP)) for a in acts] == [False, False, False, False, False, True, True]
    policy.reset("")
    assert policy.state().still == 0
    assert VLAPolicy(trained / "ck", robot="diffbot").nav_stop == (0.06, 0.15, 1)  # the checkpoint's
    one = VLAPolicy(SHIPPED["pointnav"], robot="diffbot")  # the shipped base: the rule chosen on validation
    assert one.nav_stop == (0.06, 0.15, 1)
    with_goal = {"proprio": np.zeros(2, np.float32), "goal": np.array([1.0, 0.0], np.float32)}
    assert not np.array_equal(one._drive(with_goal, one.state(), still), STOP)  # a goal vector: never this rule


def test_a_stop_rule_variant_is_validated_without_touching_the_card(trained: Path, tmp_path: Path, capsys) -> None:
    """`eval objectnav --split validation --nav-stop XY,TH,K` runs the variant, names it in
    the run's run.json, and leaves the checkpoint's model card and results as they were."""
    ck = tmp_path / "ck"
    shutil.copytree(trained / "ck", ck)
    before = {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()}
    argv = ["eval", "objectnav", "--checkpoint", str(ck), "--episodes", "1", "--split", "validation", "-q"]
    assert main([*argv, "--nav-stop", "0.05,0.1,3", "--runs-dir", str(tmp_path / "runs")]) in (0, 3)
    assert "a variant under validation; the model card is left as it is" in capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "run.json").read_text())["nav_stop"] == [0.05, 0.1, 3]
    assert {p.name: p.read_bytes() for p in ck.iterdir() if p.is_file()} == before
