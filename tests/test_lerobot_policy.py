"""The LeRobot policy adapter (policies/lerobot_policy.py) without LeRobot: a stand-in with
LeRobot's `PreTrainedPolicy` interface (`from_pretrained(DIR)`, `reset()`, `select_action`
keeping an action-chunk queue of `n_action_steps`, `config.input_features` /
`output_features` / `n_action_steps` / `device`) around a real torch module, served by a
real `qrobot serve-policy lerobot --checkpoint DIR` process and benchmarked through `remote`
in the reach scenario. The stand-in logs what every `select_action` received and returned.
LeRobot's own ACT behind the same path: `make lerobot-check`."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy, policy_names, unfit_reason
from qrobot.policies.lerobot_policy import ENV_CLASS, LeRobotPolicy
from qrobot.policies.remote import _World
from safetensors.torch import load_file, save_file

from qrobot.cli import main
from qrobot.errors import QrobotError
from qrobot.scenario import load_scenario
from tests.test_remote_policy import KEYS, Server, _bench, _cells, _free_port, keys, lockstep  # noqa: F401 (keys: a fixture)

ROOT = Path(__file__).resolve().parents[1]
STANDIN = "tests.test_lerobot_policy:StandInPolicy"
SCENARIO = "reach"  # 50 steps, cameras scene and wrist (128 x 128), state 13 + 3, action 5
N_ACTION_STEPS, CHUNK = 4, 6  # 50 steps = 12 chunks and half of one: an episode ends mid-chunk
_instances = itertools.count()


@dataclass
class Feature:  # LeRobot's PolicyFeature: `type` a FeatureType (a str enum), `shape`
    type: str
    shape: tuple[int, ...]


@dataclass
class StandInConfig:
    input_features: dict[str, Feature]
    output_features: dict[str, Feature]
    n_action_steps: int = N_ACTION_STEPS
    chunk_size: int = CHUNK
    device: str = "cpu"
    type: str = "qrobot_standin"
    log: str = ""  # JSONL: one line per reset and per select_action

    @classmethod
    def for_scenario(cls, name: str, log: str = "") -> StandInConfig:
        from qrobot.vla.checkpoint import scenario_dims

        sc = load_scenario(name)
        proprio, goal, action = scenario_dims(sc)
        inputs = {f"observation.images.{c.name}": Feature("VISUAL", (3, c.height, c.width)) for c in sc.cameras}
        inputs["observation.state"] = Feature("STATE", (proprio + goal,))
        return cls(inputs, {"action": Feature("ACTION", (action,))}, log=log)

    def to_json(self) -> dict[str, Any]:  # (config.json, features as LeRobot writes them)
        feats = lambda fs: {k: {"type": f.type, "shape": list(f.shape)} for k, f in fs.items()}
        return {**self.__dict__, **{k: feats(getattr(self, k)) for k in ("input_features", "output_features")}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StandInConfig:
        feats = lambda fs: {k: Feature(f["type"], tuple(f["shape"])) for k, f in fs.items()}
        return cls(**{**d, **{k: feats(d[k]) for k in ("input_features", "output_features")}})


class StandInPolicy(torch.nn.Module):
    """LeRobot's PreTrainedPolicy as ACT implements it: select_action pops a queue that a
    chunk refills when empty (the first n_action_steps of chunk_size), reset() empties it.
    The chunk is a small MLP of the cameras' mean colours and the state, scaled past the
    action box (the adapter clips), plus noise from torch's global generator (as diffusion
    draws its noise: the adapter seeds it per episode)."""

    name = "qrobot_standin"

    def __init__(self, config: StandInConfig) -> None:
        super().__init__()
        self.config = config
        self.cameras = sorted(k for k in config.input_features if k.startswith("observation.images."))
        n_in = 3 * len(self.cameras) + config.input_features["observation.state"].shape[0]
        self.action_dim = config.output_features["action"].shape[0]
        self.net = torch.nn.Sequential(
            torch.nn.Linear(n_in, 32), torch.nn.Tanh(), torch.nn.Linear(32, config.chunk_size * self.action_dim)
        )
        self.instance = f"{os.getpid()}-{next(_instances)}"
        self.reset()

    @classmethod
    def from_pretrained(cls, path: str) -> StandInPolicy:
        policy = cls(StandInConfig.from_json(json.loads((Path(path) / "config.json").read_text())))
        policy.load_state_dict(load_file(str(Path(path) / "model.safetensors")), strict=True)
        return policy

    def save_pretrained(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps({**self.config.to_json(), "type": self.config.type}))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / "model.safetensors"))

    def _log(self, **row: Any) -> None:
        if self.config.log:
            with open(self.config.log, "a") as f:
                f.write(json.dumps({"instance": self.instance, **row}) + "\n")

    def reset(self) -> None:
        self._action_queue: deque[torch.Tensor] = deque(maxlen=self.config.n_action_steps)
        self._log(event="reset")

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, Any]) -> torch.Tensor:
        x = torch.cat([batch[k].mean(dim=(2, 3)) for k in self.cameras] + [batch["observation.state"]], 1)
        chunk = 3.0 * torch.tanh(self.net(x)).reshape(-1, self.config.chunk_size, self.action_dim)
        return chunk + 0.05 * torch.randn(chunk.shape)

    @torch.no_grad()
    def select_action(self, batch: dict[str, Any]) -> torch.Tensor:
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        row: dict[str, Any] = {
            "event": "select",
            "keys": sorted(batch),
            "shapes": {k: list(v.shape) for k, v in tensors.items()},
            "dtypes": sorted({str(v.dtype) for v in tensors.values()}),
            "range": [
                min(float(batch[k].min()) for k in self.cameras),
                max(float(batch[k].max()) for k in self.cameras),
            ],
            "pixels": {k: int((batch[k].double() * 255).round().sum()) for k in self.cameras},
            "state": batch["observation.state"][0].tolist(),
            "task": batch["task"],
            "queued": len(self._action_queue),
        }
        if not self._action_queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]
            row["chunk"] = chunk[0].tolist()
            self._action_queue.extend(chunk.transpose(0, 1))
        action = self._action_queue.popleft()
        self._log(**row, action=action[0].tolist())
        return action


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _episodes(rows: list[dict[str, Any]], instance: str) -> list[list[dict[str, Any]]]:
    """One instance's select_action calls, cut at its resets (empty stretches dropped)."""
    out: list[list[dict[str, Any]]] = [[]]
    for r in rows:
        if r["instance"] == instance:
            if r["event"] == "reset":
                out.append([])
            else:
                out[-1].append(r)
    return [e for e in out if e]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("standin")
    torch.manual_seed(0)
    StandInPolicy(StandInConfig.for_scenario(SCENARIO, log=str(d / "calls.jsonl"))).save_pretrained(d / "policy")
    return d / "policy"


