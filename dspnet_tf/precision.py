"""Mixed precision: the casts and the loss scaling DSPnet's layers, losses and models share.

Under a Keras mixed-precision policy ("mixed_bfloat16", "mixed_float16") layers compute in
16 bits and keep float32 variables. Scores that feed a softmax, a log-sum-exp or a loss are
brought back to float32 first: 8 (bfloat16) or 11 (float16) mantissa bits are too few for a
normaliser over thousands of items, and float16 overflows at 65504 (the -1e9 masks).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from dspnet_tf.config import ConfigError, DSPnetConfig

LOW_PRECISION_DTYPES = (tf.float16, tf.bfloat16)


def at_least_float32(values: Any) -> tf.Tensor:
    """`values` as a tensor, float16 / bfloat16 cast to float32 (other dtypes unchanged)."""
    values = tf.convert_to_tensor(values)
    return tf.cast(values, tf.float32) if values.dtype in LOW_PRECISION_DTYPES else values


def with_loss_scaling(optimizer: Any, policy: tf.keras.mixed_precision.Policy) -> Any:
    """`optimizer` wrapped in a `LossScaleOptimizer` under "mixed_float16", else as it is.

    What Keras's `Model.compile` does for the model's own optimizer, for the ones a model
    keeps besides it (DSPnet's discriminator optimizer). float16's gradients underflow
    without loss scaling; bfloat16 has float32's range and needs none.
    """
    if policy.name == "mixed_float16" and not isinstance(
            optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        return tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    return optimizer


def scaled_loss(optimizer: Any, loss: tf.Tensor) -> tf.Tensor:
    """The loss to differentiate: multiplied by the loss scale under a LossScaleOptimizer."""
    if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        return optimizer.get_scaled_loss(loss)
    return loss


def unscaled_gradients(optimizer: Any, gradients: list) -> list:
    """Gradients of a `scaled_loss`, divided by the loss scale again (None kept as None)."""
    if isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer):
        return optimizer.get_unscaled_gradients(gradients)
    return gradients


def with_model_precision(config: DSPnetConfig, dtype: Any = None) -> DSPnetConfig:
    """`config` with `precision` resolved, for a model being built (`resolved_precision`).

    Args:
      config: the model's configuration.
      dtype: a Keras `dtype` argument given to the model (a policy, its name or a DType), if
        any: with `precision` None it is the precision asked for, as for any Keras layer.

    Raises:
      ConfigError: `dtype` disagrees with an explicit `precision`, or names a policy a model
        cannot be built with.
    """
    if dtype is not None:
        name = tf.keras.mixed_precision.Policy(getattr(dtype, "name", dtype)).name
        if config.precision is None:
            config = config.replace(precision=name)
        elif config.resolved_precision != name:
            raise ConfigError(f"the model's dtype {name!r} disagrees with DSPnetConfig."
                              f"precision={config.precision!r}: give one of them")
    return config.with_resolved_precision()
