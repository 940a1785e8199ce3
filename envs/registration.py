"""One gymnasium id per packaged scenario: `qrobot/<CamelName>-v0` (see qrobot.registry)."""

from qrobot.registry import env_id, register_all, registered_ids

__all__ = ["env_id", "register_all", "registered_ids"]
