"""Top-K of the served answer through a factorized index (TFRS BruteForce or ScaNN).

The served answer is not a plain dot product q . e, so an index cannot rank it alone. With the
joint factorisation it is sum_s P(s | h) P(item | h, s) over the scenes (one-hot at a given
target scene), and each P(item | h, s) mixes the catalog softmax of q_s . e with the repeat
pointer's mass on history items. What an index can do is find, for each scene's query q_s, the
M items with the largest q_s . e. `FactorizedTopK` then scores the union of those candidates
and the history items with exactly the formula of `DSPnet.call` and keeps the top K.

  * Which items can be missing? An item outside every scene's M retrieved and outside the
    history has no pointer mass, and its catalog score in scene s is at most the M-th retrieved
    one. So its answer is at most `bound` = logsumexp_s(w_s + log_keep_s + l_s^(M) - log Z_s).
    When the K-th best candidate beats `bound`, the candidates' top K is the exact top K of the
    whole catalog. With M = K + history length a given target scene always passes this check;
    a next-event row (sum over scenes) can fail it (an item second in every scene can beat each
    scene's winner), and then `ServingModule` answers that batch with the dense full-catalog
    path: the exact index (BruteForce) gives exactly the full ranking, always.
  * The normaliser Z_s (the catalog's log-sum-exp) is what compares a history item's pointer
    mass with a catalog item, and one scene with another. BruteForce computes it exactly (the
    full matmul, which BruteForce performs anyway). ScaNN estimates it as the retrieved items'
    exact mass plus a fixed uniform sample of the rest scaled to the rest's size (the sampled
    softmax's estimate, `losses.sampled_softmax_log_prob`): approximate, as ScaNN's search is.

Why not TFRS alone: its layers return the top K of q . e; the mixture over scenes and the
pointer's normalised mass are DSPnet's own, so the merge is written here, and it is tested to
give exactly the dense answer (`tests/unit/test_retrieval.py`).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from dspnet_tf.config import RESERVED_IDS
from dspnet_tf.layers.repeat_pointer import IMPOSSIBLE, log_add_exp

RETRIEVAL_METHODS = ("auto", "exact", "brute_force", "scann")


# "auto" picks BruteForce from this many items: measured at batch 1 with the default widths
# (benchmarks/served_retrieval.py and the same functions at 2,000 items), the dense path is
# faster below it (its one matmul and top_k beat the candidates' gathers and two conds) and
# BruteForce from it on, increasingly with the catalog.
BRUTE_FORCE_MIN_ITEMS = 10_000


def resolve_retrieval(method: str, model: Any) -> str:
    """"auto" -> "brute_force" for a model that gives `answer_components` (DSPnet and every
    baseline built from it) with at least `BRUTE_FORCE_MIN_ITEMS` items, else "exact" (the
    same answers); any other method is checked and returned."""
    if method not in RETRIEVAL_METHODS:
        raise ValueError(f"retrieval={method!r}: choose one of {', '.join(RETRIEVAL_METHODS)}")
    factorized = hasattr(model, "answer_components")
    if method == "auto":
        large = (factorized and model.dspnet_config.item_vocab_size - RESERVED_IDS
                 >= BRUTE_FORCE_MIN_ITEMS)
        return "brute_force" if large else "exact"
    if method != "exact" and not factorized:
        raise ValueError(f"retrieval={method!r} needs a DSPnet-family model (its "
                         f"answer_components); {type(model).__name__} has none: export it with "
                         "retrieval='exact'")
    return method
# ScaNN's defaults, from benchmarks/serving_topk.py's calibrations (recall@10 >= 0.99 at 1e4 to
# 1e6 items with about sqrt(N) leaves), widened because the served answer needs K + L candidates
# per query rather than 10.
SCANN_DEFAULTS = {"num_leaves": None, "num_leaves_to_search": None,
                  "num_reordering_candidates": None, "normaliser_sample": 4096, "seed": 0}


def import_scann() -> None:
    """Loads scann's TensorFlow ops, with an error that says what to do if it cannot."""
    try:
        import scann  # noqa: F401  (registers the Scann>* ops a ScaNN SavedModel uses)
    except Exception as error:  # NotFoundError too: ops built for another TensorFlow
        raise ImportError(
            "retrieval='scann' needs the scann package with ops for this TensorFlow "
            f"({tf.__version__}); scann==1.3.2 is the release built for TF 2.16 "
            f"(pip install scann==1.3.2): {type(error).__name__}: {error}") from error


