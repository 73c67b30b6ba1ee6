"""LazyAdam against a numpy Adam on the touched rows; untouched rows and slots stay put."""

import numpy as np
import tensorflow as tf

from dspnet_tf.optimizers import LazyAdam


def test_sparse_steps_match_numpy_adam_on_touched_rows_and_leave_the_rest():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(6, 3)).astype(np.float32)
    table = tf.Variable(start)
    optimizer = LazyAdam(learning_rate=0.1)
    m, v = np.zeros_like(start, np.float64), np.zeros_like(start, np.float64)
    expected = start.astype(np.float64)
    for step, ids in enumerate(([1, 4, 1], [4, 2])):
        values = rng.normal(size=(len(ids), 3)).astype(np.float32)
        optimizer.apply_gradients([(tf.IndexedSlices(tf.constant(values), tf.constant(ids),
                                                     tf.constant([6, 3])), table)])
        grad = np.zeros_like(expected)
        np.add.at(grad, ids, values)  # duplicate ids are summed
        touched = sorted(set(ids))
        m[touched] = 0.9 * m[touched] + 0.1 * grad[touched]
        v[touched] = 0.999 * v[touched] + 0.001 * grad[touched] ** 2
        t = step + 1
        alpha = 0.1 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        expected[touched] -= alpha * m[touched] / (np.sqrt(v[touched]) + 1e-7)
        np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)
    untouched = [0, 3, 5]
    np.testing.assert_array_equal(table.numpy()[untouched], start[untouched])


def test_dense_gradients_are_plain_adam_and_config_round_trips():
    a, b = tf.Variable([1.0, -2.0]), tf.Variable([1.0, -2.0])
    lazy, plain = LazyAdam(0.05), tf.keras.optimizers.Adam(0.05)
    for _ in range(3):
        lazy.apply_gradients([(tf.constant([0.3, -0.7]), a)])
        plain.apply_gradients([(tf.constant([0.3, -0.7]), b)])
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    clone = tf.keras.optimizers.deserialize(tf.keras.optimizers.serialize(lazy))
    assert isinstance(clone, LazyAdam)
    assert np.isclose(clone.get_config()["learning_rate"], 0.05)
