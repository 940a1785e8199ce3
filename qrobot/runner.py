"""Episode runner: policy -> env (supervisor inside) for N seeded episodes, with a summary."""

from __future__ import annotations

import logging
import math
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from qrobot.envs.core import QRobotEnv
from qrobot.errors import QrobotError, ScenarioError
from qrobot.policies import make_policy, needs_images
from qrobot.progress import Progress
from qrobot.record import EpisodeRecorder, RunDir
from qrobot.safety.supervisor import OperatorKey
from qrobot.scenario import load_scenario

LOG = logging.getLogger("qrobot")


@dataclass
class EpisodeResult:
    """What one episode produced; `end_reason` is success | stopped | timeout | estop |
    policy_error | env_error. `limits_profile` names the supervisor's profile (a test-only
    one is printed in every summary)."""

    scenario: str
    policy: str
    episode: int
    seed: int
    instruction: str
    success: bool
    steps: int
    end_reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    safety: dict[str, float] = field(default_factory=dict)  # Supervisor.counts()
    error: str = ""
    recording: str = ""
    limits_profile: str = "default"
    wall_time: float | None = None  # s from reset to the end (differs run to run: never compared)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a success rate k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def binomial_floor(rate: float, n: int, alpha: float = 1e-3) -> int:
    """The largest k such that a policy succeeding with probability `rate` gets fewer than k
    successes in n episodes with probability <= alpha: a test floor that a policy at its
    reported rate fails by chance at most that often."""
    below, k = 0.0, 0
    while k <= n:
        p_k = math.comb(n, k) * rate**k * (1 - rate) ** (n - k)
        if below + p_k > alpha:
            return k
        below += p_k
        k += 1
    return n


def run_episode(
    env: QRobotEnv,
    policy: Any,
    episode: int,
    seed: int,
    recorder: EpisodeRecorder | None = None,
    operator: OperatorKey | None = None,
    on_step: Callable[[int], None] | None = None,
) -> EpisodeResult:
    """Run one episode. A policy exception or an env error ends the episode (reason
    policy_error / env_error), not the run; so does a world that cannot be made for this
    seed. With a recorder, every step goes to its `.rrd`; Ctrl-C still closes the file
    properly. With the `operator` key, an e-stop latched in the previous episode is
    released in the new world (an operator action, logged). `on_step(steps)` after each step."""
    start = time.perf_counter()
    try:
        obs, info = env.reset(seed=seed)
    except Exception as exc:  # e.g. randomisation this seed cannot satisfy: this episode ends
        return EpisodeResult(
            env.scenario.name,
            str(getattr(policy, "name", type(policy).__name__)),
            episode,
            seed,
            "",
            False,
            0,
            "env_error",
            {},
            env.supervisor.counts(),
            _describe(exc),
            limits_profile=env.limits.profile,
        )
    if operator is not None and env.supervisor.latched:
        env.supervisor.reset_estop(operator, env.sim.time, rearm=False, note="between episodes, by the runner")
        info = dict(info, estop="", safety=env.supervisor.counts())
    if recorder is not None:
        recorder.start(env, obs, info)
    try:
        result = _episode_loop(env, policy, episode, seed, obs, info, recorder, on_step)
    except KeyboardInterrupt:
        if recorder is not None:
            _finish_recording(recorder, {"success": False, "end_reason": "interrupted", "steps": env.task.steps})
        raise
    except BaseException:
        if recorder is not None:  # the file keeps what happened, with the reason it stopped
            _finish_recording(recorder, {"success": False, "end_reason": "crashed", "steps": env.task.steps})
        raise
    if recorder is not None:
        _finish_recording(
            recorder,
            {
                **result.metrics,
                "success": result.success,
                "end_reason": result.end_reason,
                "steps": result.steps,
                "error": result.error,
                "limits_profile": result.limits_profile,
                **{f"safety.{k}": v for k, v in result.safety.items()},
            },
        )
    result.wall_time = round(time.perf_counter() - start, 3)
    return result


def _finish_recording(recorder: EpisodeRecorder, result: dict[str, Any]) -> None:
    """A recording that cannot be finished (disk full, writer gone) costs the recording, one
    warning line; the episode's result still reaches episodes.jsonl."""
    from qrobot.record.writer import RecordingError

    if recorder.failed:  # already said when the writer failed
        return
    try:
        recorder.finish(result)
    except RecordingError as exc:
        LOG.warning("%s: recording lost: %s", recorder.path, exc)
        recorder.failed = True


