"""Joint sequence augmentations (crop, mask, reorder) that make CCR's augmented views of a user."""

from __future__ import annotations

from typing import Any, Dict, Tuple

import tensorflow as tf

CROP, MASK, REORDER = 0, 1, 2


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class JointSequenceAugmenter(tf.keras.layers.Layer):
    """Applies one random augmentation per user to the item AND the scene sequence together.

    Contrastive learning on sequences (CL4SRec) builds two "views" of a user by cropping,
    masking or reordering the history, and teaches the encoder that both views are the same
    user. DSPnet has two aligned sequences, so each augmentation is applied at the same
    positions in both: event t keeps its item and its scene together.

      * crop: keep a random contiguous window of ceil(crop_ratio * n) events;
      * mask: replace each event with [MASK] (item and scene) with probability mask_ratio;
      * reorder: shuffle a random contiguous window of ceil(reorder_ratio * n) events.

    Inputs are left padded (0 = padding, most recent last) and outputs stay left padded.
    Randomness is stateless: the same `seed` gives the same views, which keeps training
    reproducible and identical across replicas.

    Example:
      >>> aug = JointSequenceAugmenter(item_mask_token=100, scene_mask_token=7)
      >>> items, scenes = aug(tf.constant([[0, 3, 4, 5]]), tf.constant([[0, 1, 2, 3]]),
      ...                     seed=tf.constant([1, 2]))

    Args:
      item_mask_token: id of the items' [MASK] token.
      scene_mask_token: id of the scenes' [MASK] token.
      crop_ratio: share of events kept by crop.
      mask_ratio: probability that an event is masked.
      reorder_ratio: share of events in the shuffled window.
    """

    def __init__(
        self,
        item_mask_token: int,
        scene_mask_token: int,
        crop_ratio: float = 0.6,
        mask_ratio: float = 0.3,
        reorder_ratio: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.item_mask_token = int(item_mask_token)
        self.scene_mask_token = int(scene_mask_token)
        self.crop_ratio = float(crop_ratio)
        self.mask_ratio = float(mask_ratio)
        self.reorder_ratio = float(reorder_ratio)

    def call(
        self, items: tf.Tensor, scenes: tf.Tensor, seed: tf.Tensor
    ) -> Tuple[tf.Tensor, tf.Tensor]:
        """Returns augmented (items, scenes), both [B, L] int32; `seed` is an int [2] tensor."""
        items = tf.cast(items, tf.int32)
        scenes = tf.cast(scenes, tf.int32)
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
        batch, length = tf.shape(items)[0], tf.shape(items)[1]
        valid = items > 0
        n = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]
        first_valid = length - n  # index of the oldest real event (left padding)
        positions = tf.range(length)[tf.newaxis, :]  # [1, L]

        choice = tf.random.stateless_uniform([batch], seeds[0], 0, 3, dtype=tf.int32)

        # Crop: keep events [first_valid + start, first_valid + start + keep), re-left-align.
        keep = tf.maximum(1, tf.cast(tf.math.ceil(self.crop_ratio * tf.cast(n, tf.float32)), tf.int32))
        keep = tf.minimum(keep, tf.maximum(n, 1))
        start = _uniform_int(seeds[1], tf.maximum(n - keep, 0) + 1)
        offset = positions - (length - keep[:, None])  # 0..keep-1 inside the kept window
        source = first_valid[:, None] + start[:, None] + offset
        in_crop = (offset >= 0) & (n[:, None] > 0)
        source = tf.clip_by_value(source, 0, length - 1)
        crop_items = tf.where(in_crop, tf.gather(items, source, batch_dims=1), 0)
        crop_scenes = tf.where(in_crop, tf.gather(scenes, source, batch_dims=1), 0)

        # Mask: Bernoulli(mask_ratio) over real events.
        hit = (tf.random.stateless_uniform([batch, length], seeds[2]) < self.mask_ratio) & valid
        mask_items = tf.where(hit, self.item_mask_token, items)
        mask_scenes = tf.where(hit, self.scene_mask_token, scenes)

        # Reorder: sort keys that are the position outside the window and a random value within
        # [window_start, window_end) inside it, so only the window's events change places.
        span = tf.maximum(
            1, tf.cast(tf.math.ceil(self.reorder_ratio * tf.cast(n, tf.float32)), tf.int32)
        )
        span = tf.minimum(span, tf.maximum(n, 1))
        window_start = first_valid + _uniform_int(seeds[3], tf.maximum(n - span, 0) + 1)
        in_window = (positions >= window_start[:, None]) & (
            positions < (window_start + span)[:, None]
        ) & valid
        noise = tf.random.stateless_uniform([batch, length], seeds[4])
        keys = tf.where(
            in_window,
            tf.cast(window_start[:, None], tf.float32) + noise * tf.cast(span[:, None], tf.float32) * 0.999,
            tf.cast(positions, tf.float32),
        )
        order = tf.argsort(keys, axis=1, stable=True)
        reorder_items = tf.gather(items, order, batch_dims=1)
        reorder_scenes = tf.gather(scenes, order, batch_dims=1)

        def pick(crop: tf.Tensor, mask: tf.Tensor, reorder: tf.Tensor) -> tf.Tensor:
            c = choice[:, None]
            return tf.where(c == CROP, crop, tf.where(c == MASK, mask, reorder))

        return (
            pick(crop_items, mask_items, reorder_items),
            pick(crop_scenes, mask_scenes, reorder_scenes),
        )

    def get_config(self) -> Dict[str, Any]:
        """The constructor arguments, so Keras can re-create the layer from a saved model."""
        config = super().get_config()
        config.update(
            item_mask_token=self.item_mask_token,
            scene_mask_token=self.scene_mask_token,
            crop_ratio=self.crop_ratio,
            mask_ratio=self.mask_ratio,
            reorder_ratio=self.reorder_ratio,
        )
        return config


def _uniform_int(seed: tf.Tensor, upper: tf.Tensor) -> tf.Tensor:
    """One uniform integer in [0, upper[b]) per row, stateless."""
    u = tf.random.stateless_uniform(tf.shape(upper), seed)
    return tf.minimum(tf.cast(u * tf.cast(upper, tf.float32), tf.int32), upper - 1)
