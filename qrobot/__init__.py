"""qrobot: policies behind a safety supervisor in PyBullet scenes, recorded to Rerun.

`import qrobot` registers the gymnasium ids (`gym.make("qrobot/PickPlace-v0")`).
"""

__version__ = "0.1.0"

from qrobot.registry import register_all as _register_all

ENV_IDS = _register_all()