def candidate_scores(logits: tf.Tensor, candidates: tf.Tensor,
                     components: Mapping[str, tf.Tensor], log_normaliser: tf.Tensor,
                     normalise: bool) -> tf.Tensor:
    """`DSPnet.call`'s item scores of candidate items from their catalog logits.

    Args:
      logits: [B, S, C] q_s . e of each candidate for each of the S queries.
      candidates: [B, C] model item ids.
      components: `DSPnet.answer_components` (log_weights, log_keep, log_gate, log_pointer,
        history).
      log_normaliser: [B, S] each query's catalog log-sum-exp (log Z_s).
      normalise: whether the answer is log-probabilities (`answers_are_log_probs`); else the
        answer is the raw catalog logits (a single query without a pointer).

    Returns:
      [B, C] the scores `call` gives these items (up to float rounding).
    """
    if normalise:
        logits = logits - log_normaliser[:, :, tf.newaxis]
    catalog = components["log_keep"][:, :, tf.newaxis] + logits
    # The pointer's mass on each candidate: the sum over the history positions holding it.
    matches = tf.cast(tf.equal(tf.cast(candidates, tf.int32)[:, :, tf.newaxis],
                               tf.cast(components["history"], tf.int32)[:, tf.newaxis, :]),
                      tf.float32)  # [B, C, L]
    position_mass = tf.exp(components["log_gate"][:, :, tf.newaxis] + components["log_pointer"])
    mass = tf.einsum("bsl,bcl->bsc", position_mass, matches)
    # As `mixture_log_probs` combines them for the whole catalog.
    mixed = log_add_exp(catalog, tf.math.log(tf.maximum(mass, 1e-30)))
    scores = tf.where(mass > 0, mixed, catalog)
    return tf.reduce_logsumexp(components["log_weights"][:, :, tf.newaxis] + scores, axis=1)


