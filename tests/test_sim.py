"""The sim facade on a real PyBullet world."""

from __future__ import annotations

import numpy as np
import pytest

from qrobot.sim import PHYSICS_HZ, Camera, Sim


@pytest.fixture()
def sim() -> Sim:
    s = Sim(control_hz=10)
    s.add_shape("ground", "box", [5, 5, 0.05], [0.5, 0.5, 0.5, 1], pos=[0, 0, -0.05])
    s.add_shape("ball", "sphere", [0.25], [1, 0, 0, 1], pos=[0, 0, 1.0], mass=1.0)
    yield s
    s.close()


def test_bodies_by_name_and_rates(sim: Sim) -> None:
    assert sim.substeps == PHYSICS_HZ // 10 and sim.dt == pytest.approx(0.1)
    with pytest.raises(ValueError, match="already used"):
        sim.add_shape("ball", "sphere", [0.05], [1, 0, 0, 1])
    z0 = sim.pose("ball")[0][2]
    sim.step()
    # free fall over one control period: z = z0 - g t^2 / 2 (semi-implicit Euler, close)
    assert sim.pose("ball")[0][2] == pytest.approx(z0 - 0.5 * 9.81 * 0.01, abs=0.01)
    assert sim.time == pytest.approx(0.1)
    with pytest.raises(ValueError):
        Sim(control_hz=7)


def test_save_restore_state(sim: Sim) -> None:
    sid = sim._save_state()
    before = sim.pose("ball")[0]
    for _ in range(3):
        sim.step()
    assert not np.allclose(sim.pose("ball")[0], before)
    sim._restore_state(sid)
    np.testing.assert_allclose(sim.pose("ball")[0], before)


def test_render_rgb_and_depth(sim: Sim) -> None:
    cam = Camera("top", 64, 48, eye=(0, 0, 3), target=(0, 0, 0), up=(0, 1, 0))
    rgb, depth = sim.render(cam, depth=True)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    # the ball (radius 25 cm at z = 1) tops at 1.75 m from the camera, the ground at 3 m
    assert depth[24, 32] == pytest.approx(2.0 - 0.25, abs=0.03)
    assert depth[2, 2] == pytest.approx(3.0, abs=0.05)
    assert rgb[24, 32, 0] > 150 and rgb[24, 32, 1] < 80  # red ball in the middle


def test_reset_world_empties_it(sim: Sim) -> None:
    sim._reset_world()
    assert dict(sim.bodies) == {} and sim._client.getNumBodies() == 0