@pytest.fixture(scope="module")
def server(keys: Path, checkpoint: Path) -> Iterator[Server]:  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:  # (the server process inherits them)
        mp.setenv(ENV_CLASS, STANDIN)
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        s = Server(keys, "lerobot", "--checkpoint", str(checkpoint), "--scenario", SCENARIO)
    try:
        yield s
    finally:
        s.stop()


def test_a_served_lerobot_policy_is_benchmarked_through_remote(
    tmp_path: Path,
    server: Server,
    keys: Path,  # noqa: F811
    checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two episodes benchmarked through `remote`: the rows the adapter gives run here, and
    what the stand-in saw and played at every step."""
    from qrobot.runner import prepare, run_episode

    log = checkpoint.parent / "calls.jsonl"
    before = {r["instance"] for r in _log(log)}
    run = _bench(
        tmp_path, "--scenarios", SCENARIO, "--episodes", "2", "--seed", "7", "--workers", "1",
        "--policies", f"remote={server.endpoint}?keys={keys}",
    )  # fmt: skip
    rows = sorted(_cells(run).items())
    assert [(seed, c["end_reason"], c["steps"], c["error"]) for (_, seed), c in rows] == [
        (7, "timeout", 50, ""),
        (8, "timeout", 50, ""),
    ]  # (random weights: the arm never reaches the target)
    monkeypatch.setenv(ENV_CLASS, STANDIN)
    session = prepare(SCENARIO, "lerobot", policy_kwargs={"checkpoint": str(checkpoint)}, preflight=False)
    try:
        for k, (_, cell) in enumerate(rows):
            session.policy.seed_episode(7 + k)  # as a bench worker does
            res = run_episode(session.env, session.policy, k, 7 + k).to_dict()
            assert {**{key: res[key] for key in KEYS}, "error": res["error"]} == cell  # the same row locally
    finally:
        session.close()
    calls = _log(log)
    served = {
        r["instance"] for r in calls if r["event"] == "select" and r["instance"].startswith(f"{server.proc.pid}-")
    }
    (instance,) = served - before  # the bench worker's policy, in the server
    episodes = _episodes(calls, instance)
    assert [len(e) for e in episodes] == [c["steps"] for _, c in rows]  # one select_action per control step
    cams = {f"observation.images.{c}": [1, 3, 128, 128] for c in ("scene", "wrist")}
    for ep, (_, cell) in zip(episodes, rows):
        for t, call in enumerate(ep):
            assert call["keys"] == sorted([*cams, "observation.state", "task"])
            assert call["shapes"] == {**cams, "observation.state": [1, 16]} and call["dtypes"] == ["torch.float32"]
            assert 0.0 <= call["range"][0] < call["range"][1] <= 1.0  # float CHW in [0, 1]
            assert call["task"] == [cell["instruction"]]
            # a chunk at steps 0, 4, 8, ... of each episode, its actions played in order
            assert call["queued"] == (N_ACTION_STEPS - t % N_ACTION_STEPS) % N_ACTION_STEPS
            assert ("chunk" in call) == (t % N_ACTION_STEPS == 0)
        played = [a for call in ep for a in call.get("chunk", [])][: len(ep)]
        assert [call["action"] for call in ep] == played
    # the first episode ended mid-chunk; the second began with a fresh one (reset emptied the queue)
    assert len(episodes[0]) % N_ACTION_STEPS != 0 and episodes[1][0]["queued"] == 0


def test_served_actions_are_the_local_adapters_clipped(
    server: Server,
    keys: Path,  # noqa: F811
    checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Action by action: what crosses the wire (cameras, proprio ++ goal, instruction) reaches
    the policy unchanged; the client gets the stand-in's actions clipped to the box, the same
    as the adapter run here from the same seed."""
    log = checkpoint.parent / "calls.jsonl"
    monkeypatch.setenv(ENV_CLASS, STANDIN)
    env = QRobotEnv(SCENARIO, images=True)
    local = make_policy("lerobot", env, checkpoint=str(checkpoint))
    remote = make_policy("remote", env, address=f"{server.endpoint}?keys={keys}")
    try:
        steps = lockstep(env, local, remote)
        assert all(np.array_equal(r, a) and a.dtype == np.float32 for _, a, r in steps)
        sent = [(obs, a) for obs, a, _ in steps]
    finally:
        remote.close()
        env.close()
    calls = [r for r in _log(log) if r["event"] == "select" and r["instance"].startswith(f"{server.proc.pid}-")]
    calls = calls[-len(sent) :]  # (the local adapter's stand-in logs too, from this process)
    raw = np.array([c["action"] for c in calls], np.float32)
    assert np.abs(raw).max() > 1.0  # the stand-in went past the box: clipping was exercised
    assert np.array_equal(np.clip(raw, -1, 1), np.stack([a for _, a in sent]))
    for call, (obs, _) in zip(calls, sent):
        assert call["pixels"] == {f"observation.images.{c}": int(obs["images"][c].sum()) for c in ("scene", "wrist")}
        assert np.array_equal(np.float32(call["state"]), np.concatenate([obs["proprio"], obs["goal"]]))
        assert call["task"] == [obs["instruction"]]


def test_a_policy_for_other_shapes_is_refused_naming_the_difference() -> None:
    def config(**change: Any) -> StandInConfig:
        c = StandInConfig.for_scenario(SCENARIO)
        c.input_features.update(change.pop("inputs", {}))
        c.output_features.update(change)
        return c

    world = _World(load_scenario(SCENARIO))
    cases = {
        "camera 'top' not in the scenario": config(inputs={"observation.images.top": Feature("VISUAL", (3, 64, 64))}),
        "observation.images.scene is (3, 96, 96); the scenario renders (3, 128, 128)": config(
            inputs={"observation.images.scene": Feature("VISUAL", (3, 96, 96))}
        ),
        "observation.state takes 13 values; the scenario gives 16 (proprio 13 ++ goal 3)": config(
            inputs={"observation.state": Feature("STATE", (13,))}
        ),
        "action is (7,); the scenario takes (5,)": config(action=Feature("ACTION", (7,))),
        "input 'observation.environment_state'": config(inputs={"observation.environment_state": Feature("ENV", (4,))}),
    }
    for why, c in cases.items():
        with pytest.raises(QrobotError, match=f"on scenario 'reach': .*{re.escape(why)}"):
            LeRobotPolicy(StandInPolicy(c), world.scenario, world.action_space)
    fit = LeRobotPolicy(StandInPolicy(config()), world.scenario, world.action_space)
    assert fit.needs_images and fit.state_dim == 16 and sorted(fit.cameras) == ["scene", "wrist"]


def test_without_lerobot_serving_it_is_one_line(
    keys: Path,  # noqa: F811
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if importlib.util.find_spec("lerobot") is not None:
        pytest.skip("lerobot is importable here (qrobot's own venv has none)")
    monkeypatch.delenv(ENV_CLASS, raising=False)  # LeRobot's own loading, not the stand-in's
    assert "lerobot" in policy_names()
    assert "serve-policy lerobot --checkpoint DIR" in (unfit_reason("lerobot", load_scenario(SCENARIO)) or "")
    gone = f"tls/127.0.0.1:{_free_port()}"
    capsys.readouterr()
    for argv, says in [
        (["--checkpoint", str(checkpoint)], "policy 'lerobot' needs LeRobot, which is not importable here"),
        ([], "policy 'lerobot' needs --checkpoint DIR"),
        (["--checkpoint", str(tmp_path)], "holds no LeRobot policy (config.json"),
    ]:
        assert main(["serve-policy", "lerobot", *argv, "--listen", gone, "--keys", str(keys)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("qrobot: error: ") and says in err[0], err
