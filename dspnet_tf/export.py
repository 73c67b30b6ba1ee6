"""Export of a trained DSPnet with the serving signatures of serving-contract.md.

Raw ids in, raw ids out: the SavedModel carries the preprocessing (e.g. TF Transform's layer,
with the vocabularies as assets) and the id -> raw-id tables, so a TF Serving client never sees
integer ids. Signatures:

  * `serving_default`: serialized tf.Examples (`item_history`, `scene_history`, optional
    `target_scene`, all bytes_list) -> `item_ids`, `item_scores` [B, K], `scene_ids`,
    `scene_probs` [B, n_scenes];
  * `predict_raw`: the same outputs from dense string tensors [B, L] padded with "";
  * `transform_features`: the preprocessing alone (for TFMA);
  * `evaluate_ranking`: per-example full-ranking NDCG@10 / HR@10 of each example's last item
    given the events before it, in the next-event task (`ndcg_at_10`, `hit_at_10`) and in the
    in-scene task, told the last event's scene (`ndcg_at_10_in_scene`, `hit_at_10_in_scene`);
    for TFMA's Evaluator; pessimistic ties;
  * `encode_users`: the fused representation z after each history's last event
    (`user_embedding` [B, item_dim]), for retrieval indexes and latent-space plots.

The top K is found over the whole catalog's scores, or through a TFRS factorized index
(`retrieval=`, `dspnet_tf.retrieval`).

Besides the graph, an export carries `assets.extra/dspnet_metadata.json` (TF Serving's folder for
files it does not load): the dspnet_tf and TensorFlow versions that wrote it and the signature
names, readable without TensorFlow, e.g. to tell which release produced a served model.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import tensorflow as tf

from dspnet_tf._version import __version__
from dspnet_tf.config import RESERVED_IDS, example_length
from dspnet_tf.evaluation.ranking import hit_rate, ndcg, pessimistic_rank
from dspnet_tf.layers.prediction_head import exclude_leading_ids
from dspnet_tf.retrieval import FactorizedTopK, describe, resolve_retrieval
from dspnet_tf.warm_start import write_vocabularies

ITEM_HISTORY, SCENE_HISTORY, TARGET_SCENE = "item_history", "scene_history", "target_scene"
RAW_FEATURE_SPEC = {
    ITEM_HISTORY: tf.io.VarLenFeature(tf.string),
    SCENE_HISTORY: tf.io.VarLenFeature(tf.string),
    TARGET_SCENE: tf.io.VarLenFeature(tf.string),
}
# Relative to the export folder; TF Serving copies but never loads assets.extra/.
METADATA_FILE = os.path.join("assets.extra", "dspnet_metadata.json")


def make_history_example(item_history: Sequence[str], scene_history: Sequence[str],
                         target_scene: Optional[str] = None) -> bytes:
    """A serialized tf.Example in the contract's format (raw ids, oldest first)."""
    items, scenes = [str(i) for i in item_history], [str(s) for s in scene_history]
    if len(items) != len(scenes):
        raise ValueError(f"item_history has {len(items)} events but scene_history has "
                         f"{len(scenes)}; give one scene per event")
    example = tf.train.Example()
    example.features.feature["item_history"].bytes_list.value.extend(x.encode() for x in items)
    example.features.feature["scene_history"].bytes_list.value.extend(
        x.encode() for x in scenes)
    if target_scene is not None:
        example.features.feature["target_scene"].bytes_list.value.append(
            str(target_scene).encode())
    return example.SerializeToString()


def sparse_rows(ids: tf.SparseTensor) -> tf.RaggedTensor:
    """The rows of a ragged-right 2-D SparseTensor as a RaggedTensor, without check ops.

    `tf.RaggedTensor.from_sparse` guards its input with asserts, and in a graph every assert is
    a `cond` that the executor runs as a function call of its own: without the five of the
    serving signature a batch-1 request takes about 5% less (2.39 vs 2.52 ms, same process,
    interleaved). `parse_example` and `RaggedTensor.to_sparse` give well-formed, row-major
    SparseTensors, so the checks had nothing to catch.
    """
    return tf.RaggedTensor.from_value_rowids(ids.values, ids.indices[:, 0],
                                             nrows=ids.dense_shape[0], validate=False)


