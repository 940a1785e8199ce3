"""Limits profiles: the supervisor's numbers are data, one profile per robot,
overridable per scenario (`[limits.overrides]`) with one-line errors."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeGuard, cast

import numpy as np


def _frozen(values: object) -> np.ndarray:
    arr = np.array(values, dtype=np.float64)
    arr.setflags(write=False)  # shared with every reader: nobody may change a limit in place
    return arr


def _array_view(name: str) -> cached_property:
    """A cached read-only numpy copy of a tuple field (works on frozen dataclasses)."""
    return cached_property(lambda self: _frozen(getattr(self, name)))


@dataclass(frozen=True)
class SSMParams:
    """ISO/TS 15066 speed and separation monitoring: Sp = Sh + Sr + Ss + C + Zd + Zr."""

    human_speed: float = 1.6  # v_h (m/s), ISO 13855 walking speed
    reaction_time: float = 0.2  # T_r (s): sensing latency + one control period + compute
    intrusion_distance: float = 0.1  # C (m): reach of a body part past the detection boundary
    human_uncertainty: float = 0.05  # Z_d (m): people-sensor position uncertainty
    robot_uncertainty: float = 0.02  # Z_r (m): robot position uncertainty
    warning_band: float = 0.6  # (m) beyond Sp where speed is scaled down linearly
    clear_hold_time: float = 1.0  # (s) the area must stay clear this long before resuming
    enabled: bool = True  # only the test-only profile turns this off (not overridable)


@dataclass(frozen=True)
class ArmLimits:
    """Franka Panda defaults: joint limits from the URDF, velocity and acceleration
    limits from Franka's published datasheet, collaborative Cartesian speeds."""

    joint_lower: tuple[float, ...] = (-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671)
    joint_upper: tuple[float, ...] = (2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671)
    soft_margin: float = 0.15  # (rad) inside the hard limits: motion toward them slows
    joint_vel_max: tuple[float, ...] = (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)
    joint_acc_max: tuple[float, ...] = (15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0)
    ee_speed_max: float = 0.25  # (m/s) collaborative default
    ee_ang_speed_max: float = 1.5  # (rad/s)
    ee_step_max: float = 0.025  # (m) per control step, whatever the rate
    ee_decel: float = 1.0  # (m/s^2) used for the stopping distance Ss
    workspace_low: tuple[float, float, float] = (0.15, -0.45, 0.015)  # fingertips reach 11 mm below the EE point
    workspace_high: tuple[float, float, float] = (0.85, 0.45, 0.6)
    ssm: SSMParams = SSMParams()
    # not a limit: the posture the Cartesian-to-joint resolution leans toward in its null space
    rest_posture: tuple[float, ...] = (0.0, 0.21, 0.0, -2.25, 0.0, 2.46, 0.785)

    # numpy views, built once (the supervisor runs every control period)
    rest = _array_view("rest_posture")
    lower = _array_view("joint_lower")
    upper = _array_view("joint_upper")
    vmax = _array_view("joint_vel_max")
    amax = _array_view("joint_acc_max")
    ws_low = _array_view("workspace_low")
    ws_high = _array_view("workspace_high")


@dataclass(frozen=True)
class BaseLimits:
    """Differential-drive base defaults."""

    v_max: float = 0.5  # (m/s)
    w_max: float = 1.2  # (rad/s)
    v_acc: float = 1.5  # (m/s^2), also the braking deceleration
    w_acc: float = 4.0  # (rad/s^2)
    step_max: float = 0.06  # (m) per control step
    radius: float = 0.29  # (m) footprint circle
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
    watchdog_periods: float = 2.0  # no valid command for this many periods -> e-stop
    profile: str = "default"  # its name; any "test-only-*" profile is printed wherever results are


