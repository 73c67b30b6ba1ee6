"""The served top K found through TFRS's factorized indexes equals the full-catalog ranking.

`retrieval="brute_force"` must give exactly the answers of `retrieval="exact"` (ids, scores to
float rounding) for every kind of row: next event (the sum over scenes, which can need the
full-ranking fallback), a given target scene, an unknown target, an empty history, with and
without the repeat pointer. ScaNN is approximate: its recall against exact is checked.
"""

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import DSPnet, DSPnetConfig
from dspnet_tf.export import (ServingModule, VocabularyPreprocess, export_serving_model,
                              read_export_metadata)
from dspnet_tf.retrieval import FactorizedTopK

SCENES = ["feed", "search", "live", "favorites", "cart"]
MAX_LEN = 6


def _model(num_items: int, repeat_pointer: bool, marginal: bool = True, seed: int = 0,
           scene_scale: float = 0.7, item_scale: float = 1.5):
    item_tokens = ["", "<oov>"] + [f"i{i}" for i in range(num_items)]
    scene_tokens = ["", "<oov>"] + SCENES
    config = DSPnetConfig(item_vocab_size=len(item_tokens), scene_vocab_size=len(scene_tokens),
                          max_len=MAX_LEN, item_dim=16, scene_dim=8, dropout=0.0, seed=seed,
                          num_blocks=1, repeat_pointer=repeat_pointer,
                          next_event_mode="marginal" if marginal else "unknown",
                          target_scene_dropout=0.0 if marginal else 0.5)
    tf.keras.utils.set_random_seed(seed)
    model = DSPnet(config)
    model({"item_ids": tf.zeros([1, MAX_LEN], tf.int64),
           "scene_ids": tf.zeros([1, MAX_LEN], tf.int64)})
    rng = np.random.default_rng(seed)
    # Peaked, scene-specific answers (as a trained model's), so that scenes, the pointer and the
    # normaliser all move the ranking: large item vectors and random per-scene parts.
    table = model.item_encoder.embeddings
    table.assign(rng.normal(size=table.shape, scale=item_scale).astype(np.float32))
    head = model.item_head
    if getattr(head, "scene_kernel", None) is not None:
        head.scene_kernel.assign(rng.normal(size=head.scene_kernel.shape, scale=scene_scale))
        head.scene_bias.assign(rng.normal(size=head.scene_bias.shape, scale=scene_scale))
    if model.repeat_pointer is not None:
        # A strong pointer, so history items compete with the catalog's best.
        for weight in model.repeat_pointer.trainable_weights:
            if "bias" in weight.name:
                weight.assign(tf.fill(weight.shape, 1.0))
    return model, item_tokens, scene_tokens


def _requests(num_items: int, rows: int, seed: int):
    rng = np.random.default_rng(seed)
    items, scenes, targets = [], [], []
    for row in range(rows):
        length = 0 if row % 11 == 0 else int(rng.integers(1, MAX_LEN + 3))
        pool = rng.integers(0, num_items, size=3)  # histories with repeats
        items.append([f"i{int(rng.choice(pool))}" if rng.random() < 0.6 else
                      f"i{int(rng.integers(num_items))}" for _ in range(length)])
        scenes.append([str(rng.choice(SCENES)) for _ in range(length)])
        targets.append([None, "", "nowhere", *SCENES][row % 8])
    return items, scenes, targets


def _examples(items, scenes, targets):
    from dspnet_tf.export import make_history_example
    return tf.constant([make_history_example(i, s, t)
                        for i, s, t in zip(items, scenes, targets)])


def _answers(module, examples):
    out = module.serve_examples(examples)
    return out["item_ids"].numpy(), out["item_scores"].numpy(), out["scene_probs"].numpy()


def _assert_same_ranking(exact, found):
    exact_ids, exact_scores, exact_scenes = exact
    ids, scores, scenes = found
    # Log-probabilities near 0 differ in the last float32 bits (the sums run in another order).
    np.testing.assert_allclose(scores, exact_scores, rtol=1e-5, atol=5e-5)
    # Ids equal, except where two items tie to float rounding (their order is then arbitrary).
    tied = np.isclose(exact_scores[:, 1:], exact_scores[:, :-1], rtol=0, atol=5e-5)
    differ = ids != exact_ids
    for row, position in zip(*np.nonzero(differ)):
        near = (position > 0 and tied[row, position - 1]) or (
            position < ids.shape[1] - 1 and tied[row, position])
        assert near, (row, position, ids[row], exact_ids[row], exact_scores[row])
    np.testing.assert_allclose(scenes, exact_scenes, rtol=1e-6)


