"""The agent's state machine, transition by transition, with the robot clock in hand:
lease (acquire / retain / return / take), expiring commands, deadlines, the operator's
dead-man heartbeat with its challenge, and the e-stop latch that survives a restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qrobot.bridge.agent_core import AgentCore, State, Timing
from qrobot.bridge.latch import Latch
from qrobot.bridge.messages import VERSION, Command, Entry, Lease, Operator, Request, actions

DIM = 3
GO = np.array([0.5, 0.0, 0.0])


def _entry(expires: float, values: np.ndarray = GO) -> Entry:
    return Entry(expires=expires, action=actions(values))


class Rig:
    """An agent with a connected adapter, a synced clock and a live operator."""

    def __init__(self, tmp_path: Path, people: bool = True) -> None:
        self.latch_path = tmp_path / "estop.json"
        self.core = AgentCore(DIM, Latch(self.latch_path), Timing(), people=people)
        self.now = 0.0
        self.seq = 0

    def beat(self, deadman: bool = True) -> str:
        return self.core.operator(
            Operator(version=VERSION, deadman=deadman, answer=self.core.challenge + 1), "console", self.now
        )

    def ready(self) -> None:
        self.core.adapter(True, self.now)
        self.core.clock(0.005, self.now)
        assert self.beat() == ""
        assert self.core.request(Request(version=VERSION, op="enable"), "console", self.now) == (True, "")
        grant = self.core.lease(Lease(version=VERSION, op="acquire"), "policy", self.now)
        assert grant.ok
        self.grant = grant

    def send(self, chunk: list[Entry], **over: object) -> tuple[bool, str]:
        self.seq += 1
        fields = dict(
            version=VERSION,
            lease=self.grant.lease,
            epoch=self.grant.epoch,
            seq=self.seq,
            nonce=self.grant.nonce,
            entries=chunk,
        )
        fields.update(over)
        return self.core.command(Command(**fields), "policy", self.now)

    def advance(self, dt: float, beat: bool = True, retain: bool = True) -> np.ndarray | None:
        self.now += dt
        if beat:
            self.beat()
        if retain:
            self.core.lease(
                Lease(version=VERSION, op="retain", lease=self.grant.lease, epoch=self.grant.epoch), "policy", self.now
            )
        return self.core.tick(self.now)


def test_the_happy_path_and_every_state(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.core.state == State.DISCONNECTED and rig.core.tick(0.0) is None
    rig.core.adapter(True, 0.0)
    assert rig.core.state == State.IDLE and rig.core.tick(0.0) is None  # motors not commanded
    rig.ready()
    assert rig.core.state == State.ENABLED and np.all(rig.core.tick(0.0) == 0)  # enabled: hold
    assert rig.send([_entry(0.1), _entry(0.2, -GO)]) == (True, "")
    assert np.allclose(rig.advance(0.02), GO) and rig.core.state == State.RUNNING
    assert np.allclose(rig.advance(0.1), -GO)  # the second entry once the first expired
    out = rig.advance(0.1)  # both expired: hold, never repeat the last
    assert rig.core.state == State.HOLD and np.all(out == 0)
    assert rig.send([_entry(rig.now + 0.1)])[0] and np.allclose(rig.advance(0.02), GO)
    assert rig.core.state == State.RUNNING  # HOLD -> RUNNING on a fresh command
    rig.core.adapter(False, rig.now)
    assert rig.core.state == State.DISCONNECTED and rig.core.tick(rig.now) is None
    rig.core.adapter(True, rig.now, fault="drive error 0x42")
    assert rig.core.state == State.FAULT and rig.core.tick(rig.now) is None
    assert rig.core.request(Request(version=VERSION, op="reset"), "console", rig.now) == (True, "")
    assert rig.core.state == State.IDLE  # and needs a fresh enable


def test_commands_that_must_be_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ready()
    now = rig.now
    cases = {
        "stale lease": dict(epoch=rig.grant.epoch - 1),
        "wrong session nonce": dict(nonce=b"x" * 16),
        "expiries must increase": dict(entries=[_entry(now + 0.2), _entry(now + 0.1)]),
        "action of 2 values": dict(entries=[_entry(now + 0.1, np.zeros(2))]),
        "beyond the supervisor's range": dict(entries=[_entry(now + 0.1, np.array([1.5, 0, 0]))]),
        "horizon": dict(entries=[_entry(now + 0.6)]),
    }
    for why, over in cases.items():
        ok, reason = rig.send([_entry(now + 0.1)], **over)
        assert not ok and why in reason, (why, reason)
    assert rig.send([_entry(now + 0.1)])[0]
    ok, reason = rig.send([_entry(now + 0.1)], seq=rig.seq - 5)  # replay / reorder
    assert not ok and "sequence" in reason
    assert not rig.core.command(
        Command(
            version=VERSION,
            lease=rig.grant.lease,
            epoch=rig.grant.epoch,
            seq=99,
            nonce=rig.grant.nonce,
            entries=[_entry(now + 0.1)],
        ),
        "console",
        now,
    )[0]
    assert sum(kind == "reject" for _, kind, _ in rig.core.audit) == 8  # each one logged with its reason


def test_deadline_and_stale_lease_stop_a_running_robot(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ready()
    rig.send([_entry(rig.now + 0.5)])  # valid for 0.5 s, but the sender goes silent
    assert np.allclose(rig.advance(0.1), GO)
    out = rig.advance(0.12)  # 0.22 s since the last command > the 0.2 s deadline
    assert np.all(out == 0) and rig.core.state == State.HOLD
    (tmp_path / "b").mkdir()
    rig2 = Rig(tmp_path / "b")
    rig2.ready()
    rig2.send([_entry(rig2.now + 0.5)])
    for _ in range(3):
        rig2.now += 0.06
        rig2.beat()
        rig2.send([_entry(rig2.now + 0.1)])  # commands keep coming, retains do not
    rig2.now += 0.4
    rig2.beat()
    rig2.send([_entry(rig2.now + 0.1)])
    assert "lease stale" in rig2.core.audit[-1][2]


def test_operator_heartbeat_and_dead_man(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ready()
    rig.send([_entry(rig.now + 0.3)])
    assert np.allclose(rig.advance(0.1), GO)
    assert rig.advance(0.26, beat=False) is None and rig.core.state == State.IDLE  # heartbeat lost
    rig.beat()
    rig.send([_entry(rig.now + 0.1)])
    assert rig.core.tick(rig.now) is None and rig.core.state == State.IDLE  # no resume without a new enable
    assert rig.core.request(Request(version=VERSION, op="enable"), "console", rig.now)[0]
    rig.beat(deadman=False)
    assert rig.core.tick(rig.now) is None and "dead-man released" in rig.core.audit[-1][2]
    old = rig.core.challenge
    assert rig.core.operator(Operator(version=VERSION, deadman=True, answer=old + 7), "console", rig.now) != ""
    assert rig.core.operator(Operator(version=VERSION, deadman=True, answer=old + 1), "policy", rig.now) != ""


def test_enable_is_refused_without_what_it_needs(tmp_path: Path) -> None:
    for people, skew, beat, expect in [
        (False, 0.005, True, "people"),
        (True, None, True, "clock offset unknown"),
        (True, 0.5, True, "clock skew"),
        (True, 0.005, False, "heartbeat"),
    ]:
        rig = Rig(tmp_path, people=people)
        rig.core.adapter(True, 0.0)
        rig.core.clock(skew, 0.0)
        if beat:
            rig.beat()
        ok, why = rig.core.request(Request(version=VERSION, op="enable"), "console", 0.0)
        assert not ok and expect in why, (expect, why)
    ok, why = rig.core.request(Request(version=VERSION, op="enable"), "policy", 0.0)
    assert not ok and "only the console" in why


def test_lease_take_is_the_consoles_and_revokes_the_policy(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ready()
    assert not rig.core.lease(Lease(version=VERSION, op="take"), "policy", rig.now).ok
    assert not rig.core.lease(Lease(version=VERSION, op="acquire"), "policy", rig.now).ok  # held
    rig.send([_entry(rig.now + 0.2)])
    taken = rig.core.lease(Lease(version=VERSION, op="take"), "console", rig.now)
    assert taken.ok and taken.epoch == rig.grant.epoch + 1
    assert np.all(rig.core.tick(rig.now) == 0)  # what was queued under the old lease is gone
    ok, why = rig.send([_entry(rig.now + 0.1)])
    assert not ok and why in ("no policy lease", "stale lease")
    rig.now += 10.0  # a console's lease never lapses: the policy cannot acquire it back by waiting
    assert not rig.core.lease(Lease(version=VERSION, op="acquire"), "policy", rig.now).ok
    assert not rig.core.lease(Lease(version=VERSION, op="return", lease="x", epoch=taken.epoch), "console", rig.now).ok
    assert rig.core.lease(
        Lease(version=VERSION, op="return", lease=taken.lease, epoch=taken.epoch), "console", rig.now
    ).ok  # until the console returns it
    assert rig.core.lease(Lease(version=VERSION, op="acquire"), "policy", rig.now).ok


def test_a_recorded_heartbeat_is_never_accepted_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.core.adapter(True, rig.now)
    beat = Operator(version=VERSION, deadman=True, answer=rig.core.challenge + 1)
    assert rig.core.operator(beat, "console", rig.now) == ""
    for _ in range(3):
        assert rig.core.operator(beat, "console", rig.now) == "wrong challenge answer"


def test_estop_latches_within_the_call_and_survives_a_restart(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ready()
    rig.send([_entry(rig.now + 0.3)])
    assert rig.core.request(Request(version=VERSION, op="estop", detail="space bar"), "policy", rig.now)[0]
    assert rig.core.state == State.ESTOPPED and rig.core.tick(rig.now) is None  # same loop
    restarted = AgentCore(DIM, Latch(rig.latch_path))
    assert restarted.state == State.ESTOPPED and "space bar" in restarted.latched
    restarted.adapter(True, 0.0)
    assert not restarted.request(Request(version=VERSION, op="reset"), "policy", 0.0)[0]
    assert restarted.request(Request(version=VERSION, op="reset"), "console", 0.0)[0]
    assert restarted.state == State.IDLE and not rig.latch_path.exists()
    (tmp_path / "garbage.json").write_text("{not json")
    assert AgentCore(DIM, Latch(tmp_path / "garbage.json")).state == State.ESTOPPED  # unreadable: latched


def test_lossy_link_executes_nothing_after_expiry_and_never_bursts(tmp_path: Path) -> None:
    """30 % of chunks lost: every executed action is an entry of the last chunk the agent
    accepted, unexpired at that moment; after a gap, never an older chunk's entry."""
    rng = np.random.default_rng(0)
    rig = Rig(tmp_path)
    rig.ready()
    accepted: list[Entry] = []
    sent_at = -1.0
    executed = holds = 0
    for k in range(500):
        if rng.random() > 0.3:  # this chunk arrived: three entries, 20 ms apart
            chunk = [_entry(rig.now + 0.021 * (i + 1), np.array([k % 7, i, 1.0]) / 10) for i in range(3)]
            if rig.send(chunk)[0]:
                accepted, sent_at = chunk, rig.now
        out = rig.advance(0.02)
        fresh = rig.now - sent_at <= rig.core.timing.deadline
        live = [e for e in accepted if e.expires > rig.now] if fresh else []
        if live:
            assert np.allclose(out, np.frombuffer(live[0].action, "<f4")), k
            executed += 1
        else:
            assert np.all(out == 0), k  # hold
            holds += 1
    assert executed > 300 and holds > 0  # both cases were exercised


