"""Policies from other packages: the entry-point group `qrobot.policies`.

A package adds a policy by name in its own pyproject.toml:

    [project.entry-points."qrobot.policies"]
    my-policy = "my_package.module:make"

`make(env, seed=0, **kwargs)` returns an object with `reset(instruction)` and `act(obs)`
(the `Policy` protocol in `qrobot.policies.base`; `seed_episode(seed)` is optional). The
factory may carry `needs_images = False` (the env then skips rendering; default: it
renders) and `unfit(scenario) -> str | None` (why it cannot drive a scenario; a benchmark
skips such pairs). Built-in names cannot be taken over.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from qrobot.errors import QrobotError

GROUP = "qrobot.policies"


def plugin_entries(builtin: tuple[str, ...]) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP) if ep.name not in builtin}


def load_factory(name: str, entry: EntryPoint) -> Any:
    """The plugin's factory, or one line saying which package failed and how."""
    try:
        factory = entry.load()
    except Exception as exc:  # a broken plugin must not take the command down with a traceback
        raise QrobotError(
            f"policy {name!r} (plugin {entry.value}): cannot be loaded: {type(exc).__name__}: {exc}"
        ) from None
    if not callable(factory):
        raise QrobotError(f"policy {name!r} (plugin {entry.value}): not a callable factory")
    return factory
