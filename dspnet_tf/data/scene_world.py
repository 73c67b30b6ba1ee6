"""Scene world: a synthetic app whose generating process, and so its best prediction, is known.

No public data set with an app-scene field can be downloaded here, so the quality benchmark runs
on this simulator. Each user has a latent *intent* (an item category) that drifts as a Markov
chain around their own preferences, and their own Markov chain over scenes. Scenes behave as in
real apps:

  * search returns items of the current intent;
  * the feed mixes globally popular items with the current intent;
  * live draws from a live-only part of the catalog, within the intent;
  * favorites and cart mostly *return* to items the user met earlier in other scenes (interest
    formed in one scene, acted on in another: intention misalignment), recency weighted;
  * messages shares popular items.

`misalignment` m decorrelates the logged scene from the behaviour: with probability m the item
is chosen by the rule of a scene drawn independently of the log. At m = 1 the logged scene
carries no information about the item.

`SceneWorld.oracle` computes the exact posterior predictive P(next item, next scene | history)
by forward filtering over the latent intent (the scene chain does not depend on the intent, so it
factors out). No learned model can beat its expected full-ranking metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

SCENE_NAMES = ("feed", "search", "live", "favorites", "cart", "messages")
FEED, SEARCH, LIVE, FAVORITES, CART, MESSAGES = range(6)
RETURN_SCENES = (FAVORITES, CART)

# Typical app navigation (rows: from, columns: to), mixed with each user's own habits.
_BASE_SCENE_TRANSITIONS = np.array(
    [
        # feed search live  fav  cart  msg
        [0.50, 0.15, 0.10, 0.10, 0.10, 0.05],  # feed
        [0.15, 0.45, 0.05, 0.10, 0.20, 0.05],  # search
        [0.25, 0.05, 0.50, 0.05, 0.10, 0.05],  # live
        [0.25, 0.15, 0.05, 0.25, 0.25, 0.05],  # favorites
        [0.30, 0.20, 0.05, 0.15, 0.25, 0.05],  # cart
        [0.40, 0.15, 0.10, 0.10, 0.05, 0.20],  # messages
    ]
)


@dataclasses.dataclass
class SceneWorldConfig:
    """Knobs of the scene world. Deterministic for a seed."""

    users: int = 10_000
    items: int = 2_000
    categories: int = 20
    scenes: int = 6
    min_events: int = 5
    mean_extra_events: float = 15.0
    max_events: int = 200
    zipf: float = 1.0
    misalignment: float = 0.0
    live_fraction: float = 0.1
    intent_stickiness: float = 0.8
    preference_concentration: float = 0.3
    habit_weight: float = 0.5
    feed_popular_share: float = 0.5
    return_probability: float = 0.8
    return_decay: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        def need(ok: bool, field: str, rule: str) -> None:
            if not ok:
                raise ValueError(f"SceneWorldConfig.{field}={getattr(self, field)!r}: {rule}")

        need(self.users >= 1, "users", "must be >= 1")
        need(self.categories >= 1, "categories", "must be >= 1")
        need(self.items >= 2 * self.categories, "items", "must be >= 2 * categories")
        need(2 <= self.scenes <= len(SCENE_NAMES), "scenes", f"must be in [2, {len(SCENE_NAMES)}]")
        need(self.min_events >= 1, "min_events", "must be >= 1")
        need(self.max_events >= self.min_events, "max_events", "must be >= min_events")
        need(0.0 <= self.misalignment <= 1.0, "misalignment", "must be in [0, 1]")
        for field in ("live_fraction", "intent_stickiness", "feed_popular_share",
                      "return_probability", "habit_weight"):
            need(0.0 <= getattr(self, field) <= 1.0, field, "must be in [0, 1]")
        need(0.0 < self.return_decay <= 1.0, "return_decay", "must be in (0, 1]")
        need(self.zipf >= 0.0, "zipf", "must be >= 0")

    @property
    def scene_names(self) -> Tuple[str, ...]:
        """The names of the world's scenes, in index order."""
        return SCENE_NAMES[: self.scenes]


