"""LazyAdam: Adam whose sparse (embedding) updates touch only the rows a batch used."""

from __future__ import annotations

from typing import Callable, List

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="dspnet_tf")
class LazyAdam(tf.keras.optimizers.Adam):
    """Adam that updates only the embedding rows present in a sparse gradient.

    Keras's Adam applies a sparse gradient (`tf.IndexedSlices`, from an embedding lookup) by
    decaying both moment tables in full and then adding the rows: every step costs several
    passes over the whole table, so with a million-item catalog the optimizer, not the model,
    sets the step time. LazyAdam reads, updates and writes back only the touched rows (duplicate
    ids summed first), so the cost follows the batch, not the catalog. Rows that a batch does not
    touch keep their moments unchanged (the "lazy" approximation of TF Addons' LazyAdam, which is
    no longer maintained; hence this small subclass). Dense gradients are plain Adam.

    Example:
      >>> optimizer = LazyAdam(1e-3)
      >>> table = tf.Variable(tf.zeros([5, 2]))
      >>> grad = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([3]), tf.constant([5, 2]))
      >>> _ = optimizer.apply_gradients([(grad, table)])
      >>> int(tf.math.count_nonzero(tf.reduce_sum(tf.abs(table), axis=1)))
      1
    """

    def update_step(self, gradient, variable):
        """Adam's step for one variable; a sparse gradient updates only the rows it names."""
        if not isinstance(gradient, tf.IndexedSlices) or self.amsgrad:
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        beta_1_power = tf.pow(beta_1, local_step)
        beta_2_power = tf.pow(beta_2, local_step)
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        rows, positions = tf.unique(gradient.indices)
        values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(rows)[0])
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * values
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(values)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        alpha = lr * tf.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        epsilon = self.epsilon * tf.sqrt(1 - beta_2_power) if self.adaptive_epsilon else self.epsilon
        variable.scatter_sub(tf.IndexedSlices(alpha * m_rows / (tf.sqrt(v_rows) + epsilon), rows))
        return None


def build_optimizer(
    optimizer: tf.keras.optimizers.Optimizer,
    compute_loss: Callable[[], tf.Tensor],
    variables: Callable[[], List[tf.Variable]],
) -> None:
    """Creates `optimizer`'s slots now, for the variables a train step would update.

    A `tf.function` whose first call creates variables is traced twice (once creating them,
    once without), and a train step's trace is its most expensive part on small data. Keras
    optimizers create their slots inside the first `apply_gradients`, and layers used only in
    training are built by the first loss; running `compute_loss` eagerly on a tiny batch builds
    those layers, and its gradients name the variables to build slots for (the ones with a
    gradient, as the train steps apply). Legacy optimizers, which build differently, are left
    to build on their first step, and so is training under a `tf.distribute` strategy, where
    the variables cannot be read outside a replica context (a long run; one more trace is
    nothing there).

    Args:
      optimizer: the optimizer the train step applies.
      compute_loss: the train step's loss on a tiny batch (called once, eagerly).
      variables: the variables the train step differentiates, listed after the loss ran.
    """
    if tf.distribute.has_strategy():
        return
    with tf.GradientTape() as tape:
        loss = compute_loss()
    var_list = variables()
    gradients = tape.gradient(loss, var_list)
    if isinstance(optimizer, tf.keras.optimizers.Optimizer):
        with tf.init_scope():
            optimizer.build([v for v, g in zip(var_list, gradients) if g is not None])
