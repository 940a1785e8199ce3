"""qrobot: policies behind a safety supervisor in PyBullet scenes, recorded to Rerun."""

__version__ = "0.1.0"
