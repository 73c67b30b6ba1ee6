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

`SceneDays` runs the same world for several days, each user's sequence going on from one day
to the next (written as `events/span-1/`, `span-2/`, ...: TFX spans), optionally with a
`SceneDrift` on a chosen day (a scene disappears, a new one appears, popularity shifts, new
items launch); its
oracle stays exact over the continued sequences.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import itertools
import json
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

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


@dataclasses.dataclass
class _UserState:
    """Where a user's sequence stands: the latent intent, the last scene, the return memory."""

    intent: Optional[int] = None
    scene: Optional[int] = None
    memory: Optional[_ReturnMemory] = None


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
        self.base_scene_transitions = base  # the app's navigation, shared by every user
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
        items, scenes, _ = self._simulate(self._rng_events)
        return SceneLog(items=items, scenes=scenes, config=self.config)

    def _simulate(
        self, rng: np.random.Generator
    ) -> Tuple[List[List[int]], List[List[int]], List["_UserState"]]:
        """Every user's first sequence, and where each ended (to continue it on a later day)."""
        c = self.config
        extra = np.floor(rng.pareto(1.5, c.users) * c.mean_extra_events / 2.0).astype(int)
        lengths = np.minimum(c.min_events + extra, c.max_events)
        items, scenes, states = [], [], []
        for user in range(c.users):
            state = _UserState()
            seq_v, seq_s = self._continue(user, state, int(lengths[user]), rng)
            items.append(seq_v)
            scenes.append(seq_s)
            # The memory is S x N floats: dropped here, rebuilt from the events when needed.
            states.append(dataclasses.replace(state, memory=None))
        return items, scenes, states

    def _continue(self, user: int, state: "_UserState", count: int,
                  rng: np.random.Generator) -> Tuple[List[int], List[int]]:
        """Draws `count` more events of `user` from `state` (updated in place) under this world.

        A fresh state starts the chains from the user's initial distributions; a carried one
        continues them, so the events of several calls form one sequence of the process.
        """
        c = self.config
        intents = self.intent_transitions(user)
        if state.memory is None:
            state.memory = _ReturnMemory(c.scenes, c.items, c.return_decay)
        memory = state.memory
        seq_v, seq_s = [], []
        for _ in range(count):
            if state.intent is None:
                state.intent = rng.choice(c.categories, p=self.user_preference[user])
                state.scene = rng.choice(c.scenes, p=self.scene_initial[user])
            else:
                state.intent = rng.choice(c.categories, p=intents[state.intent])
                state.scene = rng.choice(c.scenes, p=self.scene_transitions[user, state.scene])
            governing = rng.choice(c.scenes, p=self._scene_mixture(state.scene))
            share = self._return_share(memory)[governing]
            if share > 0 and rng.random() < share:
                item = rng.choice(c.items, p=memory.others_distribution(governing))
            else:
                item = rng.choice(c.items, p=self.base_item_distribution[governing, state.intent])
            memory.add(state.scene, item)
            seq_v.append(int(item))
            seq_s.append(int(state.scene))
        return seq_v, seq_s

    # --- variants: the world after a drift (see SceneDrift) ---------------------------------
    def _without_scene(self, scene: int) -> "SceneWorld":
        """This world with `scene` gone: no chain enters it, no misaligned event is governed by it.

        Moves into it are zeroed and each row renormalised over the scenes left; its own row
        stays, so a user who is in it moves on by their habits.
        """
        world = copy.copy(self)  # shares the unchanged arrays; the changed ones are new
        keep = np.ones(self.config.scenes)
        keep[scene] = 0.0
        world.scene_transitions = _renormalised(self.scene_transitions * keep, keep)
        world.scene_initial = _renormalised(self.scene_initial * keep, keep)
        world.scene_marginal = _renormalised(self.scene_marginal * keep, keep)
        return world

    def launch_items(self) -> np.ndarray:
        """The items a `new_items` drift launches: the most popular LAUNCH_FRACTION of the
        catalog (at least one), each category's guaranteed live and non-live item excepted."""
        c = self.config
        count = max(1, int(round(LAUNCH_FRACTION * c.items)))
        candidates = np.arange(2 * c.categories, c.items)
        order = np.argsort(-self.item_weight[candidates], kind="stable")
        return np.sort(candidates[order[:count]])

    def _without_items(self, items: np.ndarray) -> "SceneWorld":
        """This world with `items` not yet in the catalog: their popularity weight is 0, so no
        scene draws them (and no memory holds them to return to)."""
        world = copy.copy(self)
        world.item_weight = self.item_weight.copy()
        world.item_weight[items] = 0.0
        world.base_item_distribution = world._base_item_distribution()
        return world

    def _with_new_popularity(self) -> "SceneWorld":
        """This world with the Zipf popularity ranks dealt to the items again (seeded)."""
        c = self.config
        world = copy.copy(self)
        ranks = np.random.default_rng([c.seed, 4]).permutation(c.items) + 1
        world.item_weight = ranks.astype(np.float64) ** -c.zipf
        world.base_item_distribution = world._base_item_distribution()
        return world

    # --- the oracle -------------------------------------------------------------------------
    def oracle_joint(
        self, user: int, items: List[int], scenes: List[int]
    ) -> np.ndarray:
        """Exact P(next scene = s, next item = v | history) as an [S, N] matrix."""
        return self._filtered_joint(user, items, scenes, itertools.repeat(self), self)

    def _filtered_joint(self, user: int, items: List[int], scenes: List[int],
                        worlds: Iterable["SceneWorld"], next_world: "SceneWorld") -> np.ndarray:
        """`oracle_joint` where event t was drawn under worlds[t] and the next one will be
        under `next_world`: variants of this world (`SceneDays.world_on`) that share its users'
        intents and differ in scenes or popularity, as the days of a drifting world do."""
        intents = self.intent_transitions(user)
        memory = _ReturnMemory(self.config.scenes, self.config.items, self.config.return_decay)
        likelihoods = self._item_likelihoods(items, scenes, worlds, memory)
        belief: Optional[np.ndarray] = None  # P(intent_t | events <= t)
        for likelihood, item, scene in zip(likelihoods, items, scenes):
            prior = self.user_preference[user] if belief is None else belief @ intents
            belief = prior * likelihood
            if belief.sum() <= 0:
                raise ValueError(
                    f"user {user}: history has probability zero under this world (item {item} "
                    f"in scene {self.config.scene_names[scene]}); was it generated by another "
                    f"world?"
                )
            belief /= belief.sum()
        if belief is None:
            next_intent = self.user_preference[user]
            next_scene = next_world.scene_initial[user]
        else:
            next_intent = belief @ intents
            next_scene = next_world.scene_transitions[user, scenes[-1]]
        return self._next_joint(memory, next_intent, next_scene, next_world)

    def _item_likelihoods(self, items: List[int], scenes: List[int],
                          worlds: Iterable["SceneWorld"], memory: _ReturnMemory) -> np.ndarray:
        """[T, K]: P(item_t | intent_t = k, events before t), adding each event to `memory`.

        Everything here is shared by all users (catalog, scene rules, the return memory of the
        user's own events); only the intent is the user's.
        """
        c = self.config
        rows = []
        for item, scene, world in zip(items, scenes, worlds):
            # Likelihood of the observed item under each intent: mix over governing scenes.
            share = self._return_share(memory)  # [S]
            totals = memory.others_total()
            returned = np.divide(memory.others_item_weight(item), totals,
                                 out=np.zeros(c.scenes), where=totals > 0)
            per_scene = share[:, None] * returned[:, None] + (1 - share)[:, None] * \
                world.base_item_distribution[:, :, item]  # [S, K]
            rows.append(world._scene_mixture(scene) @ per_scene)  # [K]
            memory.add(scene, item)
        return np.array(rows, dtype=np.float64).reshape(len(rows), c.categories)

    def _next_joint(self, memory: _ReturnMemory, next_intent: np.ndarray, next_scene: np.ndarray,
                    next_world: "SceneWorld") -> np.ndarray:
        """[S, N] P(next scene, next item) from the next intent and next scene distributions."""
        c = self.config
        share = self._return_share(memory)
        by_governing = np.stack([
            share[g] * memory.others_distribution(g)
            + (1 - share[g]) * next_intent @ next_world.base_item_distribution[g]
            for g in range(c.scenes)
        ])  # [S, N]: P(item | governing scene g, history)
        m = c.misalignment
        item_given_logged = (1 - m) * by_governing + \
            m * (next_world.scene_marginal @ by_governing)[None]
        return next_scene[:, None] * item_given_logged

    def population_joint(self, items: List[int], scenes: List[int], preferences: np.ndarray,
                         habits: np.ndarray) -> Tuple[np.ndarray, Dict[str, float]]:
        """P(next scene, next item | history) for a user whose own parameters are unknown.

        The exact oracle knows each user's own parameters: the preference over intents (drawn
        from a Dirichlet for each user) and the scene habits (each row drawn from a uniform
        Dirichlet, mixed with the app's base navigation). No model trained on other users can
        know them: they are drawn independently for every user, so only the user's own history
        informs them. This is the oracle averaged over those parameters under their posterior
        given the history, with every shared parameter (catalog, scene rules, base navigation,
        stickiness) known: the ceiling a learner reaches with unlimited training users.

        The posterior is approximated by importance sampling from the prior: `preferences`
        [M, K] are draws of the preference (weighted by the likelihood of the history's items,
        from an exact forward filter per draw), `habits` [M2, S] draws of one habit row (weighted
        by the likelihood of the history's moves out of the last scene; rows are independent,
        so the others do not matter). Passing the user's true preference and habit row (M = M2
        = 1) gives `oracle_joint` back.

        Returns:
          the [S, N] joint, and the effective sample sizes of the two weightings
          (`preference_ess`, `habit_ess`).
        """
        c = self.config
        rho = c.intent_stickiness
        memory = _ReturnMemory(c.scenes, c.items, c.return_decay)
        likelihoods = self._item_likelihoods(items, scenes, itertools.repeat(self), memory)
        log_evidence = np.zeros(len(preferences))
        belief = None  # [M, K]: P(intent_t | events <= t, preference m)
        for likelihood in likelihoods:
            prior = preferences if belief is None else rho * belief + (1 - rho) * preferences
            belief = prior * likelihood[None]
            total = belief.sum(axis=1, keepdims=True)
            log_evidence += np.log(np.maximum(total[:, 0], 1e-300))
            belief = belief / np.maximum(total, 1e-300)
        weights = _normalised_weights(log_evidence)
        next_by_draw = preferences if belief is None else rho * belief + (1 - rho) * preferences
        next_intent = weights @ next_by_draw
        if not scenes:
            next_scene, habit_weights = self.scene_initial.mean(axis=0), np.ones(1)
        else:
            last = scenes[-1]
            moves = np.zeros(c.scenes)
            for here, there in zip(scenes[:-1], scenes[1:]):
                if here == last:
                    moves[there] += 1
            rows = c.habit_weight * habits + (1 - c.habit_weight) * self.base_scene_transitions[last]
            habit_weights = _normalised_weights(np.log(rows) @ moves)
            next_scene = habit_weights @ rows
        joint = self._next_joint(memory, next_intent, next_scene, self)
        return joint, {"preference_ess": float(1.0 / np.sum(weights ** 2)),
                       "habit_ess": float(1.0 / np.sum(habit_weights ** 2))}

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


