"""DSPnet: dual item/scene sequence networks with fusion, two heads and two regularisers."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import tensorflow as tf

from dspnet_tf.config import (
    AUTO_REFERENCE_BATCH,
    OOV_ID,
    RESERVED_IDS,
    DSPnetConfig,
    example_length,
)
from dspnet_tf.data.sequences import repeat_target_share
from dspnet_tf.distribution import replica_scale
from dspnet_tf.evaluation.ranking import hit_rate, ndcg, pessimistic_rank
from dspnet_tf.layers.augmentation import JointSequenceAugmenter
from dspnet_tf.layers.context_weights import ContextWeighting
from dspnet_tf.layers.discriminator import PriorDiscriminator
from dspnet_tf.layers.gru_encoder import GRUSequenceEncoder
from dspnet_tf.layers.feature_enhancement import SequenceFeatureEnhancement
from dspnet_tf.layers.prediction_head import PredictionHead, exclude_leading_ids, score_all
from dspnet_tf.layers.repeat_pointer import (
    IMPOSSIBLE,
    RepeatPointer,
    mixture_log_probs,
    mixture_target_log_likelihood,
    target_log_likelihood,
)
from dspnet_tf.layers.sequence_encoder import SequenceEncoder
from dspnet_tf.layers.target_scene_attention import TargetSceneAttention
from dspnet_tf.losses.adversarial import (
    discriminator_accuracy,
    discriminator_loss,
    generator_loss,
    sample_prior,
)
from dspnet_tf.losses.contrastive import conditional_info_nce
from dspnet_tf.losses.next_event import (
    masked_negative_log_likelihood,
    masked_softmax_cross_entropy,
    sampled_bce_loss,
    sampled_softmax_log_prob,
)
from dspnet_tf.optimizers import build_optimizer
from dspnet_tf.precision import (
    at_least_float32,
    scaled_loss,
    unscaled_gradients,
    with_loss_scaling,
    with_model_precision,
)

_LOG = logging.getLogger(__name__)

ITEM_IDS = "item_ids"
SCENE_IDS = "scene_ids"
TARGET_SCENE = "target_scene"

# Salts that keep the stateless random streams of one step apart.
_SALT_NEGATIVES, _SALT_VIEWS, _SALT_PRIOR, _SALT_TARGET_SCENE = 11, 13, 17, 19
_SALT_ADV_SAMPLE = 23
# Batches `fit` reads to count the training data's repeats when the config leaves the repeat
# pointer to the data (64 x 256 histories: the share's standard error is well under 1 %).
REPEAT_SHARE_PROBE_BATCHES = 64


def ids_in_vocab(ids: tf.Tensor, vocab_size: int) -> tf.Tensor:
    """Negative ids are padding; ids past the vocabulary fall into the OOV bucket 1."""
    ids = tf.cast(ids, tf.int32)
    ids = tf.where(ids < 0, 0, ids)
    return tf.where(ids >= vocab_size, 1, ids)


def known_target_scenes(scene_ids: tf.Tensor) -> tf.Tensor:
    """Target scenes with padding and the OOV bucket both read as 0, "not given".

    A request whose target scene is missing or unknown gets the next-event answer; training
    hides an out-of-vocabulary next scene the same way, so the two agree.
    """
    return tf.where(scene_ids < RESERVED_IDS, 0, scene_ids)


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class DSPnet(tf.keras.Model):
    """Scene-aware sequential recommender: predicts a user's next item AND next scene.

    A user's history is two aligned sequences, the items touched and the scenes (app
    sub-interfaces: feed, search, live, cart...) they were touched in. Interest formed in one
    scene is often acted on in another, so pairing item t with scene t is noisy; DSPnet instead
    encodes each sequence with its own causal Transformer (`SequenceEncoder`), fuses the two
    per-position representations with an MLP (`SequenceFeatureEnhancement`, "SFE"), and predicts
    the next item and the next scene from the fused z with tied-embedding heads. Training adds
    two regularisers on z: a conditional contrastive loss (CCR) that makes a user's z agree with
    the z of an augmented copy of their recent history (by default; or two augmented copies),
    with users of a similar scene context as weighted soft positives, and an adversarial prior
    term that makes z look like samples of a chosen prior (a stand-in for the ELBO's KL term).
    With the full-softmax item loss (our extension, `repeat_pointer`) the next-item
    distribution also mixes in a pointer over the user's own history (`RepeatPointer`), whose
    keys carry the scene network's states: returns to earlier items, across scenes.

    Every served request comes from a known surface, so by default the item head is also told
    the scene the list is shown in (`target_scene_conditioning`, a projection of its own per
    target scene), and without a target the next-item answer is the joint factorisation
    sum_s P(s | history) P(item | history, s) over the scene head's distribution.

    Inputs are dicts `{"item_ids": [B, L], "scene_ids": [B, L]}` of ints, left padded with 0,
    most recent event last; `"target_scene": [B]` is optional (0, or an unknown / OOV scene,
    means "not given": the next-event answer).
    `model.fit` needs no labels: every non-padded position is trained to predict the next one.

    Mixed precision (`DSPnetConfig.precision`, or the Keras global policy, or a `dtype`
    argument): the layers compute in the policy's compute dtype with float32 variables, and
    the outputs of `call` (`item_logits`, `scene_logits`), every softmax, loss and metric and
    the repeat pointer's mixture are float32. Under "mixed_float16" `compile` wraps both
    optimizers in a `LossScaleOptimizer` and the train step scales the loss.

    Example:
      >>> config = DSPnetConfig(item_vocab_size=50, scene_vocab_size=5, max_len=8, item_dim=16,
      ...                       scene_dim=4)
      >>> model = DSPnet(config)
      >>> model.compile(optimizer="adam")
      >>> batch = {"item_ids": tf.constant([[0, 3, 4, 5]]), "scene_ids": tf.constant([[0, 1, 2, 1]])}
      >>> _ = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
      >>> top = model.recommend(batch["item_ids"], batch["scene_ids"], k=3)
      >>> top["item_ids"].shape
      TensorShape([1, 3])

    Args:
      config: a `DSPnetConfig` (or its dict form).
    """

    def __init__(self, config: Union[DSPnetConfig, Mapping[str, Any]], **kwargs: Any) -> None:
        kwargs.setdefault("name", "dspnet")
        if not isinstance(config, DSPnetConfig):
            config = DSPnetConfig.from_dict(dict(config))
        # Mixed precision: the model resolves its policy once (precision "auto" by the CPU,
        # None by the Keras global policy a user set) and hands that Policy to every
        # sub-layer as `dtype`, rather than leaving each layer to read the process-global
        # policy when it is created. The resolved name is saved in the config, so a reload (or
        # a model built while another thread or test changed the global policy) computes
        # exactly as the original, and every part of one model agrees (Keras 2 sub-layers do
        # not inherit their parent's policy).
        config = with_model_precision(config, kwargs.pop("dtype", None))
        super().__init__(dtype=tf.keras.mixed_precision.Policy(config.precision), **kwargs)
        policy = self.dtype_policy
        if config.item_loss == "auto":
            _LOG.info("DSPnet: item_loss 'auto' -> %r (the full softmax's training logits at "
                      "batch %d x %d positions x %d items: %.2f GiB, budget %.2f GiB)",
                      config.resolved_item_loss, AUTO_REFERENCE_BATCH, config.max_len,
                      config.item_vocab_size, config.softmax_logits_bytes / 2 ** 30,
                      config.softmax_logits_budget_bytes / 2 ** 30)
        resolved = config.resolved()
        if resolved != config.with_resolved_item_loss():
            _LOG.info(
                "DSPnet: the scene vocabulary has %d real scene(s), so the target scene carries "
                "no information and conditioning on it is left out%s.",
                config.real_scene_count,
                "; so do the scene network, SFE and CCR (reduce_single_scene=True)"
                if config.reduce_single_scene else "")
        # The configuration of the model that exists: get_config saves it, and it reloads to
        # the same model (`resolved` is idempotent).
        self.dspnet_config = config = resolved
        c = config
        if c.encoder == "gru":
            self.item_encoder = GRUSequenceEncoder(
                c.item_vocab_size, c.item_dim, c.dropout, name="item_encoder", dtype=policy
            )
        else:
            self.item_encoder = SequenceEncoder(
                c.item_vocab_size, c.item_dim, c.max_len, c.num_blocks, c.num_heads,
                c.ffn_multiplier, c.dropout, recency_bias=c.recency_bias, name="item_encoder",
                dtype=policy,
            )
        # Baseline `sasrec_scene`: the scene as an attribute added to each item embedding.
        self.scene_attribute_embedding = (
            tf.keras.layers.Embedding(
                c.scene_vocab_size + 1, c.item_dim, name="scene_attribute_embedding",
                dtype=policy,
            )
            if c.scene_attribute
            else None
        )
        # The scene encoder's embedding table also serves the (tied) scene head, so it exists
        # even when the scene network is ablated away.
        self.scene_encoder = SequenceEncoder(
            c.scene_vocab_size, c.scene_dim, c.max_len, c.num_blocks, c.num_heads,
            c.ffn_multiplier, c.dropout, recency_bias=c.recency_bias, name="scene_encoder",
            dtype=policy,
        )
        self.fusion = (
            SequenceFeatureEnhancement(
                c.item_dim, c.sfe_hidden, c.sfe_depth, c.fusion, c.dropout,
                zero_init=c.sfe_zero_init, name="fusion", dtype=policy,
            )
            if c.use_scene_network
            else None
        )
        self.item_head = PredictionHead(
            c.item_dim,
            num_target_scenes=c.scene_vocab_size if c.target_scene_conditioning else 0,
            target_scene_mode=c.target_scene_head,
            name="item_head",
            dtype=policy,
        )
        self.scene_head = PredictionHead(c.scene_dim, name="scene_head", dtype=policy)
        self.target_attention = (
            TargetSceneAttention(c.item_dim, c.scene_vocab_size, c.max_len,
                                 name="target_attention", dtype=policy)
            if c.uses_target_attention
            else None
        )
        self.repeat_pointer = (
            RepeatPointer(c.item_dim, c.max_len,
                          num_scenes=c.scene_vocab_size if c.uses_pointer_scenes else 0,
                          name="repeat_pointer", dtype=policy)
            if c.uses_repeat_pointer
            else None
        )
        self.augmenter = (
            JointSequenceAugmenter(
                c.item_vocab_size, c.scene_vocab_size, c.augment_crop_ratio,
                c.augment_mask_ratio, c.augment_reorder_ratio, name="augmenter", dtype=policy,
            )
            if c.use_ccr
            else None
        )
        self.context_weighting = (
            ContextWeighting(c.ccr_context_dim, c.ccr_weight_temperature,
                             name="context_weighting", dtype=policy)
            if c.use_ccr and c.ccr_weighting == "conditional"
            else None
        )
        self.discriminator = (
            PriorDiscriminator(c.discriminator_hidden, name="discriminator", dtype=policy)
            if c.use_adversarial
            else None
        )
        self.discriminator_optimizer: Optional[tf.keras.optimizers.Optimizer] = None
        names = ["loss", "item_loss", "scene_loss"]
        if c.use_ccr:
            names.append("ccr_loss")
        if c.use_adversarial:
            names += ["adv_generator_loss", "discriminator_loss", "discriminator_accuracy"]
        # float32 whatever the policy: they average float32 losses.
        self._train_trackers = {n: tf.keras.metrics.Mean(name=n, dtype=tf.float32)
                                for n in names}
        self._eval_trackers = {
            n: tf.keras.metrics.Mean(name=n, dtype=tf.float32)
            for n in ("item_loss", "scene_loss", "hr_at_10", "ndcg_at_10", "scene_acc")
        }

    # --- Keras plumbing --------------------------------------------------------------------
    def compile(
        self,
        optimizer: Any = "adam",
        discriminator_optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        """Like `Model.compile`, plus the discriminator's own optimizer (default Adam(1e-3)).

        Under "mixed_float16" both optimizers get loss scaling (Keras wraps the main one).
        """
        super().compile(optimizer=optimizer, **kwargs)
        if self.discriminator is not None:
            self.discriminator_optimizer = with_loss_scaling(tf.keras.optimizers.get(
                discriminator_optimizer
                if discriminator_optimizer is not None
                else tf.keras.optimizers.Adam(1e-3)
            ), self.dtype_policy)

    @property
    def metrics(self):
        """The train and eval loss/metric trackers, so Keras resets them at each epoch."""
        return list(self._train_trackers.values()) + list(self._eval_trackers.values())

    def make_train_function(self, force: bool = False):
        """Creates the training-only variables first, so the train step is traced only once."""
        if self.train_function is None or force:
            self._create_training_variables()
        return super().make_train_function(force)

    def _create_training_variables(self) -> None:
        """Creates every variable the train step would create on its first call.

        Layers used only in training (context weighting, discriminator) and the optimizers'
        slots would otherwise be created inside the first step, and a `tf.function` that
        creates variables is traced twice: about a third of a small benchmark run's time.
        """
        oov_only = tf.ones([2, 3], tf.int32)  # id 1 (OOV) exists in every vocabulary
        build_optimizer(self.optimizer,
                        lambda: self.compute_losses(oov_only, oov_only, training=True)["loss"],
                        self.encoder_variables)
        if self.discriminator is not None and self.discriminator_optimizer is not None:
            build_optimizer(
                self.discriminator_optimizer,
                lambda: tf.reduce_mean(self.discriminator(tf.zeros([1, self.dspnet_config.item_dim]))),
                lambda: self.discriminator.trainable_variables,
            )

    def get_config(self) -> Dict[str, Any]:
        """The model's DSPnetConfig as a dict and its name, for Keras serialization."""
        return {"config": self.dspnet_config.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "DSPnet":
        """Re-creates the model from `get_config` output."""
        saved = dict(config["config"])
        # Saved before the field existed: built without the bias, whatever today's default.
        saved.setdefault("recency_bias", False)
        return cls(config=saved, name=config.get("name", "dspnet"))

    # --- forward ---------------------------------------------------------------------------
    def _prepare(
        self, inputs: Mapping[str, tf.Tensor], with_targets: bool = False
    ) -> Tuple[tf.Tensor, tf.Tensor, Optional[tf.Tensor]]:
        """Validates ids and keeps the most recent events (inputs are left padded).

        A history keeps max_len events. A training (or evaluation) sequence keeps max_len + 1
        (`with_targets`): max_len inputs and the event after each one.
        """
        if not isinstance(inputs, Mapping) or ITEM_IDS not in inputs or SCENE_IDS not in inputs:
            raise ValueError(
                "DSPnet expects a dict with keys 'item_ids' and 'scene_ids' ([batch, length] "
                f"ints, 0 = padding); got {type(inputs).__name__}"
                + (f" with keys {sorted(inputs)}" if isinstance(inputs, Mapping) else "")
            )
        c = self.dspnet_config
        items = ids_in_vocab(inputs[ITEM_IDS], c.item_vocab_size)
        scenes = ids_in_vocab(inputs[SCENE_IDS], c.scene_vocab_size)
        # Shorter windows are not padded up to max_len: the encoders count positions from the
        # most recent event and mask padding, so leading padding changes no output, only cost.
        keep = example_length(c.max_len) if with_targets else c.max_len
        items, scenes = items[:, -keep:], scenes[:, -keep:]
        target = inputs.get(TARGET_SCENE)
        if target is not None:
            target = known_target_scenes(
                ids_in_vocab(tf.reshape(target, [-1]), c.scene_vocab_size))
        return items, scenes, target

    def encode(
        self,
        items: tf.Tensor,
        scenes: tf.Tensor,
        training: Optional[bool] = None,
        last_only: bool = False,
    ) -> Dict[str, tf.Tensor]:
        """Runs both networks and the fusion on prepared [B, max_len] ids.

        Returns a dict with `z` [B, L, d_v] (zero at padding), `scene_states` [B, L, d_s]
        (None when the scene network is off) and `valid` [B, L] (True on real events).
        Padding is defined by the item sequence; scene ids at padded positions are ignored.
        With `last_only` every output covers only the most recent position (L = 1), computed
        at a fraction of the cost: for callers that read a history's current state alone.
        """
        valid = items > 0
        scenes = tf.where(valid, scenes, 0)
        extra = (
            self.scene_attribute_embedding(scenes)
            if self.scene_attribute_embedding is not None
            else None
        )
        item_states = self.item_encoder(
            items, padding_mask=valid, training=training, extra_embeddings=extra,
            last_only=last_only,
        )
        output_valid = valid[:, -1:] if last_only else valid
        if self.fusion is None:
            return {"z": item_states, "scene_states": None, "valid": output_valid,
                    "scene_ids": scenes}
        scene_states = self.scene_encoder(scenes, padding_mask=valid, training=training,
                                          last_only=last_only)
        z = self.fusion(item_states, scene_states, training=training)
        z = z * tf.cast(output_valid, z.dtype)[:, :, tf.newaxis]
        return {"z": z, "scene_states": scene_states, "valid": output_valid, "scene_ids": scenes}

    def call(
        self, inputs: Mapping[str, tf.Tensor], training: Optional[bool] = None
    ) -> Dict[str, tf.Tensor]:
        """Next-item scores [B, item_vocab_size] and next-scene logits [B, scene_vocab_size].

        The item scores are logits, or with the repeat pointer the mixture's log-probabilities
        (either way a softmax of them is the predicted distribution).
        """
        items, scenes, target = self._prepare(inputs)
        encoded = self.encode(items, scenes, training=training)
        z = encoded["z"][:, -1]
        scene_logits = self.scene_logits(z)
        c = self.dspnet_config
        if c.uses_marginal_next_event:
            # The joint factorisation: without a target scene, sum the in-scene answers over
            # the predicted next scene; with one, that scene's answer (normalised, so rows of
            # either kind are log-probabilities).
            in_scene = self._in_scene_log_probs(z, items, encoded)  # [B, S, V]
            log_p_scene = tf.nn.log_softmax(scene_logits[:, RESERVED_IDS:], axis=-1)
            next_event = tf.reduce_logsumexp(in_scene + log_p_scene[:, :, tf.newaxis], axis=1)
            if target is None:
                return {"item_logits": next_event, "scene_logits": scene_logits}
            given = tf.gather(in_scene, tf.maximum(target - RESERVED_IDS, 0), batch_dims=1)
            item_logits = tf.where((target >= RESERVED_IDS)[:, tf.newaxis], given, next_event)
            return {"item_logits": item_logits, "scene_logits": scene_logits}
        return {"item_logits": self._item_scores(z, target, items, encoded),
                "scene_logits": scene_logits}

    def _target_states(self, encoded: Mapping[str, tf.Tensor], target: tf.Tensor) -> tf.Tensor:
        """The item head's input for target scenes [B, Q] (the last Q positions): the fused
        states re-read by `TargetSceneAttention`."""
        return self.target_attention(encoded["z"], encoded["scene_states"], encoded["valid"],
                                     target, encoded["scene_ids"])

    def _item_scores(self, z: tf.Tensor, target: Optional[tf.Tensor], items: tf.Tensor,
                     encoded: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Next-item scores [B, V] of the last states z [B, d] for target scenes [B] (or None)."""
        query, pointer = self._query_and_pointer(z, target, encoded)
        item_logits = self._score_catalog(query)
        if pointer is not None:
            item_logits = mixture_log_probs(item_logits, items, *pointer)
        return item_logits

    def _query_and_pointer(
        self, z: tf.Tensor, target: Optional[tf.Tensor], encoded: Mapping[str, tf.Tensor]
    ) -> Tuple[tf.Tensor, Optional[Tuple[tf.Tensor, tf.Tensor, tf.Tensor]]]:
        """The item head's query [B, d] for target scenes [B] (or None), and the repeat pointer's
        (log_gate [B], log_keep [B], log_pointer [B, L]) for it (None without a pointer)."""
        if self.target_attention is not None:
            given = target if target is not None else tf.zeros(tf.shape(z)[:1], tf.int32)
            z = self._target_states(encoded, given[:, tf.newaxis])[:, 0]
        query = self.item_head(z, target)
        if self.repeat_pointer is None:
            return query, None
        return query, self._point(query[:, tf.newaxis], encoded,
                                  None if target is None else target[:, tf.newaxis], squeeze=True)

    @property
    def answers_are_log_probs(self) -> bool:
        """Whether `call`'s item scores are log-probabilities (the repeat pointer's mixture or the
        joint factorisation), rather than the catalog's raw logits."""
        return self.repeat_pointer is not None or self.dspnet_config.uses_marginal_next_event

    def answer_components(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        """The served answer of `call` in parts a factorized top-K index can search (inference).

        `call` scores the whole catalog. Its item scores are built from a few item-head queries
        per history: with the joint factorisation one per real scene, weighted by the next-scene
        distribution (or one-hot at a given target scene), otherwise one. Each query's catalog
        part ranks items by q . e (what a BruteForce or ScaNN index searches); what it needs
        besides is the catalog's log-normaliser and the repeat pointer's mass on history items.
        `dspnet_tf.retrieval` recombines them into `call`'s scores for retrieved candidates.

        Returns:
          `queries` [B, S, d] float32 item-head queries; `log_weights` [B, S] (log P(scene), 0
          for a single query, -1e9 off a given target); `log_keep`, `log_gate` [B, S] and
          `log_pointer` [B, S, L] (the pointer's; 0, -1e9 and -1e9 without one); `history`
          [B, L] item ids the pointer points at; `scene_logits` as `call` gives them.
        """
        items, scenes, target = self._prepare(inputs)
        encoded = self.encode(items, scenes, training=False)
        z = encoded["z"][:, -1]
        batch = tf.shape(z)[0]
        if self.dspnet_config.uses_marginal_next_event:
            targets = [tf.fill([batch], scene)
                       for scene in range(RESERVED_IDS, self.dspnet_config.scene_vocab_size)]
            log_p_scene = tf.nn.log_softmax(self.scene_logits(z)[:, RESERVED_IDS:], axis=-1)
            if target is not None:
                given = tf.one_hot(target - RESERVED_IDS, len(targets), on_value=0.0,
                                   off_value=IMPOSSIBLE)
                log_p_scene = tf.where((target >= RESERVED_IDS)[:, tf.newaxis], given,
                                       log_p_scene)
        else:
            targets = [target]
            log_p_scene = tf.zeros([batch, 1])
        parts = [self._query_and_pointer(z, scene, encoded) for scene in targets]
        length = tf.shape(items)[1]
        # (log_gate, log_keep, log_pointer) of a pointer that never points.
        no_pointer = (tf.fill([batch], IMPOSSIBLE), tf.zeros([batch]),
                      tf.fill([batch, length], IMPOSSIBLE))
        pointers = [pointer if pointer is not None else no_pointer for _, pointer in parts]
        return {
            "queries": tf.stack([at_least_float32(query) for query, _ in parts], axis=1),
            "log_weights": at_least_float32(log_p_scene),
            "log_gate": tf.stack([at_least_float32(p[0]) for p in pointers], axis=1),
            "log_keep": tf.stack([at_least_float32(p[1]) for p in pointers], axis=1),
            "log_pointer": tf.stack([at_least_float32(p[2]) for p in pointers], axis=1),
            "history": items,
            "scene_logits": self.scene_logits(z),
        }

    def _in_scene_log_probs(self, z: tf.Tensor, items: tf.Tensor,
                            encoded: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """log P(item | history, scene s) for every real scene s: [B, scene_vocab - 2, V]."""
        rows = []
        for scene in range(RESERVED_IDS, self.dspnet_config.scene_vocab_size):
            target = tf.fill(tf.shape(z)[:1], scene)
            rows.append(tf.nn.log_softmax(self._item_scores(z, target, items, encoded), axis=-1))
        return tf.stack(rows, axis=1)

    def in_scene_log_probs(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """log P(next item | history, next scene = s) for every real scene s (inference).

        Returns [B, scene_vocab_size - 2, item_vocab_size]: row s - 2 is scene id s's answer
        (padding and the OOV bucket are not scenes a list is shown in). Without target-scene
        conditioning every row is the next-event answer. For diagnostics that swap the model's
        parts with an oracle's (the quality benchmark's oracle-gap study).
        """
        items, scenes, _ = self._prepare(inputs)
        encoded = self.encode(items, scenes, training=False)
        return self._in_scene_log_probs(encoded["z"][:, -1], items, encoded)

    def _point(self, query: tf.Tensor, encoded: Mapping[str, tf.Tensor],
               target: Optional[tf.Tensor] = None,
               squeeze: bool = False) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """The repeat pointer's gate and weights for queries [B, Q, d] over `encode`'s output.

        Its keys are the fused states, with the scene network's states beside them when there is
        one (which earlier events the next scene returns to depends on where they happened).
        """
        keys = encoded["z"]
        if encoded["scene_states"] is not None:
            keys = tf.concat([keys, encoded["scene_states"]], axis=-1)
        if target is None:  # not given: the "unknown" row of the scene biases
            target = tf.zeros(tf.shape(query)[:2], tf.int32)
        log_gate, log_keep, log_pointer = self.repeat_pointer(
            query, keys, encoded["valid"], query_scenes=target, key_scenes=encoded["scene_ids"])
        if squeeze:
            return log_gate[:, 0], log_keep[:, 0], log_pointer[:, 0]
        return log_gate, log_keep, log_pointer

    def user_representation(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """The fused representation z of each history's last event, [B, item_dim] (inference).

        What both heads read: the user's state after their most recent event, for retrieval
        indexes, clustering or plots of the latent space. float32 under any policy.
        """
        items, scenes, _ = self._prepare(inputs)
        return at_least_float32(self.encode(items, scenes, training=False)["z"][:, -1])

    def item_logits(self, z: tf.Tensor, target_scene: Optional[tf.Tensor] = None) -> tf.Tensor:
        """Catalog logits of every item (padding id 0 excluded) from representations z [..., d_v].

        The tied-embedding part alone: with the repeat pointer, `call` mixes in the history.
        """
        return self._score_catalog(self.item_head(z, target_scene))

    def _score_catalog(self, query: tf.Tensor, full_precision: bool = True) -> tf.Tensor:
        """Tied-embedding float32 logits of every item for item-head queries [..., d_v].

        `full_precision` multiplies in float32 (ranking); False in the compute dtype, for the
        training loss (`score_all`).
        """
        return score_all(query, self.item_encoder.embeddings, self.dspnet_config.item_vocab_size,
                         full_precision=full_precision)

    def scene_logits(self, z: tf.Tensor) -> tf.Tensor:
        """Scores of every scene from representations z [..., d_v]; padding excluded.

        With `scene_real_only` the OOV bucket is excluded too: the next-scene distribution is
        then over the real scenes only, as the serving signature reports it.
        """
        query = self.scene_head(z)
        # Ids below OOV_ID are padding alone; below RESERVED_IDS, padding and the OOV bucket.
        excluded = RESERVED_IDS if self.dspnet_config.scene_real_only else OOV_ID
        return score_all(query, self.scene_encoder.embeddings, self.dspnet_config.scene_vocab_size,
                         excluded_ids=excluded)

    def recommend(
        self,
        item_ids: Any,
        scene_ids: Any,
        k: int = 10,
        target_scene: Any = None,
    ) -> Dict[str, tf.Tensor]:
        """Top-k next items with scores, and next-scene probabilities, for each history.

        Full-catalog `tf.math.top_k` over the tied-embedding scores: exact and simple for the
        in-process API. The exported serving model uses TFRS's top-K layer instead.

        Returns:
          dict with `item_ids` [B, k] int32 (best first, ids >= 2), `item_scores` [B, k] and
          `scene_probs` [B, scene_vocab_size] (padding 0 and OOV 1 have probability ~0).
        """
        inputs = {ITEM_IDS: tf.convert_to_tensor(item_ids), SCENE_IDS: tf.convert_to_tensor(scene_ids)}
        if target_scene is not None:
            inputs[TARGET_SCENE] = tf.convert_to_tensor(target_scene)
        outputs = self(inputs, training=False)
        # Padding (0) and the OOV bucket (1) are not items a client can be shown.
        logits = exclude_leading_ids(outputs["item_logits"], RESERVED_IDS)
        k = min(int(k), self.dspnet_config.item_vocab_size - RESERVED_IDS)
        scores, ids = tf.math.top_k(logits, k=k)
        return {
            "item_ids": ids,
            "item_scores": scores,
            "scene_probs": tf.nn.softmax(outputs["scene_logits"], axis=-1),
        }

    # --- training --------------------------------------------------------------------------
    def _step_seed(self, salt: int) -> tf.Tensor:
        """A stateless seed unique to (config seed, optimizer step, salt)."""
        # Before compile() (e.g. computing losses by hand) every call is "step 0".
        step = tf.cast(self.optimizer.iterations, tf.int64) if self.optimizer else tf.constant(0, tf.int64)
        return tf.stack([tf.cast(self.dspnet_config.seed * 1000 + salt, tf.int64), step])

    @staticmethod
    def _next_event_targets(
        items: tf.Tensor, scenes: tf.Tensor, dtype: tf.DType
    ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """Position t predicts event t + 1: targets of positions [0, L-1) and their weights."""
        valid = items > 0
        next_scenes = tf.where(valid[:, 1:], scenes[:, 1:], 0)
        return items[:, 1:], next_scenes, tf.cast(valid[:, :-1] & valid[:, 1:], dtype)

    def _scene_weights(self, next_scenes: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        """The next-scene loss's weights; with `scene_real_only` an OOV next scene is no target."""
        if not self.dspnet_config.scene_real_only:
            return weights
        return weights * tf.cast(next_scenes != OOV_ID, weights.dtype)

    def compute_losses(
        self, items: tf.Tensor, scenes: tf.Tensor, training: bool = True
    ) -> Dict[str, tf.Tensor]:
        """Every loss term on prepared ids, the weighted total under "loss", and "user_z".

        `items` / `scenes` [B, L] are sequences: events 0..L-2 are the inputs and each one is
        trained to predict the event after it. The inputs are encoded without the last event,
        so the most recent input sits at the position a served history's most recent event
        sits at (max_len - 1, positions count from the end): the position that answers at
        serving time is the one the item and scene losses train. (Encoding the whole sequence
        and reading positions 0..L-2 would leave that position untrained by the losses and
        free to drift under CCR, which showed as held-out accuracy falling during training.)

        `user_z` [N, d] holds z at every position (or at the random share of positions of
        `adversarial_sample_fraction`) and `user_z_weights` [N] is 1 where the position is a
        real training position (the ones the prior regulariser sees).
        """
        c = self.dspnet_config
        next_items, next_scenes, weights = self._next_event_targets(items, scenes, tf.float32)
        items, scenes = items[:, :-1], scenes[:, :-1]
        if c.use_ccr:
            # CCR reads only each view's most recent state, so the views are encoded with
            # `last_only`: the last block computes that one position instead of all L (its
            # attention output and feed-forward work drop by a factor of L). The views share
            # one call: per-op overhead matters at recommender widths.
            ccr_users = self._ccr_users(tf.shape(items)[0])
            # The most recent events of the window; the encoder places them at the positions
            # they hold in the full window (positions count from the end).
            window = c.ccr_view_events
            items_v, scenes_v = items[:ccr_users, -window:], scenes[:ccr_users, -window:]
            seed_a, seed_b = tf.unstack(
                tf.random.experimental.stateless_split(self._step_seed(_SALT_VIEWS), num=2)
            )
            items_b, scenes_b = self.augmenter(items_v, scenes_v, seed=seed_b)
            if c.ccr_views == "augmented":
                items_a, scenes_a = self.augmenter(items_v, scenes_v, seed=seed_a)
                items_b = tf.concat([items_a, items_b], axis=0)
                scenes_b = tf.concat([scenes_a, scenes_b], axis=0)
            views_z = self.encode(items_b, scenes_b, training=training, last_only=True)["z"][:, -1]
        encoded = self.encode(items, scenes, training=training)
        z_in = encoded["z"]  # the compute dtype; `weights` and every loss stay float32
        if c.use_ccr:
            if c.ccr_views == "augmented":
                view_a_z, view_b_z = tf.split(views_z, 2, axis=0)
            else:  # anchored: the un-augmented history's state, from the pass above
                view_a_z, view_b_z = z_in[:ccr_users, -1], views_z

        target_scene = None
        if c.target_scene_conditioning:
            hide = tf.random.stateless_uniform(
                tf.shape(next_scenes), self._step_seed(_SALT_TARGET_SCENE)
            ) < c.target_scene_dropout
            target_scene = tf.where(hide, 0, known_target_scenes(next_scenes))
        head_states = z_in
        if self.target_attention is not None:
            head_states = self._target_states(encoded, target_scene)
        query = self.item_head(head_states, target_scene)
        table = self.item_encoder.embeddings
        if c.item_loss in ("sampled_bce", "sampled_softmax"):
            # The true item's logit in float32 (B x L dot products: cheap); the negatives' in
            # the compute dtype, their rows cast after the gather (never the whole table).
            positive = tf.reduce_sum(
                at_least_float32(query) * tf.gather(table, next_items), axis=-1)
        if c.item_loss == "sampled_bce":
            negatives_ids = tf.random.stateless_uniform(
                tf.concat([tf.shape(next_items), [c.num_negatives]], axis=0),
                self._step_seed(_SALT_NEGATIVES), minval=1, maxval=c.item_vocab_size,
                dtype=tf.int32,
            )
            negative = tf.einsum("bld,blkd->blk", query,
                                 tf.cast(tf.gather(table, negatives_ids), query.dtype))
            item_loss = sampled_bce_loss(
                positive, negative, weights, negatives_ids != next_items[..., tf.newaxis]
            )
        elif c.item_loss == "sampled_softmax":
            # One uniform draw over the real items (ids >= 2) shared by every position: a
            # [B, L, K] score tensor, never [B, L, catalog]. Each item's expected count in the
            # draw is K / (real items), the logQ correction of its logit.
            sampled = tf.random.stateless_uniform(
                [c.num_sampled], self._step_seed(_SALT_NEGATIVES), minval=RESERVED_IDS,
                maxval=c.item_vocab_size, dtype=tf.int32)
            negative = tf.einsum("bld,kd->blk", query,
                                 tf.cast(tf.gather(table, sampled), query.dtype))
            log_expected_count = tf.constant(
                math.log(c.num_sampled / (c.item_vocab_size - RESERVED_IDS)), tf.float32)
            log_prob = sampled_softmax_log_prob(
                positive, negative, log_expected_count,
                sampled[tf.newaxis, tf.newaxis, :] == next_items[..., tf.newaxis])
            if self.repeat_pointer is not None:
                log_prob = mixture_target_log_likelihood(
                    log_prob, next_items, items, *self._point(query, encoded, target_scene))
            item_loss = masked_negative_log_likelihood(log_prob, weights)
        else:
            # The [B, L, catalog] product in the compute dtype: the training step's largest.
            # (A name scope of its own, so a profile can tell its ops and gradients apart.)
            # The pointer outside that scope: a layer built inside a name scope gets it in its
            # weights' names, which the warm start maps weights by (dspnet_tf.warm_start).
            pointer = (None if self.repeat_pointer is None
                       else self._point(query, encoded, target_scene))
            with tf.name_scope("catalog_softmax"):
                logits = self._score_catalog(query, full_precision=False)
                if pointer is None:
                    item_loss = masked_softmax_cross_entropy(logits, next_items, weights)
                else:
                    item_loss = masked_negative_log_likelihood(target_log_likelihood(
                        logits, next_items, items, *pointer), weights)
        scene_loss = masked_softmax_cross_entropy(self.scene_logits(z_in), next_scenes,
                                                  self._scene_weights(next_scenes, weights))
        total = item_loss + c.alpha * scene_loss
        losses = {"item_loss": item_loss, "scene_loss": scene_loss}

        if c.use_ccr:
            weights_ccr = None
            if self.context_weighting is not None:
                # The context only chooses soft positives; stopping its gradient keeps the
                # encoders from reshaping the context just to make the contrastive task easy.
                context = (encoded["scene_states"] if encoded["scene_states"] is not None
                           else z_in)
                weights_ccr = self.context_weighting(
                    tf.stop_gradient(context[:ccr_users, -1]))
            losses["ccr_loss"] = conditional_info_nce(
                view_a_z, view_b_z, c.ccr_temperature, weights_ccr,
                c.ccr_soft_positive_mass,
            )
            total += c.lambda_ccr * losses["ccr_loss"]

        # The latent regularised towards the prior: z at every real training position. Padded
        # positions stay in with weight 0 (fixed shapes, so the step compiles with XLA).
        user_z = tf.reshape(z_in, [-1, c.item_dim])
        user_z_weights = tf.reshape(weights, [-1])
        if c.use_adversarial and c.adversarial_sample_fraction < 1.0:
            positions = tf.shape(user_z_weights)[0]
            sample = tf.random.stateless_uniform(
                [tf.cast(tf.math.ceil(c.adversarial_sample_fraction
                                      * tf.cast(positions, tf.float32)), tf.int32)],
                self._step_seed(_SALT_ADV_SAMPLE), minval=0, maxval=positions, dtype=tf.int32)
            user_z = tf.gather(user_z, sample)
            user_z_weights = tf.gather(user_z_weights, sample)
        if c.use_adversarial:
            losses["adv_generator_loss"] = generator_loss(
                tf.reshape(self.discriminator(user_z), [-1]), user_z_weights
            )
            total += c.lambda_adv * losses["adv_generator_loss"]
        losses["loss"] = total
        losses["user_z"] = user_z
        losses["user_z_weights"] = user_z_weights
        return losses

    def _ccr_users(self, batch_size: tf.Tensor) -> tf.Tensor:
        """How many of the batch's users CCR sees: ceil(fraction * B), at least 2 (<= B)."""
        fraction = self.dspnet_config.ccr_view_fraction
        users = tf.cast(tf.math.ceil(fraction * tf.cast(batch_size, tf.float32)), tf.int32)
        return tf.minimum(batch_size, tf.maximum(users, 2))

    def encoder_variables(self) -> list:
        """Trainable variables updated by the main optimizer (everything but the discriminator)."""
        excluded = set()
        if self.discriminator is not None:
            excluded = {id(v) for v in self.discriminator.trainable_variables}
        return [v for v in self.trainable_variables if id(v) not in excluded]

    def fit(self, x: Any = None, *args: Any, **kwargs: Any) -> tf.keras.callbacks.History:
        """`tf.keras.Model.fit`; the first call also settles a repeat pointer left to the data.

        With `repeat_pointer=None` and `training_repeat_share` unknown (a Keras user's own
        config), the pointer's use depends on a fact about the data: on a log where (almost) no
        next event repeats an item of the user's history it has nothing to copy and only costs
        accuracy. So before the first step, while the pointer holds no weights yet, the share
        is counted on up to REPEAT_SHARE_PROBE_BATCHES batches of `x` (a `tf.data.Dataset` of
        `{"item_ids", ...}` dicts), recorded in the config (`get_config` saves it, so a reload
        builds the same model), and below REPEAT_POINTER_MIN_SHARE the pointer is dropped.
        """
        self._settle_repeat_pointer(x)
        return super().fit(x, *args, **kwargs)

    def _settle_repeat_pointer(self, data: Any) -> None:
        c = self.dspnet_config
        if (self.repeat_pointer is None or self.repeat_pointer.built
                or c.repeat_pointer is not None or c.training_repeat_share is not None
                or not isinstance(data, tf.data.Dataset)):
            return
        rows = [batch[ITEM_IDS].numpy()
                for batch in data.take(REPEAT_SHARE_PROBE_BATCHES)
                if isinstance(batch, Mapping) and ITEM_IDS in batch]
        if not rows:
            return
        share = repeat_target_share(row for batch in rows for row in batch)
        self.dspnet_config = c.replace(training_repeat_share=share)
        if not self.dspnet_config.uses_repeat_pointer:
            # Unbuilt, so no weights are lost. Keras's __delattr__ leaves the checkpoint
            # dependency behind, and a SavedModel would then revive a pointer the reloaded
            # config does not build: drop it too.
            del self.repeat_pointer
            self._delete_tracking("repeat_pointer")  # pylint: disable=protected-access
            self.repeat_pointer = None
        _LOG.info("DSPnet: %.1f%% of the training next events repeat an item of the user's "
                  "history (first %d batches): the repeat pointer is %s.", 100 * share,
                  len(rows), "on" if self.repeat_pointer is not None else "left out")

    # The step has no tensor-dependent Python control flow, so autograph has nothing to
    # convert; skipping it cuts the first-step trace from ~30 s to a few seconds.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data: Any) -> Dict[str, tf.Tensor]:
        """One optimizer step on a batch of histories (targets are the shifted inputs).

        The encoder's step on the combined loss, then, with the adversarial prior, the
        discriminator's own step; returns the running means of the loss terms.
        """
        # Targets are the shifted inputs; any labels passed alongside are ignored.
        features, _, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        items, scenes, _ = self._prepare(features, with_targets=True)
        with tf.GradientTape() as tape:
            losses = self.compute_losses(items, scenes, training=True)
            # Inside the tape, or the scaled loss has no gradient path. A LossScaleOptimizer
            # (mixed_float16) also multiplies by its loss scale, so float16 gradients do not
            # underflow; the gradients are unscaled again before the update.
            loss = scaled_loss(self.optimizer, losses["loss"] * replica_scale())
        # Listed after the forward pass: sub-layers used only in training are built by it.
        variables = self.encoder_variables()
        gradients = unscaled_gradients(self.optimizer, tape.gradient(loss, variables))
        # Ablated parts (e.g. the scene Transformer without the scene network) get no gradient.
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None]
        )
        if self.discriminator is not None:
            losses.update(self._discriminator_step(tf.stop_gradient(losses["user_z"]),
                                                   losses["user_z_weights"]))
        for name, tracker in self._train_trackers.items():
            tracker.update_state(losses[name])
        return {name: tracker.result() for name, tracker in self._train_trackers.items()}

    def _discriminator_step(
        self, user_z: tf.Tensor, weights: tf.Tensor
    ) -> Dict[str, tf.Tensor]:
        c = self.dspnet_config
        if self.discriminator_optimizer is None:
            raise RuntimeError("call compile() before fit(): the discriminator needs an optimizer")
        prior = sample_prior(
            c.prior, tf.shape(user_z)[0], c.item_dim, self._step_seed(_SALT_PRIOR),
            c.prior_components,
        )
        with tf.GradientTape() as tape:
            prior_logits = self.discriminator(prior)
            encoded_logits = tf.reshape(self.discriminator(user_z), [-1])
            loss = discriminator_loss(prior_logits, encoded_logits, weights)
            scaled = scaled_loss(self.discriminator_optimizer, loss * replica_scale())
        variables = self.discriminator.trainable_variables
        self.discriminator_optimizer.apply_gradients(zip(
            unscaled_gradients(self.discriminator_optimizer, tape.gradient(scaled, variables)),
            variables))
        return {
            "discriminator_loss": loss,
            "discriminator_accuracy": discriminator_accuracy(prior_logits, encoded_logits,
                                                             weights),
        }

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data: Any) -> Dict[str, tf.Tensor]:
        """Next-event losses, and full-ranking HR@10 / NDCG@10 / scene accuracy on the last event.

        The last event of each sequence is the held-out target (leave-one-out); it is ranked
        against the whole catalog with pessimistic ties (a tie counts as ranked above).
        """
        features, _, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        items, scenes, _ = self._prepare(features, with_targets=True)
        next_items, next_scenes, weights = self._next_event_targets(items, scenes, tf.float32)
        # As in training: the inputs without the last event, which is only a target.
        encoded = self.encode(items[:, :-1], scenes[:, :-1], training=False)
        z = encoded["z"]  # the compute dtype; `weights`, logits and metrics stay float32
        # A target-conditioned model is scored in the in-scene task (each position is told the
        # scene of the event it predicts), the one it serves; otherwise in the next-event task.
        target = (known_target_scenes(next_scenes)
                  if self.dspnet_config.target_scene_conditioning else None)
        head_states = z
        if self.target_attention is not None:
            head_states = self._target_states(encoded, target)
        query = self.item_head(head_states, target)
        item_logits = self._score_catalog(query)
        scene_logits = self.scene_logits(z)
        last_logits, last_item = item_logits[:, -1], next_items[:, -1]
        if self.repeat_pointer is None:
            item_loss = masked_softmax_cross_entropy(item_logits, next_items, weights)
        else:
            pointer = self._point(query, encoded, target)
            item_loss = masked_negative_log_likelihood(target_log_likelihood(
                item_logits, next_items, items[:, :-1], *pointer), weights)
            last_logits = mixture_log_probs(last_logits, items[:, :-1],
                                            *(part[:, -1] for part in pointer))
        self._eval_trackers["item_loss"].update_state(item_loss)
        self._eval_trackers["scene_loss"].update_state(
            masked_softmax_cross_entropy(scene_logits, next_scenes,
                                         self._scene_weights(next_scenes, weights))
        )
        has_target = weights[:, -1] > 0
        rank = tf.boolean_mask(pessimistic_rank(last_logits, last_item), has_target)
        self._eval_trackers["hr_at_10"].update_state(hit_rate(rank, 10))
        self._eval_trackers["ndcg_at_10"].update_state(ndcg(rank, 10))
        predicted_scene = tf.argmax(scene_logits[:, -1], axis=-1, output_type=tf.int32)
        self._eval_trackers["scene_acc"].update_state(
            tf.cast(tf.boolean_mask(predicted_scene == next_scenes[:, -1], has_target), tf.float32)
        )
        return {f"{name}": t.result() for name, t in self._eval_trackers.items()}
