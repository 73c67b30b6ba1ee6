"""Baselines built from the library's layers, most-popular, and the early-stopping loop."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import BASELINES, ConfigError, DSPnet, DSPnetConfig
from dspnet_tf.data.event_log import EventLog
from dspnet_tf.data.sequences import left_pad
from dspnet_tf.data.splits import leave_one_out
from dspnet_tf.evaluation import rank_last_events
from dspnet_tf.evaluation.quality_benchmark import model_config
from dspnet_tf.layers import GRUSequenceEncoder
from dspnet_tf.models import BERT4Rec
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
        config = base_config(item_loss="softmax").as_baseline(name)
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
    for name, reads_scenes in (("sasrec", False), ("sasrec_scene", True), ("gru4rec", False),
                               ("gru4rec_scene", True), ("gru4rec_scene_repeat_target", True)):
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


@pytest.mark.parametrize("name", ["dspnet", "sasrec", "sasrec_scene", "sasrec_repeat",
                                  "gru4rec", "bert4rec"])
def test_scoring_in_length_sorted_batches_equals_scoring_each_history_padded_to_max_len(name):
    # Known answer: each user's ranks from the logits of its own history left padded to
    # max_len. rank_last_events batches users by history length and pads a batch only to its
    # longest history; histories longer than max_len (users 0 and 1; user 2's is exactly
    # max_len) keep their last max_len events.
    # The benchmark's own name -> config mapping (bert4rec shares SASRec's widths).
    base = base_config(item_loss="softmax").to_dict()
    # A training log with repeats, so the default DSPnet keeps its pointer.
    vocabularies = SimpleNamespace(item_vocab=range(base.pop("item_vocab_size")),
                                   scene_vocab=range(base.pop("scene_vocab_size")),
                                   training_repeat_share=0.5)
    config = model_config(name, vocabularies, base)
    assert config.uses_repeat_pointer == (name in ("dspnet", "sasrec_repeat"))
    model = BERT4Rec(config) if name == "bert4rec" else DSPnet(config)
    lengths = [12, 9, 7, 2, 3, 5, 2, 4, 6, 3]
    sequences_i = [list(RNG.integers(2, 25, size=n)) for n in lengths]
    sequences_s = [list(RNG.integers(2, 6, size=n)) for n in lengths]
    ranks = rank_last_events(model, sequences_i, sequences_s, max_len=6, batch_size=3)
    for user, (seq_i, seq_s) in enumerate(zip(sequences_i, sequences_s)):
        out = model({"item_ids": left_pad([seq_i[:-1]], 6), "scene_ids": left_pad([seq_s[:-1]], 6)},
                    training=False)
        for key, logits, target in (("item_rank", out["item_logits"].numpy()[0], seq_i[-1]),
                                    ("scene_rank", out["scene_logits"].numpy()[0], seq_s[-1])):
            assert ranks[key][user] == (logits >= logits[target]).sum(), (name, user, key)


def test_rank_last_events_in_a_graph_equals_the_eager_ranks_and_traces_once():
    # Known answer: the pessimistic rank of each user's last item and scene under the model's
    # eager logits; a batch smaller than the user count covers the partial last batch.
    model = DSPnet(base_config())
    items, scenes = _inputs()
    sequences_i = [list(row[row > 0]) for row in items]
    sequences_s = [list(row[row > 0]) for row in scenes]
    ranks = rank_last_events(model, sequences_i, sequences_s, max_len=5, batch_size=3)
    again = rank_last_events(model, sequences_i, sequences_s, max_len=5, batch_size=3)
    history_i = np.zeros((4, 5), np.int32)
    history_s = np.zeros((4, 5), np.int32)
    for row, (seq_i, seq_s) in enumerate(zip(sequences_i, sequences_s)):
        history_i[row, 5 - len(seq_i) + 1:] = seq_i[:-1]
        history_s[row, 5 - len(seq_s) + 1:] = seq_s[:-1]
    out = model({"item_ids": history_i, "scene_ids": history_s}, training=False)
    for key, logits, seqs in (("item_rank", out["item_logits"].numpy(), sequences_i),
                              ("scene_rank", out["scene_logits"].numpy(), sequences_s)):
        target = np.array([seq[-1] for seq in seqs])
        expected = (logits >= logits[np.arange(4), target][:, None]).sum(axis=1)
        np.testing.assert_array_equal(ranks[key], expected)
        np.testing.assert_array_equal(again[key], expected)
    from dspnet_tf.evaluation.leave_one_out import _graph_ranker
    assert _graph_ranker(model).experimental_get_tracing_count() == 1


def test_early_stopping_keeps_the_best_validation_weights():
    rows = []
    for user in range(60):
        for t in range(8):
            rows.append((f"u{user}", f"i{(user + t) % 12}", f"s{t % 3}", t))
    split = leave_one_out(EventLog.from_rows(rows))
    config = DSPnetConfig(item_vocab_size=len(split.item_vocab), scene_vocab_size=len(split.scene_vocab),
                          max_len=8, item_dim=8, scene_dim=4, num_blocks=1, item_loss="softmax")
    models, seen, snapshots = [], [], {}

    class ZeroedAfterTheFirstEpoch(DSPnet):  # pylint: disable=abstract-method
        def fit(self, *args, **kwargs):
            if int(self.optimizer.iterations) > 0:
                # Known answer: epoch 1 is the best. Zero weights, kept by a zero learning
                # rate, score every item alike: pessimistic ranks miss the top 10 afterwards.
                self.set_weights([np.zeros_like(w) for w in self.get_weights()])
                self.optimizer.learning_rate.assign(0.0)
            return super().fit(*args, **kwargs)

    def build(model_config):
        models.append(ZeroedAfterTheFirstEpoch(model_config))
        return models[-1]

    def on_epoch(record):
        # The weights this epoch was validated with.
        seen.append(record)
        snapshots[record["epoch"]] = [w.copy() for w in models[0].get_weights()]

    result = fit_with_early_stopping(config, split, epochs=4, patience=2, batch_size=32,
                                     learning_rate=1e-2, on_epoch=on_epoch, model_factory=build)
    assert [r["epoch"] for r in result["history"]] == [r["epoch"] for r in seen] == [1, 2, 3]
    best = max(r["valid_ndcg@10"] for r in result["history"])
    assert result["valid"]["valid_ndcg@10"] == best > 0
    assert result["best_epoch"] == 1 and [r["valid_ndcg@10"] for r in seen[1:]] == [0.0, 0.0]
    # The returned model holds the best epoch's weights, not the last epoch's (all zeros).
    assert result["model"] is models[0]
    final = result["model"].get_weights()
    assert len(final) == len(snapshots[1])
    for got, expected in zip(final, snapshots[1]):
        np.testing.assert_array_equal(got, expected)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[3], snapshots[1]))
    assert len(result["test_ranks"]["item_rank"]) == 60


def test_bert4rec_reads_both_directions_and_predicts_at_an_appended_mask():
    from dspnet_tf.models import BERT4Rec

    model = BERT4Rec(base_config(), num_sampled=5)
    items, scenes = _inputs()
    logits = model({"item_ids": items, "scene_ids": scenes})["item_logits"].numpy()
    # Known answer: the logits are the head's query at [history..., MASK] times the item table.
    window = np.concatenate([items, np.full((4, 1), model.mask_token)], axis=1)[:, -6:]
    states = model.item_encoder(tf.constant(window), padding_mask=tf.constant(window > 0))
    query = model.item_head(states[:, -1]).numpy()
    table = model.item_encoder.embeddings.numpy()[:25]
    np.testing.assert_allclose(logits[:, 1:], (query @ table.T)[:, 1:], rtol=1e-5, atol=1e-5)
    assert (logits[:, 0] < -1e8).all()
    # Bidirectional: changing the OLDEST event changes every position's state.
    changed = window.copy()
    changed[:, 2] = np.where(changed[:, 2] > 0, (changed[:, 2] % 20) + 3, 0)
    other = model.item_encoder(tf.constant(changed), padding_mask=tf.constant(changed > 0)).numpy()
    assert not np.allclose(other[0, :2], states.numpy()[0, :2], atol=1e-6)
    # Scenes are ignored; the scene logits are uniform over real scenes.
    out = model({"item_ids": items, "scene_ids": np.zeros_like(scenes)})
    np.testing.assert_allclose(out["item_logits"].numpy(), logits, atol=1e-6)
    assert np.ptp(out["scene_logits"].numpy()[:, 1:]) == 0


def test_bert4rec_learns_a_deterministic_successor_and_round_trips(tmp_path):
    from dspnet_tf.data import make_dataset
    from dspnet_tf.models import BERT4Rec

    tf.keras.utils.set_random_seed(3)
    # Item i is always followed by item i + 1 (ids 2..21): the cloze task must learn it.
    sequences = [[2 + (start + t) % 20 for t in range(6)] for start in range(20)] * 10
    model = BERT4Rec(base_config(max_len=6, item_dim=32, num_heads=2), num_sampled=8,
                     mask_ratio=0.3)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.003))
    dataset = make_dataset(sequences, sequences, max_len=6, batch_size=50)
    history = model.fit(dataset, epochs=150, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]
    histories = np.array([[2 + (s + t) % 20 for t in range(5)] for s in range(20)])
    predicted = model({"item_ids": histories, "scene_ids": histories})["item_logits"].numpy()
    expected = 2 + (np.arange(20) + 5) % 20
    assert (predicted.argmax(axis=1) == expected).mean() >= 0.8

    model.save(str(tmp_path / "bert4rec"))
    loaded = tf.keras.models.load_model(str(tmp_path / "bert4rec"))
    np.testing.assert_allclose(
        loaded({"item_ids": histories, "scene_ids": histories})["item_logits"].numpy(),
        predicted, atol=1e-5)
    clone = BERT4Rec.from_config(model.get_config())
    assert clone.mask_ratio == 0.3 and clone.num_sampled == 8


def test_training_windows_predict_every_event_once():
    from dspnet_tf.data.sequences import training_windows

    items = [list(range(10, 21)), [1, 2, 3]]
    windows, scenes = training_windows(items, [[s + 100 for s in seq] for seq in items], window=4)
    assert windows == [[17, 18, 19, 20], [14, 15, 16, 17], [11, 12, 13, 14], [10, 11],
                       [1, 2, 3]]
    # Each window of n events trains n - 1 targets; together they cover events 1..10 once.
    targets = [event for w in windows[:-1] for event in w[1:]]
    assert sorted(targets) == list(range(11, 21))
    assert windows[-1] == [1, 2, 3] and scenes[-1] == [101, 102, 103]
    assert all(len(w) <= 4 for w in windows)
    with pytest.raises(ValueError, match="window"):
        training_windows(items, items, window=1)
    # Stride 1: one window per prefix (RecBole's examples), the most recent `window` events.
    prefixes, _ = training_windows([list(range(10, 16))], [list(range(6))], window=3, stride=1)
    assert prefixes == [[13, 14, 15], [12, 13, 14], [11, 12, 13], [10, 11, 12]]
    with pytest.raises(ValueError, match="stride"):
        training_windows(items, items, window=4, stride=4)


def test_length_bucketed_batches_hold_every_sequence_once_left_padded():
    from dspnet_tf.data import left_pad, make_dataset
    from dspnet_tf.data.sequences import training_windows

    lengths = RNG.integers(1, 40, size=300)
    items = [list(RNG.integers(2, 99, size=n)) for n in lengths]
    scenes = [[i % 5 + 1 for i in seq] for seq in items]
    seen = []
    for batch in make_dataset(items, scenes, max_len=30, batch_size=32, bucket_by_length=True):
        ids, sc = batch["item_ids"].numpy(), batch["scene_ids"].numpy()
        # max_len inputs + the event after the last one; left padded, latest event last.
        assert ids.shape[1] <= 31 and (ids[:, -1] > 0).all()
        # The batch is padded to its own longest history, not to max_len + 1.
        assert ids.shape[1] == (ids > 0).sum(axis=1).max()
        np.testing.assert_array_equal(np.where(ids > 0, ids % 5 + 1, 0), sc)
        seen += [tuple(row[row > 0]) for row in ids]
    # Histories longer than max_len + 1 are cut into windows: every event a target once.
    windows, _ = training_windows(items, scenes, window=31)
    expected = [tuple(row[row > 0]) for row in left_pad(windows, 31)]
    assert len(windows) > len(items) and sorted(seen) == sorted(expected)


def test_make_dataset_trains_every_event_of_a_long_history_once_unless_told_otherwise():
    from dspnet_tf.data import make_dataset

    history = list(range(2, 122))  # 120 events, max_len 50: windows of 51 events
    rows = [r for batch in make_dataset([history], [[2] * 120], max_len=50, shuffle=False)
            for r in batch["item_ids"].numpy()]
    targets = sorted(e for row in rows for e in row[row > 0][1:])
    assert targets == history[1:]  # each event after the first is a target exactly once
    (latest,) = [r for batch in make_dataset([history], [[2] * 120], max_len=50, shuffle=False,
                                             whole_histories=False)
                 for r in batch["item_ids"].numpy()]
    assert latest.tolist() == history[-51:]


def test_fixed_length_rows_are_rebatched_to_each_batch_s_longest_history():
    # The TFX Trainer's input: Transform's rows, all left padded to max_len + 1.
    from dspnet_tf.data import left_pad
    from dspnet_tf.data.sequences import batch_by_history_length

    lengths = RNG.integers(1, 12, size=100)
    items = left_pad([list(RNG.integers(2, 99, size=n)) for n in lengths], 11)
    scenes = np.where(items > 0, items % 4 + 1, 0).astype(np.int32)
    rows = tf.data.Dataset.from_tensor_slices({"item_ids": items, "scene_ids": scenes})
    seen = []
    for batch in batch_by_history_length(rows, batch_size=16, length=11):
        ids, sc = batch["item_ids"].numpy(), batch["scene_ids"].numpy()
        assert ids.shape[1] == (ids > 0).sum(axis=1).max() and (ids[:, -1] > 0).all()
        np.testing.assert_array_equal(np.where(ids > 0, ids % 4 + 1, 0), sc)
        seen += [tuple(row[row > 0]) for row in ids]
    assert sorted(seen) == sorted(tuple(row[row > 0]) for row in items)
    # Lengths 1..7 and 8..11 fall in different buckets, so short rows skip long padding.
    assert min(len(b["item_ids"][0]) for b in batch_by_history_length(rows, 16, 11)) <= 8
