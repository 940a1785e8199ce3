"""Rerun recording: one `.rrd` per episode, read back with Rerun's own reader."""

from qrobot.record.readback import summarize_rrd
from qrobot.record.recorder import EpisodeRecorder
from qrobot.record.rundir import RunDir

__all__ = ["EpisodeRecorder", "RunDir", "summarize_rrd"]
