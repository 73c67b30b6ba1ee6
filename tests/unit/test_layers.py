"""Layer tests: numpy references, masks, causality, augmentations, config round trips."""

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import layers

RNG = np.random.default_rng(7)


def _ids(batch, length, vocab, pad_upto):
    ids = RNG.integers(1, vocab, size=(batch, length))
    for b, p in enumerate(pad_upto):
        ids[b, :p] = 0
    return tf.constant(ids, tf.int32)


LAYERS = {
    "TransformerBlock": lambda: layers.TransformerBlock(dim=8, num_heads=2, ffn_dim=16, dropout=0.1),
    "TransformerBlockRecency": lambda: layers.TransformerBlock(
        dim=8, num_heads=2, ffn_dim=16, dropout=0.1, recency_bias=True),
    "SequenceEncoder": lambda: layers.SequenceEncoder(vocab_size=20, dim=8, max_len=6, num_blocks=1),
    "SequenceEncoderRecency": lambda: layers.SequenceEncoder(
        vocab_size=20, dim=8, max_len=6, num_blocks=1, recency_bias=True),
    "SequenceFeatureEnhancement": lambda: layers.SequenceFeatureEnhancement(8, 12, depth=3),
    "SequenceFeatureEnhancementSum": lambda: layers.SequenceFeatureEnhancement(8, 12, fusion="sum"),
    "SequenceFeatureEnhancementZeroInit": lambda: layers.SequenceFeatureEnhancement(
        8, 12, zero_init=True),
    "PredictionHead": lambda: layers.PredictionHead(8, num_target_scenes=5),
    "JointSequenceAugmenter": lambda: layers.JointSequenceAugmenter(20, 5, 0.5, 0.2, 0.4),
    "ContextWeighting": lambda: layers.ContextWeighting(4, 0.3),
    "PriorDiscriminator": lambda: layers.PriorDiscriminator(16),
    "RepeatPointer": lambda: layers.RepeatPointer(key_dim=8, max_len=6),
    "RepeatPointerScenes": lambda: layers.RepeatPointer(key_dim=8, max_len=6, num_scenes=5),
    "PredictionHeadPerScene": lambda: layers.PredictionHead(
        8, num_target_scenes=5, target_scene_mode="per_scene"),
    "TargetSceneAttention": lambda: layers.TargetSceneAttention(dim=4, num_scenes=5, max_len=6),
}


FIXED_ITEMS = _ids(2, 6, 20, [0, 3])
FIXED_SCENES = _ids(2, 6, 5, [0, 3])


def _call(name, layer):
    if name.startswith("TransformerBlock"):
        return layer(tf.reshape(tf.range(96, dtype=tf.float32) / 96.0, [2, 6, 8]))
    if name.startswith("SequenceEncoder"):
        return layer(FIXED_ITEMS)
    if name.startswith("SequenceFeatureEnhancement"):
        return layer(tf.ones([2, 6, 8]), tf.ones([2, 6, 4]))
    if name.startswith("PredictionHead"):
        return layer(tf.reshape(tf.range(16, dtype=tf.float32) / 16.0, [2, 8]), tf.constant([1, 3]))
    if name == "TargetSceneAttention":
        return layer(tf.reshape(tf.range(48, dtype=tf.float32) / 48.0, [2, 6, 4]),
                     tf.reshape(tf.range(36, dtype=tf.float32) / 36.0, [2, 6, 3]),
                     FIXED_ITEMS > 0, tf.constant([[2, 4], [3, 0]]), FIXED_SCENES)
    if name == "RepeatPointerScenes":
        return layer(tf.reshape(tf.range(48, dtype=tf.float32) / 48.0, [2, 6, 4]),
                     tf.reshape(tf.range(60, dtype=tf.float32) / 60.0, [2, 6, 5]),
                     FIXED_ITEMS > 0, tf.constant([[2] * 6, [3] * 6]), FIXED_SCENES)[2]
    if name == "JointSequenceAugmenter":
        return layer(FIXED_ITEMS, FIXED_SCENES, seed=tf.constant([1, 2]))
    if name == "ContextWeighting":
        return layer(tf.ones([3, 8]))
    if name == "RepeatPointer":
        return layer(tf.reshape(tf.range(48, dtype=tf.float32) / 48.0, [2, 6, 4]),
                     tf.reshape(tf.range(60, dtype=tf.float32) / 60.0, [2, 6, 5]),
                     FIXED_ITEMS > 0)[2]
    return layer(tf.ones([3, 8]))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip_rebuilds_an_equivalent_layer(name):
    layer = LAYERS[name]()
    out = _call(name, layer)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Registered: Keras can rebuild it from its serialized form alone.
    assert tf.keras.utils.get_registered_name(type(layer)) == f"dspnet_tf>{type(layer).__name__}"
    serialized = tf.keras.layers.serialize(layer)
    rebuilt = tf.keras.layers.deserialize(serialized)
    assert type(rebuilt) is type(layer)
    clone_out = _call(name, clone)
    if layer.weights:
        clone.set_weights(layer.get_weights())
        clone_out = _call(name, clone)
    first = out if not isinstance(out, tuple) else out[0]
    second = clone_out if not isinstance(clone_out, tuple) else clone_out[0]
    np.testing.assert_allclose(first.numpy(), second.numpy(), atol=1e-6)


