"""Dropout whose 16-bit form is a multiply by a mask drawn in float32 (mixed precision on CPU)."""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf

from dspnet_tf.precision import LOW_PRECISION_DTYPES


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class Dropout(tf.keras.layers.Dropout):
    """`tf.keras.layers.Dropout`; on bfloat16 / float16 inputs, `inputs * mask` with a float32 draw.

    Keras's dropout (`tf.nn.dropout`) draws its uniforms in the inputs' dtype, compares them
    with the rate and keeps values with a `SelectV2`, whose gradient is another `SelectV2`. On
    this project's CPU (TensorFlow 2.16, oneDNN) the 16-bit compare and select run at about a
    third of their float32 speed: under "mixed_bfloat16" dropout took 87 ms of a DSPnet training
    step's 452 ms of op time against 27 ms under float32 (`benchmarks/profile_train_step.py`).
    Here the keep mask is drawn and compared in float32, cast once to the compute dtype with
    the 1 / (1 - rate) scale folded in, and multiplied in: forward and backward are each one
    16-bit multiply. Same distribution as Keras's dropout (each value kept with probability
    1 - rate and scaled by 1 / (1 - rate)); in bfloat16 the same products, since a kept value is
    x * scale rounded once either way.

    float32 (and float64) inputs take Keras's own path unchanged, op for op, so float32 models
    compute exactly as before this layer existed.

    Example:
      >>> layer = Dropout(0.5, dtype="mixed_bfloat16")
      >>> out = layer(tf.ones([4, 1000]), training=True)
      >>> sorted(set(out.numpy().ravel().tolist()))
      [0.0, 2.0]
    """

    def call(self, inputs: tf.Tensor, training: Optional[Any] = None) -> tf.Tensor:
        """Keras's dropout, or for 16-bit inputs the float32-mask multiply described above."""
        inputs = tf.convert_to_tensor(inputs)
        if inputs.dtype not in LOW_PRECISION_DTYPES or (
                isinstance(self.rate, (int, float)) and self.rate == 0):
            return super().call(inputs, training=training)
        if training is None:
            training = tf.keras.backend.learning_phase()

        def dropped() -> tf.Tensor:
            shape = self._get_noise_shape(inputs)
            shape = tf.shape(inputs) if shape is None else shape
            keep = self._random_generator.random_uniform(shape, dtype=tf.float32) >= self.rate
            scale = tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
            return inputs * (tf.cast(keep, inputs.dtype) * scale)

        if isinstance(training, bool):  # the usual case: no conditional in the graph
            return dropped() if training else tf.identity(inputs)
        return tf.cond(tf.cast(training, tf.bool), dropped, lambda: tf.identity(inputs))
