"""`DSPnetConfig`: every hyper-parameter and ablation switch of DSPnet in one JSON-able record.

Id conventions shared by the whole library:
  * item ids and scene ids are integers; 0 is padding, 1 is the out-of-vocabulary bucket by
    convention of the data layer (the model itself treats every id >= 1 alike);
  * `item_vocab_size` / `scene_vocab_size` count every id including padding, so valid ids are
    in [0, vocab_size); the encoders keep one extra embedding row (id == vocab_size) for the
    [MASK] token of the contrastive augmentations;
  * sequences are left padded, most recent event last.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import sys
from typing import Any, Dict, FrozenSet, Optional

_LOG = logging.getLogger(__name__)

OOV_ID = 1  # the out-of-vocabulary bucket (0 is padding)
# Ids below this are padding and the OOV bucket: never a prediction a client can be shown.
RESERVED_IDS = 2
# Below this share of repeated next events in the training log (`training_repeat_share`), the
# default leaves the repeat pointer out: with (almost) nothing to copy it only costs accuracy.
REPEAT_POINTER_MIN_SHARE = 0.01

ITEM_LOSSES = ("auto", "softmax", "sampled_softmax", "sampled_bce")
# The repeat pointer mixes the catalog softmax's probability with its own: these losses give it
# (the sampled softmax as an unbiased estimate of the normaliser).
POINTER_ITEM_LOSSES = ("softmax", "sampled_softmax")
# item_loss="auto" sizes the full softmax's training logits for a batch of this many sequences
# (the benchmarks' and the TFX Trainer's batch) at max_len positions.
AUTO_REFERENCE_BATCH = 256
ENCODERS = ("transformer", "gru")
CCR_WEIGHTINGS = ("conditional", "uniform")
CCR_VIEWS = ("augmented", "anchored")
PRIORS = ("gaussian", "laplace", "mixture")
FUSIONS = ("concat_mlp", "sum")
TARGET_SCENE_HEADS = ("concat", "per_scene")
NEXT_EVENT_MODES = ("unknown", "marginal")
# Keras mixed-precision policy names a model can be built with, and "auto" (see `precision`).
PRECISION_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
PRECISIONS = ("auto", *PRECISION_POLICIES)
# /proc/cpuinfo flags of x86 CPUs with native bfloat16 matrix products (oneDNN uses them);
# without one, bfloat16 matmuls are converted in software and usually slower than float32.
BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")

# Named ablations of dspnet-method.md -> the switches they flip (and three named extensions,
# marked below, run the same way as `dspnet_<name>`).
ABLATIONS: Dict[str, Dict[str, Any]] = {
    "no_scene": {"use_scene_network": False},
    "no_sfe": {"fusion": "sum"},
    "no_ccr": {"use_ccr": False},
    "ccr_uniform": {"ccr_weighting": "uniform"},
    # CCR as first designed (CL4SRec): two augmented copies of every user's whole window.
    "ccr_augmented": {"ccr_views": "augmented", "ccr_view_fraction": 1.0, "ccr_view_window": 1.0},
    # The adversarial prior is off by default (see use_adversarial); "adv" is the method's
    # full model with it on, "no_adv" states the default explicitly.
    "adv": {"use_adversarial": True},
    "no_adv": {"use_adversarial": False},
    "sfe_depth_1": {"sfe_depth": 1},
    "sfe_depth_3": {"sfe_depth": 3},
    # The scene branch of the fusion starts at zero (z = h_V at initialisation).
    "sfe_zero_init": {"sfe_zero_init": True},
    # The next-scene softmax over the real scenes only (no OOV class; benchmarks/QUALITY.md).
    "real_scenes": {"scene_real_only": True},
    # Our extension, on by default (it states the default): each item embedding also gets its
    # scene's embedding, as in the sasrec_scene baseline, so the item network sees item-scene
    # pairs that the per-position SFE fusion of two separately encoded sequences cannot.
    "scene_attribute": {"scene_attribute": True},
    # Our extension: a GRU item network (the scene network stays a Transformer). The scene
    # world's users follow a Markov chain over a latent intent, which a recurrence tracks the
    # way the oracle's forward filter does.
    "gru_items": {"encoder": "gru"},
}
# Our extension, on by default: ALiBi-style recency slopes in every Transformer's attention
# (both networks); "recency_bias" and "recency_bias_scene_attribute" state the default, as
# measured before it was one (benchmarks/JOURNAL.md).
ABLATIONS["recency_bias"] = {"recency_bias": True}
ABLATIONS["no_recency_bias"] = {"recency_bias": False}
ABLATIONS["no_scene_attribute"] = {"scene_attribute": False}
# The default of before 2026-12-04: neither extension.
ABLATIONS["no_recency_bias_no_scene_attribute"] = {**ABLATIONS["no_recency_bias"],
                                                  **ABLATIONS["no_scene_attribute"]}
ABLATIONS["recency_bias_scene_attribute"] = {**ABLATIONS["recency_bias"],
                                             **ABLATIONS["scene_attribute"]}
ABLATIONS["gru_items_scene_attribute"] = {**ABLATIONS["gru_items"], **ABLATIONS["scene_attribute"]}
# In-scene forms (benchmarks/QUALITY.md): no target-scene conditioning at all; the concat head
# instead of the per-scene one. (The joint factorisation, measured as "joint" in
# benchmarks/results/in_scene_design, is the default now.)
ABLATIONS["no_target"] = {"target_scene_conditioning": False}
ABLATIONS["target_concat"] = {"target_scene_head": "concat"}
# The other way to answer both tasks: the target hidden in half the training positions, and
# the head's own "scene unknown" answer for the next event (the baselines' form).
ABLATIONS["conditioned"] = {"target_scene_dropout": 0.5, "next_event_mode": "unknown"}
ABLATIONS["no_pointer_scenes"] = {"pointer_scenes": False}
ABLATIONS["target_attention"] = {"target_attention": True}
ABLATIONS["no_target_attention"] = {"target_attention": False}
# Our extension, on by default with the softmax item loss on a log with repeats (see
# `training_repeat_share`): without the repeat pointer.
ABLATIONS["no_repeat"] = {"repeat_pointer": False}
# Our option, off by default (measured: benchmarks/QUALITY.md): on a log with one real scene,
# build the model the scene parts reduce to (`reduce_single_scene`).
ABLATIONS["single_scene_reduced"] = {"reduce_single_scene": True}
# A diagnostic, off by default: the reduction without the repeat pointer, i.e. what DSPnet would
# build on a log with one real scene and no repeats (MovieLens-100K) if both parts stepped aside.
ABLATIONS["single_scene_reduced_no_repeat"] = {**ABLATIONS["single_scene_reduced"],
                                               **ABLATIONS["no_repeat"]}

# What `reduce_single_scene` switches on a log with at most one real scene (see `resolved`).
# CCR goes too: its conditioning compares scene contexts, which are identical on such a log,
# and so does the scene attribute (one embedding added to every event).
# What is left is SASRec's item network plus the repeat pointer (benchmarks/QUALITY.md).
SINGLE_SCENE_REDUCTION: Dict[str, Any] = {
    "use_scene_network": False, "scene_real_only": True, "use_ccr": False,
    "scene_attribute": False}


# Baselines built from the same layers: name -> the switches that make them.
# Item-only objective (alpha = 0): the classic single-sequence recommenders, as published (no
# scene attribute, no recency bias: SASRec is SASRec, the form RecBole's anchors measure).
_SINGLE_SEQUENCE = {"use_scene_network": False, "use_ccr": False, "use_adversarial": False,
                    "alpha": 0.0, "repeat_pointer": False, "target_scene_conditioning": False,
                    "next_event_mode": "unknown", "scene_attribute": False,
                    "recency_bias": False}
# The fair baselines: every mechanism of ours that is not about scenes (the repeat pointer and
# the attention's recency bias), and
# in the in-scene task the target scene fed to the output through the same head DSPnet uses
# (the multi-scenario recommenders' idea). Items only (alpha = 0), so the next-event answer is
# the head's "scene unknown" query, trained by hiding the target scene half of the time.
_REPEAT = {"repeat_pointer": None, "recency_bias": True}
_TARGET = {"target_scene_conditioning": True, "target_scene_dropout": 0.5,
           "next_event_mode": "unknown"}
BASELINES: Dict[str, Dict[str, Any]] = {
    "sasrec": dict(_SINGLE_SEQUENCE),
    "sasrec_scene": dict(_SINGLE_SEQUENCE, scene_attribute=True),
    "gru4rec": dict(_SINGLE_SEQUENCE, encoder="gru"),
    # Not in the default table: the matching baseline for DSPnet's gru_items_scene_attribute.
    "gru4rec_scene": dict(_SINGLE_SEQUENCE, encoder="gru", scene_attribute=True),
    # Not in the default table: SASRec with DSPnet's repeat pointer, to tell what the pointer
    # adds from what the scene network adds.
    "sasrec_repeat": dict(_SINGLE_SEQUENCE, **_REPEAT),
    "gru4rec_repeat": dict(_SINGLE_SEQUENCE, encoder="gru", **_REPEAT),
    "sasrec_repeat_target": dict(_SINGLE_SEQUENCE, **_REPEAT, **_TARGET),
    "gru4rec_repeat_target": dict(_SINGLE_SEQUENCE, encoder="gru", **_REPEAT, **_TARGET),
    # The paper's direct competitor with everything but the second network: the scene as an
    # attribute of each item, the pointer and the target scene.
    "sasrec_scene_repeat_target": dict(_SINGLE_SEQUENCE, scene_attribute=True, **_REPEAT,
                                       **_TARGET),
    # Not in the default table: the same with a GRU item network, the fair baseline of DSPnet's
    # gru_items_scene_attribute variant.
    "gru4rec_scene_repeat_target": dict(_SINGLE_SEQUENCE, encoder="gru", scene_attribute=True,
                                        **_REPEAT, **_TARGET),
}


class ConfigError(ValueError):
    """A configuration value is out of range or unknown; the message names the field."""


def example_length(max_len: int) -> int:
    """Events in one training example: `max_len` inputs + the event after the last one.

    The one definition for `make_dataset`, training windows, TF Transform and the exported
    preprocessing, so the position a served history answers at is the one training trains.
    """
    return int(max_len) + 1


@dataclasses.dataclass
class DSPnetConfig:
    """Hyper-parameters of DSPnet. Defaults follow dspnet-method.md ("our defaults").

    Attributes:
      item_vocab_size: number of item ids including padding (0) and OOV (1).
      scene_vocab_size: number of scene ids including padding (0) and OOV (1).
      max_len: sequence length L the model reads (most recent L events).
      item_dim: width d_v of the item network and of the fused representation z.
      scene_dim: width d_s of the scene network.
      num_blocks: Transformer blocks per network.
      num_heads: attention heads per block.
      ffn_multiplier: feed-forward width as a multiple of the block width.
      dropout: dropout rate in embeddings, attention, feed-forward and fusion MLP.
      use_scene_network: ablation switch; False leaves z = h_V (scene head kept for the loss).
      scene_attribute: add each event's scene embedding to its item embedding at the input,
        so the item network sees (item, scene) pairs that the per-position SFE fusion of two
        separately encoded sequences cannot (our extension; measured: benchmarks/QUALITY.md).
        Alone, the "scene as attribute" approach the paper argues against (`sasrec_scene`).
      encoder: "transformer" (SASRec-style) or "gru" (GRU4Rec-style, for the baseline).
      recency_bias: the Transformer networks' attention scores fall with the distance back
        from the query, one learned slope per head started at ALiBi's values
        (`RecencyBiasedAttention`), on top of the learned position embeddings (our
        extension; measured: benchmarks/QUALITY.md). Configs saved before this field existed
        reload with False, as they were built.
      fusion: "concat_mlp" (SFE) or "sum" (ablation: h_V + W h_S).
      sfe_depth: number of Dense layers in the SFE MLP (paper: 2 best).
      sfe_hidden: width of the hidden SFE layers (default 2 * item_dim).
      sfe_zero_init: start the fusion's scene branch (its last layer) at zero, so the model
        starts as the item network alone and the scene branch grows from there.
      item_loss: "auto" (the default), "softmax" (full cross-entropy over the catalog),
        "sampled_softmax" (cross-entropy over the true item and `num_sampled` negatives shared
        by the batch, with the logQ correction) or "sampled_bce" (SASRec's paper loss: K
        negatives per position, binary cross-entropy). "auto" is the full softmax when its
        training logits (AUTO_REFERENCE_BATCH x max_len x item_vocab_size float32) fit
        `softmax_logits_budget_bytes`, the sampled softmax otherwise: the full softmax measured
        best wherever it fits (the README's Keras path on MovieLens-100K,
        benchmarks/results/new_user_movielens*), and above the budget the sampled softmax is the
        loss that still scores many negatives per position (and, as an unbiased estimate of
        the softmax's normaliser, keeps the repeat pointer). The resolved choice is logged and
        saved in the model's config.
      num_negatives: K for the sampled BCE loss.
      num_sampled: negatives per batch for the sampled softmax (uniform over the real items,
        shared by every position; an accidental hit of the true item is masked).
      softmax_logits_budget_bytes: the memory "auto" allows the full softmax's training logits
        (1 GiB: 256 x 50 positions x about 21,000 items; the backward pass doubles it).
      alpha: weight of the next-scene loss.
      scene_real_only: the next-scene softmax covers the real scenes only (ids >= 2, as the
        serving signature reports them) and an out-of-vocabulary next scene is no target. Off
        by default: the OOV bucket stays a class of the softmax (measured both ways on
        MovieLens-100K, where with one scene it makes the scene loss exactly zero: faster first
        epochs, not a better five-seed validation mean; benchmarks/QUALITY.md).
      use_ccr: switch for the conditional contrastive regulariser.
      lambda_ccr: weight of L_CCR.
      ccr_weighting: "conditional" (learned context weights) or "uniform" (plain InfoNCE).
      ccr_views: where CCR's two views of a user come from. "augmented": two augmented
        copies of the history (crop / mask / reorder, CL4SRec), each encoded again.
        "anchored": the state the next-event losses already computed is one view and one
        augmented copy is encoded for the other, which halves CCR's extra encoding.
      ccr_view_fraction: share of the batch's users that take part in CCR (the first ones of
        the shuffled batch; at least 2). The extra encoding of the views is proportional to it.
      ccr_view_window: share of the model's window (the most recent ceil(share * max_len)
        events) that the augmented views are made from; their encoding cost shrinks with it.
      ccr_temperature: tau of the InfoNCE similarities.
      ccr_weight_temperature: tau_w of the conditional weight softmax.
      ccr_soft_positive_mass: share of the target mass given to context-similar users.
      ccr_context_dim: output width of the context MLP g.
      augment_crop_ratio: share of the sequence kept by the crop augmentation.
      augment_mask_ratio: share of events replaced by [MASK] by the mask augmentation.
      augment_reorder_ratio: share of the sequence shuffled by the reorder augmentation.
      use_adversarial: switch for the adversarial prior regulariser. Off by default (our
        choice, measured): over five MovieLens-100K seeds and three default-world seeds it
        never raised validation NDCG@10 (benchmarks/QUALITY.md), and it costs a discriminator
        step per batch. dspnet-method.md's full model is this switch on (ablation "adv").
      lambda_adv: weight of the generator term -log D(z) when the prior is on.
      adversarial_sample_fraction: share of the batch's positions (drawn at random each step,
        with replacement) whose z the discriminator and the generator term see; an unbiased
        sample of the same distribution-matching objective at that share of its cost.
      prior: "gaussian", "laplace" or "mixture" (of Gaussians).
      prior_components: number of mixture components.
      discriminator_hidden: hidden width of the discriminator MLP.
      repeat_pointer: mix the catalog softmax with a pointer over the user's own history
        (`RepeatPointer`, our extension: repeat consumption and cross-scene returns). The
        mixture needs the catalog softmax's normaliser (exact, or the sampled softmax's
        estimate), so None (the default) means "on with a softmax item loss, off with sampled
        BCE", and off too when `training_repeat_share` is known and below
        REPEAT_POINTER_MIN_SHARE (with the share unknown, `DSPnet.fit` counts it on its
        data before the first step); True with sampled BCE is refused.
      training_repeat_share: share of the training log's next events that repeat an item of
        the same user's earlier history (`dspnet_tf.data.repeat_target_share`), a fact about
        the data that the builders fill in (the quality benchmark, `dspnet train`, the TFX
        Trainer); None when unknown. A pointer has nothing to copy on a log without repeats
        (MovieLens-100K: 0 of 97,171; the default scene world: 39.8 %), and there it cost
        accuracy: over ten pre-registered MovieLens-100K seeds DSPnet without it scored
        validation NDCG@10 0.0668 against 0.0655 with it (benchmarks/QUALITY.md). So a None
        `repeat_pointer` leaves it out below REPEAT_POINTER_MIN_SHARE.
      reduce_single_scene: on a log with at most one real scene (`scene_vocab_size` <= 3, e.g.
        MovieLens), build the model the scene parts reduce to (`resolved`): a constant scene
        sequence carries no information, so the scene network and SFE are dropped (z = h_V),
        the next-scene softmax covers the real scene only (its loss is exactly zero and the
        served distribution is 1 on that scene) and CCR, whose context weights would compare
        identical scene contexts, is left out. The item network and the repeat pointer stay
        (SASRec plus the pointer); each epoch is cheaper. No effect with two or more real
        scenes. Off by default (ablation "single_scene_reduced"): on MovieLens-100K it did not
        raise validation NDCG@10 (ten seeds: 0.0632 against 0.0655 with every part kept),
        nor did an earlier form that kept CCR as plain InfoNCE (ten seeds: 0.0629); QUALITY.md.
      target_scene_conditioning: condition the item head on the scene the list is shown in
        (the in-scene task: every served request comes from a known surface). In training the
        target is each position's true next scene; a missing or unknown target at inference
        gets the next-event answer (see next_event_mode).
      target_scene_head: how the head reads the target scene: "per_scene" (a shared projection
        plus one per target scene, STAR / PEPNet style) or "concat" (a projection of
        [z ; e(scene)]); `PredictionHead`.
      target_scene_dropout: probability of hiding the target scene in training (target "unknown"),
        so the head also learns a next-event answer of its own (next_event_mode "unknown").
        0 by default: with the joint factorisation every position trains its in-scene answer.
      next_event_mode: the answer when no target scene is given (or an unknown one).
        "marginal" (default, the joint factorisation): sum_s P(s | history) P(item | history, s),
        the in-scene answers weighed by the scene head's next-scene distribution (needs
        alpha > 0). "unknown": the head's query for the unknown scene (needs
        target_scene_dropout > 0 to be trained; the single-sequence baselines, alpha = 0, use
        it). Measured on the default world, seed 0 (benchmarks/QUALITY.md): in-scene
        validation NDCG@10 0.3755 (marginal, dropout 0) vs 0.3754 (unknown, dropout 0.5).
      pointer_scenes: the repeat pointer also reads the scenes (`RepeatPointer`'s num_scenes):
        a learned bias per pair (target scene, scene of the history event) on its scores and
        one per target scene on its gate. Part of the scene modelling, so only with the scene
        network (`uses_pointer_scenes`); ablation "no_pointer_scenes".
      target_attention: the item head reads the history again through `TargetSceneAttention`,
        with a query that knows the target scene (DIN-style attention whose target is the
        surface): each surface picks its own evidence. Needs the scene network and
        target-scene conditioning (`uses_target_attention`).
      precision: the Keras mixed-precision policy of every layer: "float32", "mixed_bfloat16"
        or "mixed_float16" (compute in bfloat16 / float16, variables in float32; the logits,
        softmaxes, losses, metrics and the repeat pointer's mixture stay float32, and with
        float16 the train step scales the loss), or "auto": bfloat16 compute where the CPU
        has native bfloat16 matrix products (a /proc/cpuinfo flag of BFLOAT16_CPU_FLAGS),
        float32 otherwise. None (the default) follows the process's Keras global policy
        (`tf.keras.mixed_precision.set_global_policy`; float32 unless a user set one): default
        numerics stay those every benchmark was measured with (bfloat16 has not been through
        the quality benchmark, and "auto" would change them on any CPU with bfloat16), while a
        Keras user's global policy is honoured as for any Keras layer. The model is built with
        the resolved policy (`with_resolved_precision`), which is logged for "auto" and saved
        in its config, so a reload computes as the original did whatever the global policy or
        CPU of the loading process.
      seed: seed of the sampled negatives and augmentations (stateless, per step).
    """

    item_vocab_size: int
    scene_vocab_size: int
    max_len: int = 50
    item_dim: int = 64
    scene_dim: int = 16
    num_blocks: int = 2
    num_heads: int = 2
    ffn_multiplier: int = 4
    dropout: float = 0.2
    use_scene_network: bool = True
    scene_attribute: bool = True
    encoder: str = "transformer"
    recency_bias: bool = True
    fusion: str = "concat_mlp"
    sfe_depth: int = 2
    sfe_hidden: int = 0
    sfe_zero_init: bool = False
    item_loss: str = "auto"
    num_negatives: int = 1
    num_sampled: int = 1024
    softmax_logits_budget_bytes: int = 1 << 30
    alpha: float = 1.0
    scene_real_only: bool = False
    use_ccr: bool = True
    lambda_ccr: float = 0.1
    ccr_weighting: str = "conditional"
    ccr_views: str = "anchored"
    ccr_view_fraction: float = 0.5
    ccr_view_window: float = 0.3
    ccr_temperature: float = 0.2
    ccr_weight_temperature: float = 0.5
    ccr_soft_positive_mass: float = 0.3
    ccr_context_dim: int = 16
    augment_crop_ratio: float = 0.6
    augment_mask_ratio: float = 0.3
    augment_reorder_ratio: float = 0.3
    use_adversarial: bool = False
    lambda_adv: float = 0.01
    adversarial_sample_fraction: float = 0.25
    prior: str = "gaussian"
    prior_components: int = 4
    discriminator_hidden: int = 64
    repeat_pointer: Optional[bool] = None
    training_repeat_share: Optional[float] = None
    reduce_single_scene: bool = False
    target_scene_conditioning: bool = True
    target_scene_head: str = "per_scene"
    target_scene_dropout: float = 0.0
    next_event_mode: str = "marginal"
    pointer_scenes: bool = True
    target_attention: bool = False
    precision: Optional[str] = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.sfe_hidden:
            self.sfe_hidden = 2 * self.item_dim
        self.validate()

    def validate(self) -> None:
        """Raises ConfigError naming the first invalid field."""

        def need(ok: bool, field: str, rule: str) -> None:
            if not ok:
                raise ConfigError(
                    f"DSPnetConfig.{field}={getattr(self, field)!r} is invalid: {rule}"
                )

        need(self.item_vocab_size >= 2, "item_vocab_size", "needs padding + at least one item")
        need(self.scene_vocab_size >= 2, "scene_vocab_size", "needs padding + at least one scene")
        need(self.max_len >= 2, "max_len", "must be >= 2")
        for field in ("item_dim", "scene_dim", "num_blocks", "num_heads", "ffn_multiplier",
                      "num_negatives", "ccr_context_dim", "prior_components",
                      "discriminator_hidden", "sfe_depth"):
            need(int(getattr(self, field)) >= 1, field, "must be >= 1")
        need(self.item_dim % self.num_heads == 0, "item_dim", "must be divisible by num_heads")
        need(self.scene_dim % self.num_heads == 0, "scene_dim", "must be divisible by num_heads")
        for field in ("dropout", "target_scene_dropout"):
            need(0.0 <= getattr(self, field) < 1.0, field, "must be in [0, 1)")
        for field in ("augment_crop_ratio", "augment_mask_ratio", "augment_reorder_ratio",
                      "ccr_soft_positive_mass"):
            need(0.0 <= getattr(self, field) <= 1.0, field, "must be in [0, 1]")
        for field in ("alpha", "lambda_ccr", "lambda_adv"):
            need(getattr(self, field) >= 0.0, field, "must be >= 0")
        for field in ("ccr_temperature", "ccr_weight_temperature"):
            need(getattr(self, field) > 0.0, field, "must be > 0")
        need(self.item_loss in ITEM_LOSSES, "item_loss", f"one of {ITEM_LOSSES}")
        need(self.ccr_weighting in CCR_WEIGHTINGS, "ccr_weighting", f"one of {CCR_WEIGHTINGS}")
        need(self.ccr_views in CCR_VIEWS, "ccr_views", f"one of {CCR_VIEWS}")
        for field in ("ccr_view_fraction", "ccr_view_window", "adversarial_sample_fraction"):
            need(0.0 < getattr(self, field) <= 1.0, field, "must be in (0, 1]")
        need(self.prior in PRIORS, "prior", f"one of {PRIORS}")
        need(self.fusion in FUSIONS, "fusion", f"one of {FUSIONS}")
        need(self.encoder in ENCODERS, "encoder", f"one of {ENCODERS}")
        need(self.target_scene_head in TARGET_SCENE_HEADS, "target_scene_head",
             f"one of {TARGET_SCENE_HEADS}")
        need(self.next_event_mode in NEXT_EVENT_MODES, "next_event_mode",
             f"one of {NEXT_EVENT_MODES}")
        need(not self.uses_marginal_next_event or self.alpha > 0, "next_event_mode",
             "'marginal' sums the in-scene answers over the scene head's next-scene "
             "distribution, which alpha = 0 leaves untrained: set next_event_mode='unknown' "
             "(with target_scene_dropout > 0, so the unknown-scene answer is trained)")
        need(self.training_repeat_share is None or 0.0 <= self.training_repeat_share <= 1.0,
             "training_repeat_share", "must be None or in [0, 1]")
        need(self.repeat_pointer is not True or self.resolved_item_loss in POINTER_ITEM_LOSSES,
             "repeat_pointer", "needs a softmax item loss (the mixture needs the catalog "
             "softmax's normaliser, exact or sampled): item_loss 'auto', 'softmax' or "
             "'sampled_softmax', not 'sampled_bce'")
        need(self.num_sampled >= 1, "num_sampled", "must be >= 1")
        need(self.softmax_logits_budget_bytes >= 0, "softmax_logits_budget_bytes",
             "must be >= 0")
        need(self.precision is None or self.precision in PRECISIONS, "precision",
             f"None (the Keras global policy) or one of {PRECISIONS}")

    @property
    def softmax_logits_bytes(self) -> int:
        """float32 bytes of the full softmax's training logits for AUTO_REFERENCE_BATCH."""
        return 4 * AUTO_REFERENCE_BATCH * self.max_len * self.item_vocab_size

    @property
    def resolved_item_loss(self) -> str:
        """The item loss the model trains with: `item_loss`, with "auto" decided by size."""
        if self.item_loss != "auto":
            return self.item_loss
        fits = self.softmax_logits_bytes <= self.softmax_logits_budget_bytes
        return "softmax" if fits else "sampled_softmax"

    def with_resolved_item_loss(self) -> "DSPnetConfig":
        """This configuration with "auto" replaced by the loss it resolves to."""
        if self.item_loss != "auto":
            return self
        return self.replace(item_loss=self.resolved_item_loss)

    @property
    def resolved_precision(self) -> str:
        """The mixed-precision policy the model is built with: one of PRECISION_POLICIES.

        `precision`, with "auto" decided by the CPU (`cpu_has_bfloat16_matmul`) and None by
        the Keras global policy.

        Raises:
          ConfigError: None while the global policy is one a model cannot be built with
            (e.g. "float64").
        """
        if self.precision == "auto":
            return auto_precision()
        if self.precision is None:
            policy = keras_global_policy_name()
            if policy not in PRECISION_POLICIES:
                raise ConfigError(
                    f"DSPnetConfig.precision=None follows the Keras global policy, which is "
                    f"{policy!r}: set precision to one of {PRECISIONS}")
            return policy
        return self.precision

    def with_resolved_precision(self) -> "DSPnetConfig":
        """This configuration with `precision` replaced by the policy it resolves to.

        Kept apart from `resolved`: the answer depends on the machine and the process (CPU
        flags, the Keras global policy), not on the configuration alone.
        """
        resolved = self.resolved_precision
        return self if resolved == self.precision else self.replace(precision=resolved)

    @property
    def uses_repeat_pointer(self) -> bool:
        """Whether the model has the repeat pointer (`repeat_pointer`, None resolved)."""
        if self.repeat_pointer is None:
            repeats_known_absent = (self.training_repeat_share is not None
                                    and self.training_repeat_share < REPEAT_POINTER_MIN_SHARE)
            return (self.resolved_item_loss in POINTER_ITEM_LOSSES
                    and not repeats_known_absent)
        return bool(self.repeat_pointer)

    @property
    def uses_pointer_scenes(self) -> bool:
        """Whether the repeat pointer reads the scenes (needs the pointer and the scene network)."""
        return self.pointer_scenes and self.use_scene_network and self.uses_repeat_pointer

    @property
    def uses_marginal_next_event(self) -> bool:
        """Whether the next-event answer is the joint factorisation (see next_event_mode)."""
        return self.target_scene_conditioning and self.next_event_mode == "marginal"

    @property
    def uses_target_attention(self) -> bool:
        """Whether the item head reads the history through target-scene attention."""
        return (self.target_attention and self.use_scene_network
                and self.target_scene_conditioning)

    @property
    def real_scene_count(self) -> int:
        """Scene ids a log can carry besides padding and the OOV bucket."""
        return max(0, self.scene_vocab_size - RESERVED_IDS)

    def resolved(self) -> "DSPnetConfig":
        """The configuration the model is built from.

        item_loss "auto" becomes the loss it resolves to (`resolved_item_loss`). With at most
        one real scene: target-scene conditioning is left out (the only scene a
        list can be shown in says nothing, so in-scene is the next-event task, and the model is
        the one built before conditioning existed), and with `reduce_single_scene` on, the
        switches of SINGLE_SCENE_REDUCTION. Otherwise this configuration unchanged.
        Idempotent, so a saved (resolved) configuration reloads to the same model. `precision`
        is resolved apart (`with_resolved_precision`): it depends on the machine and process.
        """
        config = self.with_resolved_item_loss()
        if config.real_scene_count > 1:
            return config
        if config.target_scene_conditioning:
            config = config.replace(target_scene_conditioning=False, next_event_mode="unknown")
        if config.reduce_single_scene:
            config = config.replace(**SINGLE_SCENE_REDUCTION)
        return config

    @property
    def ccr_view_events(self) -> int:
        """Most recent events CCR's augmented views are made from: ceil(window * max_len), >= 2."""
        return max(2, math.ceil(self.ccr_view_window * self.max_len))

    # --- serialisation -------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Every field as a plain dict (JSON-compatible), the inverse of `from_dict`."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "DSPnetConfig":
        """Builds a config from a dict; an unknown key raises `ConfigError` (no silent typo)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown DSPnetConfig field(s): {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        """The config as indented JSON with sorted keys (stable, so diffs are readable)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DSPnetConfig":
        """Parses `to_json` output; malformed JSON or a non-object raises `ConfigError`."""
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"DSPnetConfig JSON is malformed: {err}") from err
        if not isinstance(values, dict):
            raise ConfigError("DSPnetConfig JSON must be an object")
        return cls.from_dict(values)

    def replace(self, **changes: Any) -> "DSPnetConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def with_ablation(self, name: str) -> "DSPnetConfig":
        """A copy with one named ablation of dspnet-method.md applied (see ABLATIONS)."""
        if name not in ABLATIONS:
            raise ConfigError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
        return self.replace(**ABLATIONS[name])

    def as_baseline(self, name: str) -> "DSPnetConfig":
        """A copy configured as one of the single-sequence baselines (see BASELINES)."""
        if name not in BASELINES:
            raise ConfigError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
        return self.replace(**BASELINES[name])

    @property
    def fused_dim(self) -> int:
        """Width of z, the fused per-position representation."""
        return self.item_dim


def _read_cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bfloat16_matmul() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AMX-BF16 or AVX512-BF16)."""
    return any(flag in _read_cpu_flags() for flag in BFLOAT16_CPU_FLAGS)


def auto_precision() -> str:
    """What precision "auto" resolves to on this machine; the decision is logged once."""
    precision = "mixed_bfloat16" if cpu_has_bfloat16_matmul() else "float32"
    _log_auto_precision(precision)
    return precision


@functools.lru_cache(maxsize=None)
def _log_auto_precision(precision: str) -> None:
    # Cached per answer: once per process, and again only if the answer changes (tests).
    _LOG.info("DSPnet: precision 'auto' -> %r (the CPU %s bfloat16 matrix products: "
              "/proc/cpuinfo flags %s)", precision,
              "has" if precision == "mixed_bfloat16" else "has no",
              " / ".join(BFLOAT16_CPU_FLAGS))


def keras_global_policy_name() -> str:
    """The Keras global mixed-precision policy's name ("float32" unless someone set one).

    Read without importing TensorFlow: no process that has not imported it can have set a
    policy, and this module stays importable without it (the CLI's --help).
    """
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return "float32"
    return tf.keras.mixed_precision.global_policy().name
