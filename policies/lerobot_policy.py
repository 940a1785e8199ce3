"""`lerobot`: a LeRobot policy (ACT, diffusion, ... any object with LeRobot's `PreTrainedPolicy`
interface) as a qrobot policy. LeRobot cannot share qrobot's venv (lerobot 0.4.4 pins
torch < 2.11 and rerun-sdk < 0.27), so it runs behind `qrobot serve-policy lerobot
--checkpoint DIR` in a venv of its own and is benchmarked as `remote` (docs/benchmarking.md).

Observations go in as LeRobot's own rollout (`lerobot_eval`) hands them to a policy:
`observation.images.<camera>` float32 (1, 3, H, W) in [0, 1], `observation.state` float32
(1, S) = proprio ++ goal (the layout `qrobot export lerobot` writes, so a policy trained on
an export reads the same state), `task` = [instruction]; then the policy's saved
preprocessor, `select_action`, its postprocessor. The action is clipped to the env's box.

`select_action` is called at every control step, as LeRobot's rollout does: the policy keeps
its own action-chunk queue (ACT plays `n_action_steps` of each chunk; diffusion also queues
the observations it conditions on, so skipping calls would starve it). `reset` calls the
policy's `reset()` at each episode, which empties that queue: a chunk never runs on into
the next episode. Randomness (diffusion's noise) comes from a torch generator state per
policy instance, re-seeded by `seed_episode`: interleaved clients of one server do not
draw from each other's stream.

Loading reads only the directory (config.json, model.safetensors and, where LeRobot saved
them, policy_preprocessor.json / policy_postprocessor.json): never a hub download. The
class is the one LeRobot's factory names for the config's `type`, or `module:Class` from
QROBOT_LEROBOT_POLICY_CLASS (a policy outside lerobot's registry, the tests' stand-in);
that class's `from_pretrained(DIR)` builds it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from qrobot.errors import QrobotError

LOG = logging.getLogger("qrobot")
ENV_CLASS = "QROBOT_LEROBOT_POLICY_CLASS"  # module:Class with a from_pretrained(DIR) classmethod
IMAGE_PREFIX, STATE, TASK, ACTION = "observation.images.", "observation.state", "task", "action"
PRE, POST = "policy_preprocessor.json", "policy_postprocessor.json"  # LeRobot's processor files
INSTALL = (
    "policy 'lerobot' needs LeRobot, which is not importable here ({why}): run `qrobot serve-policy "
    "lerobot` from a venv with lerobot 0.4.4 (`make lerobot-check` builds one: .venv-lerobot)"
)


# ---------------------------------------------------------------- loading
def _import_lerobot() -> None:
    """lerobot, or one line saying it is missing. PyPI's torchvision for torch 2.13 is a
    CUDA build: beside the CPU torch its compiled ops do not load and its import fails on
    the schemas of two of them; registered first (nothing here runs them), as in
    scripts/lerobot_check.py. A torchvision whose ops load is left alone."""
    try:  # (modules by name: mypy in qrobot's venv has no lerobot to read)
        importlib.import_module("lerobot")
    except ImportError as exc:
        raise QrobotError(INSTALL.format(why=exc)) from None
    try:
        importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # the half-imported package: imported again below
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        importlib.import_module("torchvision")
    except ImportError:
        pass  # a policy without vision backbones may not need it


def _policy_class(directory: Path) -> tuple[Any, Any]:
    """(class, LeRobot config or None): QROBOT_LEROBOT_POLICY_CLASS, else LeRobot's factory."""
    spec = os.environ.get(ENV_CLASS)
    if spec:
        module, _, name = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise QrobotError(f"{ENV_CLASS}={spec!r}: cannot be imported: {type(exc).__name__}: {exc}") from None
        return cls, None
    _import_lerobot()
    factory = importlib.import_module("lerobot.policies.factory")  # (registers every config type)
    configs = importlib.import_module("lerobot.configs.policies")
    try:
        config = configs.PreTrainedConfig.from_pretrained(str(directory))
        cls = factory.get_policy_class(config.type)
    except Exception as exc:  # a config LeRobot cannot parse, a type it does not know
        raise QrobotError(f"policy 'lerobot': {directory / 'config.json'}: {type(exc).__name__}: {exc}") from None
    return cls, config


def _directory(checkpoint: str | Path | None) -> Path:
    if not checkpoint:
        raise QrobotError(
            "policy 'lerobot' needs --checkpoint DIR: a LeRobot policy directory (config.json, model.safetensors)"
        )
    directory = Path(checkpoint).expanduser().resolve()
    if not (directory / "config.json").is_file():  # a local directory only: never a hub id
        raise QrobotError(f"policy 'lerobot': {directory} holds no LeRobot policy (config.json, model.safetensors)")
    return directory


