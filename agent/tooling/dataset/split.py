"""Train/val split by time, so near-identical frames never straddle it. Pure logic.

Frames of one camera taken close together look alike (the same part, a few pixels on). Splitting them
frame by frame would put near-copies of the val images into train and flatter the val score. So frames are
first grouped: per camera, in capture order, a new group starts wherever the gap to the previous frame is
at least ``gap_s`` seconds, and (``block_s`` > 0) wherever a group has lasted ``block_s`` seconds: a recording
that is one unbroken run (a learn-mode camera sampling all day) is cut into consecutive blocks instead of
forming one group that val can never take. Whole groups are then assigned: in an order shuffled with ``seed``
(the same recording and seed always give the same split), a group goes to val when that brings the val share
closer to ``val_fraction``. Hence frames of one camera less than ``gap_s`` apart are in the same split, except
on either side of a block boundary (a run longer than ``block_s``): a few near-copies per block, against a val
set that would otherwise be empty.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Hashable, Sequence
from typing import Literal

__all__ = ["Split", "TimedItem", "assign_splits", "time_groups"]

Split = Literal["train", "val"]


@dataclasses.dataclass(frozen=True)
class TimedItem:
    key: Hashable  # what can be near-identical only within itself: the camera
    seconds: float  # capture time, any epoch


def time_groups(items: Sequence[TimedItem], gap_s: float, block_s: float = 0.0) -> list[list[int]]:
    """Indices of ``items`` in groups (see the module doc; ``block_s`` 0: no blocks), each in capture order;
    groups ordered by their first frame's time."""
    if gap_s < 0:
        raise ValueError(f"gap_s: expected 0 or more seconds, got {gap_s}")
    if block_s < 0:
        raise ValueError(f"block_s: expected 0 (no blocks) or more seconds, got {block_s}")
    by_key: dict[Hashable, list[int]] = {}
    for i, item in enumerate(items):
        by_key.setdefault(item.key, []).append(i)
    groups: list[list[int]] = []
    for indices in by_key.values():
        indices.sort(key=lambda i: (items[i].seconds, i))
        current = [indices[0]]
        for prev, i in zip(indices, indices[1:], strict=False):
            t = items[i].seconds
            if t - items[prev].seconds >= gap_s or (block_s > 0 and t - items[current[0]].seconds >= block_s):
                groups.append(current)
                current = []
            current.append(i)
        groups.append(current)
    groups.sort(key=lambda g: (items[g[0]].seconds, g[0]))
    return groups


def assign_splits(groups: Sequence[Sequence[int]], val_fraction: float, seed: int = 0) -> dict[int, Split]:
    """The split of every index in ``groups`` (see the module doc)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected 0 <= fraction < 1, got {val_fraction}")
    total = sum(len(g) for g in groups)
    target = val_fraction * total
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    val = 0
    chosen: set[int] = set()
    for g in order:
        size = len(groups[g])
        if abs(val + size - target) < abs(val - target):
            chosen.add(g)
            val += size
    return {i: ("val" if g in chosen else "train") for g, group in enumerate(groups) for i in group}
