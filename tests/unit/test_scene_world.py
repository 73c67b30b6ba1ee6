"""Scene world: determinism, the behaviour of scenes, and an oracle that is exact."""

import copy
import itertools

import numpy as np
import pytest

from dspnet_tf.data.scene_world import (CART, FAVORITES, LIVE, SEARCH, SceneWorld,
                                        SceneWorldConfig, load_world)


def brute_force_joint(world, user, items, scenes, normalise=True):
    """P(next scene, next item | history) by enumerating every intent and governing-scene path
    (with `normalise=False`: P(history, next scene, next item))."""
    c = world.config
    n_steps = len(items) + 1
    A = world.intent_transitions(user)
    q, m = world.scene_marginal, c.misalignment

    def item_prob(t, k, g, v, hist_v, hist_s):
        base = world.base_item_distribution[g, k, v]
        if g not in (FAVORITES, CART):
            return base
        ages = [(j, hist_v[j]) for j in range(t) if hist_s[j] != g]
        if not ages:
            return base
        weights = np.array([c.return_decay ** (t - 1 - j) for j, _ in ages])
        hit = sum(w for w, (_, vj) in zip(weights, ages) if vj == v)
        return c.return_probability * hit / weights.sum() + (1 - c.return_probability) * base

    joint = np.zeros((c.scenes, c.items))
    for s_next, v_next in itertools.product(range(c.scenes), range(c.items)):
        seq_v, seq_s = list(items) + [v_next], list(scenes) + [s_next]
        p_scenes = world.scene_initial[user][seq_s[0]]
        for t in range(1, n_steps):
            p_scenes *= world.scene_transitions[user, seq_s[t - 1], seq_s[t]]
        total = 0.0
        for ks in itertools.product(range(c.categories), repeat=n_steps):
            p_k = world.user_preference[user][ks[0]]
            for t in range(1, n_steps):
                p_k *= A[ks[t - 1], ks[t]]
            p_items = 1.0
            for t in range(n_steps):
                # Governing scene: the logged one w.p. 1 - m, else one drawn from q.
                p_items *= sum(((1 - m) * (g == seq_s[t]) + m * q[g])
                               * item_prob(t, ks[t], g, seq_v[t], seq_v, seq_s)
                               for g in range(c.scenes))
            total += p_k * p_items
        joint[s_next, v_next] = p_scenes * total
    return joint / joint.sum() if normalise else joint


@pytest.mark.parametrize("misalignment", [0.0, 0.4, 1.0])
def test_oracle_matches_brute_force_enumeration(misalignment):
    world = SceneWorld(SceneWorldConfig(users=4, items=6, categories=2, scenes=6,
                                        misalignment=misalignment, seed=5))
    log = world.generate()  # histories the world can produce (others have probability 0)
    for user in range(4):
        items, scenes = log.items[user][:3], log.scenes[user][:3]
        expected = brute_force_joint(world, user, items, scenes)
        got = world.oracle_joint(user, items, scenes)
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert got.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("misalignment", [0.0, 1.0])
def test_in_scene_oracle_matches_brute_force_conditioning(misalignment):
    world = SceneWorld(SceneWorldConfig(users=3, items=6, categories=2, scenes=6,
                                        misalignment=misalignment, seed=7))
    log = world.generate()
    for user in range(3):
        items, scenes = log.items[user][:3], log.scenes[user][:3]
        joint = brute_force_joint(world, user, items, scenes)
        got = world.oracle_in_scene(user, items, scenes)
        for scene in range(6):
            if joint[scene].sum() > 0:
                np.testing.assert_allclose(got[scene], joint[scene] / joint[scene].sum(),
                                           rtol=1e-9, atol=1e-12)
                assert got[scene].sum() == pytest.approx(1.0)


def test_in_scene_oracle_knows_what_each_surface_shows():
    # Misalignment 0: the live surface shows only live items, search never a live one, and
    # the cart returns to items met in other scenes far more than next-event ranking says.
    world = SceneWorld(SceneWorldConfig(users=5, items=60, categories=3, seed=2))
    log = world.generate()
    items, scenes = log.items[0][:6], log.scenes[0][:6]
    rows = world.oracle_in_scene(0, items, scenes)
    assert rows[LIVE][~world.item_live].sum() == pytest.approx(0.0)
    assert rows[SEARCH][world.item_live].sum() == pytest.approx(0.0)
    returned = [v for v, s in zip(items, scenes) if s != CART]
    next_event = world.oracle(0, items, scenes)[0]
    assert rows[CART][returned].sum() > next_event[returned].sum()
    # Misalignment 1: the scene says nothing about the item, so every row is the next-event one.
    blind = SceneWorld(SceneWorldConfig(users=5, items=60, categories=3, seed=2, misalignment=1.0))
    log = blind.generate()
    rows = blind.oracle_in_scene(0, log.items[0][:6], log.scenes[0][:6])
    next_event = blind.oracle(0, log.items[0][:6], log.scenes[0][:6])[0]
    for row in rows:
        np.testing.assert_allclose(row, next_event, atol=1e-12)


def test_oracle_rejects_an_impossible_history():
    world = SceneWorld(SceneWorldConfig(users=1, items=6, categories=2, seed=5))
    not_live = int(np.flatnonzero(~world.item_live)[0])
    with pytest.raises(ValueError, match="probability zero"):
        world.oracle(0, [not_live], [LIVE])


