"""Small exported models for tests, benchmarks and the reliability suite.

Serving cost does not depend on what the weights learned, so an untrained DSPnet of a given
shape, exported with the project's one export function, is an honest stand-in for latency and
contract checks.
"""

from __future__ import annotations

import os
import shutil
from typing import Optional, Sequence

import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from dspnet_tf import DSPnet, DSPnetConfig
from dspnet_tf.export import export_serving_model

SCENES = ("feed", "search", "live", "favorites", "cart")


def item_names(num_items: int) -> list:
    return [f"i{i:05d}" for i in range(num_items)]


def export_untrained_model(export_dir: str, num_items: int = 40, max_len: int = 8,
                           item_dim: int = 16, scene_dim: int = 8, seed: int = 0,
                           top_k: int = 10, scenes: Sequence[str] = SCENES,
                           config: Optional[dict] = None) -> str:
    """Exports a freshly initialised DSPnet over items i00000.. and the given scenes."""
    item_tokens = ["", "<oov>"] + item_names(num_items)
    scene_tokens = ["", "<oov>"] + list(scenes)
    settings = dict(item_vocab_size=len(item_tokens), scene_vocab_size=len(scene_tokens),
                    max_len=max_len, item_dim=item_dim, scene_dim=scene_dim, dropout=0.0,
                    seed=seed)
    settings.update(config or {})
    tf.keras.utils.set_random_seed(seed)
    model = DSPnet(DSPnetConfig(**settings))
    model({"item_ids": tf.zeros([1, max_len], tf.int64),
           "scene_ids": tf.zeros([1, max_len], tf.int64)})
    return export_serving_model(model, export_dir, None, item_tokens, scene_tokens, top_k=top_k)


def install_version(base_path: str, version: int, source: str) -> str:
    """Copies an exported model into `base_path/version` as the serving contract requires:
    complete files first (in a hidden staging folder), then one atomic rename."""
    staging = os.path.join(base_path, f".staging-{version}")
    shutil.copytree(source, staging)
    target = os.path.join(base_path, str(version))
    os.rename(staging, target)
    return target