def test_sequence_encoder_ignores_padded_ids_and_zeroes_padded_outputs():
    enc = layers.SequenceEncoder(vocab_size=30, dim=8, max_len=7, num_blocks=2, dropout=0.0)
    ids = _ids(3, 7, 30, [0, 2, 5]).numpy()
    mask = ids > 0
    out = enc(tf.constant(ids), padding_mask=tf.constant(mask)).numpy()
    garbage = np.where(mask, ids, RNG.integers(1, 30, size=ids.shape))
    out2 = enc(tf.constant(garbage), padding_mask=tf.constant(mask)).numpy()
    np.testing.assert_allclose(out, out2, atol=1e-6)
    np.testing.assert_array_equal(out[~mask], 0.0)


def test_sequence_encoder_is_causal():
    enc = layers.SequenceEncoder(vocab_size=30, dim=8, max_len=8, num_blocks=2, dropout=0.0)
    ids = _ids(2, 8, 30, [0, 1]).numpy()
    base = enc(tf.constant(ids)).numpy()
    for t in range(2, 7):
        changed = ids.copy()
        changed[:, t + 1:] = RNG.integers(1, 30, size=changed[:, t + 1:].shape)
        out = enc(tf.constant(changed)).numpy()
        np.testing.assert_allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-5)


@pytest.mark.parametrize("blocks", [1, 2, "gru", "recency"])
def test_sequence_encoder_last_only_equals_the_last_row_of_the_full_output(blocks):
    enc = (layers.GRUSequenceEncoder(vocab_size=30, dim=8, dropout=0.0) if blocks == "gru" else
           layers.SequenceEncoder(vocab_size=30, dim=8, max_len=7, num_blocks=2, dropout=0.0,
                                  recency_bias=True) if blocks == "recency" else
           layers.SequenceEncoder(vocab_size=30, dim=8, max_len=7, num_blocks=blocks, dropout=0.0))
    ids = _ids(3, 7, 30, [0, 2, 6])
    full = enc(ids).numpy()
    last = enc(ids, last_only=True).numpy()
    assert last.shape == (3, 1, 8)
    np.testing.assert_allclose(last[:, 0], full[:, -1], atol=1e-5)
    assert np.abs(last).sum() > 0  # not trivially zero


