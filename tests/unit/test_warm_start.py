"""Warm start by token: rows follow their raw token across grown and reordered vocabularies."""

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import DSPnet, DSPnetConfig
from dspnet_tf.warm_start import (ITEMS, SCENES, WarmStartError, remap_axes, remap_rows,
                                  vocabulary_axes, warm_start, warm_start_weights,
                                  weight_keys, write_vocabularies)

OLD = ["", "<oov>", "a", "b", "c"]
NEW = ["", "<oov>", "c", "a", "d", "b"]  # reordered, and "d" is new


def test_rows_follow_their_token_and_new_tokens_keep_fresh_rows():
    old = np.arange(6 * 2, dtype=np.float32).reshape(6, 2)  # 5 tokens + a [MASK] row
    fresh = -np.ones((7, 2), np.float32)
    result, carried = remap_rows(old, fresh, OLD, NEW)
    expected = np.array([old[0], old[1], old[4], old[2], fresh[4], old[3], old[5]])
    np.testing.assert_array_equal(result, expected)
    assert carried == 6  # all but "d"; the [MASK] row maps to the [MASK] row
    # Along another axis (a [dim, vocab] kernel) the same rule.
    result_t, _ = remap_rows(old.T, fresh.T, OLD, NEW, axis=1)
    np.testing.assert_array_equal(result_t, expected.T)


def test_both_axes_of_a_pair_bias_and_the_numpy_weights_rule():
    scenes_old, scenes_new = ["", "<oov>", "feed", "live"], ["", "<oov>", "live", "cart", "feed"]
    old = np.arange(16, dtype=np.float64).reshape(4, 4)
    fresh = np.full((5, 5), 0.5)
    result, carried = remap_axes(old, fresh, {0: (scenes_old, scenes_new),
                                              1: (scenes_old, scenes_new)})
    position = {"": 0, "<oov>": 1, "feed": 2, "live": 3}
    for i, a in enumerate(scenes_new):
        for j, b in enumerate(scenes_new):
            want = old[position[a], position[b]] if "cart" not in (a, b) else 0.5
            assert result[i, j] == want, (a, b)
    assert carried == {0: 4, 1: 4}

    new = {"table": np.zeros((6, 3)), "dense": np.zeros((3, 3)), "wider": np.zeros((4,)),
           "born_today": np.ones(2)}
    old_weights = {"table": np.arange(15.0).reshape(5, 3), "dense": np.eye(3),
                   "wider": np.ones(3), "gone": np.ones(1)}
    values, report = warm_start_weights(new, old_weights, {"table": {0: ITEMS}},
                                        {ITEMS: OLD}, {ITEMS: NEW}, base="yesterday")
    np.testing.assert_array_equal(values["table"][[2, 3, 5]], old_weights["table"][[4, 2, 3]])
    np.testing.assert_array_equal(values["table"][4], np.zeros(3))
    np.testing.assert_array_equal(values["dense"], np.eye(3))
    np.testing.assert_array_equal(values["wider"], np.zeros(4))  # shape changed: fresh
    assert report.copied == ["dense"] and report.remapped == ["table"]
    assert sorted(report.fresh) == ["born_today", "wider"]
    assert (report.rows_carried[ITEMS], report.rows_new[ITEMS]) == (3, 1)
    assert "items: 3 rows carried, 1 new" in report.summary()


def _config(items, scenes):
    return DSPnetConfig(item_vocab_size=len(items), scene_vocab_size=len(scenes), max_len=6,
                        item_dim=8, scene_dim=8, num_blocks=1, repeat_pointer=True, seed=0)


