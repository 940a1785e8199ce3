"""The tiny checkpoints shipped in qrobot/checkpoints: they load through the policy
registry (no --checkpoint needed), stay within the size budget, and succeed on a few
held-out seeds (the 50-seed figures are in the README, from `qrobot eval`)."""

from __future__ import annotations

import pytest

from qrobot.policies import CHECKPOINTS, SHIPPED
from qrobot.vla.evaluate import evaluate


def test_shipped_checkpoints_fit_the_budget() -> None:
    assert set(SHIPPED) == {"pick_place", "pointnav"}
    total = sum(f.stat().st_size for f in CHECKPOINTS.rglob("*") if f.is_file())
    assert total <= 25 * 2**20, f"{total / 2**20:.1f} MB"
    for kind, path in SHIPPED.items():
        card = (path / "README.md").read_text()
        assert "success" in card and kind in card  # the model card reports what was measured


@pytest.mark.parametrize(("scenario", "floor"), [("pick_place", 3), ("pointnav", 3)])
def test_shipped_checkpoint_succeeds_on_held_out_seeds(scenario: str, floor: int) -> None:
    # seeds 20000+ are neither training (0-799) nor the README's evaluation seeds (10000+)
    report = evaluate(SHIPPED[scenario], scenario, episodes=4, seed=20000, swap=False)
    assert report["successes"] >= floor, report
    if scenario == "pick_place":
        assert report["followed"] >= 0.75, report
