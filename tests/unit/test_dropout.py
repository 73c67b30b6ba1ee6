"""dspnet_tf.layers.dropout.Dropout: Keras's dropout in float32, a float32-drawn mask in 16 bits."""

import dspnet_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from dspnet_tf.layers.dropout import Dropout


def test_float32_is_keras_dropout_op_for_op():
    # Same seed, same graph-level seed: the float32 path is Keras's own, so equal draws.
    inputs = tf.random.stateless_normal([64, 32], seed=[1, 2])
    tf.keras.utils.set_random_seed(3)
    ours = Dropout(0.3, seed=7)(inputs, training=True)
    tf.keras.utils.set_random_seed(3)
    keras = tf.keras.layers.Dropout(0.3, seed=7)(inputs, training=True)
    np.testing.assert_array_equal(ours.numpy(), keras.numpy())
    assert ours.dtype == tf.float32


def test_bfloat16_keeps_with_probability_one_minus_rate_and_scales():
    inputs = tf.cast(tf.random.stateless_normal([200, 500], seed=[4, 5]), tf.bfloat16)
    layer = Dropout(0.2, dtype="mixed_bfloat16")
    out = layer(inputs, training=True)
    assert out.dtype == tf.bfloat16
    x, y = inputs.numpy().astype(np.float32), out.numpy().astype(np.float32)
    kept = y != 0
    kept_share = kept[x != 0].mean()
    assert abs(kept_share - 0.8) < 0.01, kept_share  # 100,000 draws: s.e. 0.0013
    # A kept value is x * 1.25 rounded once to bfloat16, as Keras's x * scale is.
    expected = (inputs * tf.constant(1.25, tf.bfloat16)).numpy().astype(np.float32)
    np.testing.assert_array_equal(y[kept], expected[kept])


def test_bfloat16_gradient_is_the_mask_times_the_scale():
    inputs = tf.cast(tf.random.stateless_normal([50, 40], seed=[6, 7]), tf.bfloat16)
    layer = Dropout(0.5, dtype="mixed_bfloat16")
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = layer(inputs, training=True)
        loss = tf.reduce_sum(tf.cast(out, tf.float32))
    gradient = tape.gradient(loss, inputs).numpy().astype(np.float32)
    kept = out.numpy().astype(np.float32) != 0
    np.testing.assert_array_equal(gradient, np.where(kept, 2.0, 0.0))


def test_not_training_or_rate_zero_is_the_identity():
    inputs = tf.cast(tf.random.stateless_normal([8, 8], seed=[8, 9]), tf.bfloat16)
    np.testing.assert_array_equal(
        Dropout(0.4, dtype="mixed_bfloat16")(inputs, training=False).numpy(), inputs.numpy())
    np.testing.assert_array_equal(
        Dropout(0.0, dtype="mixed_bfloat16")(inputs, training=True).numpy(), inputs.numpy())


def test_a_traced_training_flag_works():
    layer = Dropout(0.5, dtype="mixed_bfloat16")
    inputs = tf.ones([4, 256], tf.bfloat16)
    call = tf.function(lambda x, t: layer(x, training=t))
    dropped = call(inputs, tf.constant(True)).numpy().astype(np.float32)
    assert set(np.unique(dropped)) == {0.0, 2.0}
    np.testing.assert_array_equal(call(inputs, tf.constant(False)).numpy(), inputs.numpy())


def test_every_dropout_of_a_transformer_block_is_ours():
    from dspnet_tf.layers.transformer_block import TransformerBlock
    block = TransformerBlock(dim=16, num_heads=2, ffn_dim=32, dropout=0.1,
                             dtype="mixed_bfloat16")
    block(tf.zeros([2, 5, 16]), training=True)
    dropouts = [layer for layer in block._flatten_layers()  # pylint: disable=protected-access
                if isinstance(layer, tf.keras.layers.Dropout)]
    assert len(dropouts) == 4  # attention weights, attention output, hidden, output
    assert all(isinstance(layer, Dropout) for layer in dropouts)
