"""Zenoh sessions for the bridge: peer to peer, multicast scouting off, explicit TLS
endpoints, mutual TLS with one certificate per role (`qrobot keys init`), and on the
agent an access list that denies by default and grants by the peer certificate's common
name. Liveliness tokens (`qrobot/NAME/alive/ROLE`) are for presence only: they follow
Zenoh's transport lease (10 s), so stopping is the agent's own deadlines' job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zenoh


def keys(robot: str) -> dict[str, str]:
    """Key expressions of one robot's bridge."""
    base = f"qrobot/{robot}"
    # a role is known by the key it may use (the access list grants keys per certificate)
    return {
        "command": f"{base}/command",
        "lease": f"{base}/lease/policy",
        "take": f"{base}/lease/console",
        "operator": f"{base}/operator",
        "request": f"{base}/request",
        "estop": f"{base}/estop",
        "clock": f"{base}/clock/policy",
        "episode": f"{base}/episode/policy",
        "propose": f"{base}/propose/policy",
        "state": f"{base}/state",
        "observation": f"{base}/frames/observation",
        "frames": f"{base}/frames/**",
        "alive": f"{base}/alive/**",
        **{f"alive_{r}": f"{base}/alive/{r}" for r in ("agent", "policy", "console")},
        "all": f"{base}/**",
    }


def access_list(robot: str) -> dict[str, Any]:
    """What each role may send the agent; everything else is denied (and what the agent
    may send: state, frames, replies, its declarations)."""
    k = keys(robot)

    def rule(rid: str, messages: list[str], flow: str, exprs: list[str]) -> dict[str, Any]:
        return {"id": rid, "messages": messages, "flows": [flow], "permission": "allow", "key_exprs": exprs}

    rules = [
        rule(
            "out",
            [
                "put",
                "reply",
                "declare_subscriber",
                "declare_queryable",
                "liveliness_token",
                "declare_liveliness_subscriber",
            ],
            "egress",
            [k["all"]],
        ),
        rule("subscribe", ["declare_subscriber", "declare_liveliness_subscriber"], "ingress", [k["all"]]),
        rule("policy_alive", ["liveliness_token"], "ingress", [k["alive_policy"]]),
        rule("console_alive", ["liveliness_token"], "ingress", [k["alive_console"]]),
        rule("policy_in", ["put"], "ingress", [k["command"], k["estop"]]),
        rule("policy_query", ["query"], "ingress", [k["lease"], k["clock"], k["episode"], k["propose"]]),
        rule("console_query", ["query"], "ingress", [k["take"], k["request"]]),
        rule("console_in", ["put"], "ingress", [k["operator"], k["estop"]]),
    ]
    return {
        "enabled": True,
        "default_permission": "deny",
        "rules": rules,
        "subjects": [{"id": role, "cert_common_names": [role]} for role in ("policy", "console")],
        "policies": [
            {"rules": ["out", "subscribe", "policy_in", "policy_query", "policy_alive"], "subjects": ["policy"]},
            {"rules": ["out", "subscribe", "console_in", "console_query", "console_alive"], "subjects": ["console"]},
        ],
    }


def config(
    role: str, key_dir: str | Path, listen: str | None = None, connect: str | None = None, robot: str | None = None
) -> zenoh.Config:
    """A peer's configuration: TLS endpoints only (`tls/127.0.0.1:PORT` in tests), this
    role's certificate, the CA; `robot` turns the agent's access list on."""
    d = Path(key_dir)
    c = zenoh.Config()
    c.insert_json5("mode", json.dumps("peer"))
    c.insert_json5("scouting/multicast/enabled", "false")  # nothing may leave for 224.0.0.224
    c.insert_json5("scouting/gossip/enabled", "false")
    c.insert_json5("listen/endpoints", json.dumps([listen] if listen else []))
    c.insert_json5("connect/endpoints", json.dumps([connect] if connect else []))
    c.insert_json5(
        "transport/link/tls",
        json.dumps(
            {
                "root_ca_certificate": str(d / "ca.pem"),
                "enable_mtls": True,
                "listen_certificate": str(d / f"{role}.pem"),
                "listen_private_key": str(d / f"{role}.key"),
                "connect_certificate": str(d / f"{role}.pem"),
                "connect_private_key": str(d / f"{role}.key"),
                "verify_name_on_connect": False,
            }
        ),
    )  # identity is the CA's signature and the role's common name
    if robot is not None:
        c.insert_json5("access_control", json.dumps(access_list(robot)))
    return c
