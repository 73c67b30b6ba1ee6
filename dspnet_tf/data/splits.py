"""Event log -> per-user sequences -> leave-one-out splits with integer vocabularies.

Protocol (evaluation.md): per user, events sorted by time (ties keep file order); the last event
is the test target, the second-to-last the validation target, the rest is training. Users with
fewer than 3 events are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from typing import Dict, List, Sequence, Tuple

import numpy as np

from dspnet_tf.data.event_log import EventLog
from dspnet_tf.data.sequences import repeat_target_share

PAD, OOV = "<pad>", "<oov>"
MIN_EVENTS = 3
# The leave-one-out protocol as slices of a user's time-sorted events. For eval and test the
# target is the slice's last event; train keeps all but the last two events.
SPLIT_SLICES = {"train": slice(None, -2), "eval": slice(None, -1), "test": slice(None, None)}


@dataclasses.dataclass
class Vocabulary:
    """Raw string ids <-> integer ids; 0 is padding, 1 out-of-vocabulary, then by frequency."""

    tokens: List[str]

    def __post_init__(self) -> None:
        self._index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, values: Sequence[str], min_count: int = 1) -> "Vocabulary":
        """A vocabulary of the tokens seen at least `min_count` times, most frequent first.

        Ties are broken by token, so the same data always gives the same ids.
        """
        counts = Counter(values)
        ordered = sorted((t for t, n in counts.items() if n >= min_count),
                         key=lambda t: (-counts[t], t))
        return cls([PAD, OOV] + ordered)

    def __len__(self) -> int:
        return len(self.tokens)

    def lookup(self, values: Sequence[str]) -> List[int]:
        """Integer ids of raw tokens; unknown tokens map to 1 (OOV)."""
        return [self._index.get(v, 1) for v in values]


@dataclasses.dataclass
class LeaveOneOutSplit:
    """Every kept user's full id sequences; views give the train / valid / test parts."""

    users: List[str]
    items: List[List[int]]
    scenes: List[List[int]]
    item_vocab: Vocabulary
    scene_vocab: Vocabulary
    dropped_users: int

    @property
    def train(self) -> Tuple[List[List[int]], List[List[int]]]:
        """Training sequences: all but the last two events."""
        return self._view("train")

    @functools.cached_property
    def training_repeat_share(self) -> float:
        """Share of training next events that repeat an item of the user's earlier history.

        Computed once per split (every model a benchmark builds from it reads it).
        """
        return repeat_target_share(self.train[0])

    @property
    def valid(self) -> Tuple[List[List[int]], List[List[int]]]:
        """Validation: history + target (the second-to-last event) as the sequence's last event."""
        return self._view("eval")

    @property
    def test(self) -> Tuple[List[List[int]], List[List[int]]]:
        """Test: the whole sequence; its last event is the target."""
        return self._view("test")

    def _view(self, split: str) -> Tuple[List[List[int]], List[List[int]]]:
        cut = SPLIT_SLICES[split]
        return [s[cut] for s in self.items], [s[cut] for s in self.scenes]

    def summary(self) -> Dict[str, int]:
        """Counts of users kept and dropped, items, scenes (reserved ids excluded) and events."""
        return {"users": len(self.users), "dropped_users": self.dropped_users,
                "items": len(self.item_vocab) - 2, "scenes": len(self.scene_vocab) - 2,
                "events": sum(len(s) for s in self.items)}


def group_by_user(log: EventLog) -> Dict[str, Tuple[List[str], List[str]]]:
    """Per user: (items, scenes) sorted by timestamp, ties in file order (stable sort)."""
    order = np.argsort(log.timestamps, kind="stable")
    grouped: Dict[str, Tuple[List[str], List[str]]] = {}
    for i in order:
        items, scenes = grouped.setdefault(log.user_ids[i], ([], []))
        items.append(log.item_ids[i])
        scenes.append(log.scenes[i])
    return grouped


def leave_one_out(log: EventLog, min_item_count: int = 1) -> LeaveOneOutSplit:
    """Builds the split. Vocabularies come from all kept events, so every target is rankable."""
    grouped = group_by_user(log)
    kept = {u: seqs for u, seqs in grouped.items() if len(seqs[0]) >= MIN_EVENTS}
    users = sorted(kept)
    item_vocab = Vocabulary.build([v for u in users for v in kept[u][0]], min_item_count)
    scene_vocab = Vocabulary.build([s for u in users for s in kept[u][1]])
    return LeaveOneOutSplit(
        users=users,
        items=[item_vocab.lookup(kept[u][0]) for u in users],
        scenes=[scene_vocab.lookup(kept[u][1]) for u in users],
        item_vocab=item_vocab,
        scene_vocab=scene_vocab,
        dropped_users=len(grouped) - len(kept),
    )
