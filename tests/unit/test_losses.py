"""Numpy-reference tests for every DSPnet loss term."""

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import losses

RNG = np.random.default_rng(42)


def np_log_sigmoid(x):
    return -np.log1p(np.exp(-x))


def np_log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def test_sampled_bce_matches_numpy():
    pos = RNG.normal(size=(3, 5))
    neg = RNG.normal(size=(3, 5, 4))
    w = (RNG.random((3, 5)) > 0.3).astype(np.float64)
    neg_w = (RNG.random((3, 5, 4)) > 0.2).astype(np.float64)
    per = -np_log_sigmoid(pos) - (np_log_sigmoid(-neg) * neg_w).sum(-1)
    expected = (per * w).sum() / w.sum()
    got = losses.sampled_bce_loss(tf.constant(pos), tf.constant(neg), tf.constant(w), tf.constant(neg_w))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_sampled_bce_ignores_padding_values():
    pos = np.array([[1.0, 2.0]])
    neg = np.array([[[0.5], [9.0]]])
    w = np.array([[1.0, 0.0]])
    a = losses.sampled_bce_loss(pos, neg, w).numpy()
    b = losses.sampled_bce_loss(np.array([[1.0, -50.0]]), np.array([[[0.5], [50.0]]]), w).numpy()
    assert a == pytest.approx(b)
    assert a == pytest.approx(-np_log_sigmoid(1.0) - np_log_sigmoid(-0.5))


@pytest.mark.parametrize("classes", [2, 7])
def test_masked_softmax_cross_entropy_matches_numpy(classes):
    logits = RNG.normal(size=(4, 6, classes))
    labels = RNG.integers(0, classes, size=(4, 6))
    w = (RNG.random((4, 6)) > 0.4).astype(np.float64)
    logp = np_log_softmax(logits)
    per = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    expected = (per * w).sum() / w.sum()
    got = losses.masked_softmax_cross_entropy(tf.constant(logits), tf.constant(labels), tf.constant(w))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # The same mean from log p(target) computed elsewhere (the repeat pointer's mixture).
    target_logp = np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    nll = losses.masked_negative_log_likelihood(tf.constant(target_logp), tf.constant(w))
    np.testing.assert_allclose(nll.numpy(), expected, rtol=1e-10)


def test_losses_with_no_real_position_are_zero_not_nan():
    got = losses.masked_softmax_cross_entropy(tf.zeros([2, 3, 4]), tf.zeros([2, 3], tf.int32), tf.zeros([2, 3]))
    assert got.numpy() == 0.0


def np_info_nce(a, b, tau, weights=None, mass=0.0):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    s = a @ b.T / tau
    t = np.eye(len(a))
    if weights is not None:
        t = (1 - mass) * t + mass * weights
    fwd = -(t * np_log_softmax(s, 1)).sum(1).mean()
    bwd = -(t * np_log_softmax(s.T, 1)).sum(1).mean()
    return 0.5 * (fwd + bwd)


def test_uniform_info_nce_matches_numpy():
    a, b = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5))
    got = losses.conditional_info_nce(tf.constant(a), tf.constant(b), temperature=0.2)
    np.testing.assert_allclose(got.numpy(), np_info_nce(a, b, 0.2), rtol=1e-9)


def test_conditional_info_nce_matches_numpy():
    a, b = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5))
    raw = RNG.normal(size=(6, 6))
    np.fill_diagonal(raw, -np.inf)
    w = np.exp(np_log_softmax(raw, 1))
    got = losses.conditional_info_nce(tf.constant(a), tf.constant(b), 0.3, tf.constant(w), 0.4)
    np.testing.assert_allclose(got.numpy(), np_info_nce(a, b, 0.3, w, 0.4), rtol=1e-9)
    # Soft positives change the loss: the conditional term is not a no-op.
    assert abs(got.numpy() - np_info_nce(a, b, 0.3)) > 1e-3


def test_context_weighting_matches_numpy_definition():
    from dspnet_tf.layers import ContextWeighting

    layer = ContextWeighting(context_dim=3, temperature=0.5)
    c = RNG.normal(size=(5, 4)).astype(np.float32)
    w = layer(tf.constant(c)).numpy()
    g = layer.output_layer(layer.hidden(tf.constant(c))).numpy().astype(np.float64)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    s = g @ g.T / 0.5
    np.fill_diagonal(s, -np.inf)
    np.testing.assert_allclose(w, np.exp(np_log_softmax(s, 1)), atol=1e-6)
    np.testing.assert_allclose(np.diag(w), 0.0, atol=1e-7)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-6)


def test_discriminator_and_generator_terms_match_numpy():
    real, fake = RNG.normal(size=(7, 1)), RNG.normal(size=(5, 1))
    d_expected = -np_log_sigmoid(real).mean() - np_log_sigmoid(-fake).mean()
    g_expected = -np_log_sigmoid(fake).mean()
    np.testing.assert_allclose(losses.discriminator_loss(real, fake).numpy(), d_expected, rtol=1e-10)
    np.testing.assert_allclose(losses.generator_loss(fake).numpy(), g_expected, rtol=1e-10)
    acc = losses.discriminator_accuracy(real, fake).numpy()
    assert acc == pytest.approx(((real > 0).sum() + (fake <= 0).sum()) / 12)


