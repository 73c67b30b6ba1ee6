"""One training process of the distributed test: a few DSPnet steps under a named strategy.

Usage: python worker.py STRATEGY OUT.npz   (TF_CONFIG set by the caller for multi_worker)
Writes the final weights and the per-step logged losses.
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
        model = DSPnet(DSPnetConfig(item_vocab_size=40, scene_vocab_size=6, max_len=LENGTH,
                                    item_dim=16, scene_dim=4, num_blocks=1, dropout=0.0))
        model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    losses = {}

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            for key in ("loss", "item_loss", "scene_loss", "ccr_loss"):
                losses.setdefault(key, []).append(float(logs[key]))

    model.fit(dataset, epochs=1, verbose=0, callbacks=[Record()])
    weights = model.get_weights()
    np.savez(out, replicas=strategy.num_replicas_in_sync,
             **{f"loss_{k}": np.array(v) for k, v in losses.items()},
             **{f"weight_{i}": w for i, w in enumerate(weights)})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
