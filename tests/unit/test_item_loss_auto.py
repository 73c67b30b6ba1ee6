"""item_loss="auto": the full softmax where its logits fit the budget, the sampled softmax
(with the logQ correction) above it; the choice is what the model is built and saved with."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import ConfigError, DSPnet, DSPnetConfig
from dspnet_tf.config import AUTO_REFERENCE_BATCH
from dspnet_tf.data import make_dataset


def test_auto_is_the_default_and_resolves_by_the_logit_budget():
    small = DSPnetConfig(item_vocab_size=1684, scene_vocab_size=3, max_len=50)  # MovieLens-size
    assert small.item_loss == "auto" and small.resolved_item_loss == "softmax"
    assert small.resolved().item_loss == "softmax"
    limit = small.softmax_logits_budget_bytes // (4 * AUTO_REFERENCE_BATCH * 50)
    assert DSPnetConfig(item_vocab_size=limit, scene_vocab_size=8, max_len=50).resolved_item_loss == "softmax"
    large = DSPnetConfig(item_vocab_size=limit + 1, scene_vocab_size=8, max_len=50)
    assert large.resolved_item_loss == "sampled_softmax"
    assert DSPnetConfig(item_vocab_size=100_000, scene_vocab_size=8, max_len=50).resolved().item_loss == \
        "sampled_softmax"
    # The repeat pointer needs a softmax's normaliser, exact or sampled: on by default with
    # either, refused with sampled BCE.
    assert small.uses_repeat_pointer and large.uses_repeat_pointer
    assert not DSPnetConfig(item_vocab_size=100, scene_vocab_size=8,
                            item_loss="sampled_bce").uses_repeat_pointer
    with pytest.raises(ConfigError, match="repeat_pointer"):
        DSPnetConfig(item_vocab_size=100, scene_vocab_size=8, item_loss="sampled_bce",
                     repeat_pointer=True)
    explicit = DSPnetConfig(item_vocab_size=100_000, scene_vocab_size=8, item_loss="softmax")
    assert explicit.resolved_item_loss == "softmax"  # an explicit choice is kept


def _toy_log(users=48, items=30, length=12, seed=0):
    rng = np.random.default_rng(seed)
    item_rows, scene_rows = [], []
    for _ in range(users):
        start = rng.integers(2, items - length)
        item_rows.append(list(range(start, start + length)))  # next item = this item + 1
        scene_rows.append(list(rng.integers(2, 5, size=length)))
    return item_rows, scene_rows


@pytest.mark.parametrize("pointer", [False, True])
def test_the_built_model_saves_the_resolved_loss_and_the_sampled_softmax_learns(pointer):
    items, scenes = _toy_log()
    config = DSPnetConfig(item_vocab_size=32, scene_vocab_size=5, max_len=12, item_dim=16,
                          scene_dim=8, num_blocks=1, num_heads=1, use_ccr=False,
                          softmax_logits_budget_bytes=0, num_sampled=16, repeat_pointer=pointer)
    tf.keras.utils.set_random_seed(0)
    model = DSPnet(config)
    assert model.get_config()["config"]["item_loss"] == "sampled_softmax"
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-2))
    history = model.fit(make_dataset(items, scenes, max_len=12, batch_size=16, shuffle=False),
                        epochs=30, verbose=0)
    losses = history.history["item_loss"]
    assert losses[-1] < 0.6 * losses[0], losses
    history = items[0][:6]
    top = model.recommend([history], [scenes[0][:6]], k=3 + len(history))
    # The pointer only adds mass to history items (this log never repeats one, so how much it
    # keeps is the gate's business); among the other items the catalog's ranking must hold.
    fresh = [item for item in top["item_ids"].numpy()[0].tolist() if item not in history]
    assert items[0][6] in fresh[:3], (fresh, items[0][6])
