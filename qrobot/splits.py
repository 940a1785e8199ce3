"""The project's seed splits for anything learned, one table that every tool reads.

train        0 - 9,999         demonstrations (`qrobot collect` starts at 0)
validation   10,000 - 19,999   every choice between variants, every early stop, every
             30,000 - 39,999   threshold
ci           20,000 - 29,999   the floors the test suite asserts
test         40,000 and above  measured once per shipped checkpoint, reported, never
                               used to decide anything
"""

from __future__ import annotations

from qrobot.errors import QrobotError

SEED_MAX = 2**31 - 1
SPLITS: dict[str, tuple[tuple[int, int], ...]] = {
    "train": ((0, 9_999),),
    "validation": ((10_000, 19_999), (30_000, 39_999)),
    "ci": ((20_000, 29_999),),
    "test": ((40_000, SEED_MAX),),
}
TUNING_FLAGS = ("--replan", "--nav-stop")  # eval flags that choose between variants: refused on the test split


def split_of(seed: int) -> str:
    for name, ranges in SPLITS.items():
        if any(lo <= seed <= hi for lo, hi in ranges):
            return name
    return "train"  # negative seeds are refused by the CLI before this


def first_seed(split: str) -> int:
    return SPLITS[split][0][0]


def check_split(flag: str, split: str, seed: int, episodes: int) -> None:
    """All of seed .. seed+episodes-1 inside one range of `split`, or one clear line."""
    last = seed + episodes - 1
    if not any(lo <= seed and last <= hi for lo, hi in SPLITS[split]):
        ranges = " or ".join(f"{lo}-{hi}" if hi < SEED_MAX else f"{lo} and above" for lo, hi in SPLITS[split])
        raise QrobotError(f"{flag}: seeds {seed}-{last} are not all in the {split} split ({ranges})")