def _normalised_weights(log_weights: np.ndarray) -> np.ndarray:
    """Importance weights from log weights, normalised to sum to 1 without overflow."""
    weights = np.exp(log_weights - log_weights.max())
    return weights / weights.sum()


def _renormalised(rows: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to 1; a row with no mass left is uniform over the `keep` scenes."""
    totals = rows.sum(axis=-1, keepdims=True)
    uniform = np.broadcast_to(keep / keep.sum(), rows.shape)
    return np.where(totals > 0, rows / np.where(totals > 0, totals, 1.0), uniform)


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


# --- days: the same world, continued day by day ---------------------------------------------
DRIFT_KINDS = ("scene_gone", "new_scene", "popularity_shift", "new_items")
SCENE_DRIFT_KINDS = ("scene_gone", "new_scene")  # the kinds that name a scene
LAUNCH_FRACTION = 0.05  # new_items: the share of the catalog launched on the drift day
DAY_SECONDS = 86_400
FIRST_DAY_START = 1_600_041_600  # 2020-09-14 00:00 UTC; day d starts d - 1 days later
SPAN_FOLDER = "span-{span}"  # OUT/events/span-1/events.csv, ...: TFX's {SPAN} pattern matches


@dataclasses.dataclass(frozen=True)
class SceneDrift:
    """A change of the world on `day` (that day and every later one stay changed).

    Kinds:
      scene_gone: `scene` disappears: no user enters it any more (the scene chains' moves into
        it, its initial probability and its weight as a misaligned governing scene are zeroed,
        the rest renormalised). A user whose last event was in it moves on by their habits.
        Items only it shows (the live items, for "live") come back only as returns from
        favorites and cart.
      new_scene: `scene` exists only from `day` on: before it the world is the scene_gone
        world, from it the full one (the users' habits for the scene were there all along).
      popularity_shift: item popularity is dealt again: a new seeded assignment of the Zipf
        ranks, so yesterday's hits are ordinary items; the feed, messages and each category's
        items follow the new ranking. Users' intents and scene habits do not change.
      new_items: a product launch. The catalog's most popular LAUNCH_FRACTION (5%, each
        category's guaranteed pair excepted: `SceneWorld.launch_items`) exists only from `day`
        on: before it their popularity weight is 0, so no event has them; from it they are the
        popular items they were dealt. A daily pipeline's vocabulary grows by them on `day`.
    """

    day: int
    kind: str
    scene: str = "live"

    def __post_init__(self) -> None:
        if self.kind not in DRIFT_KINDS:
            raise ValueError(f"SceneDrift.kind={self.kind!r}: must be one of "
                             f"{', '.join(DRIFT_KINDS)}")
        if isinstance(self.day, bool) or not isinstance(self.day, (int, np.integer)) \
                or self.day < 2:
            raise ValueError(f"SceneDrift.day={self.day!r}: must be an integer >= 2 (day 1 is "
                             "the world as it starts; changed from day 1 it is another world)")


class SceneDays:
    """The scene world over several days, each user's sequence going on from day to day.

    Day 1 is `SceneWorld(config).generate()`, event for event (unless a new_scene or new_items
    drift hides its scene or items on day 1). On each later day a user is active with probability
    `active_probability`, and then has 1 + Poisson(n - 1) events, n being their day-1 count
    (heavy users stay heavy; at most `max_events`). Those events continue the user's process
    where it stopped: the intent and scene chains go on from their last states and the return
    memory keeps every earlier event. So the days concatenated are one sequence of the process,
    and `oracle_joint`, told each event's day (a drift changes the parameters from its day on),
    is exact over it. Each user's later days draw from a stream of their own, so the days
    before a drift are the same as without it.

    Example:
      >>> days = SceneDays(SceneWorldConfig(users=50, items=100, categories=5), days=3,
      ...                  drift=SceneDrift(day=3, kind="scene_gone", scene="live"))
      >>> log = days.generate()
      >>> items, scenes, on_day = log.sequence(0)
      >>> joint = days.oracle_joint(0, items[:-1], scenes[:-1], on_day[:-1], on_day[-1])
    """

    def __init__(self, config: SceneWorldConfig, days: int, drift: Optional[SceneDrift] = None,
                 active_probability: float = 0.8) -> None:
        if isinstance(days, bool) or not isinstance(days, (int, np.integer)) or days < 1:
            raise ValueError(f"days={days!r}: must be an integer >= 1")
        if not 0.0 <= active_probability <= 1.0:
            raise ValueError(f"active_probability={active_probability!r}: must be in [0, 1]")
        if drift is not None and drift.day > days:
            raise ValueError(f"SceneDrift.day={drift.day}: after the last day ({days})")
        if drift is not None and drift.kind in SCENE_DRIFT_KINDS \
                and drift.scene not in config.scene_names:
            raise ValueError(f"SceneDrift.scene={drift.scene!r}: not a scene of this world "
                             f"({', '.join(config.scene_names)})")
        self.config, self.days, self.drift = config, int(days), drift
        self.active_probability = active_probability
        self.world = SceneWorld(config)
        self._before, self._after = self._regimes()

    def _regimes(self) -> Tuple[SceneWorld, SceneWorld]:
        """The world before the drift day and from it on (the same world without a drift)."""
        world, drift = self.world, self.drift
        if drift is None:
            return world, world
        if drift.kind == "popularity_shift":
            return world, world._with_new_popularity()  # pylint: disable=protected-access
        if drift.kind == "new_items":
            return world._without_items(world.launch_items()), world  # pylint: disable=protected-access
        gone = world._without_scene(self.config.scene_names.index(drift.scene))  # pylint: disable=protected-access
        return (world, gone) if drift.kind == "scene_gone" else (gone, world)

    def world_on(self, day: int) -> SceneWorld:
        """The world that draws the events of `day` (1-based; days after the last go on as it)."""
        if day < 1:
            raise ValueError(f"day={day}: days are numbered from 1")
        return self._after if self.drift is not None and day >= self.drift.day else self._before

    def generate(self) -> "SceneDaysLog":
        """Samples every user's events, day by day (deterministic for the config's seed)."""
        c = self.config
        # Day 1 draws from the stream SceneWorld.generate uses: it is that log.
        first_items, first_scenes, states = self.world_on(1)._simulate(  # pylint: disable=protected-access
            np.random.default_rng([c.seed, 2]))
        rng = np.random.default_rng([c.seed, 6])
        lengths = np.array([len(seq) for seq in first_items])
        counts = np.zeros((self.days + 1, c.users), dtype=int)  # counts[day, user], day >= 2
        for day in range(2, self.days + 1):
            active = rng.random(c.users) < self.active_probability
            busy = np.minimum(1 + rng.poisson(lengths - 1), c.max_events)
            counts[day] = np.where(active, busy, 0)
        items = [[seq] for seq in first_items]
        scenes = [[seq] for seq in first_scenes]
        for user in range(c.users):
            state = states[user]
            # A stream per user: the days before a drift are the same as without it.
            user_rng = np.random.default_rng([c.seed, 5, user])
            if self.days > 1:
                # The same adds in the same order as on day 1: the very memory it ended with.
                state.memory = _ReturnMemory(c.scenes, c.items, c.return_decay)
                for item, scene in zip(first_items[user], first_scenes[user]):
                    state.memory.add(scene, item)
            for day in range(2, self.days + 1):
                seq_v, seq_s = self.world_on(day)._continue(  # pylint: disable=protected-access
                    user, state, int(counts[day, user]), user_rng)
                items[user].append(seq_v)
                scenes[user].append(seq_s)
        return SceneDaysLog(items=items, scenes=scenes, world=self)

    def oracle_joint(self, user: int, items: Sequence[int], scenes: Sequence[int],
                     days: Sequence[int], next_day: int) -> np.ndarray:
        """Exact P(next scene, next item | history) [S, N], event t being from `days[t]` and the
        next one from `next_day` (the history's last day, or a later one)."""
        if not len(items) == len(scenes) == len(days):
            raise ValueError(f"items, scenes and days differ in length ({len(items)}, "
                             f"{len(scenes)}, {len(days)})")
        if days and next_day < days[-1]:
            raise ValueError(f"next_day={next_day} is before the history's last day {days[-1]}")
        return self.world._filtered_joint(  # pylint: disable=protected-access
            user, list(items), list(scenes), [self.world_on(d) for d in days],
            self.world_on(next_day))

    def to_json(self, **extra: object) -> str:
        """The config, days and drift (enough to rebuild the days exactly) plus summary fields."""
        return self.world.to_json(
            days=self.days, active_probability=self.active_probability,
            drift=dataclasses.asdict(self.drift) if self.drift is not None else None, **extra)


@dataclasses.dataclass
class SceneDaysLog:
    """Generated events by day: `items[user][day - 1]` is that user's events of that day."""

    items: List[List[List[int]]]
    scenes: List[List[List[int]]]
    world: SceneDays

    @property
    def num_events(self) -> int:
        """Events over all users and days."""
        return sum(len(seq) for days in self.items for seq in days)

    def events_on(self, day: int) -> int:
        """Events of one day (1-based) over all users."""
        return sum(len(days[day - 1]) for days in self.items)

    def sequence(self, user: int, through_day: Optional[int] = None
                 ) -> Tuple[List[int], List[int], List[int]]:
        """One user's continued sequence over days 1..through_day (default: all): items,
        scenes and the day of each event, oldest first."""
        last = self.world.days if through_day is None else through_day
        items, scenes, days = [], [], []
        for day in range(1, last + 1):
            items += self.items[user][day - 1]
            scenes += self.scenes[user][day - 1]
            days += [day] * len(self.items[user][day - 1])
        return items, scenes, days

    def write(self, out_dir: str) -> Dict[str, str]:
        """Writes `events/span-<day>/events.csv` per day (user_id,item_id,scene,timestamp) and
        `world.json`.

        Day d's timestamps fall in the UTC day starting at FIRST_DAY_START + (d - 1) days, each
        user's strictly increasing, so every user's events of a day follow their earlier days'.

        Returns:
          {"events": the events folder, "pattern": its span pattern (`dspnet pipeline run
          --data`), "world": world.json}.
        """
        from dspnet_tf.resilience import atomic_write  # pylint: disable=import-outside-toplevel

        names = self.world.config.scene_names
        rng = np.random.default_rng([self.world.config.seed, 3])
        events_dir = os.path.join(out_dir, "events")
        for day in range(1, self.world.days + 1):
            span_dir = os.path.join(events_dir, SPAN_FOLDER.format(span=day))
            os.makedirs(span_dir, exist_ok=True)
            start = FIRST_DAY_START + (day - 1) * DAY_SECONDS
            # Each file is replaced whole or not at all: never half a day under the final name.
            with atomic_write(os.path.join(span_dir, "events.csv"), newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["user_id", "item_id", "scene", "timestamp"])
                for user, by_day in enumerate(zip(self.items, self.scenes)):
                    seq_v, seq_s = by_day[0][day - 1], by_day[1][day - 1]
                    if not seq_v:
                        continue
                    # Sorted draws plus 0, 1, 2, ...: strictly increasing, inside the day.
                    offsets = np.sort(rng.integers(0, DAY_SECONDS - len(seq_v), len(seq_v)))
                    offsets += np.arange(len(seq_v))
                    for item, scene, offset in zip(seq_v, seq_s, offsets):
                        writer.writerow([f"u{user:06d}", f"i{item:05d}", names[scene],
                                         start + int(offset)])
        world_path = os.path.join(out_dir, "world.json")
        with atomic_write(world_path) as handle:
            handle.write(self.world.to_json(
                users=len(self.items), events=self.num_events,
                events_per_day=[self.events_on(d) for d in range(1, self.world.days + 1)]))
        return {"events": events_dir,
                "pattern": os.path.join(events_dir, SPAN_FOLDER.format(span="{SPAN}"), "*"),
                "world": world_path}


def generate_days(config: SceneWorldConfig, out_dir: str, days: int,
                  drift_day: Optional[int] = None, drift_kind: Optional[str] = None,
                  drift_scene: str = "live") -> Tuple[SceneDaysLog, Dict[str, str]]:
    """Generates `days` days of the world and writes them (see `SceneDaysLog.write`).

    The entry point of `dspnet generate scene-world --days N [--drift-day D --drift-kind K
    --drift-scene S]`.

    Raises:
      ValueError: a bad setting, named (also: a drift day without a kind, or the reverse).
    """
    if (drift_day is None) != (drift_kind is None):
        raise ValueError("a drift needs both a day and a kind (drift_day, drift_kind); got "
                         f"drift_day={drift_day!r}, drift_kind={drift_kind!r}")
    drift = None if drift_kind is None else SceneDrift(drift_day, drift_kind, drift_scene)
    log = SceneDays(config, days=days, drift=drift).generate()
    return log, log.write(out_dir)


def load_scene_days(world_json: str) -> SceneDays:
    """Rebuilds the exact days (and so their oracle) from the `world.json` of a days world."""
    with open(world_json, encoding="utf-8") as handle:
        payload = json.load(handle)
    drift = payload.get("drift")
    return SceneDays(SceneWorldConfig(**payload["scene_world"]), days=payload.get("days", 1),
                     drift=SceneDrift(**drift) if drift else None,
                     active_probability=payload.get("active_probability", 0.8))
