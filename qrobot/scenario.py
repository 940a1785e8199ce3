"""Scenario files (TOML): schema, loading, `extends`, and one-line errors.

A scenario is data: robot, task, instruction templates (training phrasings and
held-out ones made of their words), object/landmark sets,
randomisation ranges, episode limit, cameras, room, people and the limits
profile the supervisor uses. Every field is checked; a mistake gives one line
naming the file, the key and what is accepted.
"""

from __future__ import annotations

import re
import string
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from qrobot.errors import ScenarioError
from qrobot.feasibility import feasible
from qrobot.palette import ColorName

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

    from qrobot.safety.limits import Limits as SafetyLimits  # not the schema's Limits table below

# Every number has a range (docs/scenarios.md lists them); NaN and infinities are refused.
Coord = Annotated[float, Field(ge=-25.0, le=25.0, description="metres from the world origin")]
Vec2 = Annotated[list[Coord], Field(min_length=2, max_length=2)]
Vec3 = Annotated[list[Coord], Field(min_length=3, max_length=3)]
Extent = Annotated[float, Field(ge=0.05, le=20.0, description="metres")]
Size2 = Annotated[list[Extent], Field(min_length=2, max_length=2)]
RoomSide = Annotated[float, Field(ge=2.0, le=20.0, description="metres")]
Distance = Annotated[float, Field(ge=0.0, le=100.0, description="metres")]
Text = Annotated[str, Field(min_length=1, max_length=200)]
# Instructions become a gymnasium Text observation: keep to its charset.
INSTRUCTION_CHARSET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.'!?-"
TEMPLATE_PATTERN = r"^[A-Za-z0-9 ,.'!?-]*(\{[a-z_]+\}[A-Za-z0-9 ,.'!?-]*)*$"  # that charset, and {placeholders}
Template = Annotated[str, Field(min_length=1, max_length=100, pattern=TEMPLATE_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class Region(_Strict):
    """An axis-aligned box [low, high] (2-D or 3-D) that positions are drawn from."""

    low: list[Coord] = Field(min_length=2, max_length=3)
    high: list[Coord] = Field(min_length=2, max_length=3)

    @model_validator(mode="after")
    def _ordered(self) -> Region:
        if len(self.low) != len(self.high) or any(lo > hi for lo, hi in zip(self.low, self.high)):
            raise ValueError("low and high must have the same length and low <= high")
        return self


class Camera(_Strict):
    """A policy camera. mount: world (eye/target in the world), wrist (arm hand
    frame) or base (mobile base frame)."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    mount: Literal["world", "wrist", "base"] = "world"
    width: int = Field(default=128, ge=16, le=1024)
    height: int = Field(default=128, ge=16, le=1024)
    fov: float = Field(default=60.0, gt=10.0, lt=170.0)
    eye: Vec3
    target: Vec3
    depth: bool = False


class _Colored(_Strict):
    """`count` things, each named by a distinct colour drawn from `colors`."""

    colors: list[ColorName] = Field(min_length=1, max_length=24)
    count: int = Field(ge=1, le=8)

    @model_validator(mode="after")
    def _enough_colors(self) -> _Colored:
        if self.count > len(set(self.colors)):
            raise ValueError(f"count {self.count} needs at least that many distinct colors")
        return self


class ObjectSet(_Colored):
    """Graspable cubes."""

    colors: list[ColorName] = Field(min_length=2, max_length=24)
    count: int = Field(ge=2, le=8)
    size: float = Field(default=0.04, ge=0.02, le=0.06)
    mass: float = Field(default=0.1, gt=0.0, le=1.0)
    min_spacing: float = Field(default=0.09, ge=0.0, le=0.5)


class ReceptacleSet(_Colored):
    """Bowls (square, low walls) the object goes into."""

    count: int = Field(ge=1, le=4)
    size: float = Field(default=0.14, ge=0.08, le=0.25)


Phrasing = Literal["seen", "held-out"]  # which list an env draws its instruction templates from
PHRASINGS: tuple[Phrasing, ...] = ("seen", "held-out")


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def _words(template: str) -> set[str]:
    """The words of a template, its placeholders aside."""
    return set(re.findall(r"[A-Za-z0-9']+", re.sub(r"\{[^}]*\}", " ", template)))


def render(template: str, **slots: tuple[str, str]) -> str:
    """A template filled in: a slot given as (colour, noun) fills {slot} with "colour noun"
    ("red cube") and {slot_color} with the colour alone ("red block" from "{object_color} block")."""
    values = {k: f"{color} {noun}" for k, (color, noun) in slots.items()}
    return template.format(**values, **{f"{k}_color": color for k, (color, _) in slots.items()})


class _Task(_Strict):
    instructions: list[Template] = Field(min_length=1, max_length=200, description="the training phrasings")
    held_out_instructions: list[Template] = Field(
        default=[],
        max_length=200,
        description="phrasings kept out of training (`qrobot eval --phrasing held-out`), "
        "made of words the training phrasings use",
    )
    success_distance: float = Field(ge=0.01, le=2.0)
    _placeholders: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _templates(self) -> _Task:
        for tpl in [*self.instructions, *self.held_out_instructions]:
            names = _fields(tpl)
            if sorted(n.removesuffix("_color") for n in names) != sorted(self._placeholders):
                want = ", ".join(f"{{{p}}}" for p in self._placeholders) or "no placeholders"
                also = " (each as {name} or as {name_color}, the colour alone)" if self._placeholders else ""
                raise ValueError(f"template {tpl!r} must use exactly {want}{also}")
        seen = set().union(*map(_words, self.instructions))
        for tpl in self.held_out_instructions:
            if tpl in self.instructions:
                raise ValueError(f"held_out_instructions: {tpl!r} is also a training phrasing (instructions)")
            unseen = sorted(_words(tpl) - seen)
            if unseen:
                raise ValueError(
                    f"held_out_instructions: {tpl!r} uses {', '.join(map(repr, unseen))}, in no training "
                    "phrasing (a model cannot learn a word it never saw: add it to instructions)"
                )
        return self


class ReachTask(_Task):
    kind: Literal["reach"]
    instructions: list[Template] = Field(default=["reach the target"], min_length=1, max_length=200)
    success_distance: float = Field(default=0.05, ge=0.01, le=0.2)
    target_region: Region

    @model_validator(mode="after")
    def _three_d(self) -> ReachTask:
        if len(self.target_region.low) != 3:
            raise ValueError("target_region: low and high need 3 coordinates (x, y, z) for a reach target")
        return self


class PickPlaceTask(_Task):
    kind: Literal["pick_place"]
    success_distance: float = Field(default=0.05, ge=0.01, le=0.2)
    objects: ObjectSet
    receptacles: ReceptacleSet
    region: Region
    _placeholders = ("object", "receptacle")


class StackTask(_Task):
    kind: Literal["stack"]
    success_distance: float = Field(default=0.05, ge=0.01, le=0.2)
    objects: ObjectSet
    region: Region
    _placeholders = ("object", "base")


class PointNavTask(_Task):
    kind: Literal["pointnav"]
    instructions: list[Template] = Field(default=["go to the goal point"], min_length=1, max_length=200)
    success_distance: float = Field(default=0.2, ge=0.05, le=2.0)
    geodesic_range: Annotated[list[Distance], Field(min_length=2, max_length=2)] = Field(
        description="min and max start-goal geodesic distance (m)"
    )


class LandmarkSet(_Colored):
    """Coloured landmarks; the instruction names one of them."""

    colors: list[ColorName] = Field(min_length=2, max_length=24)
    kinds: list[Literal["pillar", "cabinet", "crate"]] = Field(min_length=1, max_length=24)
    count: int = Field(ge=2, le=8)


class ObjectNavTask(_Task):
    kind: Literal["objectnav"]
    success_distance: float = Field(default=1.0, ge=0.1, le=3.0)
    landmarks: LandmarkSet
    geodesic_range: Annotated[list[Distance], Field(min_length=2, max_length=2)] = Field(
        description="min and max start-goal geodesic distance (m)"
    )
    _placeholders = ("landmark",)


TaskConfig = Annotated[
    ReachTask | PickPlaceTask | StackTask | PointNavTask | ObjectNavTask, Field(discriminator="kind")
]


class Obstacle(_Strict):
    """A box on the floor: centre (x, y), full size (sx, sy), height."""

    center: Vec2
    size: Size2
    height: float = Field(default=0.8, gt=0.05, le=3.0)
    color: ColorName = "grey"


class Room(_Strict):
    """A walled rectangle centred at the origin, with fixed and random obstacles."""

    size: Annotated[list[RoomSide], Field(min_length=2, max_length=2)]
    obstacles: list[Obstacle] = Field(default=[], max_length=100)
    random_obstacles: int = Field(default=0, ge=0, le=20)
    random_obstacle_size: Annotated[
        list[Annotated[float, Field(ge=0.1, le=3.0)]], Field(min_length=2, max_length=2)
    ] = [0.4, 1.0]

    @model_validator(mode="after")
    def _sizes_ordered(self) -> Room:
        if self.random_obstacle_size[0] > self.random_obstacle_size[1]:
            raise ValueError("random_obstacle_size: [min, max] with min <= max")
        return self


class Person(_Strict):
    """A kinematic capsule walking a closed loop of waypoints at constant speed."""

    waypoints: list[Vec2] = Field(min_length=2, max_length=50)
    speed: float = Field(default=0.8, gt=0.0, le=2.5)
    radius: float = Field(default=0.25, ge=0.1, le=0.6)
    random_phase: bool = True
    yield_to_robot: bool = Field(default=True, description="step around the robot instead of into it")


class Randomize(_Strict):
    """Domain randomisation applied at every reset."""

    light: bool = False
    color_jitter: float = Field(default=0.0, ge=0.0, le=0.3)


class Sensing(_Strict):
    """The people sensor that feeds the supervisor's separation monitoring."""

    people_latency: float = Field(default=0.1, ge=0.0, le=1.0)
    people_noise: float = Field(default=0.02, ge=0.0, le=0.5)
    people: Literal["sensor", "none"] | None = Field(
        default=None,
        description='"none" declares that no person can be present; [[people]] imply "sensor". '
        "With neither, the supervisor refuses motion.",
    )


class Limits(_Strict):
    """The supervisor's limits profile, and per-scenario overrides of its values
    (dotted keys such as "v_max" or "ssm.warning_band"; see qrobot.safety.limits)."""

    profile: Literal["default", "test-only-no-ssm", "test-only-loosen"] = Field(
        default="default", description="test-only profiles are printed in every summary, run.json and recording"
    )
    overrides: dict[str, bool | float | list[float] | list[list[float]]] = {}


class Scenario(_Strict):
    """One scenario file. `name` and `path` are filled in by the loader."""

    name: str = ""
    path: str = ""
    description: Text
    robot: Literal["panda", "diffbot"]
    task: TaskConfig
    max_steps: int = Field(ge=5, le=5000)
    control_hz: float = Field(default=10.0, gt=0.0, le=240.0)
    cameras: list[Camera] = Field(min_length=1, max_length=4)
    room: Room | None = None
    people: list[Person] = Field(default=[], max_length=10)
    stop_at_rest_steps: int = Field(default=30, ge=0, le=1000)
    randomize: Randomize = Randomize()
    sensing: Sensing = Sensing()
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        nav = self.task.kind in ("pointnav", "objectnav")
        if nav != (self.robot == "diffbot"):
            want = "diffbot" if nav else "panda"
            raise ValueError(f"task {self.task.kind!r} needs robot = {want!r}")
        if nav and self.room is None:
            raise ValueError("navigation tasks need a [room] table")
        if self.people and not nav:
            raise ValueError("people are simulated in navigation scenarios only")
        if self.people and self.sensing.people == "none":
            raise ValueError('people are listed but sensing.people = "none" (set it to "sensor")')
        if 240.0 % self.control_hz:
            raise ValueError(f"control_hz must divide 240 (got {self.control_hz})")
        names = [c.name for c in self.cameras]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique (got {names})")
        feasible(self)
        allowed = {"base", "world"} if nav else {"world", "wrist"}
        bad = [c.name for c in self.cameras if c.mount not in allowed]
        if bad:
            raise ValueError(f"cameras {bad}: mount must be one of {sorted(allowed)} for robot {self.robot!r}")
        return self


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def scenario_dir() -> Path:
    return Path(str(resources.files("qrobot.scenarios")))


def scenario_names() -> list[str]:
    return sorted(p.stem for p in scenario_dir().glob("*.toml"))


def _resolve(name_or_path: str, relative_to: Path | None = None) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.parent != Path("."):
        p = p if relative_to is None or p.is_absolute() else relative_to / p
        if not p.is_file():
            raise ScenarioError(f"{p}: scenario file not found")
        return p
    packaged = scenario_dir() / f"{name_or_path}.toml"
    if not packaged.is_file():
        raise ScenarioError(
            f"unknown scenario {name_or_path!r}; valid names: {', '.join(scenario_names())} (or a path to a .toml file)"
        )
    return packaged


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


MAX_EXTENDS = 16  # a chain of files extending each other, at most this deep


def _read(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    real = path.resolve()
    if real in chain:
        raise ScenarioError(f"{path}: extends: cycle through {' -> '.join(map(str, chain))}")
    if len(chain) >= MAX_EXTENDS:
        raise ScenarioError(f"{path}: extends: more than {MAX_EXTENDS} files deep")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: tables or arrays nested too deeply") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ScenarioError(f"{path}: extends: must be a scenario name (string)")
    try:  # a path is relative to the file that names it, as in every config format with includes
        base_path = _resolve(parent, relative_to=path.parent)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: extends: {exc}") from None
    return _merge(_read(base_path, chain + (real,)), data)


def _model_at(model: Any, loc: tuple) -> Any:
    """The pydantic model class that a location points into (for 'accepted keys')."""
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            if model is Scenario and part == "task":
                continue
            tags = {
                "reach": ReachTask,
                "pick_place": PickPlaceTask,
                "stack": StackTask,
                "pointnav": PointNavTask,
                "objectnav": ObjectNavTask,
            }
            model = tags.get(part, None) if isinstance(part, str) and part in tags else model
            continue
        ann = field.annotation
        for cand in getattr(ann, "__args__", ()) or (ann,):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
            inner = getattr(cand, "__args__", ())
            if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
                model = inner[0]
                break
        else:
            model = None
    return model


_UNION_TAGS = {"bool", "float", "int", "list[float]", "list[list[float]]"}


def format_error(path: Path, err: ErrorDetails) -> str:
    """One line: file: key: problem (accepted: ...)."""
    loc = tuple(p for p in err["loc"] if p not in _UNION_TAGS)
    kinds = {"reach", "pick_place", "stack", "pointnav", "objectnav"}
    shown = [
        str(p) if not isinstance(p, int) else f"[{p}]"
        for i, p in enumerate(loc)
        if not (i > 0 and loc[i - 1] == "task" and p in kinds)
    ]
    key = ".".join(shown).replace(".[", "[")
    if err["type"] == "extra_forbidden":
        model = _model_at(Scenario, loc[:-1])
        fields = sorted(getattr(model, "model_fields", {})) if model else []
        fields = [f for f in fields if f not in ("name", "path")] if model is Scenario else fields
        return f"{path}: {key}: unknown key; accepted keys: {', '.join(fields)}"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown_got = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
    suffix = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {shown_got})"
    return f"{path}: {key}: {msg}{suffix}" if key else f"{path}: {msg}"


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load and validate a packaged scenario by name, or a .toml file by path."""
    path = _resolve(str(name_or_path))
    data = _read(path)
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: top level must be a table")
    for key in ("name", "path"):  # the file's own name names it (recordings go to runs/<id>/<name>/)
        if key in data:
            raise ScenarioError(f"{path}: {key}: set from the file name, not in the file (rename the file)")
    if not SAFE_NAME.fullmatch(path.stem):
        raise ScenarioError(
            f"{path}: the file name names the scenario and its recordings folder: "
            "1-64 letters, digits, _ and - (then .toml)"
        )
    data["name"], data["path"] = path.stem, str(path)
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()  # a union (limits.overrides) reports one error per member: the telling one
        raise ScenarioError(
            format_error(path, next((e for e in errors if e["type"] == "finite_number"), errors[0]))
        ) from None
    try:
        scenario_limits(sc)
    except ValueError as exc:
        raise ScenarioError(f"{path}: limits.overrides.{exc}") from None
    return sc


def people_source(sc: Scenario) -> Literal["sensor", "none"] | None:
    """Where the supervisor gets people from: listed people are sensed; otherwise the
    scenario's declaration ("sensor", "none" or None: undeclared, motion refused)."""
    return "sensor" if sc.people else sc.sensing.people


def scenario_limits(sc: Scenario) -> tuple[SafetyLimits, SafetyLimits]:
    """(the limits the supervisor enforces, the robot's reference profile that safety
    metrics are measured against). ValueError if an override is refused."""
    from qrobot.safety.limits import apply_overrides, default_limits, with_room, with_sensor

    dt = 1.0 / sc.control_hz
    reference = default_limits(sc.robot, dt)
    profile = default_limits(sc.robot, dt, sc.limits.profile)
    if sc.room is not None:
        reference, profile = with_room(reference, sc.room.size), with_room(profile, sc.room.size)
    if people_source(sc) == "sensor":  # faster people, a slower or noisier sensor: larger separations
        fastest = max((p.speed for p in sc.people), default=0.0)
        reference = with_sensor(reference, sc.sensing.people_latency, sc.sensing.people_noise, fastest)
        profile = with_sensor(profile, sc.sensing.people_latency, sc.sensing.people_noise, fastest)
    return apply_overrides(profile, dict(sc.limits.overrides)), reference
