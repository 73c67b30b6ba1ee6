"""The repeat pointer: numpy references for the layer and the mixture, and the model around it."""

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import ConfigError, DSPnet, DSPnetConfig
from dspnet_tf.config import REPEAT_POINTER_MIN_SHARE
from dspnet_tf.data import make_dataset, repeat_target_share
from dspnet_tf.evaluation import evaluate_last_events
from dspnet_tf.layers import RepeatPointer
from dspnet_tf.layers.repeat_pointer import mixture_log_probs, target_log_likelihood

RNG = np.random.default_rng(11)


def _log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def _numpy_pointer(layer, query_states, key_states, valid):
    """The layer's gate and pointer written out with numpy (probabilities, not logs)."""
    wq, bq = (w.numpy() for w in layer.query_projection.weights)
    wk, bk = (w.numpy() for w in layer.key_projection.weights)
    wg, bg = (w.numpy() for w in layer.gate.weights)
    bias = layer.distance_bias.numpy()
    batch, queries, _ = query_states.shape
    length = key_states.shape[1]
    gate = np.zeros((batch, queries))
    pointer = np.zeros((batch, queries, length))
    for b in range(batch):
        for q in range(queries):
            position = length - queries + q
            allowed = [j for j in range(length) if j <= position and valid[b, j]]
            if not allowed:
                continue  # no earlier event: gate 0, no pointer mass
            query = query_states[b, q] @ wq + bq
            scores = np.array([(query @ (key_states[b, j] @ wk + bk)) / np.sqrt(layer.key_dim)
                               + bias[min(position - j, layer.max_len)] for j in allowed])
            weights = np.exp(scores - scores.max())
            pointer[b, q, allowed] = weights / weights.sum()
            gate[b, q] = 1.0 / (1.0 + np.exp(-(query_states[b, q] @ wg + bg)[0]))
    return gate, pointer


def _pointer_with_random_weights(key_dim=4, max_len=6, query_dim=5, key_width=7):
    layer = RepeatPointer(key_dim=key_dim, max_len=max_len)
    layer(tf.zeros([1, 1, query_dim]), tf.zeros([1, 2, key_width]), tf.ones([1, 2], tf.bool))
    layer.set_weights([RNG.normal(size=w.shape).astype(np.float32) for w in layer.weights])
    return layer


def test_gate_and_pointer_match_a_numpy_reference_and_respect_padding_and_causality():
    layer = _pointer_with_random_weights()
    query_states = RNG.normal(size=(3, 6, 5)).astype(np.float32)
    key_states = RNG.normal(size=(3, 6, 7)).astype(np.float32)
    valid = np.ones((3, 6), bool)
    valid[1, :2] = False  # left padding
    valid[2, :] = False   # an empty history
    log_gate, log_keep, log_pointer = layer(query_states, key_states, valid)
    gate, pointer = _numpy_pointer(layer, query_states, key_states, valid)
    np.testing.assert_allclose(np.exp(log_gate.numpy()), gate, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_keep.numpy()), 1.0 - gate, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_pointer.numpy()), pointer, atol=1e-5)
    # Only the last query of a history, as at serving time: the same answer as its row above.
    last = layer(query_states[:, -1:], key_states, valid)
    np.testing.assert_allclose(np.exp(last[2].numpy()[:, 0]), pointer[:, -1], atol=1e-5)
    assert np.all(pointer[:, 2, 3:] == 0)  # never a later event
    assert np.all(gate[2] == 0) and np.all(pointer[1, :, :2] == 0)


def _numpy_mixture(logits, history, gate, pointer):
    catalog = np.exp(logits - logits.max(-1, keepdims=True))
    catalog /= catalog.sum(-1, keepdims=True)
    mixture = (1.0 - gate)[:, None] * catalog
    for b in range(history.shape[0]):
        for j, item in enumerate(history[b]):
            mixture[b, item] += gate[b] * pointer[b, j]
    return mixture


def test_mixture_matches_numpy_and_its_target_likelihood_is_the_same_distribution():
    layer = _pointer_with_random_weights(max_len=5)
    vocab, length = 9, 5
    history = np.array([[0, 0, 3, 4, 3], [2, 5, 6, 7, 8], [0, 0, 0, 0, 4]], np.int32)
    valid = history > 0
    query_states = RNG.normal(size=(3, length, 5)).astype(np.float32)
    key_states = RNG.normal(size=(3, length, 7)).astype(np.float32)
    logits = RNG.normal(size=(3, length, vocab)).astype(np.float32)
    log_gate, log_keep, log_pointer = layer(query_states, key_states, valid)
    gate, pointer = _numpy_pointer(layer, query_states, key_states, valid)

    # Ranking the catalog from the last position: log of the numpy mixture, summing to 1.
    ranked = mixture_log_probs(logits[:, -1], history, log_gate[:, -1], log_keep[:, -1],
                               log_pointer[:, -1]).numpy()
    expected = _numpy_mixture(logits[:, -1], history, gate[:, -1], pointer[:, -1])
    np.testing.assert_allclose(np.exp(ranked), expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.exp(ranked).sum(-1), 1.0, atol=1e-5)
    # Item 3 appears twice in row 0: both events add their pointer mass.
    assert expected[0, 3] > (1 - gate[0, -1]) * np.exp(logits[0, -1, 3]) / np.exp(
        logits[0, -1]).sum() + gate[0, -1] * max(pointer[0, -1, 2], pointer[0, -1, 4])

    # Training's per-position likelihood of every possible target is the same mixture.
    for target in range(vocab):
        targets = np.full((3, length), target, np.int32)
        got = target_log_likelihood(logits, targets, history, log_gate, log_keep,
                                    log_pointer).numpy()
        for q in range(length):
            # Query q only sees the history up to its own position.
            seen = np.where(np.arange(length) <= q, history, 0)
            want = _numpy_mixture(logits[:, q], seen, gate[:, q], pointer[:, q])[:, target]
            np.testing.assert_allclose(np.exp(got[:, q]), want, rtol=1e-4, atol=1e-7)