@pytest.mark.parametrize("repeat_pointer,marginal", [(True, True), (False, True),
                                                     (True, False), (False, False)])
def test_brute_force_answers_equal_the_exact_ranking(repeat_pointer, marginal):
    num_items = 300
    model, item_tokens, scene_tokens = _model(num_items, repeat_pointer, marginal)
    preprocess = VocabularyPreprocess(item_tokens, scene_tokens, MAX_LEN)
    exact = ServingModule(model, preprocess, item_tokens, scene_tokens, top_k=10,
                          retrieval="exact")
    brute = ServingModule(model, preprocess, item_tokens, scene_tokens, top_k=10,
                          retrieval="brute_force")
    examples = _examples(*_requests(num_items, 96, seed=1))
    _assert_same_ranking(_answers(exact, examples), _answers(brute, examples))
    # Batch 1, as most served requests are (each row then settles or falls back alone).
    for row in range(0, 96, 7):
        _assert_same_ranking(_answers(exact, examples[row:row + 1]),
                             _answers(brute, examples[row:row + 1]))


def test_candidates_settle_given_scenes_and_the_check_sees_sums_they_cannot():
    """The exactness check: a row it calls certain has the exact top K from the candidates
    alone; given target scenes are always certain; a sum over scenes can be uncertain."""
    num_items, k = 400, 10
    # Flat answers: an item can then win the sum over scenes without winning any scene.
    model, item_tokens, scene_tokens = _model(num_items, repeat_pointer=True, item_scale=0.2)
    preprocess = VocabularyPreprocess(item_tokens, scene_tokens, MAX_LEN)
    # Few candidates per query (K + 1: still enough for a given scene) make uncertain
    # next-event rows likely.
    index = FactorizedTopK(model.item_encoder.embeddings, len(item_tokens), k, MAX_LEN,
                           "brute_force", candidates_per_query=k + 1)
    items, scenes, _ = _requests(num_items, 64, seed=3)
    raw = _examples(items, scenes, [None] * 64)
    parsed = tf.io.parse_example(raw, {"item_history": tf.io.VarLenFeature(tf.string),
                                       "scene_history": tf.io.VarLenFeature(tf.string)})
    ids = preprocess(parsed)
    nonempty = np.array([len(i) > 0 for i in items])
    certain_counts = {}
    for name, target in (("next_event", tf.zeros([64], tf.int64)),
                         ("in_scene", tf.fill([64], tf.constant(4, tf.int64)))):
        inputs = {**ids, "target_scene": target}
        dense = model(inputs, training=False)["item_logits"].numpy()[:, 2:]
        dense_top = np.argsort(-dense, axis=1, kind="stable")[:, :k] + 2
        _, found, certain = index(model.answer_components(inputs), model.answers_are_log_probs)
        found, certain = found.numpy(), certain.numpy()
        for row in np.nonzero(certain & nonempty)[0]:
            assert set(found[row]) == set(dense_top[row]), (name, row)
        certain_counts[name] = int(certain[nonempty].sum())
    assert certain_counts["in_scene"] == int(nonempty.sum())
    assert certain_counts["next_event"] < int(nonempty.sum()), certain_counts


def test_brute_force_export_round_trip_and_metadata(tmp_path):
    num_items = 120
    model, item_tokens, scene_tokens = _model(num_items, repeat_pointer=True)
    exact_dir = export_serving_model(model, str(tmp_path / "exact"), None, item_tokens,
                                     scene_tokens, top_k=5, retrieval="exact")
    brute_dir = export_serving_model(model, str(tmp_path / "brute"), None, item_tokens,
                                     scene_tokens, top_k=5, retrieval="brute_force")
    assert read_export_metadata(brute_dir)["retrieval"] == "brute_force"
    assert read_export_metadata(exact_dir)["retrieval"] == "exact"
    examples = _examples(*_requests(num_items, 24, seed=5))
    exact = tf.saved_model.load(exact_dir).signatures["serving_default"](examples=examples)
    brute = tf.saved_model.load(brute_dir).signatures["serving_default"](examples=examples)
    as_tuple = lambda out: (out["item_ids"].numpy(), out["item_scores"].numpy(),  # noqa: E731
                            out["scene_probs"].numpy())
    _assert_same_ranking(as_tuple(exact), as_tuple(brute))