def test_a_dspnet_export_warm_starts_a_grown_reordered_model(tmp_path):
    from dspnet_tf.export import export_serving_model

    items_old = ["", "<oov>"] + [f"i{k}" for k in range(10)]
    scenes_old = ["", "<oov>", "feed", "search", "cart"]
    # Today: the catalog reordered by popularity, two new items, and a new scene.
    items_new = ["", "<oov>", "i7", "new1", "i0", "i3"] + [f"i{k}" for k in (1, 2, 4, 5, 6, 8, 9)] \
        + ["new2"]
    scenes_new = ["", "<oov>", "search", "live", "feed", "cart"]
    tf.keras.utils.set_random_seed(1)
    old = DSPnet(_config(items_old, scenes_old))
    old.compile(optimizer="adam")
    batch = {"item_ids": tf.constant([[2, 3, 4, 5, 6, 7, 8]]),
             "scene_ids": tf.constant([[2, 3, 4, 2, 3, 4, 2]])}
    old.fit(tf.data.Dataset.from_tensors(batch).repeat(3), epochs=1, verbose=0)
    export_dir = str(tmp_path / "base")
    export_serving_model(old, export_dir, None, items_old, scenes_old, top_k=3)
    write_vocabularies(export_dir, items_old, scenes_old)

    tf.keras.utils.set_random_seed(2)
    new = DSPnet(_config(items_new, scenes_new))
    new.compile(optimizer="adam")
    axes = vocabulary_axes(_built(DSPnet(_config(items_new, scenes_new))))
    assert axes["item_encoder/token_embedding/embeddings"] == {0: ITEMS}
    assert axes["scene_encoder/token_embedding/embeddings"] == {0: SCENES}
    assert axes["repeat_pointer/scene_pair_bias"] == {0: SCENES, 1: SCENES}
    assert axes["item_head/scene_kernel"] == {0: SCENES}
    assert "item_head/projection/kernel" not in axes

    report = warm_start(new, items_new, scenes_new, base=export_dir)
    assert (report.rows_carried[ITEMS], report.rows_new[ITEMS]) == (10, 2)
    assert (report.rows_carried[SCENES], report.rows_new[SCENES]) == (3, 1)
    # Keras numbers unnamed layers per process (the two models' names differ): by key.
    trained = dict(zip(weight_keys([v.name for v in old.variables]),
                       [v.numpy() for v in old.variables]))
    got = dict(zip(weight_keys([v.name for v in new.variables]),
                   [v.numpy() for v in new.variables]))
    table_old = trained["item_encoder/token_embedding/embeddings"]
    table_new = got["item_encoder/token_embedding/embeddings"]
    for j, token in enumerate(items_new):
        if token.startswith("new"):
            assert not np.isin(table_new[j], table_old).any(), token  # a fresh row
        else:
            np.testing.assert_array_equal(table_new[j], table_old[items_old.index(token)])
    np.testing.assert_array_equal(table_new[-1], table_old[-1])  # the [MASK] row
    pair_old, pair_new = trained["repeat_pointer/scene_pair_bias"], \
        got["repeat_pointer/scene_pair_bias"]
    i, j = scenes_new.index("cart"), scenes_new.index("search")
    assert pair_new[i, j] == pair_old[scenes_old.index("cart"), scenes_old.index("search")]
    np.testing.assert_array_equal(got["item_head/projection/kernel"],
                                  trained["item_head/projection/kernel"])
    assert not report.fresh, report.fresh

    # The same user representation as the trained model, for a history of known tokens.
    def ids(tokens, vocabulary):
        return tf.constant([[vocabulary.index(t) for t in tokens]])
    history, scenes = ["i0", "i3", "i7", "i1"], ["feed", "search", "cart", "feed"]
    before = old.user_representation({"item_ids": ids(history, items_old),
                                      "scene_ids": ids(scenes, scenes_old)})
    after = new.user_representation({"item_ids": ids(history, items_new),
                                     "scene_ids": ids(scenes, scenes_new)})
    np.testing.assert_allclose(after.numpy(), before.numpy(), rtol=1e-5, atol=1e-6)


def _built(model):
    from dspnet_tf.warm_start import build_variables

    build_variables(model)
    return model


def test_weight_keys_drop_keras_numbering_and_count_repeats():
    assert weight_keys(["enc/block_0/dense_6/kernel:0", "enc/block_0/dense_7/kernel:0",
                        "enc/token_embedding/embeddings:0"]) == [
        "enc/block/dense/kernel", "enc/block/dense/kernel#1", "enc/token_embedding/embeddings"]


def test_an_unreadable_base_is_a_clear_error(tmp_path):
    model = DSPnet(_config(OLD, ["", "<oov>", "feed"]))
    with pytest.raises(WarmStartError, match="saved_model.pb is missing"):
        warm_start(model, OLD, ["", "<oov>", "feed"], base=str(tmp_path / "nowhere"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a proto")
    write_vocabularies(str(broken), OLD, ["", "<oov>", "feed"])
    with pytest.raises(WarmStartError, match="reading it failed"):
        warm_start(model, OLD, ["", "<oov>", "feed"], base=str(broken))
    with pytest.raises(WarmStartError, match="needs base_item_tokens"):
        warm_start(model, OLD, ["", "<oov>", "feed"], base=model)