def test_oracle_with_empty_history_is_the_prior():
    world = SceneWorld(SceneWorldConfig(users=2, items=6, categories=2, seed=1))
    p_item, p_scene = world.oracle(1, [], [])
    np.testing.assert_allclose(p_scene, world.scene_initial[1])
    assert p_item.sum() == pytest.approx(1.0)


def test_generation_is_deterministic_for_a_seed_and_long_tailed():
    config = SceneWorldConfig(users=300, items=200, categories=8, seed=3)
    a, b = SceneWorld(config).generate(), SceneWorld(config).generate()
    assert a.items == b.items and a.scenes == b.scenes
    c = SceneWorld(SceneWorldConfig(users=300, items=200, categories=8, seed=4)).generate()
    assert a.items != c.items
    lengths = np.array([len(s) for s in a.items])
    assert lengths.min() >= 5 and lengths.max() <= 200
    assert np.mean(lengths) > np.median(lengths)  # right-skewed: a long tail of heavy users


def test_scenes_behave_as_specified():
    world = SceneWorld(SceneWorldConfig(users=2000, items=300, categories=10, seed=2))
    log = world.generate()
    live_hits = returns = returns_total = 0
    for seq_v, seq_s in zip(log.items, log.scenes):
        for t, (v, s) in enumerate(zip(seq_v, seq_s)):
            if s == LIVE:
                live_hits += world.item_live[v]
            if s in (FAVORITES, CART) and any(seq_s[j] != s for j in range(t)):
                returns_total += 1
                returns += v in {seq_v[j] for j in range(t) if seq_s[j] != s}
    live_total = sum(s.count(LIVE) for s in log.scenes)
    assert live_hits == live_total  # live draws only from the live catalog (m = 0)
    assert returns / returns_total > 0.8  # favorites/cart mostly return to items met elsewhere


def test_misalignment_one_makes_the_next_scene_uninformative_about_the_item():
    world = SceneWorld(SceneWorldConfig(users=5, items=40, categories=4, misalignment=1.0, seed=0))
    joint = world.oracle_joint(0, [1, 2, 3], [SEARCH, LIVE, CART])
    conditional = joint / joint.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(conditional, np.broadcast_to(conditional[0], conditional.shape), atol=1e-12)


def test_written_log_round_trips_to_the_same_world(tmp_path):
    config = SceneWorldConfig(users=20, items=60, categories=3, seed=9)
    log = SceneWorld(config).generate()
    paths = log.write(str(tmp_path))
    lines = open(paths["events"]).read().splitlines()
    assert lines[0] == "user_id,item_id,scene,timestamp"
    assert len(lines) == 1 + log.num_events
    rebuilt = load_world(paths["world"])
    assert rebuilt.config == config
    np.testing.assert_array_equal(rebuilt.user_preference, SceneWorld(config).user_preference)


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="misalignment"):
        SceneWorldConfig(misalignment=1.5)


def _true_habit_row(world, user, scene):
    c = world.config
    return ((world.scene_transitions[user, scene]
             - (1 - c.habit_weight) * world.base_scene_transitions[scene]) / c.habit_weight)


def test_population_oracle_with_the_users_own_parameters_is_the_oracle():
    world = SceneWorld(SceneWorldConfig(users=3, items=40, categories=4, seed=2))
    log = world.generate()
    for user in range(3):
        items, scenes = log.items[user][:-1], log.scenes[user][:-1]
        joint, ess = world.population_joint(
            items, scenes, world.user_preference[user][None],
            _true_habit_row(world, user, scenes[-1])[None])
        np.testing.assert_allclose(joint, world.oracle_joint(user, items, scenes), atol=1e-12)
        assert ess == {"preference_ess": 1.0, "habit_ess": 1.0}


@pytest.mark.parametrize("misalignment", [0.0, 0.5])
def test_population_oracle_matches_brute_force_over_parameter_draws(misalignment):
    """Every (preference, habit row) draw is a world of its own: the population joint is the
    brute-force joint of each, weighted by how likely each makes the history."""
    world = SceneWorld(SceneWorldConfig(users=3, items=6, categories=2, scenes=6,
                                        misalignment=misalignment, seed=7))
    log = world.generate()
    rng = np.random.default_rng(0)
    preferences = rng.dirichlet(np.full(2, 0.3), 3)
    habits = rng.dirichlet(np.ones(6), 2)
    c = world.config
    for user in range(2):
        items, scenes = log.items[user][:3], log.scenes[user][:3]
        total = np.zeros((c.scenes, c.items))
        for preference, habit in itertools.product(preferences, habits):
            variant = copy.deepcopy(world)
            variant.user_preference[user] = preference
            variant.scene_transitions[user, scenes[-1]] = (
                c.habit_weight * habit
                + (1 - c.habit_weight) * world.base_scene_transitions[scenes[-1]])
            total += brute_force_joint(variant, user, items, scenes, normalise=False)
        joint, ess = world.population_joint(items, scenes, preferences, habits)
        np.testing.assert_allclose(joint, total / total.sum(), rtol=1e-9, atol=1e-12)
        assert 1.0 <= ess["preference_ess"] <= 3.0 and 1.0 <= ess["habit_ess"] <= 2.0
