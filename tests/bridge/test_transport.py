"""Real Zenoh peers on loopback (multicast scouting off, a free TLS port per test):
mutual TLS keeps out a certificate from another authority, and the agent's access list
lets the policy role command and e-stop but not reset, enable or send heartbeats."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import zenoh

from qrobot.bridge import keys as certs
from qrobot.bridge.transport import config, keys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(cond, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_mtls_and_the_access_list(tmp_path: Path) -> None:
    certs.init(tmp_path / "ours")
    certs.init(tmp_path / "theirs")  # a different authority, same role names
    endpoint = f"tls/127.0.0.1:{_free_port()}"
    k = keys("r1")
    agent = zenoh.open(config("agent", tmp_path / "ours", listen=endpoint, robot="r1"))
    got: list[tuple[str, bytes]] = []
    subs = [
        agent.declare_subscriber(k[name], lambda s, n=name: got.append((n, s.payload.to_bytes())))
        for name in ("command", "operator", "estop")
    ]

    def on_request(query: zenoh.Query) -> None:  # enable / reset / approve are queries
        got.append(("request", query.payload.to_bytes() if query.payload is not None else b""))
        query.reply(query.key_expr, b"ok")

    subs.append(agent.declare_queryable(k["request"], on_request))
    peers = {
        who: zenoh.open(config(role, tmp_path / d, connect=endpoint))
        for who, role, d in (
            ("policy", "policy", "ours"),
            ("console", "console", "ours"),
            ("rogue", "console", "theirs"),
        )
    }
    expected = {
        ("command", b"policy"),
        ("estop", b"policy"),  # the console stops, it does not drive
        ("request", b"console"),
        ("operator", b"console"),
        ("estop", b"console"),
    }

    def send_all() -> bool:  # until the links are up and the agent's subscriptions known
        for who, session in peers.items():
            for name in ("command", "request", "operator", "estop"):
                session.put(k[name], who.encode())  # (a put to the request key reaches no one)
            list(session.get(k["request"], payload=who.encode(), timeout=0.1))
        return set(got) >= expected

    try:
        assert _wait(send_all, timeout=10.0), set(got)
        for _ in range(10):  # keep trying what must be refused
            send_all()
            time.sleep(0.03)
        assert set(got) == expected  # no policy reset/heartbeat, nothing from the other authority
    finally:
        for s in subs:
            s.undeclare()
        for session in (*peers.values(), agent):
            session.close()


def test_keys_init_command(tmp_path: Path, capsys) -> None:
    from cryptography import x509

    from qrobot.cli import main

    assert main(["keys", "init", str(tmp_path / "k")]) == 0
    for role in ("agent", "policy", "console"):
        cert = x509.load_pem_x509_certificate((tmp_path / "k" / f"{role}.pem").read_bytes())
        assert cert.subject.rfc4514_string() == f"CN={role}"
        assert (tmp_path / "k" / f"{role}.key").stat().st_mode & 0o077 == 0  # private to its owner
    assert main(["keys", "init", str(tmp_path / "k")]) == 2  # never overwrites silently
    assert "already holds keys" in capsys.readouterr().err