class FactorizedTopK(tf.Module):
    """The served top K found with a TFRS factorized top-K index (see the module docstring).

    Args:
      embeddings: the model's item table (the variable: candidates are scored from it, so the
        scores are the model's own); rows below `RESERVED_IDS` are never candidates.
      vocab_size: the model's item vocabulary size (rows of `embeddings` beyond it, e.g. a
        [MASK] row, are not items).
      k: the K of the answer.
      history_length: the model's max_len (the candidates per query are K + max_len).
      method: "brute_force" (TFRS BruteForce: exact) or "scann" (TFRS ScaNN: approximate).
      scann_options: num_leaves (default about sqrt(N)), num_leaves_to_search (default about
        N / 20 leaves, at least 16), num_reordering_candidates (default 8 x the candidates per
        query), normaliser_sample (uniform items for the normaliser estimate, default 4096) and
        seed (of that sample).
      candidates_per_query: M, retrieved per query (default K + history_length, which settles
        every row with a given target scene).
    """

    def __init__(self, embeddings: tf.Variable, vocab_size: int, k: int, history_length: int,
                 method: str,
                 scann_options: Optional[Mapping[str, Any]] = None,
                 candidates_per_query: Optional[int] = None) -> None:
        super().__init__(name=f"factorized_top_k_{method}")
        if method not in ("brute_force", "scann"):
            raise ValueError(f"retrieval method {method!r}: choose one of "
                             f"{', '.join(RETRIEVAL_METHODS)}")
        real = int(vocab_size) - RESERVED_IDS
        if real < 1:
            raise ValueError(f"item vocabulary of {vocab_size} ids has no real item")
        self.method, self.k = method, int(k)
        self.candidates_per_query = min(int(candidates_per_query or k + history_length), real)
        self.embeddings = embeddings
        from tensorflow_recommenders.layers import factorized_top_k  # heavy import: only here
        table = tf.convert_to_tensor(embeddings)[RESERVED_IDS:vocab_size]
        identifiers = tf.range(RESERVED_IDS, vocab_size, dtype=tf.int32)
        if method == "brute_force":
            self.index = factorized_top_k.BruteForce(k=self.candidates_per_query)
        else:
            import_scann()
            options = {**SCANN_DEFAULTS, **(scann_options or {})}
            unknown = set(options) - set(SCANN_DEFAULTS)
            if unknown:
                raise ValueError(f"unknown scann option(s) {sorted(unknown)}; known: "
                                 f"{sorted(SCANN_DEFAULTS)}")
            leaves = options["num_leaves"] or max(1, int(round(math.sqrt(real))))
            search = options["num_leaves_to_search"] or min(leaves, max(16, leaves // 20))
            reorder = (options["num_reordering_candidates"]
                       or 8 * self.candidates_per_query)
            self.scann_settings = {"num_leaves": leaves, "num_leaves_to_search": search,
                                   "num_reordering_candidates": reorder}
            self.index = factorized_top_k.ScaNN(k=self.candidates_per_query,
                                                **self.scann_settings)
            size = min(int(options["normaliser_sample"]), real)
            rng = np.random.default_rng(int(options["seed"]))
            sample = rng.choice(real, size=size, replace=False) + RESERVED_IDS
            self.normaliser_sample = tf.constant(np.sort(sample).astype(np.int32))
            # Each sampled item stands for (real - retrieved) / size items of the unretrieved rest.
            self.log_sample_scale = math.log(max(real - self.candidates_per_query, 1) / size)
        self.index.index(table, identifiers)

    def __call__(self, components: Mapping[str, tf.Tensor], normalise: bool
                 ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Top-K scores [B, K] and model item ids [B, K], and whether each row is certain [B].

        `certain` is the exactness check of the module docstring (always True for ScaNN, whose
        answers are approximate by design).
        """
        # A batch whose rows all name their target scene (every served list is shown on one
        # surface) needs one query per row, not one per scene: the others weigh nothing.
        weights = components["log_weights"]
        one_scene = tf.reduce_all(tf.reduce_sum(tf.cast(weights > IMPOSSIBLE / 2, tf.int32),
                                                axis=1) == 1)
        return tf.cond(one_scene,
                       lambda: self._top_k(_at_given_scene(components), normalise),
                       lambda: self._top_k(components, normalise))

    def _top_k(self, components: Mapping[str, tf.Tensor], normalise: bool
               ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        queries = components["queries"]  # [B, S, d]
        batch, scenes = tf.shape(queries)[0], tf.shape(queries)[1]
        flat = tf.reshape(queries, [-1, tf.shape(queries)[2]])
        _, retrieved = self.index(flat)  # [B*S, M] model ids
        retrieved = tf.cast(retrieved, tf.int32)
        retrieved_logits = tf.einsum("nd,nmd->nm", flat, tf.gather(self.embeddings, retrieved))
        if self.method == "brute_force":
            log_z = tf.reshape(self._exact_log_normaliser(flat), [batch, scenes])
        else:
            log_z = tf.reshape(self._estimated_log_normaliser(flat, retrieved, retrieved_logits),
                               [batch, scenes])
        # The candidates: every query's retrieved items and the history, each once, in id
        # order (so ties rank the lower id first, as the dense path's top_k does).
        history = tf.cast(components["history"], tf.int32)
        pool = tf.sort(tf.concat([tf.reshape(retrieved, [batch, -1]), history], axis=1), axis=1)
        repeated = tf.pad(tf.equal(pool[:, 1:], pool[:, :-1]), [[0, 0], [1, 0]])
        usable = tf.logical_and(tf.logical_not(repeated), pool >= RESERVED_IDS)
        logits = tf.einsum("bsd,bcd->bsc", queries, tf.gather(self.embeddings, pool))
        scores = candidate_scores(logits, pool, components, log_z, normalise)
        scores = tf.where(usable, scores, IMPOSSIBLE)
        top_scores, top = tf.math.top_k(scores, self.k)
        ids = tf.gather(pool, top, batch_dims=1)
        if self.method == "scann":
            return top_scores, ids, tf.ones([batch], tf.bool)
        # The best an unretrieved non-history item could score (module docstring).
        weakest = tf.reshape(tf.reduce_min(retrieved_logits, axis=1), [batch, scenes])
        if normalise:
            weakest = weakest - log_z
        bound = tf.reduce_logsumexp(components["log_weights"] + components["log_keep"] + weakest,
                                    axis=1)
        return top_scores, ids, top_scores[:, -1] > bound

    def _estimated_log_normaliser(self, flat: tf.Tensor, retrieved: tf.Tensor,
                                  retrieved_logits: tf.Tensor) -> tf.Tensor:
        """log Z per query [N]: the retrieved items' exact mass, the OOV row's, and the rest's
        estimated from a fixed uniform sample (its items that were retrieved left out)."""
        sample_logits = tf.matmul(flat, tf.gather(self.embeddings, self.normaliser_sample),
                                  transpose_b=True)  # [N, m]
        was_retrieved = tf.reduce_any(tf.equal(self.normaliser_sample[tf.newaxis, :, tf.newaxis],
                                               retrieved[:, tf.newaxis, :]), axis=-1)
        sample_logits = tf.where(was_retrieved, IMPOSSIBLE,
                                 sample_logits + self.log_sample_scale)
        return tf.reduce_logsumexp(
            tf.concat([retrieved_logits, self._oov_logit(flat), sample_logits], 1), axis=1)

    def _oov_logit(self, flat: tf.Tensor) -> tf.Tensor:
        """The OOV row's logit [N, 1] (it is in the catalog softmax, never a candidate).

        A gather, not `embeddings[1]`: once a variable has been gathered from, TensorFlow reads
        it densely by copying it whole (copy-on-read), 256 MB per read at 1e6 x 64.
        """
        row = tf.gather(self.embeddings, [RESERVED_IDS - 1])
        return tf.matmul(flat, row, transpose_b=True)

    def _exact_log_normaliser(self, flat: tf.Tensor) -> tf.Tensor:
        """log Z per query [N] over every item and the OOV row, exactly.

        Against BruteForce's own copy of the table (`_candidates`, private in TFRS 0.7.x, which
        requirements.lock pins): it is only ever read densely, so it is not copied per read as
        the model's table is (see `_oov_logit`); the model's `_score_catalog` computes the
        same sum (the padding row's logit is -1e9, nothing in a sum).
        """
        table = self.index._candidates  # pylint: disable=protected-access
        logits = tf.matmul(flat, table, transpose_b=True)
        return tf.reduce_logsumexp(tf.concat([self._oov_logit(flat), logits], axis=1), axis=1)


def _at_given_scene(components: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """The components of rows with one weighted scene, reduced to that scene (S = 1)."""
    scene = tf.argmax(components["log_weights"], axis=1, output_type=tf.int32)[:, tf.newaxis]
    reduced = {name: tf.gather(components[name], scene, batch_dims=1)
               for name in ("queries", "log_keep", "log_gate", "log_pointer")}
    reduced["log_weights"] = tf.zeros_like(reduced["log_keep"])
    reduced["history"] = components["history"]
    return reduced


def describe(index: Optional[FactorizedTopK]) -> Dict[str, Any]:
    """What an export's metadata says of its retrieval."""
    if index is None:
        return {"retrieval": "exact"}
    described: Dict[str, Any] = {"retrieval": index.method,
                                 "candidates_per_query": index.candidates_per_query}
    if index.method == "scann":
        described["scann"] = dict(index.scann_settings)
    return described
