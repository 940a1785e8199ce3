"""Model cards are generated from the figures stored with each checkpoint (results.json):
the shipped cards are exactly what the generator makes of their directories, they load as
Hugging Face model cards with a model-index, and evaluations write their figures back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from qrobot.policies import CHECKPOINTS

from qrobot import cards
from qrobot.cli import main

SHIPPED = ["qwen-vla", "world_model"]
VLA_TASKS = ("reach", "pick_place", "pick_place_clutter", "stack", "pointnav", "objectnav")  # `make vla-eval`


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_card_is_generated_from_the_stored_figures(name: str) -> None:
    d = CHECKPOINTS / name
    assert (d / cards.CARD_FILE).read_text(encoding="utf-8") == cards.render_card(d), (
        f"{d}/README.md is not what qrobot.cards makes of results.json: regenerate it with "
        f"`python -c \"from qrobot import cards; cards.write_card('{d}')\"`, never edit it by hand"
    )
    training, records = cards.load(d)
    if (d / "embodiments.json").is_file():  # a bundle: each model's training is under its robot
        robots = json.loads((d / "embodiments.json").read_text())["embodiments"]
        training = {r: cards.load(d / r)[0] for r in robots}
        assert all(t.get("datasets") and t.get("minutes") for t in training.values()), training
        assert all((d / r / cards.CARD_FILE).read_text(encoding="utf-8") == cards.render_card(d / r) for r in robots)
    assert records and training
    card = ModelCard.load(d / cards.CARD_FILE)
    assert card.data.library_name == "qrobot" and "robotics" in card.data.tags
    assert card.data.metrics == list(dict.fromkeys(r.metric for r in records))
    got = {
        (e.dataset_type, e.metric_type, e.dataset_split, e.dataset_config): e.metric_value
        for e in card.data.eval_results
    }
    assert len(got) == len(records)  # one entry per figure: scenario, metric, split and seeds tell them apart
    for r in records:
        assert r.command and r.commit and r.date and r.seeds and r.split in ("validation", "test")
        assert got[(f"qrobot/{r.scenario}", r.metric, r.split, f"seeds {r.seeds[0]}-{r.seeds[1]}")] == round(r.value, 4)
        if r.successes is not None:  # a rate: its counts and Wilson interval agree
            assert r.episodes and r.value == r.successes / r.episodes and r.ci95
            assert card.text.count(f"({r.successes}/{r.episodes})") >= 1


def test_shipped_cards_show_the_current_models() -> None:
    wm = (CHECKPOINTS / "world_model" / cards.CARD_FILE).read_text(encoding="utf-8")
    config = json.loads((CHECKPOINTS / "world_model" / "wm_config.json").read_text())
    assert f"{config['card']['steps']:,} steps" in wm and "4,631" not in wm
    _, records = cards.load(CHECKPOINTS / "qwen-vla")
    tabletop = {r.metric for r in records if r.scenario == "pick_place" and r.split == "test"}
    assert tabletop >= {"success_rate", "followed", "swap_different", "swap_named"}
    assert {r.scenario for r in records if r.split == "test"} >= set(VLA_TASKS)  # every task, on the test split
    assert all(r.seeds == [40000, 40049] for r in records if r.split == "test")


@pytest.fixture
def wm_copy(tmp_path: Path) -> Path:
    d = tmp_path / "wm"
    shutil.copytree(CHECKPOINTS / "world_model", d)
    return d


def _figure(metric: str, value: float, seeds: list[int]) -> cards.Record:
    return cards.Record("pointnav_clutter", metric, value, "qrobot wm-eval --checkpoint X --dataset Y", seeds=seeds)


def test_record_result_replaces_by_key_appends_new_and_regenerates(wm_copy: Path) -> None:
    _, before = cards.load(wm_copy)
    assert cards.record_result(wm_copy, _figure("collision_auroc", 0.5, [10000, 10149]))
    _, after = cards.load(wm_copy)
    assert len(after) == len(before)  # same scenario, metric, split and seeds: replaced in place
    i = [r.metric for r in before].index("collision_auroc")
    assert after[i].value == 0.5 and after[i].commit and after[i].date
    assert cards.record_result(wm_copy, _figure("collision_auroc", 0.75, [30000, 30009]))
    _, more = cards.load(wm_copy)
    assert len(more) == len(before) + 1 and more[-1].seeds == [30000, 30009]
    json.loads((wm_copy / cards.RESULTS_FILE).read_text())  # valid JSON
    assert not [p for p in wm_copy.iterdir() if p.name.endswith(".tmp")]
    text = (wm_copy / cards.CARD_FILE).read_text(encoding="utf-8")
    assert text == cards.render_card(wm_copy) and "**0.500**" in text and "seeds 30000–30009" in text


def test_a_failed_write_leaves_the_old_file_whole(wm_copy: Path, monkeypatch, capsys) -> None:
    old = (wm_copy / cards.RESULTS_FILE).read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cards.os, "replace", crash)
    assert not cards.record_result(wm_copy, _figure("collision_auroc", 0.5, [10000, 10149]))
    assert (wm_copy / cards.RESULTS_FILE).read_bytes() == old
    assert not [p for p in wm_copy.iterdir() if p.name.endswith(".tmp")]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("qrobot: warning: ") and "No space left" in err


def test_a_read_only_checkpoint_gets_one_warning_line(wm_copy: Path, monkeypatch, capsys) -> None:
    before = {p.name: p.read_bytes() for p in wm_copy.iterdir()}

    def refuse(*args: object, **kwargs: object) -> None:  # root may write into a 0o555 directory
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cards.tempfile, "mkstemp", refuse)
    wm_copy.chmod(0o555)
    try:
        assert not cards.record_result(wm_copy, _figure("collision_auroc", 0.5, [10000, 10149]))
    finally:
        wm_copy.chmod(0o755)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Permission denied" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in wm_copy.iterdir()} == before


def test_a_hand_written_card_is_kept_when_figures_first_arrive(wm_copy: Path) -> None:
    (wm_copy / cards.RESULTS_FILE).unlink()
    (wm_copy / cards.CARD_FILE).write_text("# my notes\n")
    assert cards.record_result(wm_copy, _figure("delta_t_psnr", 1.5, [10000, 10149]))
    assert (wm_copy / "README.before-results.md").read_text() == "# my notes\n"
    assert cards.GENERATED in (wm_copy / cards.CARD_FILE).read_text(encoding="utf-8")


def test_a_damaged_results_file_is_not_overwritten(wm_copy: Path, capsys) -> None:
    (wm_copy / cards.RESULTS_FILE).write_text("{not json")
    assert not cards.record_result(wm_copy, _figure("delta_t_psnr", 1.5, [10000, 10149]))
    assert (wm_copy / cards.RESULTS_FILE).read_text() == "{not json"
    assert "results.json: not a results file" in capsys.readouterr().err


def test_eval_report_becomes_records() -> None:
    report = {"scenario": "pick_place", "seeds": [10000, 10009], "episodes": 10, "successes": 7}
    report |= {"followed": 0.9, "swap_different": 0.8, "swap_named": 0.6, "interventions": 2.5, "estops": 1}
    recs = cards.vla_records(report, "qrobot eval pick_place --episodes 10")
    assert [(r.metric, r.successes, r.episodes, r.bar) for r in recs] == [
        ("success_rate", 7, 10, 0.8),  # the bars: pick_place 80 %, the named cube 90 %
        ("followed", 9, 10, 0.9),
        ("swap_different", 8, 10, None),
        ("swap_named", 6, 10, 0.9),
        ("interventions", None, 10, None),
        ("estops", None, 10, None),
    ]
    assert [r.value for r in recs[-2:]] == [2.5, 0.1]  # per episode
    assert "7/10" in cards._row(recs[0]) and "80 %: NOT met" in cards._row(recs[0])
    assert recs[0].split == "validation" and recs[0].ci95 is not None and recs[0].ci95[0] < 0.7 < recs[0].ci95[1]
    assert cards.split_of(0) == "train" and cards.split_of(9999) == "train"
    assert [cards.split_of(s) for s in (10000, 19999, 20000, 29999, 30000, 39999, 40000)] == [
        "validation",
        "validation",
        "ci",
        "ci",
        "validation",
        "validation",
        "test",
    ]


@pytest.fixture(scope="module")
def nav_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cards") / "nav"
    shutil.copytree(CHECKPOINTS / "qwen-vla" / "diffbot", d)
    return d


def test_qrobot_eval_writes_its_figures_back(nav_copy: Path, tmp_path: Path, capsys) -> None:
    _, before = cards.load(nav_copy)
    argv = ["eval", "pointnav", "--checkpoint", str(nav_copy), "--episodes", "1", "--seed", "20000"]
    assert main([*argv, "--runs-dir", str(tmp_path)]) == 0
    summary = json.loads((next(tmp_path.iterdir()) / "summary.json").read_text())
    _, after = cards.load(nav_copy)
    new = after[len(before) :]
    assert [r.metric for r in new] == ["success_rate", "spl", "interventions", "estops"]
    assert new[0].command == f"qrobot eval pointnav --split ci --episodes 1 --seed 20000 --checkpoint {nav_copy}"
    assert new[0].seeds == [20000, 20000] and new[0].split == "ci"
    assert new[0].successes == summary["successes"] and new[1].value == pytest.approx(summary["spl"])
    assert (nav_copy / cards.CARD_FILE).read_text(encoding="utf-8") == cards.render_card(nav_copy)
    assert "figures stored in" in capsys.readouterr().err
    # --no-card: the checkpoint is left as it is
    files = {p.name: p.read_bytes() for p in nav_copy.iterdir() if p.is_file()}
    assert main([*argv[:-1], "20001", "--runs-dir", str(tmp_path), "--no-card"]) == 0
    assert {p.name: p.read_bytes() for p in nav_copy.iterdir() if p.is_file()} == files


def test_qrobot_eval_on_a_read_only_checkpoint_still_succeeds(nav_copy: Path, tmp_path: Path, monkeypatch, capsys):
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(cards.tempfile, "mkstemp", refuse)
    argv = ["eval", "pointnav", "--checkpoint", str(nav_copy), "--episodes", "1", "--seed", "20000", "-q"]
    assert main([*argv, "--runs-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "| pointnav |" in out
    assert err.strip().count("\n") == 0 and "the model card was not updated (Permission denied)" in err


def test_wm_eval_writes_its_figures_back(wm_copy: Path, tmp_path: Path) -> None:
    from qrobot.worldmodel.data import wm_collect

    wm_collect("pointnav_clutter", 2, tmp_path / "ds", seed=30200, max_steps=40)
    _, before = cards.load(wm_copy)
    assert main(["wm-eval", "--checkpoint", str(wm_copy), "--dataset", str(tmp_path / "ds"), "-q"]) == 0
    _, after = cards.load(wm_copy)
    new = after[len(before) :]
    assert {"changed_psnr_gain_h8", "delta_t_psnr", "psnr_h8", "copy_last_psnr_h8"} <= {r.metric for r in new}
    assert all(r.seeds == [30200, 30201] and r.episodes == 2 and r.scenario == "pointnav_clutter" for r in new)
    assert new[0].command == f"qrobot wm-eval --checkpoint {wm_copy} --dataset {tmp_path / 'ds'}"
    assert (wm_copy / cards.CARD_FILE).read_text(encoding="utf-8") == cards.render_card(wm_copy)


def test_a_freshly_trained_model_has_a_card_without_figures(wm_copy: Path) -> None:
    cards.record_training(wm_copy, {"datasets": ["wm_small"]})  # what wm-train does after saving
    assert cards.load(wm_copy) == ({"datasets": ["wm_small"]}, [])
    card = ModelCard.load(wm_copy / cards.CARD_FILE)
    assert card.data.datasets == ["wm_small"] and not card.data.eval_results and "model_name" not in card.data.to_dict()
    assert "No figures measured yet" in card.text and "5,068 steps" in card.text  # steps: from wm_config.json
