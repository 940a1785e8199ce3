"""Safety: the supervisor and the command type only it may issue."""

from qrobot.safety.command import SafeCommand, Stop
from qrobot.safety.supervisor import Supervisor

__all__ = ["SafeCommand", "Stop", "Supervisor"]
