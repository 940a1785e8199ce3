"""Wire messages: versioned, plain fields and raw float32, no pickle; decoding is total."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from qrobot.bridge.messages import VERSION, Command, Entry, Request, actions, decode, encode


def _command(**over: object) -> Command:
    fields = dict(
        version=VERSION,
        lease="L",
        epoch=1,
        seq=1,
        nonce=b"n" * 16,
        entries=[Entry(expires=1.0, action=actions(np.array([0.1, 0.2, 0.0])))],
    )
    fields.update(over)
    return Command(**fields)


def test_round_trip_and_refusals() -> None:
    msg = _command()
    assert decode(encode(msg)) == (msg, "")
    refusals = {
        "schema version": encode(_command(version=VERSION + 1)),
        "non-finite action": encode(_command(entries=[Entry(expires=1.0, action=actions(np.array([np.nan])))])),
        "non-finite time": encode(_command(entries=[Entry(expires=float("inf"), action=actions(np.zeros(3)))])),
        "entries": encode(_command(entries=[])),
        "float32": encode(_command(entries=[Entry(expires=1.0, action=b"abc")])),
        "bytes >": b"\x00" * 70_000,
        "not a known message": encode(Request(version=VERSION, op="enable"))[:-2],
        "not bytes": "a str",  # type: ignore[dict-item]
    }
    for why, data in refusals.items():
        out, reason = decode(data)
        assert out is None and why in reason, (why, reason)
    import pickle

    assert decode(pickle.dumps({"kind": "command"}))[0] is None  # a pickle is just unknown bytes


@given(st.binary(max_size=512))
def test_decoding_never_raises(data: bytes) -> None:
    out, why = decode(data)
    assert (out is None) == bool(why)


def test_observations_decode_only_when_their_arrays_fill_their_shapes() -> None:
    from qrobot.bridge.messages import MAX_OBSERVATION, Observation, pack_arrays, unpack_arrays

    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    raw, shapes, dtypes = pack_arrays({"images/front": img, "goal": np.array([1.5, -0.25])})
    base = dict(
        version=VERSION,
        robot="diffbot",
        scenario="pointnav",
        episode=1,
        seed=3,
        period=1,
        step=0,
        time=0.0,
        instruction="go",
        arrays=raw,
        shapes=shapes,
        dtypes=dtypes,
    )
    msg, why = decode(encode(Observation(**base)), MAX_OBSERVATION)
    assert why == "" and isinstance(msg, Observation)
    arrays = unpack_arrays(msg)
    assert np.array_equal(arrays["images/front"], img) and arrays["goal"].dtype == np.float32
    for bad in (
        {"shapes": dict(shapes, goal=[3])},
        {"dtypes": dict(dtypes, goal="float64")},
        {"shapes": dict(shapes, goal=[-2, -1])},
        {"reward": float("nan")},
        {"metrics": {"spl": float("inf")}},
        {"shapes": dict(shapes, goal=[2**32, 2**32, 0])},
        {"shapes": dict(shapes, goal=[1] * 5 + [2])},
    ):
        assert decode(encode(Observation(**dict(base, **bad))), MAX_OBSERVATION)[0] is None, bad
    big = pack_arrays({f"images/{c}": np.zeros((128, 128, 3), np.uint8) for c in ("front", "wrist")})
    data = encode(Observation(**dict(base, arrays=big[0], shapes=big[1], dtypes=big[2])))
    assert decode(data, MAX_OBSERVATION)[0] is not None and decode(data)[0] is None  # past the agent's inbound bound


def test_proposals_and_episodes_outside_their_ranges_are_refused() -> None:
    from qrobot.bridge.messages import Episode, Proposal

    ok = dict(
        version=VERSION, lease="L", epoch=1, instruction="go to the goal point", scenario="pointnav", speed_scale=0.5
    )
    assert decode(encode(Proposal(**ok)))[0] is not None
    for bad in (
        {"speed_scale": float("nan")},
        {"speed_scale": 0.0},
        {"speed_scale": 1.5},
        {"scenario": "p\x1b[8m"},
        {"instruction": "go\n"},
        {"instruction": "x" * 257},
    ):
        assert decode(encode(Proposal(**dict(ok, **bad))))[0] is None, bad
    assert decode(encode(Episode(version=VERSION, lease="L", epoch=1, seed=7)))[0] is not None
    for seed in (-1, 2**32, 2**63 - 1):
        assert decode(encode(Episode(version=VERSION, lease="L", epoch=1, seed=seed)))[0] is None
