"""Behaviour kept by the type-checking pass (issue 17, part 5): each test pins what a
rewrite made for mypy must not change, where no other test looks as closely."""

from __future__ import annotations

import dataclasses
import itertools
import math

import msgspec
import numpy as np
import pytest

from qrobot.safety.limits import apply_overrides, default_limits
from qrobot.safety.supervisor import Supervisor, as_people_source
from qrobot.scenario import Limits, Randomize, Scenario, Sensing, load_scenario, people_source, scenario_limits


def test_scenario_limits_table_is_the_schema_one_and_the_supervisor_gets_safety_limits() -> None:
    """scenario.py imported the safety Limits (for type checking) under the name of its own
    `[limits]` table class: `sc.limits` must stay the table, `scenario_limits` the profile."""
    sc = load_scenario("pick_place")
    assert isinstance(sc.limits, Limits)
    assert sc.limits.profile == "default" and dict(sc.limits.overrides) == {}
    enforced, reference = scenario_limits(sc)
    assert enforced.robot == reference.robot == "panda"
    assert math.isclose(enforced.control_dt, 1.0 / sc.control_hz)


def test_schema_defaults_unchanged() -> None:
    """`Field(x, ...)` became `Field(default=x, ...)`: same defaults, same bounds."""
    assert Randomize().color_jitter == 0.0 and Randomize().light is False
    assert (Sensing().people_latency, Sensing().people_noise, Sensing().people) == (0.1, 0.02, None)
    assert Limits().profile == "default"
    fields = Scenario.model_fields
    assert fields["control_hz"].default == 10.0 and fields["stop_at_rest_steps"].default == 30
    with pytest.raises(ValueError):
        Sensing(people_noise=0.6)  # le=0.5 still holds


@pytest.mark.parametrize("value", [True, "0.3", None, [0.3], float("nan")])
def test_overrides_still_refuse_non_numbers(value: object) -> None:
    """`type(x) in (int, float)` became a TypeGuard: a bool is still not a number."""
    with pytest.raises(ValueError, match="v_max"):
        apply_overrides(default_limits("diffbot", 0.1), {"v_max": value})


def test_overrides_still_accept_ints_and_floats() -> None:
    lim = apply_overrides(default_limits("diffbot", 0.1), {"v_max": 0.3, "radius": 1, "keep_out": [[0, 0, 1, 1.5]]})
    assert lim.base.v_max == 0.3 and lim.base.radius == 1.0 and type(lim.base.radius) is float
    assert lim.base.keep_out == ((0.0, 0.0, 1.0, 1.5),)
    with pytest.raises(ValueError, match="loosen"):  # a zone that does not cover the profile's zone
        apply_overrides(lim, {"keep_out": [[0, 0, 0.5, 0.5]]})
    with pytest.raises(ValueError, match="loosen"):
        apply_overrides(lim, {"v_max": 0.4})


@pytest.mark.parametrize(
    ("value", "want"),
    [("sensor", "sensor"), ("none", "none"), ("", None), ("Sensor", None), (None, None), (1, None)],
)
def test_people_source_declarations(value: object, want: str | None) -> None:
    assert as_people_source(value) == want
    sup = Supervisor(default_limits("diffbot", 0.1), (0.5, 1.2), people=value)  # type: ignore[arg-type]
    assert sup.people_source == want


def test_scenario_people_source() -> None:
    assert people_source(load_scenario("pointnav_people")) == "sensor"  # listed people are sensed
    assert people_source(load_scenario("pointnav")) == "none"  # declared


def test_bridge_messages_stay_frozen() -> None:
    """Every message subclass now says frozen=True itself (msgspec inherited it already)."""
    from qrobot.bridge import messages, robot_link

    for mod in (messages, robot_link):
        for obj in vars(mod).values():
            if isinstance(obj, type) and issubclass(obj, msgspec.Struct) and obj.__module__ == mod.__name__:
                cfg = obj.__struct_config__
                assert cfg.frozen and cfg.forbid_unknown_fields, obj.__name__
    req = messages.Request(version=messages.VERSION, op="enable")
    with pytest.raises(AttributeError):
        req.op = "reset"  # type: ignore[misc]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(req), type=messages.Request) == req


def test_supervisor_view_is_still_read_only() -> None:
    from qrobot.safety.view import SupervisorView

    sup = Supervisor(default_limits("diffbot", 0.1), (0.5, 1.2), people="none")
    view = SupervisorView(sup)
    assert view.robot == "diffbot" and view.people_source == "none"
    with pytest.raises(AttributeError):
        view.x = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        view._sup = sup  # type: ignore[misc]
    assert SupervisorView.__slots__ == ("_sup",) and not hasattr(view, "__dict__")


def test_astar_path_reconstruction() -> None:
    from qrobot.tasks.grid import OccupancyGrid

    grid = OccupancyGrid.from_boxes((4.0, 4.0), [(0.0, 0.0, 0.4, 2.0)], 0.1)
    start, goal = grid.cell(np.array([-1.5, 0.0])), grid.cell(np.array([1.5, 0.0]))
    path = grid.astar(start, {goal})
    assert path is not None and path[0] == start and path[-1] == goal
    assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 1 for a, b in itertools.pairwise(path))
    assert grid.astar(start, {start}) == [start]


def test_tiny_config_vision_ids_unchanged() -> None:
    pytest.importorskip("transformers")
    from qrobot.vla.backbones import GENUINE_IDS, tiny_config

    cfg = tiny_config("qwen2.5-vl", 512)
    assert (cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id) == (
        508,
        509,
        510,
        511,
    )
    assert cfg.text_config.vocab_size == 512
    real = GENUINE_IDS["qwen3-vl"]
    cfg = tiny_config("qwen3-vl", 0, genuine_ids=True)
    assert cfg.text_config.vocab_size == real.vocab_size
    assert (cfg.image_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id) == (
        real.image,
        real.vision_start,
        real.vision_end,
    )


def test_annotated_buffers_still_register() -> None:
    """KeypointPool.xy and TableRays' buffers are now declared on the class for the type
    checker; register_buffer must still accept them (it refuses existing attributes)."""
    torch = pytest.importorskip("torch")
    from qrobot.vla.heads import KeypointPool

    kp = KeypointPool(patch_dim=8, summary_dim=8, cameras=1, grid=4, merge=2)
    assert "xy" in dict(kp.named_buffers()) and kp.xy.shape == (16, 2)
    assert kp.patch_at(torch.zeros(1, 2)).shape == (1,)


def test_worldmodel_zero_init() -> None:
    pytest.importorskip("torch")
    from qrobot.worldmodel.model import WMConfig, WorldModel

    model = WorldModel(WMConfig())
    for layer in (model.out, model.step.conv2):
        assert not layer.weight.any() and layer.bias is not None and not layer.bias.any()


def test_episode_result_safety_holds_supervisor_counts() -> None:
    from qrobot.runner import EpisodeResult

    sup = Supervisor(default_limits("diffbot", 0.1), (0.5, 1.2), people="none")
    res = EpisodeResult("s", "p", 0, 0, "go", False, 0, "timeout", safety=sup.counts())
    assert dataclasses.asdict(res)["safety"] == {"interventions": 0.0, "estops": 0.0, "protective_stop_time": 0.0}