def test_the_next_deadline_is_the_earliest_that_could_end_motion(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    assert rig.core.next_deadline() == float("inf")  # not enabled: nothing to wake for
    rig.ready()
    assert abs(rig.core.next_deadline() - (rig.now + 0.25)) < 1e-3  # the operator's heartbeat
    rig.send([_entry(rig.now + 0.1), _entry(rig.now + 0.3)])
    assert abs(rig.core.next_deadline() - (rig.now + 0.1)) < 1e-3  # the first entry's expiry


def test_a_new_episode_only_for_the_lease_holder_and_never_while_running(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ready()
    g = rig.grant
    assert rig.core.episode(g.lease, g.epoch, "console", rig.now) != ""  # a role that does not hold it
    assert rig.core.episode("other", g.epoch, "policy", rig.now) == "not the current lease"
    assert rig.send([_entry(rig.now + 0.1)])[0]
    assert rig.advance(0.02) is not None and rig.core.state == State.RUNNING
    assert "RUNNING" in rig.core.episode(g.lease, g.epoch, "policy", rig.now)  # the robot may be moving
    rig.advance(0.1)  # the entry expired: HOLD
    assert rig.core.state == State.HOLD
    assert rig.send([_entry(rig.now + 0.1)])[0]
    assert rig.core.episode(g.lease, g.epoch, "policy", rig.now) == ""  # accepted in HOLD ...
    assert np.all(rig.advance(0.02) == 0.0)  # ... and nothing planned for the old world is left to run
    rig.advance(0.6, retain=False)
    assert rig.core.episode(g.lease, g.epoch, "policy", rig.now) == "lease stale"
    assert [k for _, k, _ in rig.core.audit].count("episode_refused") == 4


def test_operator_approval_binds_the_task_to_the_lease_caps_speed_and_expires(tmp_path: Path) -> None:
    from qrobot.bridge.messages import Proposal, digest

    rig = Rig(tmp_path)
    rig.core = AgentCore(DIM, Latch(rig.latch_path), Timing(), approval=True, approval_ttl=5.0)
    rig.ready()
    g = rig.grant
    assert rig.core.approval(rig.now) == "none"
    assert rig.send([_entry(rig.now + 0.1)]) == (False, "no operator approval for this lease's task (or it expired)")
    task = Proposal(
        version=VERSION,
        lease=g.lease,
        epoch=g.epoch,
        instruction="go to the goal point",
        scenario="pointnav",
        speed_scale=0.4,
    )
    assert rig.core.propose(task, "console", rig.now) != ""  # only the lease holder proposes
    stale = Proposal(version=VERSION, lease="x", epoch=g.epoch, instruction="go", scenario="pointnav", speed_scale=1.0)
    assert rig.core.propose(stale, "policy", rig.now) == "not the current lease"
    assert rig.core.propose(task, "policy", rig.now) == ""
    assert rig.core.approval(rig.now) == (
        f"pending {digest(task)}: instruction='go to the goal point' scenario='pointnav' speed=0.4"
    )
    approve = lambda d, role="console": rig.core.request(
        Request(version=VERSION, op="approve", detail=d), role, rig.now
    )
    assert approve(digest(task), "policy") == (False, "only the console may approve")
    assert approve("0" * 16)[0] is False  # not what was shown
    assert approve(digest(task)) == (True, "")
    assert rig.core.approval(rig.now).startswith("approved ")
    assert rig.send([_entry(rig.now + 0.1, np.array([1.0, -1.0, 1.0]))])[0]
    assert np.allclose(rig.advance(0.02), [0.4, -0.4, 1.0])  # motion capped at the approved share; stop flag kept
    for _ in range(250):  # 5 s later the approval has expired: hold, and new commands are refused
        rig.send([_entry(rig.now + 0.1)])
        rig.advance(0.02)
    assert rig.core.state == State.HOLD and not rig.send([_entry(rig.now + 0.1)])[0]
    rig.core.lease(Lease(version=VERSION, op="return", lease=g.lease, epoch=g.epoch), "policy", rig.now)
    regrant = rig.core.lease(Lease(version=VERSION, op="acquire"), "policy", rig.now)
    assert regrant.ok and approve(digest(task))[0] is False  # a proposal does not outlive its lease


def test_an_approval_ends_with_a_new_task_or_a_new_episode_and_caps_the_arm_as_a_vector(tmp_path: Path) -> None:
    from qrobot.bridge.messages import Proposal, digest

    rig = Rig(tmp_path)
    rig.core = AgentCore(5, Latch(rig.latch_path), Timing(), approval=True, motion=((0, 1, 2), (3,)))
    rig.ready()
    g = rig.grant

    def approved(instruction: str, scale: float = 0.5) -> Proposal:
        p = Proposal(
            version=VERSION,
            lease=g.lease,
            epoch=g.epoch,
            instruction=instruction,
            scenario="pick_place",
            speed_scale=scale,
        )
        assert rig.core.propose(p, "policy", rig.now) == ""
        assert rig.core.request(Request(version=VERSION, op="approve", detail=digest(p)), "console", rig.now)[0]
        return p

    approved("put the red cube in the white bowl")
    assert rig.send([_entry(rig.now + 0.1, np.array([1.0, 1.0, 1.0, -1.0, 1.0]))])[0]
    capped = rig.advance(0.02)
    assert np.isclose(np.linalg.norm(capped[:3]), 0.5) and np.isclose(capped[3], -0.5) and capped[4] == 1.0
    other = Proposal(
        version=VERSION, lease=g.lease, epoch=g.epoch, instruction="x\x1b[8m", scenario="pick_place", speed_scale=1.0
    )
    assert rig.core.propose(other, "policy", rig.now) == ""  # (decode refuses non-printable text on the wire)
    assert "\\x1b" in rig.core.approval(rig.now)  # shown escaped, never raw to the operator's terminal
    assert not rig.send([_entry(rig.now + 0.1, np.zeros(5))])[0]  # a new task: the old approval has ended
    approved("stack the cubes")
    rig.advance(0.2)  # holding
    assert rig.core.episode(g.lease, g.epoch, "policy", rig.now) == ""
    assert rig.core.approval(rig.now) == "none"  # a new world's task needs its own approval


def test_an_estop_stops_even_when_the_latch_cannot_be_saved(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.core = AgentCore(DIM, Latch(tmp_path / "gone" / "estop.json"), Timing())  # a folder that does not exist
    rig.ready()
    assert rig.send([_entry(rig.now + 0.3)])[0] and rig.advance(0.02) is not None
    rig.core.request(Request(version=VERSION, op="estop"), "console", rig.now)
    assert rig.core.state == State.ESTOPPED and rig.advance(0.02) is None  # stopped, whatever the disk did
    assert rig.core.request(Request(version=VERSION, op="reset"), "console", rig.now)[0] is False
    (tmp_path / "gone").mkdir()  # the disk is fixed: the latch is saved, then released
    assert rig.core.request(Request(version=VERSION, op="reset"), "console", rig.now) == (True, "")


def test_the_clock_offsets_uncertainty_ages_until_the_next_probe(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.ready()  # offset known to 5 ms at t = 0
    assert rig.send([_entry(rig.now + 0.1)])[0]
    rig.now = 100.0  # 100 s without a probe: 5 ms + 100 ppm x 100 s = 15 ms, still within 20 ms
    rig.beat()
    rig.grant = rig.core.lease(Lease(version=VERSION, op="acquire"), "policy", rig.now)  # (the old lease is stale)
    assert rig.send([_entry(rig.now + 0.1)])[0]
    rig.now = 200.0  # 25 ms: commands stamped on that clock are refused until the policy probes again
    rig.beat()
    rig.grant = rig.core.lease(Lease(version=VERSION, op="acquire"), "policy", rig.now)
    assert rig.send([_entry(rig.now + 0.1)]) == (False, "clock offset unknown or stale: probe the clock again")
    rig.core.clock(0.004, rig.now)
    assert rig.send([_entry(rig.now + 0.1)])[0]


def test_the_latch_is_on_disk_before_it_is_reported(tmp_path: Path) -> None:
    latch = Latch(tmp_path / "estop.json")
    seen: list[bool] = []
    real = latch._write

    def write(reason: str) -> bool:
        seen.append(latch.reason is None)  # not yet reported while it is being written
        return real(reason)

    latch._write = write  # type: ignore[method-assign]
    core = AgentCore(DIM, latch, Timing())
    core.estop("test", 0.0)
    assert seen == [True] and latch.reason == "test" and core.state == State.ESTOPPED
    assert AgentCore(DIM, Latch(tmp_path / "estop.json")).state == State.ESTOPPED  # as a restarted agent sees it