def check_checkpoint(checkpoint: str | Path | None) -> Path:
    """The directory, checked before serving: it holds a config and the policy's class
    imports (a missing lerobot is one line at start, not an error at the first step)."""
    directory = _directory(checkpoint)
    _policy_class(directory)
    return directory


def load(checkpoint: str | Path | None, device: str = "cpu") -> tuple[Any, Any, Any]:
    """(policy, preprocessor or None, postprocessor or None) from a LeRobot policy directory."""
    directory = _directory(checkpoint)
    cls, config = _policy_class(directory)
    if config is None:  # a class of its own: its from_pretrained knows its files
        policy = cls.from_pretrained(str(directory))
        if getattr(policy.config, "device", None) is not None:
            policy.config.device = device
        return policy.to(device).eval(), None, None
    factory = importlib.import_module("lerobot.policies.factory")
    config.device = device
    if getattr(config, "pretrained_backbone_weights", None):
        # the backbone's weights are in model.safetensors: building it must not fetch
        # torchvision's ImageNet weights first
        config.pretrained_backbone_weights = None
    try:  # strict: a checkpoint that does not fill the model is refused, not half-loaded
        policy = cls.from_pretrained(str(directory), config=config, strict=True)
    except Exception as exc:
        raise QrobotError(f"policy 'lerobot': {directory}: cannot load: {type(exc).__name__}: {exc}") from None
    if not ((directory / PRE).is_file() and (directory / POST).is_file()):
        LOG.warning("%s: no %s / %s: observations and actions go unnormalized", directory, PRE, POST)
        return policy, None, None
    pre, post = factory.make_pre_post_processors(
        config, pretrained_path=str(directory), preprocessor_overrides={"device_processor": {"device": device}}
    )
    return policy, pre, post


# ---------------------------------------------------------------- the policy
def _features(features: Any) -> dict[str, tuple[int, ...]]:
    return {str(k): tuple(int(n) for n in ft.shape) for k, ft in dict(features or {}).items()}


