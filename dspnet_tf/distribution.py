"""Distribution strategies by name, for `dspnet train`, the TFX Trainer and the benchmarks.

`multi_worker` reads the cluster from `TF_CONFIG` (the variable Kubeflow's and Vertex's training
operators set), exactly as `tf.distribute.MultiWorkerMirroredStrategy` documents.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import ContextManager

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "default") -> tf.distribute.Strategy:
    """The named `tf.distribute` strategy; build and compile the model inside its `scope()`.

    Args:
      name: "default" (one device, no distribution), "mirrored" (every local GPU/CPU replica,
        in-process all-reduce) or "multi_worker" (`MultiWorkerMirroredStrategy`, cluster from
        `TF_CONFIG`).

    Raises:
      ValueError: unknown name, or `multi_worker` without a usable `TF_CONFIG`.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise ValueError("distribution 'multi_worker' needs TF_CONFIG (cluster and task); "
                             "it is not set")
        try:
            config = json.loads(raw)
            config["cluster"]["worker"]  # pylint: disable=pointless-statement
            config["task"]["index"]  # pylint: disable=pointless-statement
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"TF_CONFIG is not a cluster spec with cluster.worker and "
                             f"task.index: {err}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution {name!r}; choose one of {', '.join(STRATEGIES)}")


def replica_scale() -> float:
    """1 / replicas in sync: scales a per-replica mean loss so the summed gradients are a mean.

    Keras's compiled losses do this themselves; custom `train_step`s (DSPnet's two optimizers,
    BERT4Rec's cloze loss) must, because optimizers all-reduce gradients with SUM.
    """
    return 1.0 / tf.distribute.get_strategy().num_replicas_in_sync


def strategy_scope(name: str = "default") -> ContextManager:
    """The named strategy's `scope()`; for "default", no scope at all.

    Entering the default strategy's scope explicitly is not a no-op for Keras (the model records
    it as its strategy, and BackupAndRestore then failed to restore weights), so the single-device
    path stays exactly what it was without distribution.
    """
    if name == "default":
        return contextlib.nullcontext()
    return make_strategy(name).scope()
