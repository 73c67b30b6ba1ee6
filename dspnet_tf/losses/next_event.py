"""Next-event losses: sampled binary cross-entropy, the sampled softmax, masked softmax cross-entropy.

The losses take per-position `weights` (1 for a real training position, 0 for padding) and return
the weighted mean over positions, so a batch's loss does not depend on how much of it is padding.
The sampled softmax returns each position's log-probability instead, so the repeat pointer's
mixture can be built on it; `masked_negative_log_likelihood` averages it.

Every function computes in float32 whatever dtype its logits come in (a mixed-precision model's
bfloat16 / float16 scores): softmaxes, log-sum-exps and means lose too much in 8 or 11 bits.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from dspnet_tf.precision import at_least_float32


def _weighted_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    weights = tf.cast(weights, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights), tf.reduce_sum(weights))


def sampled_bce_loss(
    positive_logits: tf.Tensor,
    negative_logits: tf.Tensor,
    weights: tf.Tensor,
    negative_weights: Optional[tf.Tensor] = None,
) -> tf.Tensor:
    """SASRec's item loss: -log sigmoid(s+) - sum_k log(1 - sigmoid(s-_k)), averaged over positions.

    Scoring one positive against K sampled negatives costs O(B*K) instead of O(B*|V|), which is
    what lets the item loss train on catalogs of millions of items.

    Args:
      positive_logits: [...] logit of the true next item at each position.
      negative_logits: [..., K] logits of K sampled items.
      weights: [...] 1 for positions that count, 0 for padding.
      negative_weights: optional [..., K]; 0 drops a negative (e.g. one that equals the positive).
    """
    positive_term = tf.nn.softplus(-at_least_float32(positive_logits))  # -log sigmoid(s)
    negative_terms = tf.nn.softplus(at_least_float32(negative_logits))  # -log(1 - sigmoid(s))
    if negative_weights is not None:
        negative_terms *= tf.cast(negative_weights, negative_terms.dtype)
    return _weighted_mean(positive_term + tf.reduce_sum(negative_terms, axis=-1), weights)


def sampled_softmax_log_prob(
    positive_logits: tf.Tensor,
    negative_logits: tf.Tensor,
    negative_log_expected_count: tf.Tensor,
    accidental_hits: Optional[tf.Tensor] = None,
) -> tf.Tensor:
    """log p(true item) of the full softmax, estimated from sampled negatives (the logQ correction).

    The full softmax's normaliser sums exp(logit) over the whole catalog. Negatives drawn from a
    proposal q, K per batch, estimate it without bias once each negative's exp(logit) is divided
    by its expected count K q(item): the "logQ correction" (Bengio & Senecal; TFRS's
    `candidate_sampling_probability`), here subtracting log(K q) from the negatives' logits. The
    true item enters the normaliser once, uncorrected, so with every item drawn exactly once
    (K q = 1) this is the full log-softmax. Because the estimate is of the full softmax's own
    log-probability, the repeat pointer's mixture trains on it exactly as on the full softmax,
    and the served model (which scores the whole catalog) reads the distribution it was trained
    for.

    The item loss for catalogs whose [batch, length, catalog] logits do not fit memory. Written
    here rather than through TFRS's `tasks.Retrieval`, which scores every query against every
    candidate of the batch ([B*L, B*L] logits in the per-position setting) and has no padding
    mask or sampled-negative input for it; `tf.nn.sampled_softmax_loss` needs per-class weights
    and biases and returns the loss alone, where the pointer needs the log-probability.

    Args:
      positive_logits: [...] logit of the true next item at each position.
      negative_logits: [..., K] logits of the sampled negatives (shared or per position).
      negative_log_expected_count: [..., K] (or broadcastable) log(K q(negative)).
      accidental_hits: optional [..., K] bool; True drops a negative equal to the true item.

    Returns:
      [...] estimated log-probabilities of the true items.
    """
    positive_logits = at_least_float32(positive_logits)
    negatives = (at_least_float32(negative_logits)
                 - at_least_float32(negative_log_expected_count))
    if accidental_hits is not None:
        negatives = tf.where(accidental_hits, tf.cast(-1e9, negatives.dtype), negatives)
    logits = tf.concat([positive_logits[..., tf.newaxis], negatives], axis=-1)
    return positive_logits - tf.reduce_logsumexp(logits, axis=-1)


def masked_negative_log_likelihood(log_likelihood: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """-log p(target) averaged over weighted positions, for models that compute log p themselves
    (the repeat pointer's mixture).

    Args:
      log_likelihood: [...] log-probability of the true target at each position.
      weights: [...] 1 for positions that count, 0 for padding.
    """
    return _weighted_mean(-at_least_float32(log_likelihood), weights)


def masked_softmax_cross_entropy(
    logits: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor
) -> tf.Tensor:
    """Full softmax cross-entropy over all candidates, averaged over weighted positions.

    Used for the next scene (small vocabularies) and as the full-softmax item loss for small
    catalogs. Padding positions may carry any label; their weight is what removes them.

    Args:
      logits: [..., C] candidate logits.
      labels: [...] integer targets in [0, C).
      weights: [...] 1 for positions that count, 0 for padding.
    """
    per_position = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=at_least_float32(logits)
    )
    return _weighted_mean(per_position, weights)
