"""What the supervisor reads, checked before any rule sees it (pure numpy, total).

Every field a rule reads is required, of a real numeric type (never bool, str, bytes,
datetime, object, complex, structured or masked), of an exact shape, finite and inside
a physically plausible range. Actions are converted once into a validated read-only
copy; everything downstream (rules, tasks, recorders) uses that copy, never the raw
object the policy sent.
"""

from __future__ import annotations

import math
import sys
from typing import Any, NamedTuple

import numpy as np

from qrobot.safety.limits import Limits

_REAL_KINDS = "iuf"
_F64 = np.dtype(np.float64)
TWO_PI = 2 * math.pi
MAX_PEOPLE = 64
PEOPLE_RADIUS_RANGE = (0.05, 2.0)  # (m) a sensor reporting outside this is not believed
TIME_MAX = 1e9


def real_array(x: Any, shape: tuple[int, ...], bound: float = math.inf) -> np.ndarray | None:
    """A float64 copy of x if it is a real number / real array of exactly `shape`, every
    element finite with |element| <= bound, else None."""
    if type(x) is np.ndarray and x.dtype is _F64 and x.shape == shape:  # the common case, fast
        vals = x.ravel().tolist()
        return x.copy() if _within(vals, bound) else None
    if isinstance(x, (bool, np.bool_)):
        return None
    if shape == ():
        if type(x) in (int, float) or isinstance(x, (np.integer, np.floating)):
            try:
                v = float(x)
            except (OverflowError, ValueError):
                return None
            return np.array(v) if abs(v) <= bound and math.isfinite(v) else None
        return None
    if type(x) is np.ndarray:
        if x.dtype.kind not in _REAL_KINDS or x.shape != shape:
            return None
        vals = x.ravel().tolist()  # plain floats: cheaper than numpy ufuncs for a few elements
        if x.dtype.kind == "f":
            return x.astype(np.float64) if _within(vals, bound) else None  # astype copies
    elif type(x) in (list, tuple) and len(shape) == 1 and len(x) == shape[0]:
        if not all(
            type(e) in (int, float) or (isinstance(e, (np.integer, np.floating)) and np.ndim(e) == 0) for e in x
        ):
            return None
        vals = list(x)
    else:
        return None  # subclasses (masked arrays), structured, object, other containers
    try:
        vals = [float(v) for v in vals]
    except (OverflowError, ValueError):
        return None
    if not _within(vals, bound):
        return None
    return np.array(vals, dtype=np.float64).reshape(shape)


def _within(vals: list[float], bound: float) -> bool:
    """All finite and |v| <= bound. (Python's max() skips NaN, so NaN is tested apart:
    a sum with a NaN in it is NaN, and NaN != NaN.)"""
    if not vals:
        return True
    m = max(map(abs, vals))
    return m <= bound and m != math.inf and sum(vals) == sum(vals)


# ------------------------------------------------------------------ actions
def read_action(action: Any, dim: int) -> tuple[np.ndarray | None, str]:
    """(validated read-only float64 copy, "") or (None, why it was refused)."""
    if action is None:
        return None, "no command"
    torch = sys.modules.get("torch")  # never imported here: only recognised if the policy uses it
    if torch is not None and isinstance(action, torch.Tensor):
        if action.dtype == torch.bool or action.is_complex():
            return None, f"tensor of dtype {action.dtype} is not a real numeric action"
        try:
            action = action.detach().to("cpu", torch.float64).numpy().copy()
        except Exception as exc:  # meta tensors, exotic subclasses: cannot vouch for the values
            return None, f"tensor could not be read ({type(exc).__name__})"
    if isinstance(action, np.ndarray):
        if type(action) is not np.ndarray:
            return None, f"{type(action).__name__} (an ndarray subclass, e.g. masked) is not accepted as an action"
        if action.dtype.names is not None:
            return None, "structured array is not accepted as an action"
        if action.dtype.kind not in _REAL_KINDS:
            return None, f"array of dtype {action.dtype} is not a real numeric action"
        if action.shape != (dim,):
            return None, f"action shape {action.shape} != ({dim},)"
    elif type(action) in (list, tuple):  # not subclasses: their contents could change after the check
        if len(action) != dim:
            return None, f"action of length {len(action)} != {dim}"
    else:
        return None, f"action of type {type(action).__name__} is not a numeric array"
    arr = real_array(action, (dim,))
    if arr is None:
        return None, "action has non-finite, out-of-range or non-numeric elements"
    arr.setflags(write=False)
    return arr, ""