@pytest.mark.parametrize("recency_bias", [False, True])
def test_transformer_block_matches_numpy_attention_reference(recency_bias):
    """With dropout off, the block equals a hand-written pre-LN attention + FFN in numpy; with
    the recency bias, head h's scores also fall by slope_h per position back from the query."""
    block = layers.TransformerBlock(dim=4, num_heads=2, ffn_dim=6, recency_bias=recency_bias)
    x = RNG.normal(size=(1, 3, 4)).astype(np.float32)
    mask = np.tril(np.ones((3, 3), bool))[None]
    block(tf.constant(x), attention_mask=tf.constant(mask))
    slopes = np.zeros(2, np.float32)
    if recency_bias:
        # ALiBi's start for two heads, then values large enough to move the output.
        np.testing.assert_allclose(block.attention.recency_slopes.numpy(), [2 ** -4, 2 ** -8])
        slopes = np.array([0.9, -0.4], np.float32)
        block.attention.recency_slopes.assign(slopes)
    got = block(tf.constant(x), attention_mask=tf.constant(mask)).numpy()

    def ln(v, layer):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * layer.gamma.numpy() + layer.beta.numpy()

    mha = block.attention
    h = ln(x, block.attention_norm)
    q = np.einsum("bld,dhk->blhk", h, mha._query_dense.kernel.numpy()) + mha._query_dense.bias.numpy()
    k = np.einsum("bld,dhk->blhk", h, mha._key_dense.kernel.numpy()) + mha._key_dense.bias.numpy()
    v = np.einsum("bld,dhk->blhk", h, mha._value_dense.kernel.numpy()) + mha._value_dense.bias.numpy()
    scores = np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(2.0)
    distance = np.maximum(np.arange(3)[:, None] - np.arange(3)[None, :], 0)
    scores = scores - slopes[None, :, None, None] * distance[None, None]
    scores = np.where(mask[:, None], scores, -1e9)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ctx = np.einsum("bhqt,bthk->bqhk", p, v)
    att = np.einsum("bqhk,hkd->bqd", ctx, mha._output_dense.kernel.numpy()) + mha._output_dense.bias.numpy()
    x1 = x + att
    f = ln(x1, block.ffn_norm) @ block.ffn_hidden.kernel.numpy() + block.ffn_hidden.bias.numpy()
    f = tf.nn.gelu(f).numpy()
    expected = x1 + f @ block.ffn_out.kernel.numpy() + block.ffn_out.bias.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_sum_fusion_is_item_plus_projected_scene():
    sfe = layers.SequenceFeatureEnhancement(4, 8, fusion="sum")
    hv, hs = RNG.normal(size=(2, 3, 4)).astype(np.float32), RNG.normal(size=(2, 3, 2)).astype(np.float32)
    out = sfe(tf.constant(hv), tf.constant(hs)).numpy()
    np.testing.assert_allclose(out, hv + hs @ sfe.scene_projection.kernel.numpy(), atol=1e-6)


def _layer_norm(x, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps)


