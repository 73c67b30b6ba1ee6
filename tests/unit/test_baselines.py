"""Baselines built from the library's layers, most-popular, and the early-stopping loop."""

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import BASELINES, ConfigError, DSPnet, DSPnetConfig
from dspnet_tf.data.event_log import EventLog
from dspnet_tf.data.splits import leave_one_out
from dspnet_tf.evaluation import rank_last_events
from dspnet_tf.layers import GRUSequenceEncoder
from dspnet_tf.models.most_popular import MostPopular
from dspnet_tf.training import fit_with_early_stopping

RNG = np.random.default_rng(11)


def base_config(**changes):
    values = dict(item_vocab_size=25, scene_vocab_size=6, max_len=6, item_dim=8, scene_dim=4,
                  num_blocks=1, dropout=0.0, sfe_hidden=8)
    values.update(changes)
    return DSPnetConfig(**values)


def test_baseline_configs_switch_off_the_scene_network_and_regularisers():
    for name in BASELINES:
        config = base_config().as_baseline(name)
        assert not config.use_scene_network and not config.use_ccr and not config.use_adversarial
    assert base_config().as_baseline("sasrec_scene").scene_attribute
    assert base_config().as_baseline("gru4rec").encoder == "gru"
    with pytest.raises(ConfigError, match="unknown baseline"):
        base_config().as_baseline("itemknn")


def _inputs():
    items = RNG.integers(2, 25, size=(4, 6))
    items[1, :2] = 0
    scenes = RNG.integers(2, 6, size=(4, 6))
    return items, scenes


def test_sasrec_ignores_scenes_and_sasrec_scene_reads_them():
    items, scenes = _inputs()
    other_scenes = np.where(items > 0, RNG.integers(2, 6, size=scenes.shape), 0)
    for name, reads_scenes in (("sasrec", False), ("sasrec_scene", True), ("gru4rec", False)):
        model = DSPnet(base_config().as_baseline(name))
        a = model({"item_ids": items, "scene_ids": scenes})["item_logits"].numpy()
        b = model({"item_ids": items, "scene_ids": other_scenes})["item_logits"].numpy()
        assert (not np.allclose(a, b, atol=1e-6)) == reads_scenes, name


def test_gru_encoder_is_causal_ignores_padding_and_round_trips():
    encoder = GRUSequenceEncoder(vocab_size=25, dim=8, dropout=0.0)
    items, _ = _inputs()
    base = encoder(tf.constant(items)).numpy()
    changed = items.copy()
    changed[:, 4:] = RNG.integers(2, 25, size=changed[:, 4:].shape)
    out = encoder(tf.constant(changed)).numpy()
    np.testing.assert_allclose(out[:, :4], base[:, :4], atol=1e-6)
    np.testing.assert_array_equal(base[1, :2], 0.0)
    clone = GRUSequenceEncoder.from_config(encoder.get_config())
    clone(tf.constant(items))
    clone.set_weights(encoder.get_weights())
    np.testing.assert_allclose(clone(tf.constant(items)).numpy(), base, atol=1e-6)


def test_gru4rec_saves_and_loads(tmp_path):
    model = DSPnet(base_config().as_baseline("gru4rec"))
    items, scenes = _inputs()
    expected = model({"item_ids": items, "scene_ids": scenes})["item_logits"].numpy()
    model.save(str(tmp_path / "gru"))
    loaded = tf.keras.models.load_model(str(tmp_path / "gru"))
    np.testing.assert_array_equal(
        loaded({"item_ids": items, "scene_ids": scenes})["item_logits"].numpy(), expected)


def test_most_popular_ranks_by_training_frequency_with_pessimistic_ties():
    model = MostPopular([[2, 3, 3], [3, 4]], [[2, 2, 3], [3, 3]], item_vocab_size=6, scene_vocab_size=4)
    ranks = rank_last_events(model, [[2, 3], [2, 4], [2, 5]], [[2, 2], [2, 3], [2, 2]], max_len=4)
    # Item 3 (3 times) ranks 1; 2 and 4 tie at rank 3 (pessimistic); unseen 1 and 5 tie at 5.
    np.testing.assert_array_equal(ranks["item_rank"], [1, 3, 5])
    np.testing.assert_array_equal(ranks["scene_rank"], [2, 1, 2])


def test_early_stopping_keeps_the_best_validation_weights():
    rows = []
    for user in range(60):
        for t in range(8):
            rows.append((f"u{user}", f"i{(user + t) % 12}", f"s{t % 3}", t))
    split = leave_one_out(EventLog.from_rows(rows))
    config = DSPnetConfig(item_vocab_size=len(split.item_vocab), scene_vocab_size=len(split.scene_vocab),
                          max_len=8, item_dim=8, scene_dim=4, num_blocks=1, item_loss="softmax")
    seen = []
    result = fit_with_early_stopping(config, split, epochs=4, patience=2, batch_size=32,
                                     learning_rate=1e-2, on_epoch=seen.append)
    assert [r["epoch"] for r in result["history"]] == [r["epoch"] for r in seen]
    best = max(r["valid_ndcg@10"] for r in result["history"])
    assert result["valid"]["valid_ndcg@10"] == best
    assert len(result["test_ranks"]["item_rank"]) == 60
