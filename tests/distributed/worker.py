"""One training process of the distributed test: a few DSPnet steps under a named strategy.

Usage: python worker.py STRATEGY OUT.npz   (TF_CONFIG set by the caller for multi_worker)
Writes the final trainable weights and the per-step logged losses.
"""

import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dspnet_tf import DSPnet, DSPnetConfig  # noqa: E402
from dspnet_tf.distribution import make_strategy  # noqa: E402

GLOBAL_BATCH, STEPS, LENGTH = 16, 4, 8


def main(strategy_name: str, out: str) -> None:
    strategy = make_strategy(strategy_name)
    rng = np.random.default_rng(0)
    # Full-length sequences: every half batch has as many training positions as the other, so
    # the mean of the two workers' losses is the global-batch loss.
    items = rng.integers(2, 40, size=(GLOBAL_BATCH * STEPS, LENGTH))
    scenes = rng.integers(2, 6, size=(GLOBAL_BATCH * STEPS, LENGTH))
    dataset = tf.data.Dataset.from_tensor_slices(
        {"item_ids": items, "scene_ids": scenes}).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
    tf.keras.utils.set_random_seed(0)
    with strategy.scope():
        # The prior on (off by default), so the discriminator's own step is checked too.
        model = DSPnet(DSPnetConfig(item_vocab_size=40, scene_vocab_size=6, max_len=LENGTH,
                                    item_dim=16, scene_dim=4, num_blocks=1, dropout=0.0,
                                    use_adversarial=True))
        # SGD, not Adam: Adam is invariant to the gradient's scale, so it would hide a step that
        # summed the replicas' gradients without dividing by their number.
        model.compile(optimizer=tf.keras.optimizers.SGD(0.5),
                      discriminator_optimizer=tf.keras.optimizers.SGD(0.5))
        # Variable initialisers draw differently under a strategy, so every run starts from the
        # same numpy-drawn weights: one forward pass of the losses builds every sub-layer.
        losses = model.compute_losses(tf.constant(items[:2], tf.int32),
                                      tf.constant(scenes[:2], tf.int32))
        model.discriminator(losses["user_z"])
        init = np.random.default_rng(1)
        model.set_weights([
            w if np.all(w == 0) or np.all(w == 1) else init.normal(0, 0.05, w.shape).astype(w.dtype)
            for w in model.get_weights()])
    initial = [w.numpy() for w in model.trainable_weights]
    losses = {}

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for key in ("loss", "item_loss", "scene_loss", "ccr_loss"):
                losses.setdefault(key, []).append(float(logs[key]))

    model.fit(dataset, epochs=1, verbose=0, callbacks=[Record()])
    weights = [w.numpy() for w in model.trainable_weights]
    # Keras reports a custom step's Mean trackers summed over the replicas.
    np.savez(out, replicas=strategy.num_replicas_in_sync,
             **{f"loss_{k}": np.array(v) for k, v in losses.items()},
             **{f"weight_{i}": w for i, w in enumerate(weights)},
             **{f"initial_{i}": w for i, w in enumerate(initial)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