@pytest.mark.parametrize("fusion", ["concat_mlp", "sum"])
def test_zero_init_fusion_starts_as_the_item_network_and_then_learns_the_scene(fusion):
    sfe = layers.SequenceFeatureEnhancement(4, 8, fusion=fusion, zero_init=True)
    hv, hs = RNG.normal(size=(2, 3, 4)).astype(np.float32), RNG.normal(size=(2, 3, 2)).astype(np.float32)
    out = sfe(tf.constant(hv), tf.constant(hs)).numpy()
    # At initialisation the scene branch contributes nothing: z is h_V (LayerNorm'd for the MLP).
    np.testing.assert_allclose(out, _layer_norm(hv) if fusion == "concat_mlp" else hv, atol=1e-5)
    # ...but it is not dead: one gradient step on a loss that needs h_S moves it off zero.
    # (A zero-mean pattern: the MLP fusion's LayerNorm removes any constant offset.)
    target = tf.constant(hs[..., :1] * np.array([1.0, -1.0, 2.0, -2.0], np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(sfe(tf.constant(hv), tf.constant(hs)) - target))
    branch = sfe.scene_projection.kernel if fusion == "sum" else sfe.output_layer.kernel
    gradients = dict(zip([v.ref() for v in sfe.trainable_variables],
                         tape.gradient(loss, sfe.trainable_variables)))
    assert float(tf.reduce_max(tf.abs(gradients[branch.ref()]))) > 1e-4
    tf.keras.optimizers.SGD(0.1).apply_gradients(
        [(gradients[v.ref()], v) for v in sfe.trainable_variables])
    moved = sfe(tf.constant(hv), tf.constant(hs)).numpy()
    assert np.abs(moved - out).max() > 1e-4


def test_zero_init_mlp_fusion_without_the_residual_is_refused():
    with pytest.raises(ValueError, match="zero_init needs residual"):
        layers.SequenceFeatureEnhancement(4, 8, residual=False, zero_init=True)


def test_score_all_is_a_dot_product_that_never_predicts_padding():
    q = RNG.normal(size=(2, 3)).astype(np.float32)
    table = RNG.normal(size=(6, 3)).astype(np.float32)  # 5 ids + [MASK]
    logits = layers.score_all(tf.constant(q), tf.constant(table), vocab_size=5).numpy()
    np.testing.assert_allclose(logits[:, 1:], q @ table[1:5].T, atol=1e-6)
    assert np.all(logits[:, 0] < -1e8)
    # excluded_ids=2 also drops the OOV bucket (the scene head: real scenes only).
    real_only = layers.score_all(tf.constant(q), tf.constant(table), vocab_size=5,
                                 excluded_ids=2).numpy()
    np.testing.assert_allclose(real_only[:, 2:], q @ table[2:5].T, atol=1e-6)
    assert np.all(real_only[:, :2] < -1e8)


class TestAugmenter:
    aug = layers.JointSequenceAugmenter(item_mask_token=100, scene_mask_token=9,
                                        crop_ratio=0.5, mask_ratio=0.5, reorder_ratio=0.5)

    def _batch(self, n=64, length=10):
        lengths = RNG.integers(1, length + 1, size=n)
        items = np.zeros((n, length), np.int32)
        for b, l in enumerate(lengths):
            items[b, length - l:] = np.arange(2, 2 + l)  # distinct ids make events traceable
        scenes = np.where(items > 0, items % 7 + 1, 0)  # scene is a function of the item
        return items, scenes

    def test_views_keep_items_and_scenes_aligned_and_left_padded(self):
        items, scenes = self._batch()
        a_items, a_scenes = (t.numpy() for t in self.aug(items, scenes, seed=tf.constant([3, 4])))
        real = (a_items > 0) & (a_items != 100)
        np.testing.assert_array_equal(a_scenes[real], a_items[real] % 7 + 1)
        np.testing.assert_array_equal(a_scenes[a_items == 100], 9)
        np.testing.assert_array_equal(a_scenes[a_items == 0], 0)
        # Left padded: once a row has a real event, it has no padding after it.
        for row in a_items:
            nz = np.flatnonzero(row)
            assert nz.size and np.all(row[nz[0]:] > 0)

    def test_each_view_is_a_crop_a_mask_or_a_local_reorder_of_its_row(self):
        items, scenes = self._batch(n=200)
        a_items, _ = (t.numpy() for t in self.aug(items, scenes, seed=tf.constant([5, 6])))
        kinds = set()
        for orig, view in zip(items, a_items):
            o, v = orig[orig > 0], view[view > 0]
            if len(v) < len(o):  # crop: a contiguous window of ceil(0.5 n) events
                assert len(v) == int(np.ceil(0.5 * len(o)))
                start = int(np.flatnonzero(o == v[0])[0])
                np.testing.assert_array_equal(o[start:start + len(v)], v)
                kinds.add("crop")
            elif np.any(v == 100):  # mask: unmasked events unchanged
                keep = v != 100
                np.testing.assert_array_equal(v[keep], o[keep])
                kinds.add("mask")
            else:  # reorder (or a no-op mask): a permutation that moves only one window
                np.testing.assert_array_equal(np.sort(v), np.sort(o))
                moved = np.flatnonzero(v != o)
                if moved.size:
                    assert moved.max() - moved.min() + 1 <= int(np.ceil(0.5 * len(o)))
                    kinds.add("reorder")
        assert kinds == {"crop", "mask", "reorder"}

    def test_same_seed_same_views(self):
        items, scenes = self._batch()
        a = self.aug(items, scenes, seed=tf.constant([1, 1]))[0].numpy()
        b = self.aug(items, scenes, seed=tf.constant([1, 1]))[0].numpy()
        c = self.aug(items, scenes, seed=tf.constant([1, 2]))[0].numpy()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def _randomise(layer):
    layer.set_weights([RNG.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])


def test_per_scene_head_matches_numpy_reference():
    head = layers.PredictionHead(3, num_target_scenes=4, target_scene_mode="per_scene")
    z = RNG.normal(size=(5, 2, 6)).astype(np.float32)
    scenes = RNG.integers(0, 4, size=(5, 2))
    head(z, scenes)
    _randomise(head)
    kernel, bias = head.projection.get_weights()
    expected = np.einsum("bli,io->blo", z, kernel) + bias
    expected += np.einsum("bli,blio->blo", z, head.scene_kernel.numpy()[scenes])
    expected += head.scene_bias.numpy()[scenes]
    np.testing.assert_allclose(head(z, scenes).numpy(), expected, rtol=1e-4, atol=1e-4)
    # A new per-scene head starts as the shared projection (scene parts at zero).
    fresh = layers.PredictionHead(3, num_target_scenes=4, target_scene_mode="per_scene")
    out = fresh(z, scenes).numpy()
    np.testing.assert_allclose(out, fresh.projection(z).numpy(), atol=1e-6)


def test_target_scene_attention_matches_numpy_reference():
    layer = layers.TargetSceneAttention(dim=4, num_scenes=5, max_len=6, scene_dim=3)
    z = RNG.normal(size=(2, 6, 4)).astype(np.float32)
    states = RNG.normal(size=(2, 6, 3)).astype(np.float32)
    valid = np.array([[True] * 6, [False, False, True, True, True, True]])
    scene_ids = RNG.integers(2, 5, size=(2, 6))
    targets = np.array([[2, 0], [4, 3]])  # the last two positions
    layer(z, states, valid, targets, scene_ids)
    _randomise(layer)
    (emb,) = layer.target_embedding.get_weights()
    wq, bq = layer.query_projection.get_weights()
    wk, bk = layer.key_projection.get_weights()
    wv, bv = layer.value_projection.get_weights()
    wo, bo = layer.output_projection.get_weights()
    expected = np.zeros((2, 2, 4))
    for b in range(2):
        for q, t in enumerate((4, 5)):
            query = np.concatenate([z[b, t], emb[targets[b, q]]]) @ wq + bq
            scores = []
            for j in range(6):
                key = np.concatenate([z[b, j], states[b, j]]) @ wk + bk
                scores.append(query @ key / 2.0 + layer.distance_bias.numpy()[min(t - j, 6)]
                              + layer.scene_pair_bias.numpy()[targets[b, q], scene_ids[b, j]]
                              if j <= t and valid[b, j] else -np.inf)
            weights = np.exp(np.array(scores) - max(scores))
            weights /= weights.sum()
            expected[b, q] = z[b, t] + (weights @ (z[b] @ wv + bv)) @ wo + bo
    got = layer(z, states, valid, targets, scene_ids).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_repeat_pointer_scene_bias_steers_returns_away_from_the_asking_scene():
    # A cart (scene 3) returns to items met in other scenes: a strongly negative bias on the
    # pair (cart, cart) takes every bit of pointer mass off the cart's own earlier events.
    pointer = layers.RepeatPointer(key_dim=4, max_len=6, num_scenes=5)
    states = tf.constant(RNG.normal(size=(1, 6, 4)), tf.float32)
    scene_ids = tf.constant([[2, 3, 3, 4, 2, 3]])
    valid = tf.ones([1, 6], tf.bool)
    pointer(states, states, valid, tf.constant([[3] * 6]), scene_ids)
    bias = np.zeros((5, 5), np.float32)
    bias[3, 3] = -60.0
    pointer.scene_pair_bias.assign(bias)
    _, _, log_pointer = pointer(states[:, -1:], states, valid, tf.constant([[3]]), scene_ids)
    mass = np.exp(log_pointer.numpy()[0, 0])
    assert mass[[1, 2, 5]].sum() < 1e-12 and mass.sum() == pytest.approx(1.0, abs=1e-5)
    # For another target scene the same history keeps mass on the cart's events.
    _, _, other = pointer(states[:, -1:], states, valid, tf.constant([[2]]), scene_ids)
    assert np.exp(other.numpy()[0, 0])[[1, 2, 5]].sum() > 0.01