def _config(**changes):
    values = dict(item_vocab_size=30, scene_vocab_size=6, max_len=8, item_dim=8, scene_dim=4,
                  num_blocks=1, num_heads=2, dropout=0.0, sfe_hidden=12, ccr_context_dim=4,
                  discriminator_hidden=8, seed=1, item_loss="softmax", repeat_pointer=True)
    values.update(changes)
    return DSPnetConfig(**values)


def test_the_pointer_is_on_with_the_softmax_loss_unless_switched_off_and_needs_it():
    assert _config(repeat_pointer=None).uses_repeat_pointer
    assert not _config(repeat_pointer=None, item_loss="sampled_bce").uses_repeat_pointer
    assert not _config(repeat_pointer=None).with_ablation("no_repeat").uses_repeat_pointer
    # The single-sequence baselines stay as published; sasrec_repeat is the one with it.
    assert not _config(repeat_pointer=None).as_baseline("sasrec").uses_repeat_pointer
    assert _config(repeat_pointer=None).as_baseline("sasrec_repeat").uses_repeat_pointer
    with pytest.raises(ConfigError, match="repeat_pointer.*not 'sampled_bce'"):
        _config(item_loss="sampled_bce")


def test_the_default_pointer_is_left_out_of_a_log_without_repeats():
    # None = the log's repeats are unknown (a Keras user's own config): the pointer stays on.
    assert _config(repeat_pointer=None, training_repeat_share=None).uses_repeat_pointer
    assert _config(repeat_pointer=None, training_repeat_share=REPEAT_POINTER_MIN_SHARE
                   ).uses_repeat_pointer
    assert not _config(repeat_pointer=None, training_repeat_share=0.0).uses_repeat_pointer
    assert not _config(repeat_pointer=None, training_repeat_share=0.5,
                       item_loss="sampled_bce").uses_repeat_pointer
    # An explicit switch wins over the data.
    assert _config(repeat_pointer=True, training_repeat_share=0.0).uses_repeat_pointer
    # The fair baselines get the pointer by DSPnet's own rule: where the log has repeats.
    for name in ("sasrec_repeat", "gru4rec_repeat", "sasrec_repeat_target",
                 "sasrec_scene_repeat_target"):
        assert not _config(repeat_pointer=None, training_repeat_share=0.0
                           ).as_baseline(name).uses_repeat_pointer
        assert _config(repeat_pointer=None, training_repeat_share=0.4
                       ).as_baseline(name).uses_repeat_pointer
    with pytest.raises(ConfigError, match="training_repeat_share"):
        _config(training_repeat_share=1.5)
    kept = _config(repeat_pointer=None, training_repeat_share=0.0)
    assert DSPnetConfig.from_json(kept.to_json()) == kept
    assert DSPnet(kept).repeat_pointer is None


def _numpy_repeat_share(sequences):
    """Reference: per target position, is the item among the earlier real ids of its row."""
    repeats = targets = 0
    for row in sequences:
        real = [int(v) for v in row if v >= 2]
        for t in range(1, len(real)):
            targets += 1
            repeats += real[t] in real[:t]
    return repeats / targets if targets else 0.0


def test_repeat_target_share_counts_next_events_already_in_the_users_history():
    assert repeat_target_share([[2, 3, 2, 4, 3]]) == pytest.approx(2 / 4)
    # Left padding (0) and the OOV bucket (1) are neither targets nor history.
    assert repeat_target_share(np.array([[0, 0, 2, 3, 2], [0, 1, 1, 5, 6]])) == pytest.approx(1 / 3)
    assert repeat_target_share([[7], [], [0, 0]]) == 0.0
    rng = np.random.default_rng(3)
    rows = [rng.integers(0, 12, size=rng.integers(0, 15)) for _ in range(200)]
    assert repeat_target_share(rows) == pytest.approx(_numpy_repeat_share(rows))