def _episode_loop(
    env: QRobotEnv,
    policy: Any,
    episode: int,
    seed: int,
    obs: dict,
    info: dict,
    recorder: EpisodeRecorder | None,
    on_step: Callable[[int], None] | None,
) -> EpisodeResult:
    instruction = obs["instruction"]
    reason, error = "timeout", ""
    terminated = truncated = False
    try:
        policy.reset(instruction)
    except Exception as exc:  # as a raising act: this episode ends, the run goes on
        reason, error = "policy_error", _describe(exc)
        env.supervisor.estop(f"fault: policy reset raised {error}", env.sim.time)
        terminated = True
    world, steps, metrics = env.episode, 0, info["metrics"]
    while not (terminated or truncated):
        try:
            action = policy.act(obs)
        except Exception as exc:  # a broken policy must not take the run down
            reason, error = "policy_error", _describe(exc)
            env.supervisor.estop(f"fault: policy raised {error}", env.sim.time)
            _brake_once(env, recorder)
            break
        if env.episode != world:  # the policy reset the env: this episode's record would be rewritten
            reason, error = "policy_reset_env", "the policy reset the env during the episode"
            env.supervisor.estop(f"fault: {error}", env.sim.time)
            break
        try:
            obs, reward, terminated, truncated, info = env.step(action)
        except Exception as exc:  # nor a broken world: this episode ends, the run goes on
            reason, error = "env_error", _describe(exc)
            env.supervisor.estop(f"fault: env raised {error}", env.sim.time)
            break
        steps, metrics = steps + 1, info["metrics"]
        if recorder is not None:
            recorder.log_step(env, obs, action, reward, info)
        if on_step is not None:
            on_step(steps)
        if info["estop"]:
            reason, error = "estop", info["estop"]
            break
    if reason not in ("policy_error", "estop", "env_error", "policy_reset_env"):
        reason = "success" if info["success"] else ("stopped" if terminated else "timeout")
    if reason != "policy_reset_env":
        steps, metrics = env.task.steps, None
    try:  # after a reset the policy made, what the env reported before it (the world is new)
        m = {k: float(v) for k, v in (metrics if metrics is not None else env.task.metrics()).items()}
    except Exception as exc:
        m, error = {}, error or _describe(exc)
    success = bool(info.get("success", False)) and reason == "success"
    return EpisodeResult(
        env.scenario.name,
        str(getattr(policy, "name", type(policy).__name__)),
        episode,
        seed,
        instruction,
        success,
        int(steps),
        reason,
        m,
        env.supervisor.counts(),
        error,
        limits_profile=env.limits.profile,
    )


