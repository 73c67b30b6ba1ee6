"""BERT4Rec: the bidirectional, cloze-trained baseline, built from DSPnet's own layers."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

import tensorflow as tf

from dspnet_tf.config import DSPnetConfig
from dspnet_tf.distribution import replica_scale
from dspnet_tf.layers.prediction_head import PredictionHead, score_all
from dspnet_tf.layers.sequence_encoder import SequenceEncoder
from dspnet_tf.models.dspnet import ITEM_IDS, ids_in_vocab
from dspnet_tf.optimizers import build_optimizer
from dspnet_tf.precision import (
    at_least_float32,
    scaled_loss,
    unscaled_gradients,
    with_model_precision,
)

_SALT_CLOZE = 23


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class BERT4Rec(tf.keras.Model):
    """Items-only recommender that reads the history in both directions (Sun et al., 2019).

    Instead of predicting each next event left to right (SASRec, DSPnet), BERT4Rec hides a random
    share of the items behind a [MASK] token and recovers them from both sides (the cloze task).
    To recommend, it appends one [MASK] after the history and reads the item predicted there.
    The encoder is DSPnet's `SequenceEncoder` with the causal mask off and the item head is
    DSPnet's tied-embedding `PredictionHead`, so the comparison isolates the objective.

    The cloze loss is a sampled softmax (`tf.nn.sampled_softmax_loss`, log-uniform sampler over
    the frequency-ordered vocabulary): a full softmax would materialise [masked positions x
    |catalog|] logits. BERT4Rec ignores scenes: its scene logits are uniform, so its scene
    accuracy is not meaningful.

    Mixed precision as DSPnet (`DSPnetConfig.precision`): the encoder and head compute in the
    policy's compute dtype; logits and the cloze loss are float32.

    Example:
      >>> config = DSPnetConfig(item_vocab_size=50, scene_vocab_size=5, max_len=8, item_dim=16,
      ...                       scene_dim=4)
      >>> model = BERT4Rec(config, num_sampled=8)
      >>> model.compile(optimizer="adam")
      >>> batch = {"item_ids": tf.constant([[0, 3, 4, 5]]), "scene_ids": tf.constant([[0, 1, 2, 1]])}
      >>> _ = model.fit(tf.data.Dataset.from_tensors(batch), epochs=1, verbose=0)
      >>> model(batch)["item_logits"].shape
      TensorShape([1, 50])

    Args:
      config: a `DSPnetConfig`; BERT4Rec reads its vocabulary sizes, max_len, item_dim,
        num_blocks, num_heads, ffn_multiplier, dropout, precision and seed.
      mask_ratio: share of the real events hidden in each training sequence (the paper's rho).
      num_sampled: negatives per masked position in the sampled softmax.
    """

    def __init__(
        self,
        config: Union[DSPnetConfig, Mapping[str, Any]],
        mask_ratio: float = 0.2,
        num_sampled: int = 256,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("name", "bert4rec")
        if not isinstance(config, DSPnetConfig):
            config = DSPnetConfig.from_dict(dict(config))
        # One resolved policy for the model and its sub-layers, saved in the config (see DSPnet).
        config = with_model_precision(config, kwargs.pop("dtype", None))
        super().__init__(dtype=tf.keras.mixed_precision.Policy(config.precision), **kwargs)
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"BERT4Rec mask_ratio={mask_ratio!r} must be in (0, 1)")
        if num_sampled < 1:
            raise ValueError(f"BERT4Rec num_sampled={num_sampled!r} must be >= 1")
        self.dspnet_config = config
        self.mask_ratio = float(mask_ratio)
        self.num_sampled = int(min(num_sampled, config.item_vocab_size - 1))
        self.mask_token = config.item_vocab_size  # the encoder's extra [MASK] row
        self.item_encoder = SequenceEncoder(
            config.item_vocab_size, config.item_dim, config.max_len, config.num_blocks,
            config.num_heads, config.ffn_multiplier, config.dropout, causal=False,
            name="item_encoder", dtype=self.dtype_policy,
        )
        self.item_head = PredictionHead(config.item_dim, name="item_head", dtype=self.dtype_policy)
        self.loss_tracker = tf.keras.metrics.Mean(name="loss", dtype=tf.float32)

    @property
    def metrics(self):
        """The loss tracker, so Keras resets it at each epoch."""
        return [self.loss_tracker]

    def make_train_function(self, force: bool = False):
        """Creates the optimizer's slots first, so the train step is traced once, not twice."""
        # Slots created inside the first step would make tf.function trace the step twice.
        if self.train_function is None or force:
            build_optimizer(
                self.optimizer,
                lambda: self.cloze_loss(tf.ones([2, 3], tf.int32),  # id 1 (OOV): any vocabulary
                                        tf.constant([0, 0], tf.int64), training=True),
                lambda: self.trainable_variables,
            )
        return super().make_train_function(force)

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments (config as a dict), for Keras serialization."""
        return {"config": self.dspnet_config.to_dict(), "mask_ratio": self.mask_ratio,
                "num_sampled": self.num_sampled, "name": self.name}

    @classmethod
    def from_config(cls, config: Dict[str, Any], custom_objects: Any = None) -> "BERT4Rec":
        """Re-creates the model from `get_config` output."""
        return cls(**config)

    def _items(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        if not isinstance(inputs, Mapping) or ITEM_IDS not in inputs:
            raise ValueError("BERT4Rec expects a dict with key 'item_ids' ([batch, length] ints, "
                             f"0 = padding); got {type(inputs).__name__}")
        c = self.dspnet_config
        return ids_in_vocab(inputs[ITEM_IDS], c.item_vocab_size)[:, -c.max_len:]

    def call(
        self, inputs: Mapping[str, tf.Tensor], training: Optional[bool] = None
    ) -> Dict[str, tf.Tensor]:
        """Next-item logits [B, item_vocab_size] read at a [MASK] appended to each history."""
        c = self.dspnet_config
        items = self._items(inputs)
        mask_column = tf.fill([tf.shape(items)[0], 1], self.mask_token)
        window = tf.concat([items, mask_column], axis=1)[:, -c.max_len:]
        states = self.item_encoder(window, padding_mask=window > 0, training=training)
        item_logits = score_all(self.item_head(states[:, -1]), self.item_encoder.embeddings,
                                c.item_vocab_size)
        scene_logits = score_all(tf.zeros([tf.shape(items)[0], 1]),
                                 tf.zeros([c.scene_vocab_size, 1]), c.scene_vocab_size)
        return {"item_logits": item_logits, "scene_logits": scene_logits}

    def cloze_loss(self, items: tf.Tensor, seed: tf.Tensor, training: bool = True) -> tf.Tensor:
        """Sampled-softmax loss of recovering randomly masked items from both directions.

        Every sequence gets its most recent event masked too, which is the position inference
        reads (the paper's trick of also training on "last item masked" sequences).
        """
        valid = items > 0
        hide = tf.random.stateless_uniform(tf.shape(items), seed) < self.mask_ratio
        last = tf.one_hot(tf.shape(items)[1] - 1, tf.shape(items)[1], on_value=True,
                          off_value=False, dtype=tf.bool)
        hide = (hide | last[tf.newaxis]) & valid
        states = self.item_encoder(tf.where(hide, self.mask_token, items), padding_mask=valid,
                                   training=training)
        queries = self.item_head(tf.boolean_mask(states, hide))
        labels = tf.cast(tf.boolean_mask(items, hide), tf.int64)[:, tf.newaxis]
        table = self.item_encoder.embeddings[: self.dspnet_config.item_vocab_size]
        per_position = tf.nn.sampled_softmax_loss(
            weights=table, biases=tf.zeros([self.dspnet_config.item_vocab_size]),
            # float32, as the table: the loss's log-sum-exp needs it.
            labels=labels, inputs=at_least_float32(queries), num_sampled=self.num_sampled,
            num_classes=self.dspnet_config.item_vocab_size,
        )
        return tf.math.divide_no_nan(tf.reduce_sum(per_position),
                                     tf.cast(tf.size(per_position), per_position.dtype))

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data: Any) -> Dict[str, tf.Tensor]:
        """One optimizer step on the cloze loss of a batch; returns the running mean loss."""
        features, _, _ = tf.keras.utils.unpack_x_y_sample_weight(data)
        items = self._items(features)
        seed = tf.stack([tf.cast(self.dspnet_config.seed * 1000 + _SALT_CLOZE, tf.int64),
                         tf.cast(self.optimizer.iterations, tf.int64)])
        with tf.GradientTape() as tape:
            loss = self.cloze_loss(items, seed, training=True)
            # Inside the tape, so it has a gradient path; loss-scaled under mixed_float16.
            scaled = scaled_loss(self.optimizer, loss * replica_scale())
        variables = self.trainable_variables
        gradients = unscaled_gradients(self.optimizer, tape.gradient(scaled, variables))
        self.optimizer.apply_gradients(
            [(g, v) for g, v in zip(gradients, variables) if g is not None]
        )
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

