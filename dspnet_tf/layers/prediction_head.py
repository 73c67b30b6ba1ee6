"""Prediction head with tied embeddings: scores candidates by a dot product with their embedding."""

from __future__ import annotations

from typing import Any, Dict, Optional

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class PredictionHead(tf.keras.layers.Layer):
    """Maps the fused representation z to a query vector in a candidate embedding space.

    DSPnet predicts the next item and the next scene from the same z. Each head projects z into
    the embedding space of its candidates, and a candidate's logit is <query, E[candidate]>, with
    E the input embedding table of the corresponding sequence encoder (tied embeddings: fewer
    parameters, and rare items get gradients from both sides). The dot product itself is left to
    the caller so it can score all candidates (full softmax, serving top-K) or only sampled ones
    (sampled BCE) without materialising [B, |V|] logits.

    With `num_target_scenes > 0` the head is conditioned on the scene the list will be shown in
    (our extension): the query is computed from [z ; e(target_scene)], where target scene 0 means
    "unknown" and has its own learned embedding.

    Example:
      >>> head = PredictionHead(output_dim=8)
      >>> head(tf.zeros([3, 16])).shape
      TensorShape([3, 8])

    Args:
      output_dim: width of the candidate embedding space.
      num_target_scenes: scene vocabulary size for target-scene conditioning; 0 disables it.
      target_scene_dim: width of the target-scene embedding.
    """

    def __init__(
        self,
        output_dim: int,
        num_target_scenes: int = 0,
        target_scene_dim: int = 8,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.output_dim = int(output_dim)
        self.num_target_scenes = int(num_target_scenes)
        self.target_scene_dim = int(target_scene_dim)
        self.projection = tf.keras.layers.Dense(self.output_dim, name="projection")
        if self.num_target_scenes:
            self.target_scene_embedding = tf.keras.layers.Embedding(
                self.num_target_scenes, self.target_scene_dim, name="target_scene_embedding"
            )

    def call(self, representation: tf.Tensor, target_scene: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Returns the query [..., output_dim]; `target_scene` has the shape of representation[..., 0]."""
        if self.num_target_scenes:
            if target_scene is None:
                target_scene = tf.zeros(tf.shape(representation)[:-1], tf.int32)
            scene = self.target_scene_embedding(tf.cast(target_scene, tf.int32))
            representation = tf.concat([representation, scene], axis=-1)
        return self.projection(representation)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(
            output_dim=self.output_dim,
            num_target_scenes=self.num_target_scenes,
            target_scene_dim=self.target_scene_dim,
        )
        return config


def score_all(query: tf.Tensor, embeddings: tf.Tensor, vocab_size: int,
              excluded_ids: int = 1) -> tf.Tensor:
    """Logits of every real candidate: [..., d] x [vocab_size(+mask), d] -> [..., vocab_size].

    The first `excluded_ids` ids get -inf-like logits so they are never predicted: the padding
    id 0 by default, and with 2 the out-of-vocabulary bucket 1 as well. The [MASK] row is dropped.
    """
    table = embeddings[:vocab_size]
    return exclude_leading_ids(tf.linalg.matmul(query, table, transpose_b=True), excluded_ids)


def exclude_leading_ids(logits: tf.Tensor, excluded_ids: int) -> tf.Tensor:
    """Gives ids below `excluded_ids` (last axis) an -inf-like logit, so none is ever ranked."""
    candidate = tf.range(tf.shape(logits)[-1]) >= excluded_ids
    return tf.where(candidate, logits, tf.cast(-1e9, logits.dtype))
