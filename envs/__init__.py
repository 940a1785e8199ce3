"""Gymnasium environments: `import qrobot.envs` registers `qrobot/<Scenario>-v0` ids."""

from qrobot.envs.core import QRobotEnv
from qrobot.envs.registration import env_id, register_all, registered_ids

ENV_IDS = register_all()

__all__ = ["ENV_IDS", "QRobotEnv", "env_id", "registered_ids"]
