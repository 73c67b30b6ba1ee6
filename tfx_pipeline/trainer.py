"""Trainer module: `run_fn` builds dspnet_tf.DSPnet from custom_config, fits it, exports it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any, Dict, List

import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
import tensorflow_transform as tft
from absl import logging
from tfx import v1 as tfx
from tfx_bsl.public import tfxio

from dspnet_tf import DSPnet, DSPnetConfig
from dspnet_tf.data.sequences import batch_by_history_length, repeat_target_share
from dspnet_tf.distribution import strategy_scope
from dspnet_tf.export import export_serving_model
from dspnet_tf.optimizers import LazyAdam
from dspnet_tf.resilience import resilient_callbacks
from dspnet_tf.warm_start import warm_start
from tfx_pipeline import features

TRAIN_DEFAULTS = {"epochs": 5, "batch_size": 256, "learning_rate": 1e-3, "top_k": 20,
                  "distribution": "default", "optimizer": "adam", "batch_by_length": False,
                  "warm_start_epochs": 1, "retrieval": "auto"}
WARM_START_FILE = "warm_start.json"  # in the model run folder: what the warm start did
OPTIMIZERS = {"adam": tf.keras.optimizers.Adam, "lazy_adam": LazyAdam}


def _dataset(fn_args: tfx.components.FnArgs, files: List[str], tft_output: tft.TFTransformOutput,
             batch_size: int, num_epochs: int, by_length: bool = False) -> tf.data.Dataset:
    dataset = fn_args.data_accessor.tf_dataset_factory(
        files,
        tfxio.TensorFlowDatasetOptions(batch_size=batch_size, num_epochs=num_epochs),
        tft_output.transformed_metadata.schema,
    )
    select = lambda f: {features.ITEM_IDS: f[features.ITEM_IDS],  # noqa: E731
                        features.SCENE_IDS: f[features.SCENE_IDS]}
    if not by_length:
        return dataset.map(select)
    # Transform pads every history to max_len + 1; rebatched by length, a batch is padded only
    # to its longest history (the in-memory input step). About 2x faster epochs on the default
    # world, but batches are no longer random samples of users: off by default, as it measured
    # lower NDCG@10 (benchmarks/PIPELINE_PARITY.md).
    rows = dataset.unbatch().map(select)
    length = tf.compat.dimension_value(rows.element_spec[features.ITEM_IDS].shape[-1])
    return batch_by_history_length(rows, batch_size, int(length)).prefetch(tf.data.AUTOTUNE)


def _tokens(tft_output: tft.TFTransformOutput, vocab: str, oov_buckets: int = 0) -> List[str]:
    """Raw id of each model id: padding, OOV, the vocabulary, then one name per OOV bucket."""
    words = [w.decode() if isinstance(w, bytes) else w
             for w in tft_output.vocabulary_by_name(vocab)]
    return ["", "<oov>"] + words + [f"<oov:{i}>" for i in range(oov_buckets)]


def _backup_dir(fn_args: tfx.components.FnArgs) -> str:
    """Where BackupAndRestore keeps epoch checkpoints: stable across reruns of the same job.

    Each Trainer execution gets a new model_run_dir, so the checkpoint lives beside them, keyed
    by the job's inputs and settings: a rerun of a killed job resumes, a different job starts
    fresh.
    """
    key = hashlib.sha256(json.dumps(
        [sorted(fn_args.train_files), fn_args.transform_output,
         fn_args.custom_config or {}, fn_args.base_model or ""],
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    trainer_root = os.path.dirname(os.path.dirname(fn_args.model_run_dir))
    return os.path.join(trainer_root, "backup", key)


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """TFX Trainer entry point.

    custom_config: every DSPnetConfig field (e.g. `item_dim`, `lambda_ccr`), plus `epochs`,
    `batch_size`, `learning_rate`, `top_k`, `distribution` (default, mirrored, multi_worker),
    `optimizer` (adam, or lazy_adam for large catalogs), `batch_by_length` (batches of similar
    history length: faster, slightly less accurate; default false), `warm_start_epochs` and
    Transform's `max_len` / `item_oov_buckets`.

    Warm start: with a base model (`fn_args.base_model`, the latest blessed model the pipeline
    resolves; none on a first run or with `warm_start=False`) the new model starts from its
    weights, vocabulary rows mapped by raw token (`dspnet_tf.warm_start`: known items and
    scenes keep their trained rows wherever the new frequency order put them, new ones get
    fresh rows), and trains `warm_start_epochs` (default 1) instead of `epochs`: yesterday's
    model already fits every day but today's, so one pass over the data (which holds today's
    events) is what a day adds. The log says how many rows were carried and how many are new;
    `warm_start.json` in the model run folder records it.
    """
    custom: Dict[str, Any] = dict(fn_args.custom_config or {})
    train_options = {k: custom.pop(k, v) for k, v in TRAIN_DEFAULTS.items()}
    oov_buckets = int(custom.pop("item_oov_buckets", 0))
    custom.pop("item_frequency_threshold", None)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    item_tokens = _tokens(tft_output, features.ITEM_VOCAB, oov_buckets)
    scene_tokens = _tokens(tft_output, features.SCENE_VOCAB)
    config = DSPnetConfig(item_vocab_size=len(item_tokens), scene_vocab_size=len(scene_tokens),
                          **custom)
    if (config.uses_repeat_pointer and config.repeat_pointer is None
            and config.training_repeat_share is None):
        # The default pointer depends on whether the training log has repeats to copy: one
        # pass over the transformed training examples (only when the answer matters and
        # custom_config does not state the share).
        plain = _dataset(fn_args, fn_args.train_files, tft_output, train_options["batch_size"], 1)
        share = repeat_target_share(row for batch in plain.as_numpy_iterator()
                                    for row in batch[features.ITEM_IDS])
        config = config.replace(training_repeat_share=share)
        logging.info("training repeat share %.4f: repeat pointer %s", share,
                     "on" if config.uses_repeat_pointer else "off")

    by_length = train_options["batch_by_length"]
    if not isinstance(by_length, bool):  # bool("false") would be True
        raise ValueError(f"Trainer custom_config batch_by_length={by_length!r}: expected true "
                         "or false")
    train = _dataset(fn_args, fn_args.train_files, tft_output, train_options["batch_size"], 1,
                     by_length)
    evaluation = _dataset(fn_args, fn_args.eval_files, tft_output, train_options["batch_size"], 1,
                          by_length)
    # `distribution`: "mirrored", or "multi_worker" when the orchestrator (e.g. a Kubeflow
    # training operator) sets TF_CONFIG for each Trainer replica.
    optimizer = str(train_options["optimizer"])
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Trainer custom_config optimizer={optimizer!r}: choose one of "
                         f"{', '.join(OPTIMIZERS)}")
    epochs = int(train_options["epochs"])
    record: Dict[str, Any] = {"base_model": fn_args.base_model}
    with strategy_scope(str(train_options["distribution"])):
        model = DSPnet(config)
        model.compile(optimizer=OPTIMIZERS[optimizer](train_options["learning_rate"]))
        if fn_args.base_model:
            # A WarmStartError (unreadable base) fails the Trainer, naming the path.
            report = warm_start(model, item_tokens, scene_tokens, base=fn_args.base_model)
            logging.info("%s", report.summary())
            epochs = int(train_options["warm_start_epochs"])
            record.update({k: v for k, v in report.to_dict().items() if k != "base"})
        else:
            logging.info("no base model: training from scratch for %d epochs", epochs)
    record["epochs"] = epochs
    started = time.perf_counter()
    tensorboard = tf.keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir, update_freq="epoch")
    history = model.fit(train, validation_data=evaluation, epochs=epochs,
                        callbacks=[tensorboard, *resilient_callbacks(_backup_dir(fn_args))],
                        verbose=2)
    record["fit_seconds"] = time.perf_counter() - started

    tft_layer = tft_output.transform_features_layer()
    export_serving_model(model, fn_args.serving_model_dir, tft_layer, item_tokens, scene_tokens,
                         top_k=int(train_options["top_k"]),
                         retrieval=str(train_options["retrieval"]))
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, WARM_START_FILE), "w") as handle:
        handle.write(json.dumps(record, indent=1))
    with tf.io.gfile.GFile(os.path.join(fn_args.model_run_dir, "history.json"), "w") as handle:
        handle.write(json.dumps({k: [float(x) for x in v] for k, v in history.history.items()}))