def _flat_fields(obj: object, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_flat_fields(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


# rules are not switches (only the test-only profile turns SSM off); the rest posture is
# the embodiment's, not a limit a scenario tightens
FIXED = {"ssm.enabled", "rest_posture"}
# "test-only-no-ssm": a test shows the separation rule is what prevents intrusions;
# "test-only-loosen": overrides may loosen the profile. Both are printed in every summary.
PROFILES = ("default", "fr3", "test-only-no-ssm", "test-only-loosen")

# Franka Research 3: Franka's published joint position ranges, and its velocity and
# acceleration limits capped at what franky-control 2.0.0 (the libfranka binding the Franka
# host drives it with) enforces: it carries the Panda's table, 2.175 / 2.61 rad/s and 7.5
# rad/s^2 on joint 2, and refuses a motion beyond it; velocities at 95 % of that (the host's
# margin). The Cartesian rules keep the collaborative defaults; the kinematic model stays
# the Panda's (the FR3's link lengths).
FR3_ARM = {
    "joint_lower": (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
    "joint_upper": (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
    "joint_vel_max": (2.066, 2.066, 2.066, 2.066, 2.479, 2.479, 2.479),  # FR3: 2.62 x 4, 5.26, 4.18, 5.26
    "joint_acc_max": (10.0, 7.5, 10.0, 10.0, 10.0, 10.0, 10.0),  # FR3: 10 on every joint
}

# The safe direction of every overridable key: "le" = the override may only be smaller than
# the profile (speeds, accelerations, decelerations that enter braking distances), "ge" =
# only larger (margins, uncertainties, reaction times, footprint), "box" = a region that may
# only shrink (low ge, high le), "zones" = keep-out zones that may only be added. With them,
# the accepted range of each value (a typo such as 1e9 s is refused, not obeyed).
_POS = (1e-6, 1e3)
TIGHTEN: dict[str, tuple[str, tuple[float, float]]] = {
    # arm
    "joint_lower": ("ge", (-2 * math.pi, 2 * math.pi)),
    "joint_upper": ("le", (-2 * math.pi, 2 * math.pi)),
    "soft_margin": ("ge", (0.0, 1.0)),
    "joint_vel_max": ("le", _POS),
    "joint_acc_max": ("le", _POS),
    "ee_speed_max": ("le", _POS),
    "ee_ang_speed_max": ("le", _POS),
    "ee_step_max": ("le", _POS),
    "ee_decel": ("le", _POS),
    "workspace_low": ("ge", (-3.0, 3.0)),
    "workspace_high": ("le", (-3.0, 3.0)),
    # base
    "v_max": ("le", _POS),
    "w_max": ("le", _POS),
    "v_acc": ("le", _POS),
    "w_acc": ("le", _POS),
    "step_max": ("le", _POS),
    "radius": ("ge", (0.0, 3.0)),
    "bounds_low": ("ge", (-1e4, 1e4)),
    "bounds_high": ("le", (-1e4, 1e4)),
    "keep_out": ("zones", (-1e4, 1e4)),
    # separation monitoring
    "ssm.human_speed": ("ge", (0.0, 10.0)),
    "ssm.reaction_time": ("ge", (0.0, 10.0)),
    "ssm.intrusion_distance": ("ge", (0.0, 10.0)),
    "ssm.human_uncertainty": ("ge", (0.0, 10.0)),
    "ssm.robot_uncertainty": ("ge", (0.0, 10.0)),
    "ssm.warning_band": ("ge", (0.0, 20.0)),
    "ssm.clear_hold_time": ("ge", (0.0, 600.0)),
}


def override_keys(robot: str) -> list[str]:
    part = ArmLimits() if robot == "panda" else BaseLimits()
    return sorted(set(_flat_fields(part)) - FIXED)


def _is_number(x: object) -> TypeGuard[float]:
    """An int or a float exactly (not a bool, not a subclass)."""
    return type(x) in (int, float)


def _parse(key: str, value: object, old: object) -> object:
    """The override as the profile's type, or ValueError naming what is accepted."""
    _, (lo, hi) = TIGHTEN[key]
    rng = f"in [{lo:g}, {hi:g}]"
    if key == "keep_out":
        rows = value if isinstance(value, (list, tuple)) else None
        if rows is None or not all(
            isinstance(r, (list, tuple))
            and len(r) == 4
            and all(_is_number(x) and math.isfinite(x) and lo <= x <= hi for x in r)
            for r in rows
        ):
            raise ValueError(f"{key}: must be a list of [xmin, ymin, xmax, ymax], numbers {rng} (got {value!r})")
        zones = tuple(tuple(float(x) for x in r) for r in rows)
        if any(z[0] >= z[2] or z[1] >= z[3] for z in zones):
            raise ValueError(f"{key}: each zone needs xmin < xmax and ymin < ymax (got {value!r})")
        return zones
    if isinstance(old, tuple):
        if (
            not isinstance(value, (list, tuple))
            or len(value) != len(old)
            or not all(_is_number(x) and math.isfinite(x) and lo <= x <= hi for x in value)
        ):
            raise ValueError(f"{key}: must be {len(old)} finite numbers {rng} (got {value!r})")
        return tuple(float(x) for x in value)
    if not _is_number(value) or not math.isfinite(value) or not lo <= value <= hi:
        raise ValueError(f"{key}: must be a finite number {rng} (got {value!r})")
    return float(value)


def _loosens(key: str, new: object, old: object) -> bool:
    direction, _ = TIGHTEN[key]
    if direction == "zones":  # every profile zone must lie inside some requested zone
        new_zones = cast("tuple[tuple[float, ...], ...]", new)  # as _parse returns them
        old_zones = cast("tuple[tuple[float, ...], ...]", old)
        return not all(
            any(n[0] <= o[0] and n[1] <= o[1] and n[2] >= o[2] and n[3] >= o[3] for n in new_zones) for o in old_zones
        )
    pairs: Iterable[tuple[float, float]] = (
        zip(cast("tuple[float, ...]", new), old) if isinstance(old, tuple) else [(cast(float, new), cast(float, old))]
    )
    return any(n > o if direction == "le" else n < o for n, o in pairs)


def apply_overrides(limits: Limits, overrides: dict[str, object]) -> Limits:
    """Return limits with dotted-key overrides applied. An override may only tighten the
    profile (unless the profile is "test-only-loosen"); ValueError names key and values."""
    part_name = "arm" if limits.robot == "panda" else "base"
    part = getattr(limits, part_name)
    known = _flat_fields(part)
    loosen_ok = limits.profile == "test-only-loosen"
    for key in sorted(overrides):
        if key not in known or key in FIXED:
            raise ValueError(
                f"{key}: unknown limit for robot {limits.robot!r}; accepted: {', '.join(override_keys(limits.robot))}"
            )
        value = _parse(key, overrides[key], known[key])
        if not loosen_ok and _loosens(key, value, known[key]):
            raise ValueError(
                f"{key}: would loosen the robot's profile (profile {_show(known[key])}, requested "
                f'{_show(value)}); overrides may only tighten (profile = "test-only-loosen" '
                f"allows it, for tests only)"
            )
        known[key] = value
    for low, high in (
        ("joint_lower", "joint_upper"),
        ("workspace_low", "workspace_high"),
        ("bounds_low", "bounds_high"),
    ):
        if low in known and not all(
            a < b for a, b in zip(cast("tuple[float, ...]", known[low]), cast("tuple[float, ...]", known[high]))
        ):
            raise ValueError(
                f"{low}: must be below {high} in every element (got {_show(known[low])} and {_show(known[high])})"
            )
    ssm = {k.split(".", 1)[1]: v for k, v in known.items() if k.startswith("ssm.")}
    plain = {k: v for k, v in known.items() if not k.startswith("ssm.")}
    new_part = dataclasses.replace(part, **plain, ssm=dataclasses.replace(part.ssm, **ssm))
    return dataclasses.replace(limits, **{part_name: new_part})


def _show(v: object) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else repr(v)


def default_limits(robot: str, control_dt: float, profile: str = "default") -> Limits:
    """The robot's profile. "test-only-no-ssm" exists so a test can show that the
    separation rule is what prevents intrusions; "test-only-loosen" lets overrides loosen."""
    if profile not in PROFILES:
        raise ValueError(f"unknown limits profile {profile!r}; accepted: {', '.join(PROFILES)}")
    lim = Limits(robot=robot, control_dt=control_dt, profile=profile)
    if profile == "fr3":
        lim = dataclasses.replace(lim, arm=dataclasses.replace(lim.arm, **FR3_ARM))  # type: ignore[arg-type]
    if profile == "test-only-no-ssm":
        off = SSMParams(enabled=False)
        lim = dataclasses.replace(
            lim, arm=dataclasses.replace(lim.arm, ssm=off), base=dataclasses.replace(lim.base, ssm=off)
        )
    return lim


def with_room(lim: Limits, size: tuple[float, float] | list[float]) -> Limits:
    """The map bounds of a walled room centred at the origin (part of the reference profile)."""
    sx, sy = float(size[0]), float(size[1])
    return dataclasses.replace(
        lim, base=dataclasses.replace(lim.base, bounds_low=(-sx / 2, -sy / 2), bounds_high=(sx / 2, sy / 2))
    )


# A 2-D Gaussian position error exceeds 2.5 sigma in 4.4 % of readings (Rayleigh); the
# intrusion distance C covers the rest. The default sensor (0.02 m) gives Z_d = 0.05 m.
SENSOR_SIGMAS = 2.5


def with_sensor(lim: Limits, latency: float, noise: float, people_speed: float = 0.0) -> Limits:
    """Separation monitoring that accounts for the people and the sensor the robot actually
    has: the reaction time covers the sensor's delay (whole control periods: a reading
    arrives with the period after it is due) plus one period, the position uncertainty its
    noise, the human speed the fastest person declared. Never looser than `lim`."""
    dt = lim.control_dt
    delay = math.ceil(float(latency) / dt - 1e-9) * dt

    def fit(ssm: SSMParams) -> SSMParams:
        return dataclasses.replace(
            ssm,
            reaction_time=max(ssm.reaction_time, delay + dt),
            human_uncertainty=max(ssm.human_uncertainty, SENSOR_SIGMAS * float(noise)),
            human_speed=max(ssm.human_speed, float(people_speed)),
        )

    return dataclasses.replace(
        lim,
        arm=dataclasses.replace(lim.arm, ssm=fit(lim.arm.ssm)),
        base=dataclasses.replace(lim.base, ssm=fit(lim.base.ssm)),
    )