class _ReturnMemory:
    """Recency-weighted memory of a user's past events, per logged scene.

    The weight of event j is decay^-j, so after t events the normalised weight of event j is
    decay^(t-1-j) / sum(...) without touching old entries; weights are rescaled before overflow.
    """

    def __init__(self, scenes: int, items: int, decay: float) -> None:
        self.weights = np.zeros((scenes, items))
        self.totals = np.zeros(scenes)
        self.decay = decay
        self.step_weight = 1.0

    def add(self, scene: int, item: int) -> None:
        self.weights[scene, item] += self.step_weight
        self.totals[scene] += self.step_weight
        self.step_weight /= self.decay
        if self.step_weight > 1e200:
            self.weights /= self.step_weight
            self.totals /= self.step_weight
            self.step_weight = 1.0

    def others_total(self) -> np.ndarray:
        """[S]: weight of events logged in a scene other than g, for each g."""
        return self.totals.sum() - self.totals

    def others_item_weight(self, item: int) -> np.ndarray:
        """[S]: weight of `item` among events logged in a scene other than g, for each g."""
        column = self.weights[:, item]
        return column.sum() - column

    def others_distribution(self, scene: int) -> np.ndarray:
        """[N]: recency-weighted distribution of items met in scenes other than `scene`."""
        total = self.others_total()[scene]
        if total <= 0:
            return np.zeros(self.weights.shape[1])
        return (self.weights.sum(axis=0) - self.weights[scene]) / total


