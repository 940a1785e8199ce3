"""Errors a user can cause. The CLI prints these as one line, never a traceback."""


class QrobotError(Exception):
    """A user mistake (bad file, unknown name, bad flag) with a one-line message."""


class ScenarioError(QrobotError):
    """A scenario file that cannot be used: names the file, the key and what is accepted."""