def test_unknown_retrieval_is_refused_with_the_choices():
    model, item_tokens, scene_tokens = _model(30, repeat_pointer=False)
    with pytest.raises(ValueError, match="brute_force"):
        ServingModule(model, VocabularyPreprocess(item_tokens, scene_tokens, MAX_LEN),
                      item_tokens, scene_tokens, retrieval="annoy")


def test_scann_export_recalls_the_exact_top_k(tmp_path):
    pytest.importorskip("scann")
    num_items = 2000
    model, item_tokens, scene_tokens = _model(num_items, repeat_pointer=True)
    preprocess = VocabularyPreprocess(item_tokens, scene_tokens, MAX_LEN)
    exact = ServingModule(model, preprocess, item_tokens, scene_tokens, top_k=10,
                          retrieval="exact")
    # Every leaf searched and many reordered: isotropic random items are ScaNN's worst case,
    # and this test is about the merge and the normaliser estimate, not the index's recall
    # (benchmarks/serving_topk.py measures that, calibrated, on structured items).
    export_dir = export_serving_model(
        model, str(tmp_path / "scann"), None, item_tokens, scene_tokens, top_k=10,
        retrieval="scann",
        retrieval_options={"num_leaves_to_search": 45, "num_reordering_candidates": 400})
    metadata = read_export_metadata(export_dir)
    assert metadata["retrieval"] == "scann" and metadata["scann"]["num_leaves"] == 45
    served = tf.saved_model.load(export_dir).signatures["serving_default"]
    examples = _examples(*_requests(num_items, 64, seed=7))
    exact_ids = exact.serve_examples(examples)["item_ids"].numpy()
    found = served(examples=examples)["item_ids"].numpy()
    recall = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact_ids, found)])
    assert recall >= 0.98, recall


def test_pipeline_compile_carries_the_retrieval_to_the_trainer(tmp_path):
    import json

    from dspnet_tf import cli

    out = str(tmp_path / "pipeline.json")
    assert cli.main(["pipeline", "compile", "--out", out, "--image", "example.invalid/dspnet:1",
                     "--data", "gs://bucket/events.csv", "--retrieval", "scann"]) == 0
    trainer = json.loads(open(out).read())["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]
    custom = trainer["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constantValue"]
    assert json.loads(custom.get("stringValue", custom))["retrieval"] == "scann"


def test_auto_is_brute_force_for_large_dspnet_catalogs_else_exact():
    from dspnet_tf.retrieval import resolve_retrieval

    class Plain:  # e.g. BERT4Rec: no per-scene queries to search with
        pass

    small, _, _ = _model(20, repeat_pointer=False)
    large, _, _ = _model(10_000, repeat_pointer=False)
    assert resolve_retrieval("auto", small) == "exact"
    assert resolve_retrieval("auto", large) == "brute_force"
    assert resolve_retrieval("brute_force", small) == "brute_force"
    assert resolve_retrieval("auto", Plain()) == "exact"
    with pytest.raises(ValueError, match="retrieval='exact'"):
        resolve_retrieval("scann", Plain())


def test_the_server_loads_a_scann_export_in_a_fresh_process(tmp_path):
    """A ScaNN export needs scann's ops registered before it loads; the server's model manager
    registers them from the export's metadata (a fresh process has not imported scann)."""
    import subprocess
    import sys

    pytest.importorskip("scann")
    model, item_tokens, scene_tokens = _model(300, repeat_pointer=True)
    export_dir = export_serving_model(model, str(tmp_path / "1"), None, item_tokens,
                                      scene_tokens, top_k=5, retrieval="scann")
    script = (
        "import sys, dspnet_tf, tensorflow as tf\n"
        "from serving.model_manager import _load_custom_ops\n"
        "assert 'scann' not in sys.modules\n"
        "path = sys.argv[1]\n"
        "try:\n"
        "    tf.saved_model.load(path)\n"
        "    print('loaded without scann')\n"
        "except Exception as error:\n"
        "    print('refused without scann:', type(error).__name__)\n"
        "_load_custom_ops(path)\n"
        "served = tf.saved_model.load(path).signatures['serving_default']\n"
        "from dspnet_tf.export import make_history_example\n"
        "out = served(examples=tf.constant([make_history_example(['i1', 'i2'], ['feed', 'cart'])]))\n"
        "print('answered', out['item_ids'].shape[1])\n")
    run = subprocess.run([sys.executable, "-c", script, export_dir], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused without scann" in run.stdout
    assert "answered 5" in run.stdout