class LeRobotPolicy:
    """The `Policy` protocol around a LeRobot policy (and its processors) for one scenario."""

    name = "lerobot"

    def __init__(
        self,
        policy: Any,
        scenario: Any,
        action_space: spaces.Box,
        preprocessor: Any = None,
        postprocessor: Any = None,
        seed: int = 0,
    ) -> None:
        import torch

        self.policy, self.pre, self.post = policy, preprocessor, postprocessor
        self.low, self.high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)
        config = policy.config
        inputs, outputs = _features(config.input_features), _features(config.output_features)
        self.cameras = {
            k.removeprefix(IMAGE_PREFIX): shape for k, shape in inputs.items() if k.startswith(IMAGE_PREFIX)
        }
        self.state_dim = inputs[STATE][0] if STATE in inputs else None
        self.needs_images = bool(self.cameras)
        self._check(scenario, inputs, outputs, int(np.prod(action_space.shape)))
        self.device = torch.device(str(getattr(config, "device", None) or "cpu"))
        self._seed = int(seed)
        self._rng: tuple[Any, Any] | None = None  # the generators' states, made at the first step
        self._instruction = ""

    def _check(self, scenario: Any, inputs: dict[str, tuple[int, ...]], outputs: dict[str, Any], adim: int) -> None:
        """Refuse a policy made for other cameras, sizes or actions, naming what differs."""
        from qrobot.vla.checkpoint import scenario_dims

        where = f"policy 'lerobot' ({type(self.policy).__name__}) on scenario {scenario.name!r}"
        other = sorted(k for k in inputs if not k.startswith(IMAGE_PREFIX) and k != STATE)
        if other:
            raise QrobotError(f"{where}: input {other[0]!r}: qrobot gives {IMAGE_PREFIX}<camera> and {STATE} only")
        cams = {c.name: (3, int(c.height), int(c.width)) for c in scenario.cameras}
        for cam, shape in self.cameras.items():
            if cam not in cams:
                raise QrobotError(f"{where}: camera {cam!r} not in the scenario (it has {sorted(cams)})")
            if shape != cams[cam]:
                raise QrobotError(f"{where}: {IMAGE_PREFIX}{cam} is {shape}; the scenario renders {cams[cam]}")
        proprio, goal, _ = scenario_dims(scenario)
        if self.state_dim is not None and self.state_dim != proprio + goal:
            raise QrobotError(
                f"{where}: {STATE} takes {self.state_dim} values; the scenario gives {proprio + goal} "
                f"(proprio {proprio} ++ goal {goal})"
            )
        if outputs.get(ACTION) != (adim,):
            raise QrobotError(f"{where}: {ACTION} is {outputs.get(ACTION)}; the scenario takes ({adim},)")

    def seed_episode(self, seed: int) -> None:
        self._seed, self._rng = int(seed), None

    def reset(self, instruction: str) -> None:
        self._instruction = instruction
        self.policy.reset()  # empties its action (and observation) queues: nothing carries over
        for pipeline in (self.pre, self.post):
            if pipeline is not None:
                pipeline.reset()

    def batch(self, obs: dict[str, Any]) -> dict[str, Any]:
        """The observation as LeRobot's rollout hands it to a policy (a batch of one)."""
        import torch

        out: dict[str, Any] = {}
        images = obs.get("images") or {}
        for cam, shape in self.cameras.items():
            img = images.get(cam)
            if img is None or np.shape(img) != (shape[1], shape[2], 3):
                got = "none" if img is None else np.shape(img)
                raise QrobotError(f"policy 'lerobot': camera {cam!r}: an HxWx3 image {shape[1:]} expected, got {got}")
            # channels first and contiguous, as LeRobot's rollout makes them (the same memory layout)
            pixels = torch.from_numpy(np.ascontiguousarray(img, np.uint8)).permute(2, 0, 1).contiguous()
            out[IMAGE_PREFIX + cam] = (pixels.to(torch.float32) / 255).unsqueeze(0)
        if self.state_dim is not None:
            parts = [np.asarray(obs["proprio"], np.float32).reshape(-1)]
            if "goal" in obs:
                parts.append(np.asarray(obs["goal"], np.float32).reshape(-1))
            state = np.concatenate(parts)
            if state.size != self.state_dim:
                raise QrobotError(f"policy 'lerobot': {STATE}: {self.state_dim} values expected, got {state.size}")
            out[STATE] = torch.from_numpy(state).unsqueeze(0)
        out[TASK] = [str(obs.get("instruction", self._instruction))]
        if self.pre is None:  # (the preprocessor moves them itself)
            out = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
        return out

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        import torch

        batch = self.batch(obs)
        if self.pre is not None:
            batch = self.pre(batch)
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.inference_mode():
            if self._rng is None:  # (this device's generator only: the others are not ours)
                torch.random.default_generator.manual_seed(self._seed)
                if cuda:
                    torch.cuda.default_generators[cuda[0]].manual_seed(self._seed)
            else:
                torch.set_rng_state(self._rng[0])
                if cuda:
                    torch.cuda.set_rng_state(self._rng[1], cuda[0])
            action = self.policy.select_action(batch)
            self._rng = (torch.get_rng_state(), torch.cuda.get_rng_state(cuda[0]) if cuda else None)
        if self.post is not None:
            action = self.post(action)
        values = action.detach().to("cpu", torch.float32).numpy().reshape(-1)
        if values.size != self.low.size:
            raise QrobotError(f"policy 'lerobot': the policy gave {values.size} action values, not {self.low.size}")
        return np.clip(values, self.low, self.high)

    def describe(self) -> str:
        config = self.policy.config
        chunk = getattr(config, "n_action_steps", None)
        return (
            f"{getattr(config, 'type', type(self.policy).__name__)}: cameras {sorted(self.cameras)}, "
            f"state {self.state_dim}, action {self.low.size}" + (f", {chunk} actions per chunk" if chunk else "")
        )


class _Factory:
    """`make(env, seed, checkpoint=DIR, device=...)`, the policy name `lerobot`."""

    needs_images = True  # not known before the directory is read: render the cameras

    def __call__(self, env: Any, seed: int = 0, **kwargs: Any) -> LeRobotPolicy:
        base = env.unwrapped
        policy, pre, post = load(kwargs.get("checkpoint"), str(kwargs.get("device") or "cpu"))
        out = LeRobotPolicy(policy, base.scenario, env.action_space, pre, post, seed)
        LOG.info("lerobot policy for %s: %s", base.scenario.name, out.describe())
        return out

    def unfit(self, scenario: Any) -> str | None:
        # a bench or a run cannot hand it a directory: it is served, and benchmarked as remote
        return (
            "served from a venv with lerobot: `qrobot serve-policy lerobot --checkpoint DIR`, then bench remote=ADDRESS"
        )


make = _Factory()
