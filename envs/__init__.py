"""Gymnasium environments. The `qrobot/<Scenario>-v0` ids are registered on `import qrobot`."""

from qrobot.envs.core import QRobotEnv
from qrobot.envs.goal import GoalConditioned
from qrobot.envs.registration import env_id, register_all, registered_ids

ENV_IDS = register_all()

__all__ = ["ENV_IDS", "GoalConditioned", "QRobotEnv", "env_id", "registered_ids"]
