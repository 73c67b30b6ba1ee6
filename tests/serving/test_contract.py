"""The SavedModel follows serving-contract.md: signatures, names, dtypes, shapes, behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from serving.client import make_example
from serving.testing import check_contract, item_names, saved_model_cli_signatures


def test_saved_model_cli_lists_the_contract_signatures(exported_versions):
    check_contract(saved_model_cli_signatures(exported_versions[1]), top_k=10, num_scenes=5,
                   max_len=8)


def test_check_contract_can_fail(exported_versions):
    with pytest.raises(AssertionError):
        check_contract(saved_model_cli_signatures(exported_versions[1]), top_k=20, num_scenes=5,
                       max_len=8)


@pytest.fixture(scope="module")
def loaded(exported_versions):
    return tf.saved_model.load(exported_versions[1])


def _answer(loaded, items, scenes, target=None):
    out = loaded.signatures["serving_default"](
        examples=tf.constant([make_example(items, scenes, target)]))
    return {k: v.numpy()[0] for k, v in out.items()}


def test_unknown_items_and_scenes_are_answered_and_never_returned(loaded):
    known = item_names(40)
    answer = _answer(loaded, ["i00003", "never-seen", "i00007"], ["feed", "no-such-scene", "live"])
    ids = [x.decode() for x in answer["item_ids"]]
    assert len(ids) == 10 and set(ids) <= set(known)
    np.testing.assert_allclose(answer["scene_probs"].sum(), 1.0, rtol=1e-5)
    assert np.all(np.diff(answer["item_scores"]) <= 0)


def test_empty_history_gets_the_most_frequent_items(loaded):
    answer = _answer(loaded, [], [])
    # Vocabularies are frequency ordered, so the answer is the head of the catalog.
    assert [x.decode() for x in answer["item_ids"]] == item_names(10)


def test_a_long_history_uses_its_most_recent_events(loaded):
    rng = np.random.default_rng(0)
    items = [f"i{i:05d}" for i in rng.integers(0, 40, size=30)]
    scenes = [str(s) for s in rng.choice(["feed", "search", "live"], size=30)]
    full, recent = _answer(loaded, items, scenes), _answer(loaded, items[-8:], scenes[-8:])
    assert list(full["item_ids"]) == list(recent["item_ids"])
    np.testing.assert_allclose(full["item_scores"], recent["item_scores"], rtol=1e-5)
    older = _answer(loaded, items[-9:-1], scenes[-9:-1])
    assert not np.allclose(full["item_scores"], older["item_scores"])


def test_predict_raw_equals_serving_default_and_ignores_padding(loaded):
    items, scenes = ["i00001", "i00005", "i00009"], ["feed", "search", "cart"]
    expected = _answer(loaded, items, scenes)
    raw = loaded.signatures["predict_raw"](
        item_history=tf.constant([items + ["", ""], ["", "", "i00002", "i00004", "i00006"]]),
        scene_history=tf.constant([scenes + ["", ""], ["", "", "feed", "feed", "live"]]))
    assert [x.decode() for x in raw["item_ids"].numpy()[0]] == \
        [x.decode() for x in expected["item_ids"]]
    np.testing.assert_allclose(raw["item_scores"].numpy()[0], expected["item_scores"], rtol=1e-5)
    second = _answer(loaded, ["i00002", "i00004", "i00006"], ["feed", "feed", "live"])
    np.testing.assert_allclose(raw["item_scores"].numpy()[1], second["item_scores"], rtol=1e-5)


def test_a_scene_history_of_another_length_is_refused(loaded):
    example = make_example(["i00001"], ["feed"])
    bad = tf.train.Example.FromString(example)
    bad.features.feature["scene_history"].bytes_list.value.append(b"live")
    with pytest.raises(tf.errors.InvalidArgumentError, match="one scene per"):
        loaded.signatures["serving_default"](examples=tf.constant([bad.SerializeToString()]))


@pytest.mark.parametrize("item_loss", ["sampled_bce", "softmax"])  # softmax: repeat pointer on
def test_the_export_serves_the_trained_weights(tmp_path, item_loss):
    """Served scores equal the Keras model's own scores for the same history (weights travel)."""
    from dspnet_tf import DSPnet, DSPnetConfig
    from dspnet_tf.export import export_serving_model, make_history_example

    items = ["", "<oov>"] + [f"sku{i}" for i in range(30)]
    scenes = ["", "<oov>", "feed", "search", "live"]
    model = DSPnet(DSPnetConfig(item_vocab_size=len(items), scene_vocab_size=len(scenes),
                                max_len=6, item_dim=16, scene_dim=8, dropout=0.0, seed=4,
                                item_loss=item_loss))
    assert model.dspnet_config.uses_repeat_pointer == (item_loss == "softmax")
    history = {"item_ids": tf.constant([[0, 0, 5, 9, 3, 7]]),
               "scene_ids": tf.constant([[0, 0, 2, 3, 2, 4]])}
    logits = model(history)["item_logits"].numpy()[0, 2:]
    scene_logits = model(history)["scene_logits"].numpy()[0, 2:]
    served = tf.saved_model.load(export_serving_model(model, str(tmp_path / "1"), None, items,
                                                      scenes, top_k=5))
    out = served.signatures["serving_default"](examples=tf.constant([make_history_example(
        [items[i] for i in (5, 9, 3, 7)], [scenes[s] for s in (2, 3, 2, 4)])]))
    order = np.argsort(-logits)[:5]
    assert [x.decode() for x in out["item_ids"].numpy()[0]] == [items[i + 2] for i in order]
    np.testing.assert_allclose(out["item_scores"].numpy()[0], logits[order], rtol=1e-5)
    probs = np.exp(scene_logits - scene_logits.max())
    probs /= probs.sum()
    # Each scene's probability under its own name (sorting both sides would hide a swap).
    served = dict(zip([x.decode() for x in out["scene_ids"].numpy()[0]],
                      out["scene_probs"].numpy()[0].tolist()))
    expected = dict(zip(scenes[2:], probs.tolist()))
    assert served.keys() == expected.keys()
    for name, prob in expected.items():
        assert served[name] == pytest.approx(prob, rel=1e-5), name


@pytest.mark.parametrize("signature", ["serving_default", "predict_raw"])
def test_the_serving_signatures_run_no_control_flow(loaded, signature):
    """Every cond runs as a function call of its own; the ragged conversions' input checks
    put five in each request (about 5% of a batch-1 request)."""
    graph_def = loaded.signatures[signature].graph.as_graph_def()
    ops = {node.op for node in graph_def.node}
    ops |= {node.op for function in graph_def.library.function for node in function.node_def}
    assert "ParseExampleV2" in ops or signature == "predict_raw"
    assert "TopKV2" in ops  # the library holds the whole call tree, the model included
    assert not ops & {"If", "StatelessIf", "While", "StatelessWhile"}
