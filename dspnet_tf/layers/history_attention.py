"""Score terms shared by the layers that attend from the last positions over a history.

`RepeatPointer` and `TargetSceneAttention` both score each of the last Q positions against every
earlier event with a recency bias (by distance) and, knowing the scene asking, a bias per pair
(asking scene, scene of the event): one definition of both keeps them the same.
"""

from __future__ import annotations

import tensorflow as tf


def query_distances(queries: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
    """[Q, L] distance from each of the last Q positions of a length-L history to each position.

    Query q sits at position L - Q + q; a negative distance is a position after the query (it
    must not be read).
    """
    query_position = length - queries + tf.range(queries)
    return query_position[:, tf.newaxis] - tf.range(length)[tf.newaxis, :]


def scene_pair_scores(pair_bias: tf.Tensor, query_scenes: tf.Tensor,
                      key_scenes: tf.Tensor) -> tf.Tensor:
    """[B, Q, L] = pair_bias[query_scenes[b, q], key_scenes[b, l]] for a [S, S] bias table."""
    rows = tf.gather(pair_bias, tf.cast(query_scenes, tf.int32))  # [B, Q, S]
    where = tf.one_hot(tf.cast(key_scenes, tf.int32), tf.shape(pair_bias)[0], dtype=rows.dtype)
    return tf.einsum("bqs,bls->bql", rows, where)
