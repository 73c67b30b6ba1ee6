"""Adversarial prior regularisation: priors to sample from and the two players' losses.

The losses compute in float32 whatever dtype the discriminator's logits come in.
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from dspnet_tf.precision import at_least_float32


def _mean(values: tf.Tensor, weights: Optional[tf.Tensor]) -> tf.Tensor:
    """Mean of `values`, or their weighted mean (weights 0 drop padded positions)."""
    if weights is None:
        return tf.reduce_mean(values)
    weights = tf.cast(tf.reshape(weights, tf.shape(values)), values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def discriminator_loss(
    prior_logits: tf.Tensor, encoded_logits: tf.Tensor, weights: Optional[tf.Tensor] = None
) -> tf.Tensor:
    """D's loss: -log D(prior sample) - log(1 - D(z)), each averaged (D(x) = sigmoid(logit)).

    `weights` (same shape as `encoded_logits`) weight the encoded side: fixed-shape batches with
    padding weighted 0 replace a boolean mask, whose dynamic shape XLA cannot compile.
    """
    return tf.reduce_mean(tf.nn.softplus(-at_least_float32(prior_logits))) + _mean(
        tf.nn.softplus(at_least_float32(encoded_logits)), weights
    )


def generator_loss(encoded_logits: tf.Tensor, weights: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The encoders' adversarial term: -log D(z), (weighted) averaged."""
    return _mean(tf.nn.softplus(-at_least_float32(encoded_logits)), weights)


def discriminator_accuracy(
    prior_logits: tf.Tensor, encoded_logits: tf.Tensor, weights: Optional[tf.Tensor] = None
) -> tf.Tensor:
    """Share of prior samples called "prior" and of z called "encoder", over both sets."""
    prior_correct = tf.cast(tf.reshape(prior_logits, [-1]) > 0, tf.float32)
    encoded_correct = tf.cast(tf.reshape(encoded_logits, [-1]) <= 0, tf.float32)
    encoded_weights = (tf.ones_like(encoded_correct) if weights is None
                       else tf.cast(tf.reshape(weights, [-1]), tf.float32))
    return tf.math.divide_no_nan(
        tf.reduce_sum(prior_correct) + tf.reduce_sum(encoded_correct * encoded_weights),
        tf.cast(tf.size(prior_correct), tf.float32) + tf.reduce_sum(encoded_weights),
    )


def mixture_means(components: int, dim: int, radius: float = 2.0) -> tf.Tensor:
    """Fixed, well separated component means: +-radius on the first axes, in turn."""
    rows = []
    for k in range(components):
        axis, sign = (k // 2) % dim, (1.0 if k % 2 == 0 else -1.0)
        rows.append(tf.one_hot(axis, dim) * sign * radius)
    return tf.stack(rows)


def sample_prior(
    prior: str, num: tf.Tensor, dim: int, seed: tf.Tensor, components: int = 4
) -> tf.Tensor:
    """Draws `num` samples of dimension `dim` from the named prior.

    Args:
      prior: "gaussian" (N(0, I)), "laplace" (i.i.d. Laplace, scale 1/sqrt(2)) or "mixture"
        (equal-weight Gaussians with std 0.5 around `mixture_means`).
      num: number of samples.
      dim: dimension.
      seed: stateless seed, int [2].
      components: mixture components.
    """
    seed_a, seed_b = tf.unstack(tf.random.experimental.stateless_split(seed, num=2))
    shape = tf.stack([num, dim])
    if prior == "gaussian":
        return tf.random.stateless_normal(shape, seed_a)
    if prior == "laplace":
        # Inverse CDF: x = -b * sign(u) * log(1 - 2|u|), u ~ U(-1/2, 1/2).
        u = tf.random.stateless_uniform(shape, seed_a, minval=-0.5 + 1e-7, maxval=0.5 - 1e-7)
        return -(1.0 / math.sqrt(2.0)) * tf.sign(u) * tf.math.log1p(-2.0 * tf.abs(u))
    if prior == "mixture":
        means = mixture_means(components, dim)
        which = tf.random.stateless_uniform([num], seed_b, 0, components, dtype=tf.int32)
        return tf.gather(means, which) + 0.5 * tf.random.stateless_normal(shape, seed_a)
    raise ValueError(f"unknown prior {prior!r}; expected gaussian, laplace or mixture")
