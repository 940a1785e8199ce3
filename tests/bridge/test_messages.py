"""Wire messages: versioned, plain fields and raw float32, no pickle; decoding is total."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from qrobot.bridge.messages import VERSION, Command, Entry, Request, actions, decode, encode


def _command(**over: object) -> Command:
    fields = dict(version=VERSION, lease="L", epoch=1, seq=1, nonce=b"n" * 16,
                  entries=[Entry(expires=1.0, action=actions(np.array([0.1, 0.2, 0.0])))])
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
