"""Next-event losses: sampled binary cross-entropy and masked softmax cross-entropy.

Both take per-position `weights` (1 for a real training position, 0 for padding) and return the
weighted mean over positions, so a batch's loss does not depend on how much of it is padding.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf


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
    positive_term = tf.nn.softplus(-positive_logits)  # -log sigmoid(s)
    negative_terms = tf.nn.softplus(negative_logits)  # -log(1 - sigmoid(s))
    if negative_weights is not None:
        negative_terms *= tf.cast(negative_weights, negative_terms.dtype)
    return _weighted_mean(positive_term + tf.reduce_sum(negative_terms, axis=-1), weights)


def sampled_softmax_loss(
    positive_logits: tf.Tensor,
    negative_logits: tf.Tensor,
    positive_log_q: tf.Tensor,
    negative_log_q: tf.Tensor,
    weights: tf.Tensor,
    accidental_hits: Optional[tf.Tensor] = None,
) -> tf.Tensor:
    """Cross-entropy of the true item against sampled negatives, with the logQ correction.

    Each position's softmax runs over its true item and K negatives drawn from a proposal q;
    subtracting log q from every logit (Bengio & Senecal; the "logQ correction" of
    sampled-softmax retrieval, TFRS's `candidate_sampling_probability`) makes the sampled
    softmax an unbiased stand-in for the full one as K grows. The item loss for catalogs whose
    full softmax does not fit memory. TFRS's `tasks.Retrieval` scores every query against
    every candidate of the batch, [B*L, B*L] logits here, and cannot mask padding positions
    in the per-position setting, hence this small function.

    Args:
      positive_logits: [...] logit of the true next item at each position.
      negative_logits: [..., K] logits of the sampled negatives (shared or per position).
      positive_log_q: [...] log of the proposal's probability of the true item.
      negative_log_q: [..., K] (or broadcastable) log proposal probabilities of the negatives.
      weights: [...] 1 for positions that count, 0 for padding.
      accidental_hits: optional [..., K] bool; True drops a negative equal to the true item.
    """
    negatives = negative_logits - negative_log_q
    if accidental_hits is not None:
        negatives = tf.where(accidental_hits, tf.cast(-1e9, negatives.dtype), negatives)
    positive = (positive_logits - positive_log_q)[..., tf.newaxis]
    logits = tf.concat([positive, negatives], axis=-1)
    return _weighted_mean(tf.reduce_logsumexp(logits, axis=-1) - positive[..., 0], weights)


def masked_negative_log_likelihood(log_likelihood: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """-log p(target) averaged over weighted positions, for models that compute log p themselves
    (the repeat pointer's mixture).

    Args:
      log_likelihood: [...] log-probability of the true target at each position.
      weights: [...] 1 for positions that count, 0 for padding.
    """
    return _weighted_mean(-log_likelihood, weights)


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
        labels=tf.cast(labels, tf.int32), logits=logits
    )
    return _weighted_mean(per_position, weights)
