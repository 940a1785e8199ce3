"""Limits profiles: the supervisor's numbers are data, one profile per robot,
overridable per scenario (`[limits.overrides]`) with one-line errors."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


def _array_view(name: str) -> cached_property:
    """A cached numpy copy of a tuple field (works on frozen dataclasses)."""
    return cached_property(lambda self: np.asarray(getattr(self, name)))


@dataclass(frozen=True)
class SSMParams:
    """ISO/TS 15066 speed and separation monitoring: Sp = Sh + Sr + Ss + C + Zd + Zr."""

    human_speed: float = 1.6        # v_h (m/s), ISO 13855 walking speed
    reaction_time: float = 0.2      # T_r (s): sensing latency + one control period + compute
    intrusion_distance: float = 0.1  # C (m): reach of a body part past the detection boundary
    human_uncertainty: float = 0.05  # Z_d (m): people-sensor position uncertainty
    robot_uncertainty: float = 0.02  # Z_r (m): robot position uncertainty
    warning_band: float = 0.6       # (m) beyond Sp where speed is scaled down linearly
    clear_hold_time: float = 1.0    # (s) the area must stay clear this long before resuming
    enabled: bool = True            # only the test-only profile turns this off (not overridable)


@dataclass(frozen=True)
class ArmLimits:
    """Franka Panda defaults: joint limits from the URDF, velocity and acceleration
    limits from Franka's published datasheet, collaborative Cartesian speeds."""

    joint_lower: tuple[float, ...] = (-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671)
    joint_upper: tuple[float, ...] = (2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671)
    soft_margin: float = 0.15       # (rad) inside the hard limits: motion toward them slows
    joint_vel_max: tuple[float, ...] = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
    joint_acc_max: tuple[float, ...] = (15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0)
    ee_speed_max: float = 0.25      # (m/s) collaborative default
    ee_ang_speed_max: float = 1.5   # (rad/s)
    ee_step_max: float = 0.025      # (m) per control step, whatever the rate
    ee_decel: float = 1.0           # (m/s^2) used for the stopping distance Ss
    workspace_low: tuple[float, float, float] = (0.15, -0.45, 0.005)
    workspace_high: tuple[float, float, float] = (0.85, 0.45, 0.6)
    ssm: SSMParams = SSMParams()

    # numpy views, built once (the supervisor runs every control period)
    lower = _array_view("joint_lower")
    upper = _array_view("joint_upper")
    vmax = _array_view("joint_vel_max")
    amax = _array_view("joint_acc_max")
    ws_low = _array_view("workspace_low")
    ws_high = _array_view("workspace_high")


@dataclass(frozen=True)
class BaseLimits:
    """Differential-drive base defaults."""

    v_max: float = 0.5              # (m/s)
    w_max: float = 1.2              # (rad/s)
    v_acc: float = 1.5              # (m/s^2), also the braking deceleration
    w_acc: float = 4.0              # (rad/s^2)
    step_max: float = 0.06          # (m) per control step
    radius: float = 0.29            # (m) footprint circle
    bounds_low: tuple[float, float] = (-50.0, -50.0)  # map bounds (scenarios narrow them)
    bounds_high: tuple[float, float] = (50.0, 50.0)
    keep_out: tuple[tuple[float, float, float, float], ...] = ()  # (xmin, ymin, xmax, ymax)
    ssm: SSMParams = SSMParams()


@dataclass(frozen=True)
class Limits:
    """Everything the supervisor enforces for one robot."""

    robot: str
    control_dt: float
    arm: ArmLimits = field(default_factory=ArmLimits)
    base: BaseLimits = field(default_factory=BaseLimits)
    watchdog_periods: float = 2.0   # no valid command for this many periods -> e-stop


def _flat_fields(obj: object, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_flat_fields(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


FIXED = {"ssm.enabled"}  # rules are not switches: only the test-only profile turns SSM off
PROFILES = ("default", "test-only-no-ssm")


def override_keys(robot: str) -> list[str]:
    part = ArmLimits() if robot == "panda" else BaseLimits()
    return sorted(set(_flat_fields(part)) - FIXED)


def apply_overrides(limits: Limits, overrides: dict[str, object]) -> Limits:
    """Return limits with dotted-key overrides applied; ValueError names the bad key."""
    part_name = "arm" if limits.robot == "panda" else "base"
    part = getattr(limits, part_name)
    known = _flat_fields(part)
    for key in sorted(overrides):
        value = overrides[key]
        if key not in known or key in FIXED:
            raise ValueError(f"{key}: unknown limit for robot {limits.robot!r}; accepted: "
                             f"{', '.join(override_keys(limits.robot))}")
        old = known[key]
        if isinstance(old, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{key}: must be true or false (got {value!r})")
        elif isinstance(old, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{key}: must be a finite number >= 0 (got {value!r})")
            value = float(value)
        else:  # tuples: same shape, finite numbers
            arr = np.asarray(value, dtype=object)
            want = np.asarray(old, dtype=object).shape
            ok = isinstance(value, (list, tuple)) and (arr.shape == want or (key == "keep_out" and
                                                                            arr.ndim == 2 and arr.shape[1:] == (4,)))
            if ok:
                try:
                    ok = bool(np.all(np.isfinite(np.asarray(value, dtype=float))))
                except (TypeError, ValueError):
                    ok = False
            if not ok and not (key == "keep_out" and value == []):
                shape = "a list of [xmin, ymin, xmax, ymax]" if key == "keep_out" else f"{len(old)} finite numbers"
                raise ValueError(f"{key}: must be {shape} (got {value!r})")
            value = tuple(tuple(float(x) for x in row) for row in value) if key == "keep_out" \
                else tuple(float(x) for x in value)
        known[key] = value
    ssm = {k.split(".", 1)[1]: v for k, v in known.items() if k.startswith("ssm.")}
    plain = {k: v for k, v in known.items() if not k.startswith("ssm.")}
    new_part = dataclasses.replace(part, **plain, ssm=dataclasses.replace(part.ssm, **ssm))
    return dataclasses.replace(limits, **{part_name: new_part})


def default_limits(robot: str, control_dt: float, profile: str = "default") -> Limits:
    """The robot's profile. "test-only-no-ssm" exists so a test can show that the
    separation rule is what prevents intrusions; nothing else differs."""
    lim = Limits(robot=robot, control_dt=control_dt)
    if profile == "test-only-no-ssm":
        off = SSMParams(enabled=False)
        lim = dataclasses.replace(lim, arm=dataclasses.replace(lim.arm, ssm=off),
                                  base=dataclasses.replace(lim.base, ssm=off))
    elif profile != "default":
        raise ValueError(f"unknown limits profile {profile!r}; accepted: {', '.join(PROFILES)}")
    return lim