class SceneWorld:
    """The simulator with its true parameters, a generator and the exact oracle.

    Example:
      >>> world = SceneWorld(SceneWorldConfig(users=50, items=100, categories=5, seed=1))
      >>> log = world.generate()
      >>> p_item, p_scene = world.oracle(0, log.items[0][:-1], log.scenes[0][:-1])
    """

    def __init__(self, config: SceneWorldConfig) -> None:
        self.config = c = config
        rng = np.random.default_rng([c.seed, 1])
        n, k, s = c.items, c.categories, c.scenes
        # Catalog: a category per item (each category non-empty), a live flag (each category
        # gets at least one live and one non-live item), and a Zipf popularity weight.
        self.item_category = np.concatenate([np.arange(k), np.arange(k), rng.integers(0, k, n - 2 * k)])
        self.item_live = np.zeros(n, bool)
        self.item_live[:k] = True
        self.item_live[2 * k:] = rng.random(n - 2 * k) < c.live_fraction
        ranks = rng.permutation(n) + 1
        self.item_weight = ranks.astype(np.float64) ** -c.zipf
        # Users: preferences over intents, intent drift, scene habits.
        self.user_preference = rng.dirichlet(np.full(k, c.preference_concentration), c.users)
        base = _BASE_SCENE_TRANSITIONS[:s, :s]
        base = base / base.sum(axis=1, keepdims=True)
        habits = rng.dirichlet(np.ones(s), (c.users, s))
        self.scene_transitions = c.habit_weight * habits + (1 - c.habit_weight) * base[None]
        self.scene_initial = rng.dirichlet(np.ones(s) * 2.0, c.users)
        self.scene_marginal = self.scene_initial.mean(axis=0)
        self.base_item_distribution = self._base_item_distribution()
        self._rng_events = np.random.default_rng([c.seed, 2])

    # --- the generating process -------------------------------------------------------------
    def _base_item_distribution(self) -> np.ndarray:
        """[S, K, N]: item distribution of each (governing scene, intent), returns excluded."""
        c = self.config
        w, cat, live = self.item_weight, self.item_category, self.item_live
        onehot = (cat[None, :] == np.arange(c.categories)[:, None]).astype(np.float64)  # [K, N]
        in_category = onehot * w * ~live
        in_category /= in_category.sum(axis=1, keepdims=True)
        live_in_category = onehot * w * live
        live_in_category /= live_in_category.sum(axis=1, keepdims=True)
        popular = w * ~live
        popular = np.broadcast_to(popular / popular.sum(), in_category.shape)
        rules = {
            FEED: c.feed_popular_share * popular + (1 - c.feed_popular_share) * in_category,
            SEARCH: in_category,
            LIVE: live_in_category,
            FAVORITES: in_category,
            CART: in_category,
            MESSAGES: popular,
        }
        return np.stack([rules[g] for g in range(c.scenes)])

    def intent_transitions(self, user: int) -> np.ndarray:
        """[K, K]: stay with probability rho, else jump to the user's preference distribution."""
        rho = self.config.intent_stickiness
        k = self.config.categories
        return rho * np.eye(k) + (1 - rho) * self.user_preference[user][None, :]

    def _return_share(self, memory: _ReturnMemory) -> np.ndarray:
        """[S]: probability that governing scene g returns to a remembered item."""
        share = np.zeros(self.config.scenes)
        has_memory = memory.others_total() > 0
        for g in RETURN_SCENES:
            if g < self.config.scenes and has_memory[g]:
                share[g] = self.config.return_probability
        return share

    def _scene_mixture(self, scene: int) -> np.ndarray:
        """[S]: distribution of the governing scene given the logged one."""
        m = self.config.misalignment
        mix = m * self.scene_marginal.copy()
        mix[scene] += 1 - m
        return mix

    def generate(self) -> "SceneLog":
        """Samples every user's events (deterministic for the config's seed)."""
        c = self.config
        rng = self._rng_events
        extra = np.floor(rng.pareto(1.5, c.users) * c.mean_extra_events / 2.0).astype(int)
        lengths = np.minimum(c.min_events + extra, c.max_events)
        items, scenes = [], []
        for user in range(c.users):
            intents = self.intent_transitions(user)
            memory = _ReturnMemory(c.scenes, c.items, c.return_decay)
            seq_v, seq_s = [], []
            intent = rng.choice(c.categories, p=self.user_preference[user])
            scene = rng.choice(c.scenes, p=self.scene_initial[user])
            for t in range(lengths[user]):
                if t:
                    intent = rng.choice(c.categories, p=intents[intent])
                    scene = rng.choice(c.scenes, p=self.scene_transitions[user, scene])
                governing = rng.choice(c.scenes, p=self._scene_mixture(scene))
                share = self._return_share(memory)[governing]
                if share > 0 and rng.random() < share:
                    item = rng.choice(c.items, p=memory.others_distribution(governing))
                else:
                    item = rng.choice(c.items, p=self.base_item_distribution[governing, intent])
                memory.add(scene, item)
                seq_v.append(int(item))
                seq_s.append(int(scene))
            items.append(seq_v)
            scenes.append(seq_s)
        return SceneLog(items=items, scenes=scenes, config=c)

    # --- the oracle -------------------------------------------------------------------------
    def oracle_joint(
        self, user: int, items: List[int], scenes: List[int]
    ) -> np.ndarray:
        """Exact P(next scene = s, next item = v | history) as an [S, N] matrix."""
        c = self.config
        intents = self.intent_transitions(user)
        memory = _ReturnMemory(c.scenes, c.items, c.return_decay)
        belief: Optional[np.ndarray] = None  # P(intent_t | events <= t)
        for item, scene in zip(items, scenes):
            prior = self.user_preference[user] if belief is None else belief @ intents
            # Likelihood of the observed item under each intent: mix over governing scenes.
            share = self._return_share(memory)  # [S]
            totals = memory.others_total()
            returned = np.divide(memory.others_item_weight(item), totals,
                                 out=np.zeros(c.scenes), where=totals > 0)
            per_scene = share[:, None] * returned[:, None] + (1 - share)[:, None] * \
                self.base_item_distribution[:, :, item]  # [S, K]
            likelihood = self._scene_mixture(scene) @ per_scene  # [K]
            belief = prior * likelihood
            if belief.sum() <= 0:
                raise ValueError(
                    f"user {user}: history has probability zero under this world (item {item} "
                    f"in scene {c.scene_names[scene]}); was it generated by another world?"
                )
            belief /= belief.sum()
            memory.add(scene, item)
        if belief is None:
            next_intent = self.user_preference[user]
            next_scene = self.scene_initial[user]
        else:
            next_intent = belief @ intents
            next_scene = self.scene_transitions[user, scenes[-1]]
        share = self._return_share(memory)
        by_governing = np.stack([
            share[g] * memory.others_distribution(g)
            + (1 - share[g]) * next_intent @ self.base_item_distribution[g]
            for g in range(c.scenes)
        ])  # [S, N]: P(item | governing scene g, history)
        m = c.misalignment
        item_given_logged = (1 - m) * by_governing + m * (self.scene_marginal @ by_governing)[None]
        return next_scene[:, None] * item_given_logged

    def oracle_in_scene(self, user: int, items: List[int], scenes: List[int]) -> np.ndarray:
        """Exact P(next item | history, next scene = s) as an [S, N] matrix (the in-scene task).

        Row s is what a surface s that asks for a list should rank by: `oracle_joint`'s row s,
        normalised. A scene the user cannot reach next has probability 0 and an all-zero row.
        """
        return in_scene_rows(self.oracle_joint(user, items, scenes))

    def oracle(self, user: int, items: List[int], scenes: List[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Exact P(next item | history) [N] and P(next scene | history) [S]."""
        joint = self.oracle_joint(user, items, scenes)
        return joint.sum(axis=0), joint.sum(axis=1)

    def to_json(self, **extra: object) -> str:
        """The config (enough to rebuild the world exactly) plus any summary fields."""
        return json.dumps({"scene_world": dataclasses.asdict(self.config),
                           "scene_names": list(self.config.scene_names), **extra}, indent=2)


def in_scene_rows(joint: np.ndarray) -> np.ndarray:
    """[S, N] rows of a joint P(scene, item), each normalised to P(item | scene) (0 rows stay 0)."""
    totals = joint.sum(axis=1, keepdims=True)
    return np.divide(joint, totals, out=np.zeros_like(joint), where=totals > 0)


@dataclasses.dataclass
class SceneLog:
    """Generated events: per-user item and scene indices (0-based, oldest first)."""

    items: List[List[int]]
    scenes: List[List[int]]
    config: SceneWorldConfig

    @property
    def num_events(self) -> int:
        """Events over all users."""
        return sum(len(seq) for seq in self.items)

    def write(self, out_dir: str) -> Dict[str, str]:
        """Writes `events.csv` (user_id,item_id,scene,timestamp) and `world.json`."""
        from dspnet_tf.resilience import atomic_write  # pylint: disable=import-outside-toplevel

        os.makedirs(out_dir, exist_ok=True)
        events_path = os.path.join(out_dir, "events.csv")
        names = self.config.scene_names
        rng = np.random.default_rng([self.config.seed, 3])
        # Each file is replaced whole or not at all: never half a log under the final name.
        with atomic_write(events_path, newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user_id", "item_id", "scene", "timestamp"])
            for user, (seq_v, seq_s) in enumerate(zip(self.items, self.scenes)):
                clock = 1_600_000_000 + int(rng.integers(0, 86_400 * 30))
                for item, scene in zip(seq_v, seq_s):
                    clock += 1 + int(rng.integers(0, 3_600))
                    writer.writerow([f"u{user:06d}", f"i{item:05d}", names[scene], clock])
        world_path = os.path.join(out_dir, "world.json")
        with atomic_write(world_path) as handle:
            handle.write(SceneWorld(self.config).to_json(users=len(self.items),
                                                         events=self.num_events))
        return {"events": events_path, "world": world_path}


def load_world(world_json: str) -> SceneWorld:
    """Rebuilds the exact world (and so its oracle) from a `world.json`."""
    with open(world_json, encoding="utf-8") as handle:
        payload = json.load(handle)
    return SceneWorld(SceneWorldConfig(**payload["scene_world"]))