def left_pad_sparse(ids: tf.SparseTensor, max_len: int) -> tf.Tensor:
    """Each row's most recent `max_len` ids, left padded with 0 -> dense int64 [B, max_len].

    The one truncation rule of serving and of TF Transform: histories longer than the model's
    length keep their most recent events.
    """
    ragged = sparse_rows(ids)[:, -max_len:]
    reversed_dense = ragged[:, ::-1].to_tensor(default_value=0, shape=[None, max_len])
    return tf.reverse(reversed_dense, axis=[1])


def _raw_to_id_table(tokens: Sequence[str], default_id: int) -> tf.lookup.StaticHashTable:
    """Raw id -> model id for the real tokens (ids >= RESERVED_IDS)."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(list(tokens[RESERVED_IDS:]), tf.string),
            tf.range(RESERVED_IDS, len(tokens), dtype=tf.int64),
        ),
        default_value=default_id,
    )


class VocabularyPreprocess(tf.Module):
    """Raw string histories -> the model's int ids, for models trained outside TF Transform.

    The `model.fit` user's counterpart of TFT's `TransformFeaturesLayer`: the vocabularies
    become hash tables inside the SavedModel, unknown raw ids map to OOV (1), and sequences are
    truncated to their most recent `max_len + 1` events and left padded with 0, exactly as the
    pipeline's Transform does (a training example is max_len inputs + the event after the
    last one; the model itself reads a history's most recent `max_len` events).

    Args:
      item_tokens: raw item id of each model id (index 0 padding, 1 OOV, then the catalog).
      scene_tokens: raw scene name of each model scene id (same convention).
      max_len: the model's history length.
    """

    def __init__(self, item_tokens: Sequence[str], scene_tokens: Sequence[str],
                 max_len: int) -> None:
        super().__init__(name="vocabulary_preprocess")
        self.item_table = _raw_to_id_table(item_tokens, default_id=1)
        self.scene_table = _raw_to_id_table(scene_tokens, default_id=1)
        self.max_len = int(max_len)

    def __call__(self, raw: Dict[str, tf.SparseTensor]) -> Dict[str, tf.Tensor]:
        items, scenes = raw[ITEM_HISTORY], raw[SCENE_HISTORY]
        item_ids = tf.SparseTensor(items.indices, self.item_table.lookup(items.values),
                                   items.dense_shape)
        scene_ids = tf.SparseTensor(scenes.indices, self.scene_table.lookup(scenes.values),
                                    scenes.dense_shape)
        return {"item_ids": left_pad_sparse(item_ids, example_length(self.max_len)),
                "scene_ids": left_pad_sparse(scene_ids, example_length(self.max_len))}


class ServingModule(tf.Module):
    """Wraps model + preprocessing + id tables into the three signatures."""

    def __init__(
        self,
        model: tf.keras.Model,
        preprocess: Callable[[Dict[str, tf.SparseTensor]], Dict[str, tf.Tensor]],
        item_tokens: Sequence[str],
        scene_tokens: Sequence[str],
        top_k: int = 20,
        retrieval: str = "auto",
        retrieval_options: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(name="dspnet_serving")
        # Track the model's variables, not the Keras model: the SavedModel then holds the
        # serving functions and their weights only, instead of every layer's object and traced
        # call functions, which makes export and (TF Serving's) load several times faster.
        object.__setattr__(self, "model", model)
        self.model_variables = list(model.variables)
        self.preprocess = preprocess
        self.item_tokens = tf.constant(list(item_tokens), tf.string)
        self.scene_tokens = tf.constant(list(scene_tokens), tf.string)
        self.top_k = min(int(top_k), len(item_tokens) - RESERVED_IDS)
        self.num_scenes = len(scene_tokens) - RESERVED_IDS
        self.scene_table = _raw_to_id_table(scene_tokens, default_id=0)  # unknown = "not given"
        self.item_table = _raw_to_id_table(item_tokens, default_id=1)  # unknown = OOV
        # log 1/rank: a Zipf-shaped stand-in for popularity, in vocabulary (frequency) order.
        ranks = tf.range(1, len(item_tokens) - RESERVED_IDS + 1, dtype=tf.float32)
        self.popularity_prior = -tf.math.log(ranks)
        retrieval = resolve_retrieval(retrieval, model)
        self.retrieval = None
        if retrieval != "exact":
            config = model.dspnet_config
            self.retrieval = FactorizedTopK(
                model.item_encoder.embeddings, config.item_vocab_size, self.top_k,
                config.max_len, retrieval, retrieval_options)

    def _answer(self, raw: Dict[str, tf.SparseTensor]) -> Dict[str, tf.Tensor]:
        # One scene per event: a malformed request fails here (INVALID_ARGUMENT when served)
        # instead of being answered with misaligned sequences.
        # A bare Assert op: tf.debugging.assert_equal would wrap it in a cond (see sparse_rows).
        same_lengths = tf.reduce_all(tf.equal(sparse_rows(raw[ITEM_HISTORY]).row_lengths(),
                                              sparse_rows(raw[SCENE_HISTORY]).row_lengths()))
        tf.raw_ops.Assert(condition=same_lengths,
                          data=["scene_history must have one scene per item_history event"])
        # One surface asks for one list: several target scenes are malformed, not "any of".
        one_target = tf.reduce_all(sparse_rows(raw[TARGET_SCENE]).row_lengths() <= 1)
        tf.raw_ops.Assert(condition=one_target,
                          data=["target_scene must hold at most one scene per example"])
        inputs = self.model_inputs(raw)
        # An empty history carries no signal, so every item scores alike; answer it with the
        # most frequent items instead (both TFT's and our vocabularies are frequency ordered).
        empty = tf.reduce_all(inputs["item_ids"] == 0, axis=1, keepdims=True)
        if self.retrieval is None:
            item_scores, item_index, scene_logits = self._dense_top_k(inputs, empty)
        else:
            components = self.model.answer_components(inputs)
            scene_logits = components["scene_logits"]
            item_scores, item_ids, certain = self.retrieval(
                components, self.model.answers_are_log_probs)
            item_index = item_ids - RESERVED_IDS
            # The prior's top K is its first K (log 1/rank falls): no pass over the catalog.
            item_scores = tf.where(empty, self.popularity_prior[tf.newaxis, :self.top_k],
                                   item_scores)
            item_index = tf.where(empty, tf.range(self.top_k)[tf.newaxis], item_index)
            if self.retrieval.method == "brute_force":
                # Exact always: a batch the candidates cannot settle gets the full ranking.
                item_scores, item_index = tf.cond(
                    tf.reduce_all(tf.logical_or(certain, empty[:, 0])),
                    lambda: (item_scores, item_index),
                    lambda: self._dense_top_k(inputs, empty)[:2])
        scene_probs = tf.nn.softmax(scene_logits[:, RESERVED_IDS:], axis=-1)
        scene_probs, scene_index = tf.math.top_k(scene_probs, self.num_scenes)
        return {
            "item_ids": tf.gather(self.item_tokens, item_index + RESERVED_IDS),
            "item_scores": item_scores,
            "scene_ids": tf.gather(self.scene_tokens, scene_index + RESERVED_IDS),
            "scene_probs": scene_probs,
        }

    def model_inputs(self, raw: Dict[str, tf.SparseTensor]) -> Dict[str, tf.Tensor]:
        """Parsed raw features -> the model's inputs: item_ids, scene_ids, target_scene."""
        transformed = self.preprocess(
            {ITEM_HISTORY: raw[ITEM_HISTORY], SCENE_HISTORY: raw[SCENE_HISTORY]}
        )
        # A missing target scene reads as "" (one padding column guarantees a column 0),
        # which the table maps to 0: "not given".
        target = tf.sparse.to_dense(raw[TARGET_SCENE], default_value="")
        target = self.scene_table.lookup(tf.pad(target, [[0, 0], [0, 1]])[:, 0])
        return {"item_ids": transformed["item_ids"], "scene_ids": transformed["scene_ids"],
                "target_scene": target}

    def _dense_top_k(self, inputs: Dict[str, tf.Tensor], empty: tf.Tensor
                     ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Top-K over the whole catalog's scores: (scores, item index - RESERVED_IDS, scene
        logits)."""
        outputs = self.model(inputs, training=False)
        item_logits = outputs["item_logits"][:, RESERVED_IDS:]
        item_logits = tf.where(empty, self.popularity_prior[tf.newaxis], item_logits)
        item_scores, item_index = tf.math.top_k(item_logits, self.top_k)
        return item_scores, item_index, outputs["scene_logits"]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve_examples(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The `serving_default` signature: serialized tf.Examples -> top-K items, scene probs."""
        return self._answer(tf.io.parse_example(examples, RAW_FEATURE_SPEC))

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.string, name=ITEM_HISTORY),
        tf.TensorSpec([None, None], tf.string, name=SCENE_HISTORY),
    ])
    def serve_raw(self, item_history: tf.Tensor, scene_history: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The `predict_raw` signature: dense [B, L] histories, "" padded -> the same outputs."""
        # Padding "" is dropped, so a dense request becomes the same sparse history as an Example.
        # Rows may be padded on either side; boolean_mask packs the real events to the left.
        items = tf.ragged.boolean_mask(item_history, item_history != "").to_sparse()
        scenes = tf.ragged.boolean_mask(scene_history, item_history != "").to_sparse()
        empty = tf.SparseTensor(tf.zeros([0, 2], tf.int64), tf.zeros([0], tf.string),
                                tf.stack([tf.shape(item_history, out_type=tf.int64)[0], 0]))
        return self._answer({ITEM_HISTORY: items, SCENE_HISTORY: scenes, TARGET_SCENE: empty})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def transform_features(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The `transform_features` signature: the preprocessing alone, for TFMA."""
        raw = tf.io.parse_example(examples, RAW_FEATURE_SPEC)
        return self.preprocess({ITEM_HISTORY: raw[ITEM_HISTORY], SCENE_HISTORY: raw[SCENE_HISTORY]})

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def encode_users(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The `encode_users` signature: each history's fused representation z, `user_embedding`."""
        raw = tf.io.parse_example(examples, RAW_FEATURE_SPEC)
        transformed = self.preprocess({ITEM_HISTORY: raw[ITEM_HISTORY],
                                       SCENE_HISTORY: raw[SCENE_HISTORY]})
        return {"user_embedding": self.model.user_representation(
            {"item_ids": transformed["item_ids"], "scene_ids": transformed["scene_ids"]})}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def evaluate_ranking(self, examples: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The `evaluate_ranking` signature: per-example NDCG@10 / HR@10 of the last item.

        Each example's last item is scored from the events before it, in the next-event task
        and in the in-scene task (told the last event's scene), with pessimistic ties; TFMA's
        Evaluator averages them.
        """
        raw = tf.io.parse_example(examples, RAW_FEATURE_SPEC)
        items = sparse_rows(raw[ITEM_HISTORY])
        scenes = sparse_rows(raw[SCENE_HISTORY])
        transformed = self.preprocess({ITEM_HISTORY: items[:, :-1].to_sparse(),
                                       SCENE_HISTORY: scenes[:, :-1].to_sparse()})
        target_raw = tf.pad(items.to_tensor(default_value=""), [[0, 0], [1, 0]])
        lengths = items.row_lengths()
        target = self.item_table.lookup(tf.gather(target_raw, lengths, batch_dims=1))
        # The in-scene task: the model is also told the scene the held-out event happened in.
        scene_raw = tf.pad(scenes.to_tensor(default_value=""), [[0, 0], [1, 0]])
        target_scene = self.scene_table.lookup(tf.gather(scene_raw, lengths, batch_dims=1))
        outputs = {}
        for suffix, given in (("", tf.zeros_like(target_scene)), ("_in_scene", target_scene)):
            logits = self.model({"item_ids": transformed["item_ids"],
                                 "scene_ids": transformed["scene_ids"],
                                 "target_scene": given}, training=False)["item_logits"]
            # Padding and OOV are never right answers: an unseen target counts as a miss.
            logits = exclude_leading_ids(logits, RESERVED_IDS)
            rank = pessimistic_rank(logits, target)
            rank = tf.where(target < RESERVED_IDS, tf.cast(tf.shape(logits)[1], rank.dtype), rank)
            outputs[f"ndcg_at_10{suffix}"] = ndcg(rank, 10)[:, tf.newaxis]
            outputs[f"hit_at_10{suffix}"] = hit_rate(rank, 10)[:, tf.newaxis]
        return outputs


def export_serving_model(
    model: tf.keras.Model,
    export_dir: str,
    preprocess: Optional[Callable[[Dict[str, tf.SparseTensor]], Dict[str, tf.Tensor]]],
    item_tokens: Sequence[str],
    scene_tokens: Sequence[str],
    top_k: int = 20,
    retrieval: str = "auto",
    retrieval_options: Optional[Dict[str, Any]] = None,
) -> str:
    """Writes a SavedModel with the signatures of the module docstring, and its metadata JSON.

    The one export of the project: the TFX Trainer passes TF Transform's layer, `model.fit`
    users pass `preprocess=None` and get a `VocabularyPreprocess` built from the tokens.

    Example (after `model.fit` on ids from your own vocabularies):
      >>> export_serving_model(model, "models/dspnet/1", None,
      ...                      item_tokens=["", "<oov>", "sku1", "sku2"],
      ...                      scene_tokens=["", "<oov>", "feed", "search"])

    Args:
      model: a trained DSPnet (any model whose call returns item_logits / scene_logits).
      export_dir: where to write (a TF Serving version directory, or Trainer's serving dir).
      preprocess: raw sparse string histories -> {"item_ids", "scene_ids"} int [B, L]
        (TFT's `TransformFeaturesLayer` in the pipeline). Tracked, so its assets are saved.
        None: look the tokens up in tables (`VocabularyPreprocess`, the model's max_len).
      item_tokens: raw item id of each model id (0 padding, 1 OOV first).
      scene_tokens: raw scene name of each model scene id (same convention).
      top_k: K of `item_ids` / `item_scores`.
      retrieval: how the served top K is found.
        "auto" (default): "brute_force" for DSPnet and its baselines from 10,000 items
        (`retrieval.BRUTE_FORCE_MIN_ITEMS`), else "exact": the faster of the two, same answers.
        "brute_force": TFRS's BruteForce index over the item table, its candidates merged with
        the history and rescored (`dspnet_tf.retrieval`); the same answers as "exact", with a
        full-ranking fallback where the candidates cannot settle a next-event row; faster
        than "exact" from about 10,000 items on (benchmarks/served_retrieval.py).
        "exact": the whole catalog's scores and `tf.math.top_k`.
        "scann": TFRS's ScaNN index, approximate, with the catalog normaliser estimated from a
        sample; sub-linear in the catalog, for 1e5+ items. A ScaNN export loads only where
        `scann` is imported first (`dspnet serve` does it; the stock TF Serving binary cannot
        serve it).
      retrieval_options: ScaNN's settings (`dspnet_tf.retrieval.SCANN_DEFAULTS`).
    """
    if preprocess is None:
        preprocess = VocabularyPreprocess(item_tokens, scene_tokens, model.dspnet_config.max_len)
    module = ServingModule(model, preprocess, item_tokens, scene_tokens, top_k, retrieval,
                           retrieval_options)
    signatures = {
        "serving_default": module.serve_examples.get_concrete_function(),
        "predict_raw": module.serve_raw.get_concrete_function(),
        "transform_features": module.transform_features.get_concrete_function(),
        "evaluate_ranking": module.evaluate_ranking.get_concrete_function(),
        "encode_users": module.encode_users.get_concrete_function(),
    }
    # Written before saved_model.pb, so a version folder that looks complete has it too.
    write_export_metadata(export_dir, sorted(signatures), describe(module.retrieval))
    # Each id's raw token: a later model warm starts from this one by token.
    write_vocabularies(export_dir, item_tokens, scene_tokens)
    # Saving lists every training-only layer (augmenter, discriminator, ...) it skips, at
    # WARNING level; none of it is actionable for whoever exports, so keep the log readable.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        tf.saved_model.save(module, export_dir, signatures=signatures)
    finally:
        logger.setLevel(level)
    return export_dir


def write_export_metadata(export_dir: str, signature_names: Sequence[str],
                          extra: Optional[Dict[str, Any]] = None) -> str:
    """Writes `assets.extra/dspnet_metadata.json` into an export folder; returns its path.

    Keys: `dspnet_tf_version`, `tensorflow_version`, `signatures` (the signature names) and
    `extra`'s, e.g. `retrieval` ("exact", "brute_force" or "scann": a server must import scann
    before loading a "scann" export).
    Uses tf.io.gfile, so `export_dir` may be a remote path as in the TFX Trainer.
    """
    path = os.path.join(export_dir, METADATA_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    metadata = {"dspnet_tf_version": __version__, "tensorflow_version": tf.__version__,
                "signatures": list(signature_names), **(extra or {})}
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    return path


def read_export_metadata(export_dir: str) -> Dict[str, Any]:
    """The metadata an export carries (see `write_export_metadata`).

    Returns {} for an export without it (written before dspnet_tf 0.2.0).
    """
    path = os.path.join(export_dir, METADATA_FILE)
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as handle:
        return json.loads(handle.read())