def _describe(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    return f"{type(exc).__name__}: {exc}"[:300] + (f" @ {tb[-1].name}" if tb else "")


def _brake_once(env: QRobotEnv, recorder: EpisodeRecorder | None) -> None:
    """One period of controlled stop after a policy fault (the e-stop is latched)."""
    try:
        obs, reward, _, _, info = env.step(None)
    except Exception:
        return
    if recorder is not None:
        recorder.log_step(env, obs, None, reward, info)


FAILED_REASONS = ("policy_error", "env_error", "policy_reset_env")  # a run with one of these exits 3


@dataclass
class Session:
    """An env and a policy ready to run, made before anything is written to disk."""

    env: QRobotEnv
    policy: Any
    operator: OperatorKey
    policy_name: str

    def close(self) -> None:
        self.env.close()


def prepare(
    scenario: str,
    policy_name: str = "expert",
    gui: bool = False,
    record: bool = False,
    policy_kwargs: dict[str, Any] | None = None,
    foresight: str | None = None,
    seed: int = 0,
    preflight: bool = True,
) -> Session:
    """Build the env and the policy, and (`preflight`) make the first seed's world once, so
    that a bad checkpoint or randomisation a reset cannot satisfy fails here, before a run
    directory exists."""
    sc = load_scenario(scenario)
    # The operator key stays here, with the person running the job; the policy never sees it.
    operator = OperatorKey()
    env = None
    try:
        env = QRobotEnv(
            sc,
            render_mode="human" if gui else None,
            images=needs_images(policy_name) or record,
            operator=operator,
            foresight=foresight,
        )
        policy = make_policy(policy_name, env, seed=seed, **(policy_kwargs or {}))
        if preflight:
            env.reset(seed=seed)
    except QrobotError:
        if env is not None:
            env.close()
        raise
    except Exception as exc:  # a world this scenario file describes but that cannot be built
        if env is not None:
            env.close()
        raise ScenarioError(
            f"{sc.path or sc.name}: the world cannot be made for seed {seed}: {type(exc).__name__}: {str(exc)[:160]}"
        ) from None
    return Session(env, policy, operator, policy_name)


def run_episodes(
    session: Session,
    episodes: int,
    seed: int = 0,
    run_dir: RunDir | None = None,
    record: bool = True,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    progress: Progress | None = None,
    row_extra: dict[str, Any] | None = None,
    policy_dir: str | None = None,
) -> list[EpisodeResult]:
    """Episodes with seeds seed, seed+1, ...; each result is appended to the run
    directory's episodes.jsonl the moment it ends (with `row_extra`), and with `record`
    each episode goes to run_dir/[policy_dir/]<scenario>/ep<k>-seed<s>.rrd."""
    env, sc = session.env, session.env.scenario
    results = []
    for k in range(episodes):
        rec = (
            None
            if run_dir is None or not record
            else EpisodeRecorder(
                run_dir.episode_path(sc.name, k, seed + k, policy_dir),
                sc.name,
                run_dir.episode_id(sc.name, k, seed + k),
            )
        )
        on_step = None if progress is None else (lambda n: progress.step(n))
        res = run_episode(env, session.policy, k, seed + k, rec, session.operator, on_step)
        if rec is not None and rec.path.exists() and not rec.failed:
            res.recording = str(rec.path)
        results.append(res)
        if run_dir is not None:
            run_dir.record_episode({**res.to_dict(), **(row_extra or {})})
        if progress is not None:
            progress.episode(res.success)
        if on_episode is not None:
            on_episode(res)
    return results


def run(
    scenario: str,
    policy_name: str = "expert",
    episodes: int = 1,
    seed: int = 0,
    gui: bool = False,
    progress: bool = True,
    on_episode: Callable[[EpisodeResult], None] | None = None,
    run_dir: RunDir | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    foresight: str | None = None,
) -> list[EpisodeResult]:
    """Run `episodes` episodes with seeds seed, seed+1, ... and return their results.
    With `run_dir`, each episode is recorded to run_dir/<scenario>/ep<k>-seed<s>.rrd; with
    `foresight` (a world-model checkpoint) the supervisor imagines each command first."""
    session = prepare(scenario, policy_name, gui, run_dir is not None, policy_kwargs, foresight, seed, preflight=False)
    bar = Progress(f"{session.env.scenario.name}/{policy_name}", episodes, enabled=progress)
    try:
        return run_episodes(session, episodes, seed, run_dir, on_episode=on_episode, progress=bar)
    finally:
        bar.close()
        session.close()


def summarize(results: Iterable[EpisodeResult]) -> dict[str, Any]:
    rs = list(results)
    n, k = len(rs), sum(r.success for r in rs)
    lo, hi = wilson_interval(k, n)
    out: dict[str, Any] = {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else 0.0,
        "ci_low": lo,
        "ci_high": hi,
        "mean_steps": float(np.mean([r.steps for r in rs])) if n else 0.0,
        "collisions": float(np.mean([r.metrics.get("collisions", 0) for r in rs])) if n else 0.0,
        "policy_errors": sum(r.end_reason == "policy_error" for r in rs),
        "env_errors": sum(r.end_reason in ("env_error", "policy_reset_env") for r in rs),
        "estops": sum(r.end_reason == "estop" for r in rs),
        "interventions": float(np.mean([r.safety.get("interventions", 0) for r in rs])) if n else 0.0,
        "protective_stop_time": float(np.mean([r.safety.get("protective_stop_time", 0.0) for r in rs])) if n else 0.0,
    }
    profiles = sorted({r.limits_profile for r in rs} - {"default"})
    if profiles:
        out["limits_profile"] = ", ".join(profiles)
    if n and "spl" in rs[0].metrics:
        out["spl"] = float(np.mean([r.metrics["spl"] for r in rs]))
    if n and "min_person_clearance" in rs[0].metrics:
        out["min_person_clearance"] = float(min(r.metrics["min_person_clearance"] for r in rs))
        out["intrusions"] = float(sum(r.metrics.get("intrusions", 0.0) for r in rs))
    return out


def format_episode(r: EpisodeResult) -> str:
    extra = f" spl={r.metrics['spl']:.2f}" if "spl" in r.metrics else ""
    err = f" error={r.error}" if r.error else ""
    return (
        f"ep {r.episode:3d} seed {r.seed:<6d} {'SUCCESS' if r.success else 'fail   '} "
        f"steps={r.steps:<4d} reason={r.end_reason:<12s} collisions={int(r.metrics.get('collisions', 0))}"
        f'{extra}  "{r.instruction}"{err}'
    )


def format_summary(name: str, s: dict[str, Any]) -> str:
    line = (
        f"{name}: success {s['successes']}/{s['episodes']} = {s['success_rate']:.1%} "
        f"(95% CI {s['ci_low']:.1%}-{s['ci_high']:.1%}), mean steps {s['mean_steps']:.1f}, "
        f"collisions/ep {s['collisions']:.2f}"
    )
    if "spl" in s:
        line += f", SPL {s['spl']:.3f}"
    if "min_person_clearance" in s:
        line += f", min person clearance {s['min_person_clearance']:.2f} m, SSM intrusions {s['intrusions']:.0f}"
    line += (
        f", supervisor interventions/ep {s['interventions']:.1f}, "
        f"protective stop {s['protective_stop_time']:.1f} s/ep, e-stops {s['estops']}"
    )
    if s["policy_errors"]:
        line += f", policy errors {s['policy_errors']}"
    if s.get("env_errors"):
        line += f", env errors {s['env_errors']}"
    if s.get("limits_profile"):
        line += f"  [LIMITS PROFILE {s['limits_profile']}: NOT the robot's safety profile]"
    return line
