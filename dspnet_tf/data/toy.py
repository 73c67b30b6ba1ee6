"""Small synthetic data sets whose next event is known exactly, for demos and learning tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np


@dataclass
class ToySequences:
    """Aligned item and scene sequences (ids >= 2; 0 = padding, 1 = OOV stay unused)."""

    items: List[List[int]]
    scenes: List[List[int]]
    item_vocab_size: int
    scene_vocab_size: int


def _lengths(rng: np.random.Generator, users: int, min_len: int, max_len: int) -> np.ndarray:
    return rng.integers(min_len, max_len + 1, size=users)


def deterministic_transitions(
    users: int = 2000,
    num_items: int = 40,
    num_scenes: int = 4,
    min_len: int = 5,
    max_len: int = 20,
    seed: int = 0,
) -> ToySequences:
    """The next item is a fixed function of the current item AND the current scene.

    Scenes are drawn at random, and item t+1 = table[item t, scene t] for a random table, so a
    model that reads both sequences can predict the next item exactly (HR@1 -> 1), while one that
    reads only items is right about 1 / num_scenes of the time at best.
    """
    rng = np.random.default_rng(seed)
    table = rng.integers(0, num_items, size=(num_items, num_scenes))
    items, scenes = [], []
    for length in _lengths(rng, users, min_len, max_len):
        s = rng.integers(0, num_scenes, size=length)
        v = np.empty(length, dtype=np.int64)
        v[0] = rng.integers(0, num_items)
        for t in range(1, length):
            v[t] = table[v[t - 1], s[t - 1]]
        items.append((v + 2).tolist())
        scenes.append((s + 2).tolist())
    return ToySequences(items, scenes, num_items + 2, num_scenes + 2)


def scene_driven(
    users: int = 2000,
    num_items: int = 64,
    num_scenes: int = 8,
    min_len: int = 5,
    max_len: int = 20,
    seed: int = 0,
) -> ToySequences:
    """The next item depends only on the scene sequence: item t+1 = table[scene t, scene t-1].

    Items carry at most the older scenes, never the current one, so the scene network is the
    only way to know scene t: an item-only model is right about 1 / num_scenes of the time.
    """
    rng = np.random.default_rng(seed)
    table = rng.permutation(num_items)[: num_scenes * num_scenes] if num_items >= num_scenes**2 \
        else rng.integers(0, num_items, size=num_scenes * num_scenes)
    table = np.asarray(table).reshape(num_scenes, num_scenes)
    items, scenes = [], []
    for length in _lengths(rng, users, min_len, max_len):
        s = rng.integers(0, num_scenes, size=length)
        v = np.empty(length, dtype=np.int64)
        v[0] = rng.integers(0, num_items)
        v[1] = table[s[0], rng.integers(0, num_scenes)]
        for t in range(2, length):
            v[t] = table[s[t - 1], s[t - 2]]
        items.append((v + 2).tolist())
        scenes.append((s + 2).tolist())
    return ToySequences(items, scenes, num_items + 2, num_scenes + 2)
