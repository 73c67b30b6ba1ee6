"""Conditional contrastive regularisation (CCR) between two views of each user."""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from dspnet_tf.precision import at_least_float32


def conditional_info_nce(
    view_a: tf.Tensor,
    view_b: tf.Tensor,
    temperature: float = 0.2,
    context_weights: Optional[tf.Tensor] = None,
    soft_positive_mass: float = 0.0,
) -> tf.Tensor:
    """InfoNCE between two views, with optional soft positives from learned context weights.

    Each user i has two views a_i, b_i (L2-normalised inside). Scores s_ij = a_i . b_j / tau.
    The target distribution over j for anchor i is
        t_i = (1 - m) * onehot(i) + m * w_i,
    with w the conditional weights (rows sum to 1, zero diagonal) and m `soft_positive_mass`.
    The loss is the cross-entropy -sum_j t_ij log softmax_j(s_i), averaged over users and over
    both directions (a -> b and b -> a). With no weights (or m = 0) it is the standard InfoNCE
    of CL4SRec: the "uniform weights" ablation.

    Args:
      view_a: [B, d] representation of the first view.
      view_b: [B, d] representation of the second view.
      temperature: tau.
      context_weights: optional [B, B] row-stochastic weights w.
      soft_positive_mass: m in [0, 1].

    Returns:
      The float32 loss (computed in float32 from views of any floating dtype).
    """
    a = tf.math.l2_normalize(at_least_float32(view_a), axis=-1)
    b = tf.math.l2_normalize(at_least_float32(view_b), axis=-1)
    scores = tf.linalg.matmul(a, b, transpose_b=True) / temperature
    targets = tf.eye(tf.shape(scores)[0], dtype=scores.dtype)
    if context_weights is not None and soft_positive_mass > 0.0:
        targets = (1.0 - soft_positive_mass) * targets + soft_positive_mass * tf.cast(
            context_weights, scores.dtype
        )
    forward = tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=scores)
    backward = tf.nn.softmax_cross_entropy_with_logits(
        labels=targets, logits=tf.transpose(scores)
    )
    return 0.5 * (tf.reduce_mean(forward) + tf.reduce_mean(backward))