@pytest.mark.parametrize("baseline", [None, "sasrec_repeat"])
def test_model_scores_are_log_probabilities_and_survive_a_savedmodel_round_trip(
        baseline, tmp_path):
    config = _config().as_baseline(baseline) if baseline else _config()
    model = DSPnet(config)
    model.compile(optimizer="adam")
    items = RNG.integers(2, 30, size=(6, 9)).astype(np.int32)
    items[1, :4] = 0
    data = {"item_ids": items, "scene_ids": np.where(items > 0, 3, 0).astype(np.int32)}
    model.fit(tf.data.Dataset.from_tensors(data), epochs=2, verbose=0)
    history = {key: value[:, 1:] for key, value in data.items()}
    scores = model(history)["item_logits"].numpy()
    np.testing.assert_allclose(np.exp(scores).sum(-1), 1.0, atol=1e-5)
    path = str(tmp_path / "saved")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    np.testing.assert_allclose(loaded(history)["item_logits"].numpy(), scores, atol=1e-5)
    # evaluate() ranks with the same mixture the served scores come from.
    results = model.evaluate(tf.data.Dataset.from_tensors(data), return_dict=True, verbose=0)
    assert np.isfinite(results["item_loss"]) and 0.0 <= results["ndcg_at_10"] <= 1.0


@pytest.mark.learning
def test_pointer_learns_to_return_to_an_item_of_the_history():
    # Each user's next item is the one they met three events earlier, among 500 items: the
    # pointer only has to learn "distance 3", whatever the items are.
    users, length, vocab = 3000, 12, 500
    period = RNG.integers(2, vocab, size=(users, 3))
    items = np.tile(period, (1, length // 3 + 1))[:, :length]
    scenes = np.full_like(items, 2)
    tf.keras.utils.set_random_seed(0)
    config = DSPnetConfig(item_vocab_size=vocab, scene_vocab_size=3, max_len=10, item_dim=16,
                          scene_dim=4, item_loss="softmax",
                          repeat_pointer=True).as_baseline("sasrec_repeat")
    model = DSPnet(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3))
    model.fit(make_dataset(items[:2500].tolist(), scenes[:2500].tolist(), 10, batch_size=128),
              epochs=8, verbose=0)
    metrics = evaluate_last_events(model, items[2500:].tolist(), scenes[2500:].tolist(), 10)
    print(f"\nreturn-to-history world: SASRec + repeat pointer HR@1 {metrics['hr@1']:.3f}")
    assert metrics["hr@1"] >= 0.95, metrics


def test_fit_settles_a_pointer_left_to_the_data_and_the_saved_model_keeps_the_choice(tmp_path):
    """A Keras user's config (share unknown): the first fit counts the repeats of its data."""
    rng = np.random.default_rng(0)
    distinct = [list(rng.permutation(np.arange(2, 40))[:12]) for _ in range(64)]  # no repeats
    repeating = [[2, 3, 2, 3, 2, 3, 4, 2, 3, 2, 3, 2] for _ in range(64)]
    scenes = [list(rng.integers(2, 5, size=12)) for _ in range(64)]
    config = DSPnetConfig(item_vocab_size=40, scene_vocab_size=5, max_len=12, item_dim=16,
                          scene_dim=8, num_blocks=1, num_heads=1)
    assert config.repeat_pointer is None and config.training_repeat_share is None
    model = DSPnet(config)
    model.compile(optimizer="adam")
    assert model.repeat_pointer is not None
    model.fit(make_dataset(distinct, scenes, max_len=12, batch_size=16), epochs=1, verbose=0)
    assert model.repeat_pointer is None
    assert model.dspnet_config.training_repeat_share == pytest.approx(
        repeat_target_share(distinct)) and model.dspnet_config.training_repeat_share == 0.0
    histories = {"item_ids": np.array(distinct[:3])[:, :11],
                 "scene_ids": np.array(scenes[:3])[:, :11]}
    answer = model(histories)["item_logits"].numpy()
    model.save(str(tmp_path / "model"))
    loaded = tf.keras.models.load_model(str(tmp_path / "model"))
    assert loaded.repeat_pointer is None and loaded.dspnet_config.training_repeat_share == 0.0
    np.testing.assert_allclose(loaded(histories)["item_logits"].numpy(), answer, atol=1e-6)

    with_repeats = DSPnet(config)
    with_repeats.compile(optimizer="adam")
    with_repeats.fit(make_dataset(repeating, scenes, max_len=12, batch_size=16), epochs=1,
                     verbose=0)
    assert with_repeats.repeat_pointer is not None
    assert with_repeats.dspnet_config.training_repeat_share == pytest.approx(
        repeat_target_share(repeating))
    # A config that states the pointer (or the share) is never second-guessed.
    stated = DSPnet(config.replace(repeat_pointer=True))
    stated.compile(optimizer="adam")
    stated.fit(make_dataset(distinct, scenes, max_len=12, batch_size=16), epochs=1, verbose=0)
    assert stated.repeat_pointer is not None and stated.dspnet_config.training_repeat_share is None
