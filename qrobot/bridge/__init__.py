"""The bridge to real robots under supervision: a robot-side agent that owns the
supervisor, every deadline, the lease and the e-stop latch; policies elsewhere send
short-lived commands to it (docs/bridge.md)."""
