"""A policy served over the network (`qrobot serve-policy`) and benchmarked as `remote`: the
same per-seed rows as the policy run locally, and a server that is gone or refuses ends the
episode with the reason, never a hang."""

from __future__ import annotations

import json
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from markupsafe import escape
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy, policy_names
from qrobot.policies.remote import RemotePolicyError, _World

from qrobot.bridge import keys as certs
from qrobot.cli import main
from qrobot.scenario import load_scenario

CHECKPOINTS = Path(__file__).resolve().parents[1] / "qrobot" / "checkpoints"
KEYS = ("success", "steps", "end_reason", "metrics", "safety", "instruction")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lockstep(env: Any, local: Any, remote: Any, seeds: tuple[int, ...] = (3, 4), steps: int = 6) -> list[tuple]:
    """Both policies on the same observations, re-seeded and reset alike per episode; the env
    follows the local one. (observation, local action, remote action) per step."""
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        for p in (local, remote):
            p.seed_episode(seed)
            p.reset(obs["instruction"])
        for _ in range(steps):
            a = local.act(obs)
            out.append((obs, a, remote.act(obs)))
            obs, *_ = env.step(a)
    return out


class Server:
    def __init__(self, keys: Path, *argv: str) -> None:
        self.endpoint = f"tls/127.0.0.1:{_free_port()}"
        cmd = [sys.executable, "-m", "qrobot.cli", "serve-policy", *argv, "--listen", self.endpoint]
        self.proc = subprocess.Popen(
            [*cmd, "--keys", str(keys)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        out = self.proc.stdout
        self.lines = lines
        threading.Thread(target=lambda: [lines.put(line) for line in out], daemon=True).start()
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                seen.append(lines.get(timeout=0.5))
            except queue.Empty:
                assert self.proc.poll() is None, "".join(seen)
                continue
            if seen[-1].startswith("serving "):
                return
        raise AssertionError(f"serve-policy did not start: {''.join(seen)}")

    def stop(self) -> str:
        """SIGTERM, as a service manager stops it; what it printed after starting."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        time.sleep(0.2)  # (the reader thread takes the last lines)
        return "".join(self.lines.get() for _ in range(self.lines.qsize()))


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    certs.init(d)
    return d


@pytest.fixture(scope="module")
def server(keys: Path) -> Iterator[Server]:
    s = Server(keys, "random", "--scenario", "reach,pick_place")
    try:
        yield s
    finally:
        s.stop()


def _cells(run_dir: Path) -> dict[tuple[str, int], dict]:
    rows = [json.loads(line) for line in (run_dir / "episodes.jsonl").read_text().splitlines()]
    return {(r["scenario"], r["seed"]): {**{k: r[k] for k in KEYS}, "error": r["error"]} for r in rows}


def _bench(tmp: Path, *argv: str, code: int = 0) -> Path:
    before = set(tmp.iterdir()) if tmp.exists() else set()
    assert main(["bench", *argv, "--no-record", "--runs-dir", str(tmp), "-q"]) == code
    (new,) = set(tmp.iterdir()) - before
    return new


def test_remote_is_registered() -> None:
    assert "remote" in policy_names(), (
        'add to pyproject.toml: [project.entry-points."qrobot.policies"] remote = "qrobot.policies.remote:make"'
        " and pip install -e ."
    )


def test_a_served_policy_gives_the_rows_it_gives_locally(tmp_path: Path, server: Server, keys: Path) -> None:
    argv = ("--scenarios", "reach", "--episodes", "3", "--seed", "11", "--workers", "1")
    local = _cells(_bench(tmp_path / "local", *argv, "--policies", "random"))
    run = _bench(tmp_path / "remote", *argv, "--policies", f"remote={server.endpoint}?keys={keys}")
    served = _cells(run)
    assert len(local) == 3 and served == local  # random, re-seeded from each episode's seed on the server
    assert main(["report", str(run)]) == 0  # the served policy is a row of the report, named by its label
    page = (run / "report" / "index.html").read_text()
    label = str(escape(f"remote={server.endpoint}?keys={keys}"))  # (as the page escapes it)
    assert page.count(f'<td class="l">{label}</td>') == 1 + 3, label  # its cell and its three episodes


def test_a_server_stops_cleanly_on_sigterm(keys: Path) -> None:
    """A service manager's SIGTERM mid-life: it says what it served and exits 0 (no crash of
    the transport's receiving thread)."""
    server = Server(keys, "random")
    client = make_policy("remote", _World(load_scenario("reach")), address=f"{server.endpoint}?keys={keys}")
    try:
        client.reset("reach")
        client.act({"proprio": np.zeros(13, np.float32), "instruction": "reach"})
    finally:
        client.close()
    out = server.stop()
    assert server.proc.returncode == 0 and "served 1 requests" in out and "Traceback" not in out, out


def test_clients_of_one_server_each_have_their_own_policy(server: Server, keys: Path) -> None:
    """Two bench workers' episodes interleaved, and a client that never re-seeds (`qrobot run`)."""
    world = _World(load_scenario("pick_place"))
    clients = [make_policy("remote", world, address=f"{server.endpoint}?keys={keys}") for _ in range(3)]
    local = [make_policy("random", world) for _ in range(3)]
    obs = {"proprio": np.zeros(13, np.float32), "instruction": "pick"}
    try:
        for episode in range(2):
            for k, (c, p) in enumerate(zip(clients, local)):
                if k < 2:  # the third is never re-seeded: its policy's generator runs on
                    c.seed_episode(100 * k + episode)
                    p.seed_episode(100 * k + episode)
                c.reset("pick")
                p.reset("pick")
            for _ in range(4):
                for c, p in zip(clients, local):
                    assert np.array_equal(c.act(obs), p.act(obs))
    finally:
        for c in clients:
            c.close()


def test_a_served_vla_acts_as_it_does_locally(keys: Path) -> None:
    """The shipped VLA's base model behind `serve-policy`: cameras, proprio, goal and instruction
    cross the wire unchanged (the same actions from the same seeds)."""
    ckpt = str(CHECKPOINTS / "qwen-vla" / "diffbot")
    server = Server(keys, "qwen-vla", "--checkpoint", ckpt, "--scenario", "pointnav")
    env = QRobotEnv("pointnav", images=True)
    try:
        local = make_policy("qwen-vla", env, checkpoint=ckpt)
        remote = make_policy("remote", env, address=f"{server.endpoint}?keys={keys}")
        for _, a, r in lockstep(env, local, remote):
            assert np.array_equal(r, np.asarray(a, np.float32))
        remote.close()
    finally:
        env.close()
        server.stop()


def test_a_server_gone_or_refusing_ends_the_episode_with_the_reason(
    tmp_path: Path, server: Server, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refused = _bench(
        tmp_path, "--scenarios", "pointnav", "--episodes", "1", "--policies", f"remote={server.endpoint}?keys={keys}",
        "--workers", "1", code=3,
    )  # fmt: skip
    (cell,) = _cells(refused).values()
    assert (
        cell["end_reason"] == "policy_error" and "serves scenario(s) reach, pick_place, not 'pointnav'" in cell["error"]
    )
    gone = f"tls/127.0.0.1:{_free_port()}"
    t = time.monotonic()
    run = _bench(
        tmp_path, "--scenarios", "reach", "--episodes", "2", "--policies", f"remote={gone}?keys={keys}&timeout=1",
        "--workers", "1", code=3,
    )  # fmt: skip
    assert time.monotonic() - t < 20
    cells = _cells(run).values()
    assert len(cells) == 2 and all(c["end_reason"] == "policy_error" for c in cells)
    assert all(f"no answer from a policy server at {gone} within 1 s" in c["error"] for c in cells)
    capsys.readouterr()
    for bad in (
        "remote=",
        "remote=tcp/127.0.0.1:1",
        f"remote={gone}?keys={tmp_path}",
        f"remote={gone}?keys={keys}&x=1",
    ):
        assert main(["bench", "--policies", bad, "--runs-dir", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 4 and all(e.startswith("qrobot: error: bench --policies remote=") for e in errors), errors
    assert main(["serve-policy", "expert", "--listen", gone, "--keys", str(keys)]) == 2  # privileged: refused


def test_a_server_too_slow_to_answer_ends_the_episode_in_time(keys: Path) -> None:
    import zenoh

    from qrobot.bridge.transport import config

    endpoint = f"tls/127.0.0.1:{_free_port()}"
    slow = zenoh.open(config("policy", keys, listen=endpoint))

    def answer_late(query: zenoh.Query) -> None:
        if query.payload is None or query.payload.to_bytes() != b"ping":
            time.sleep(1.5)
        query.reply(query.key_expr, b"late")

    queryable = slow.declare_queryable("qrobot/serve-policy/act/*", answer_late)
    policy = make_policy("remote", _World(load_scenario("reach")), address=f"{endpoint}?keys={keys}&timeout=0.5")
    try:
        deadline = time.monotonic() + 10  # the link up first: what follows is the server's slowness
        while not list(policy._open().get(policy.key, payload=b"ping", timeout=1)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        policy.reset("reach")
        t = time.monotonic()
        with pytest.raises(RemotePolicyError, match=r"no answer from a policy server at .* within 0.5 s"):
            policy.act({"proprio": np.zeros(13, np.float32), "instruction": "reach"})
        assert time.monotonic() - t < 1.4
    finally:
        policy.close()
        queryable.undeclare()
        slow.close()