# ------------------------------------------------------------------ robot state
class Field(NamedTuple):
    shape: tuple[int, ...]
    bound: float  # |value| must not exceed it (per element)
    unit: bool = False  # a unit vector (a quaternion), to 1e-4 in its squared norm


def fields(limits: Limits) -> dict[str, Field]:
    """The robot-state fields the rules read, with plausibility bounds; `cmd_vel` (what the
    backend is executing) may not exceed the profile's own speed limits."""
    if limits.robot == "panda":
        return {
            "joint_pos": Field((7,), TWO_PI),
            "joint_vel": Field((7,), 50.0),
            "ee_pos": Field((3,), 3.0),
            "ee_orn": Field((4,), 1.0 + 1e-4, unit=True),
            "ee_yaw": Field((), TWO_PI),
            "ee_lin_vel": Field((3,), 10.0),
            "cmd_vel": Field((7,), float(max(limits.arm.joint_vel_max)) + 1e-6),
        }
    b = limits.base
    return {
        "base_pose": Field((3,), 1e4),
        "base_vel": Field((2,), 20.0),
        "cmd_vel": Field((2,), max(b.v_max, b.w_max) + 1e-6),
    }


def read_robot_state(state: Any, spec: dict[str, Field]) -> tuple[dict[str, np.ndarray] | None, str]:
    """(typed copy of the fields, "") or (None, which field is missing or implausible)."""
    if not isinstance(state, dict):
        return None, "no robot state"
    out = {}
    for key, f in (*spec.items(), ("time", Field((), TIME_MAX))):
        if key not in state:
            return None, f"{key} missing"
        arr = real_array(state[key], f.shape, f.bound)
        if arr is None or (key == "time" and arr < 0):
            return None, f"{key}: not a finite real value of shape {f.shape} within |x| <= {f.bound:g}"
        if f.unit and abs(float(arr @ arr) - 1.0) > 1e-4:
            return None, f"{key}: not a unit quaternion"
        out[key] = arr
    return out, ""


def read_people(state: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """People positions (N, 2) and radii (N,) if the state carries a believable report."""
    if "people" not in state or "people_radius" not in state:
        return None
    raw = state["people"]
    if isinstance(raw, (list, tuple)) and len(raw) == 0:
        raw = np.zeros((0, 2))
    if not isinstance(raw, np.ndarray) or raw.ndim not in (1, 2) or raw.size > 2 * MAX_PEOPLE:
        return None
    pts = real_array(raw, raw.shape, 1e4)
    if pts is None or pts.size % 2 or (pts.ndim == 2 and pts.shape[1] != 2):
        return None
    pts = pts.reshape(-1, 2)
    r = state["people_radius"]
    radii = real_array(r, ())
    if radii is not None:
        radii = np.full(len(pts), float(radii))
    elif isinstance(r, (np.ndarray, list, tuple)):
        radii = real_array(r, (len(pts),))
    if radii is None:
        return None
    listed = radii.tolist()
    if listed and not PEOPLE_RADIUS_RANGE[0] <= min(listed) <= max(listed) <= PEOPLE_RADIUS_RANGE[1]:
        return None
    return pts, radii


RUNAWAY = 1.1  # measured speed beyond this multiple of its limit: a latched fault
# A base that bumps an obstacle is spun by the contact: up to 1.64 rad/s (1.37 x the limit)
# seen in pointnav; a collision, not a runaway (the rules and the map stay in force)
RUNAWAY_TURN = 2.0


def beyond_limits(st: dict[str, np.ndarray], limits: Limits) -> str:
    """Why the robot is measured faster than its speed limits ("" if it is not): pushed,
    thrown by an impact, a drive out of control. Motion nobody commanded, since every
    plan stays within the limits (measured at every substep: <= 1.0025 x); impacts that
    merely deflect it within the limits are left to the rules."""
    if limits.robot == "diffbot":
        v, w = st["base_vel"].tolist()
        if abs(v) > RUNAWAY * limits.base.v_max or abs(w) > RUNAWAY_TURN * limits.base.w_max:
            return f"base moving at ({v:.2f} m/s, {w:.2f} rad/s), beyond its limits"
        return ""
    over = np.abs(st["joint_vel"]) / limits.arm.vmax
    if over.max() > RUNAWAY:
        j = int(over.argmax())
        return f"joint {j + 1} moving at {st['joint_vel'][j]:.2f} rad/s, beyond its limit"
    return ""