@pytest.mark.parametrize("prior", ["gaussian", "laplace", "mixture"])
def test_priors_have_the_documented_moments(prior):
    x = losses.sample_prior(prior, 40000, 4, tf.constant([1, 2], tf.int64), components=4).numpy()
    assert x.shape == (40000, 4)
    if prior == "gaussian":
        np.testing.assert_allclose(x.mean(0), 0, atol=0.03)
        np.testing.assert_allclose(x.std(0), 1, atol=0.03)
    elif prior == "laplace":
        np.testing.assert_allclose(x.std(0), 1, atol=0.04)
        # Laplace has excess kurtosis 3 (a Gaussian has 0).
        kurt = ((x - x.mean(0)) ** 4).mean(0) / x.var(0) ** 2 - 3
        assert np.all(kurt > 2.0)
    else:
        # Four components at +-2 on the first two axes, std 0.5: axis 0 has |x| near 2 half the time.
        near = np.abs(np.abs(x[:, 0]) - 2.0) < 1.0
        assert 0.45 < near.mean() < 0.55
    # Deterministic for a seed.
    y = losses.sample_prior(prior, 40000, 4, tf.constant([1, 2], tf.int64), components=4).numpy()
    np.testing.assert_array_equal(x, y)


def test_weighted_adversarial_terms_equal_the_terms_on_the_kept_positions():
    # Fixed-shape batches with padding weighted 0 must give what a boolean mask would.
    real, fake = RNG.normal(size=(9,)), RNG.normal(size=(8,))
    weights = np.array([1, 0, 1, 1, 0, 0, 1, 1], np.float64)
    kept = fake[weights > 0]
    np.testing.assert_allclose(losses.generator_loss(fake, weights).numpy(),
                               losses.generator_loss(kept).numpy(), rtol=1e-10)
    np.testing.assert_allclose(losses.discriminator_loss(real, fake, weights).numpy(),
                               losses.discriminator_loss(real, kept).numpy(), rtol=1e-10)
    assert losses.discriminator_accuracy(real, fake, weights).numpy() == pytest.approx(
        losses.discriminator_accuracy(real, kept).numpy())


def test_sampled_softmax_log_prob_matches_numpy_with_log_q_and_accidental_hits():
    from dspnet_tf.losses import sampled_softmax_log_prob

    rng = np.random.default_rng(3)
    positive = rng.normal(size=(2, 3)).astype(np.float32)
    negative = rng.normal(size=(2, 3, 4)).astype(np.float32)
    log_count = np.log(rng.uniform(0.1, 3.0, size=(4,))).astype(np.float32)
    hits = np.zeros((2, 3, 4), bool)
    hits[0, 1, 2] = True
    expected = np.zeros((2, 3))
    for b in range(2):
        for t in range(3):
            normaliser = np.exp(positive[b, t]) + sum(
                np.exp(negative[b, t, k]) / np.exp(log_count[k]) for k in range(4)
                if not hits[b, t, k])
            expected[b, t] = positive[b, t] - np.log(normaliser)
    got = sampled_softmax_log_prob(tf.constant(positive), tf.constant(negative),
                                   tf.constant(log_count), tf.constant(hits))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)


def test_sampled_softmax_with_every_item_drawn_once_is_the_full_log_softmax():
    from dspnet_tf.losses import masked_softmax_cross_entropy, sampled_softmax_log_prob

    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=(2, 5))
    weights = rng.integers(0, 2, size=(2, 5)).astype(np.float32)
    positive = np.take_along_axis(logits, labels[..., None], -1)[..., 0]
    hits = np.arange(7)[None, None, :] == labels[..., None]
    got = sampled_softmax_log_prob(tf.constant(positive), tf.constant(logits),
                                   tf.zeros(()), tf.constant(hits))  # each drawn once: K q = 1
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    np.testing.assert_allclose(got.numpy(), np.take_along_axis(log_softmax, labels[..., None], -1)[..., 0],
                               rtol=1e-5)
    full = masked_softmax_cross_entropy(tf.constant(logits), tf.constant(labels),
                                        tf.constant(weights))
    np.testing.assert_allclose(
        losses.masked_negative_log_likelihood(got, tf.constant(weights)).numpy(), full.numpy(),
        rtol=1e-5)


def test_sampled_softmax_normaliser_is_unbiased_under_uniform_draws():
    """Averaged over many uniform draws, exp(normaliser estimate) is the full normaliser."""
    from dspnet_tf.losses import sampled_softmax_log_prob

    rng = np.random.default_rng(5)
    catalog, drawn = 50, 10
    logits = rng.normal(size=catalog).astype(np.float64)
    target = 3
    draws = 4000
    sample = rng.integers(0, catalog, size=(draws, drawn))
    log_p = sampled_softmax_log_prob(
        tf.fill([draws], logits[target]), tf.constant(logits[sample]),
        tf.constant(np.log(drawn / catalog)), tf.constant(sample == target)).numpy()
    estimates = np.exp(logits[target] - log_p)  # each draw's estimated normaliser
    np.testing.assert_allclose(estimates.mean(), np.exp(logits).sum(), rtol=0.02)
