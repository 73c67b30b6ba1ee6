"""DSPnet model tests: masks, causality, gradient flow, regulariser switches, save/load."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import ABLATIONS, ConfigError, DSPnet, DSPnetConfig
from dspnet_tf.config import SINGLE_SCENE_REDUCTION
from dspnet_tf.data import make_dataset

RNG = np.random.default_rng(3)
V, S, L = 30, 6, 8


def small_config(**changes):
    base = dict(item_vocab_size=V, scene_vocab_size=S, max_len=L, item_dim=8, scene_dim=4,
                num_blocks=1, num_heads=2, dropout=0.0, sfe_hidden=12, ccr_context_dim=4,
                discriminator_hidden=8, seed=1, use_adversarial=True,  # the method's full model
                item_loss="sampled_bce")  # the cheap loss, fixed: these tests are not about it
    base.update(changes)
    return DSPnetConfig(**base)


def batch(n=6, pad=(0, 2, 5, 7, 1, 3)):
    items = RNG.integers(2, V, size=(n, L))
    scenes = RNG.integers(2, S, size=(n, L))
    for b in range(n):
        items[b, : pad[b % len(pad)]] = 0
        scenes[b, : pad[b % len(pad)]] = 0
    return {"item_ids": tf.constant(items, tf.int32), "scene_ids": tf.constant(scenes, tf.int32)}


def built(config, compile_kwargs=None):
    model = DSPnet(config)
    model.compile(**(compile_kwargs or {"optimizer": tf.keras.optimizers.Adam(1e-3)}))
    model(batch())
    return model


def test_tf_keras_is_keras_2_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    code = ("import dspnet_tf, os, tensorflow as tf; "
            "import tf_keras; print(os.environ['TF_USE_LEGACY_KERAS'], tf_keras.__version__, tf.keras.__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "1"
    assert out[1].startswith("2."), out
    assert out[2].startswith("tf_keras"), out
    assert tf.keras.__name__.startswith("tf_keras")


def test_config_json_round_trip_and_ablations():
    config = small_config(prior="laplace", target_scene_conditioning=True)
    assert DSPnetConfig.from_json(config.to_json()) == config
    for name, changes in ABLATIONS.items():
        ablated = config.with_ablation(name)
        for field, value in changes.items():
            assert getattr(ablated, field) == value
    with pytest.raises(ConfigError, match="item_dim"):
        small_config(item_dim=7)
    with pytest.raises(ConfigError, match="prior"):
        small_config(prior="cauchy")
    with pytest.raises(ConfigError, match="unknown DSPnetConfig field"):
        DSPnetConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="unknown ablation"):
        config.with_ablation("no_brain")


def test_padding_changes_no_output():
    model = built(small_config())
    data = batch()
    out = model(data)
    padded = data["item_ids"].numpy() == 0
    scenes = np.where(padded, RNG.integers(1, S, size=padded.shape), data["scene_ids"].numpy())
    out2 = model({"item_ids": data["item_ids"], "scene_ids": tf.constant(scenes)})
    for key in out:
        np.testing.assert_allclose(out[key].numpy(), out2[key].numpy(), atol=1e-5)
    # Shorter inputs are left padded to max_len: extra leading padding is no change either.
    short = {k: v[:, 3:] for k, v in data.items()}
    longer = {k: tf.pad(v, [[0, 0], [3, 0]])[:, -L:] for k, v in short.items()}
    a, b = model(short), model(longer)
    np.testing.assert_allclose(a["item_logits"].numpy(), b["item_logits"].numpy(), atol=1e-5)
    z = model.encode(data["item_ids"], tf.constant(scenes))["z"].numpy()
    np.testing.assert_array_equal(z[padded], 0.0)


def test_events_after_t_change_no_output_at_t():
    model = built(small_config())
    data = batch(pad=(0, 1))
    items, scenes = data["item_ids"].numpy(), data["scene_ids"].numpy()
    base = model.encode(tf.constant(items), tf.constant(scenes))["z"].numpy()
    for t in range(2, L - 1):
        i2, s2 = items.copy(), scenes.copy()
        i2[:, t + 1:] = RNG.integers(2, V, size=i2[:, t + 1:].shape)
        s2[:, t + 1:] = RNG.integers(2, S, size=s2[:, t + 1:].shape)
        z = model.encode(tf.constant(i2), tf.constant(s2))["z"].numpy()
        np.testing.assert_allclose(z[:, : t + 1], base[:, : t + 1], atol=1e-5)
        assert not np.allclose(z[:, t + 1:], base[:, t + 1:], atol=1e-4)


@pytest.mark.parametrize("ablation", [None, "no_scene"])
def test_encode_last_only_equals_the_last_position_of_the_full_encoding(ablation):
    """CCR's views are encoded with last_only: it must be the full encoding's last row."""
    config = small_config(num_blocks=2)
    model = built(config.with_ablation(ablation) if ablation else config)
    data = batch(pad=(0, 3))
    full = model.encode(data["item_ids"], data["scene_ids"])
    last = model.encode(data["item_ids"], data["scene_ids"], last_only=True)
    for key in ("z", "scene_states", "valid"):
        if full[key] is None:
            assert last[key] is None
            continue
        assert last[key].shape[1] == 1, key
        np.testing.assert_allclose(np.asarray(last[key])[:, 0], np.asarray(full[key])[:, -1],
                                   atol=1e-5, err_msg=key)


def test_every_encoder_variable_gets_a_gradient_and_the_discriminator_moves():
    model = built(small_config(target_scene_conditioning=True, num_negatives=3))
    data = batch(n=12)
    with tf.GradientTape() as tape:
        losses = model.compute_losses(data["item_ids"], data["scene_ids"], training=True)
    variables = model.encoder_variables()
    grads = tape.gradient(losses["loss"], variables)
    missing = [v.name for v, g in zip(variables, grads) if g is None or not np.any(tf.convert_to_tensor(g).numpy())]
    assert not missing, f"no gradient for {missing}"
    assert len(variables) + len(model.discriminator.trainable_variables) == len(model.trainable_variables)
    before = [w.numpy().copy() for w in model.discriminator.trainable_variables]
    logs = model.train_on_batch(data, return_dict=True)
    for name in ("loss", "item_loss", "scene_loss", "ccr_loss", "adv_generator_loss",
                 "discriminator_loss", "discriminator_accuracy"):
        assert np.isfinite(logs[name]), name
    after = model.discriminator.trainable_variables
    assert all(not np.allclose(b, a.numpy()) for b, a in zip(before, after))


def test_next_event_losses_train_the_position_a_served_history_answers_at():
    """Serving reads z at position max_len - 1 (a history's most recent event); the item and
    scene losses must train that position, or it drifts under CCR (train/serve skew)."""
    model = built(small_config(use_ccr=False, use_adversarial=False))
    items = RNG.integers(2, V, size=(6, L + 1))  # max_len inputs + the event after the last one
    scenes = RNG.integers(2, S, size=(6, L + 1))
    for encoder in (model.item_encoder, model.scene_encoder):
        table = encoder.position_embedding.embeddings
        for loss in ("item_loss", "scene_loss"):
            with tf.GradientTape() as tape:
                losses = model.compute_losses(tf.constant(items, tf.int32),
                                              tf.constant(scenes, tf.int32))
            rows = np.abs(tf.convert_to_tensor(tape.gradient(losses[loss], table)).numpy())
            assert rows.shape[0] == L
            assert (rows.sum(axis=1) > 0).all(), (encoder.name, loss, rows.sum(axis=1))


def test_real_scene_softmax_covers_the_real_scenes_and_skips_unknown_targets():
    """With scene_real_only the next-scene distribution covers real scenes only (ids >= 2, as
    served); an OOV next scene is no target; with one real scene there is no gradient."""
    model = built(small_config(use_ccr=False, use_adversarial=False, scene_real_only=True))
    items = RNG.integers(2, V, size=(4, L + 1))
    scenes = RNG.integers(2, S, size=(4, L + 1))
    scenes[0, 3] = scenes[2, 5] = 1  # two unknown scenes (the OOV bucket)
    losses = model.compute_losses(tf.constant(items, tf.int32), tf.constant(scenes, tf.int32),
                                  training=False)
    z = model.encode(tf.constant(items[:, :-1], tf.int32), tf.constant(scenes[:, :-1], tf.int32),
                     training=False)["z"]
    logits = model.scene_logits(z).numpy()
    assert (logits[..., :2] < -1e8).all()
    real = logits[..., 2:].astype(np.float64)
    log_p = real - real.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    targets = scenes[:, 1:]
    known = targets != 1
    expected = -np.take_along_axis(log_p, np.where(known, targets - 2, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(losses["scene_loss"].numpy(), expected[known].mean(), rtol=1e-5)

    one_scene_model = built(small_config(scene_vocab_size=3, scene_real_only=True))  # 1 scene
    with tf.GradientTape() as tape:
        single = one_scene_model.compute_losses(tf.constant(items, tf.int32),
                                                tf.constant(np.full((4, L + 1), 2), tf.int32))
    assert float(single["scene_loss"]) == 0.0
    gradients = tape.gradient(single["scene_loss"], one_scene_model.encoder_variables())
    assert all(g is None or float(tf.reduce_max(tf.abs(tf.convert_to_tensor(g)))) == 0.0
               for g in gradients)
    # The default keeps the OOV bucket as a class (only padding is excluded).
    default = built(small_config(use_ccr=False, use_adversarial=False))
    default_logits = default.scene_logits(z).numpy()
    assert (default_logits[..., 0] < -1e8).all() and (default_logits[..., 1] > -1e8).all()


def test_zero_lambdas_leave_only_the_next_event_losses():
    config = small_config(lambda_ccr=0.0, lambda_adv=0.0)
    model = built(config, {"optimizer": tf.keras.optimizers.SGD(0.5),
                           "discriminator_optimizer": tf.keras.optimizers.SGD(0.5)})
    data = batch(n=12)
    model.compute_losses(data["item_ids"], data["scene_ids"])  # builds every sub-layer
    variables = model.encoder_variables()
    start = [v.numpy().copy() for v in variables]
    with tf.GradientTape() as tape:
        losses = model.compute_losses(data["item_ids"], data["scene_ids"])
        main = losses["item_loss"] + config.alpha * losses["scene_loss"]
    assert losses["ccr_loss"].numpy() > 0 and losses["adv_generator_loss"].numpy() > 0
    grads = tape.gradient(main, variables)
    model.train_on_batch(data)
    for v, w0, g in zip(variables, start, grads):
        expected = w0 if g is None else w0 - 0.5 * tf.convert_to_tensor(g).numpy()
        np.testing.assert_allclose(v.numpy(), expected, atol=1e-6, err_msg=v.name)
    # And the same terms do change the gradient when their weights are switched on.
    on = built(small_config(lambda_ccr=1.0, lambda_adv=1.0))
    on.compute_losses(data["item_ids"], data["scene_ids"])
    for v_on, w0 in zip(on.encoder_variables(), start):
        v_on.assign(w0)
    with tf.GradientTape() as tape:
        l_on = on.compute_losses(data["item_ids"], data["scene_ids"])
    g_on = tape.gradient(l_on["loss"], on.encoder_variables())
    diffs = [np.abs(tf.convert_to_tensor(a).numpy() - tf.convert_to_tensor(b).numpy()).max()
             for a, b in zip(g_on, grads) if a is not None and b is not None]
    assert max(diffs) > 1e-4


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_ablation_trains_and_reports_its_terms(ablation):
    config = small_config().with_ablation(ablation)
    model = built(config)
    history = model.fit(make_dataset(
        [list(RNG.integers(2, V, size=6)) for _ in range(16)],
        [list(RNG.integers(2, S, size=6)) for _ in range(16)], max_len=L, batch_size=8),
        epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert ("ccr_loss" in history.history) == config.use_ccr
    assert ("discriminator_loss" in history.history) == config.use_adversarial


@pytest.mark.parametrize("item_loss", ["sampled_bce", "softmax"])
def test_fit_evaluate_and_recommend(item_loss):
    model = built(small_config(item_loss=item_loss, target_scene_conditioning=True))
    ds = make_dataset([list(RNG.integers(2, V, size=7)) for _ in range(20)],
                      [list(RNG.integers(2, S, size=7)) for _ in range(20)], max_len=L, batch_size=10)
    model.fit(ds, epochs=1, verbose=0)
    results = model.evaluate(ds, return_dict=True, verbose=0)
    assert 0.0 <= results["hr_at_10"] <= 1.0 and results["item_loss"] > 0
    data = batch()
    top = model.recommend(data["item_ids"], data["scene_ids"], k=5, target_scene=[2] * 6)
    scores = top["item_scores"].numpy()
    assert top["item_ids"].shape == (6, 5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert np.all(top["item_ids"].numpy() >= 2)  # never padding or the OOV bucket
    np.testing.assert_allclose(top["scene_probs"].numpy().sum(1), 1.0, atol=1e-5)
    # An empty history is a valid request; unknown ids fall into OOV instead of failing.
    empty = model.recommend(np.zeros((1, 4), np.int32), np.zeros((1, 4), np.int32), k=3)
    assert np.all(np.isfinite(empty["item_scores"].numpy()))
    oov = model.recommend([[5, 10_000]], [[2, 999]], k=3)
    assert oov["item_ids"].shape == (1, 3)


def test_get_config_round_trip_and_savedmodel_round_trip(tmp_path):
    model = built(small_config(target_scene_conditioning=True, prior="mixture"))
    model.fit(tf.data.Dataset.from_tensors(batch()), epochs=1, verbose=0)
    clone = DSPnet.from_config(model.get_config())
    assert clone.dspnet_config == model.dspnet_config
    data = batch()
    clone.compute_losses(data["item_ids"], data["scene_ids"])  # builds the training-only layers
    clone.set_weights(model.get_weights())
    for key, value in model(data).items():
        np.testing.assert_allclose(clone(data)[key].numpy(), value.numpy(), atol=1e-6)
    path = str(tmp_path / "saved")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded, DSPnet)
    assert loaded.dspnet_config == model.dspnet_config
    expected = model(data)
    got = loaded(data)
    for key in expected:
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())
    # The loaded model keeps training with its own train_step.
    loaded.compile(optimizer="adam")
    assert np.isfinite(loaded.train_on_batch(data, return_dict=True)["loss"])


def test_a_config_saved_before_the_recency_bias_reloads_without_it():
    """Saved configs that predate the field were built without the bias: a reload must build
    the same weights (no recency slopes), not today's default."""
    model = built(small_config())
    assert model.dspnet_config.recency_bias  # today's default
    saved = model.get_config()
    del saved["config"]["recency_bias"]
    legacy = DSPnet.from_config(saved)
    assert legacy.dspnet_config.recency_bias is False
    legacy.compute_losses(batch()["item_ids"], batch()["scene_ids"])
    assert not any("recency_slopes" in w.name for w in legacy.weights)
    assert any("recency_slopes" in w.name for w in model.weights)


def test_the_reduction_without_the_pointer_is_sasrecs_item_network_alone():
    one_scene = small_config(scene_vocab_size=3, item_loss="softmax", use_adversarial=False)
    assert built(one_scene.with_ablation("single_scene_reduced")).repeat_pointer is not None
    model = built(one_scene.with_ablation("single_scene_reduced_no_repeat"))
    assert model.repeat_pointer is None and model.fusion is None and model.augmenter is None
    assert model.context_weighting is None and model.dspnet_config.alpha == 1.0
    sasrec = one_scene.as_baseline("sasrec")
    assert (model.dspnet_config.use_scene_network, model.dspnet_config.use_ccr) == (
        sasrec.use_scene_network, sasrec.use_ccr)


def test_one_real_scene_builds_the_model_the_scene_parts_reduce_to(tmp_path):
    # MovieLens-like log: every event in the one real scene (id 2; 3 ids with padding and OOV).
    one_scene = small_config(scene_vocab_size=3).with_ablation("single_scene_reduced")
    model = built(one_scene)
    assert model.dspnet_config == one_scene.replace(  # precision: the global policy's, saved
        target_scene_conditioning=False, next_event_mode="unknown", precision="float32",
        **SINGLE_SCENE_REDUCTION)
    assert model.fusion is None and model.context_weighting is None
    assert model.augmenter is None and model.repeat_pointer is None  # CCR goes too
    # Two or more real scenes, or the switch off (the default): built as given.
    for many in (small_config(reduce_single_scene=True),
                 small_config(scene_vocab_size=4, reduce_single_scene=True)):
        assert many.resolved() == many
    kept = small_config(scene_vocab_size=3, target_scene_conditioning=False,
                        next_event_mode="unknown")
    assert not kept.reduce_single_scene
    assert kept.resolved() == kept and built(kept).fusion is not None
    # One real scene: the target scene says nothing, so conditioning on it is left out (the
    # model is the one built before conditioning existed); the resolution is idempotent.
    default = small_config(scene_vocab_size=3)
    assert default.target_scene_conditioning
    assert default.resolved() == kept and default.resolved().resolved() == kept
    assert built(default).item_head.num_target_scenes == 0

    data = batch()
    data["scene_ids"] = tf.where(data["item_ids"] > 0, 2, 0)
    # z is the item network's output alone, and the next scene is certain.
    encoded = model.encode(data["item_ids"], data["scene_ids"], training=False)
    assert encoded["scene_states"] is None
    items_only = model.item_encoder(data["item_ids"], padding_mask=data["item_ids"] > 0,
                                    training=False)
    valid = (data["item_ids"] > 0).numpy()
    np.testing.assert_allclose(encoded["z"].numpy()[valid], items_only.numpy()[valid], atol=1e-6)
    scene_probabilities = tf.nn.softmax(model(data)["scene_logits"]).numpy()
    np.testing.assert_allclose(scene_probabilities[:, 2], 1.0, atol=1e-6)
    sequences = tf.concat([data["item_ids"], data["item_ids"][:, :1]], axis=1)
    scenes = tf.concat([data["scene_ids"], data["scene_ids"][:, :1]], axis=1)
    losses = model.compute_losses(sequences, scenes)
    assert float(losses["scene_loss"]) == 0.0 and "ccr_loss" not in losses

    # The saved (resolved) configuration reloads to the same model.
    model.fit(tf.data.Dataset.from_tensors(data), epochs=1, verbose=0)
    path = str(tmp_path / "one_scene")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert loaded.dspnet_config == model.dspnet_config and loaded.fusion is None
    np.testing.assert_array_equal(loaded(data)["item_logits"].numpy(),
                                  model(data)["item_logits"].numpy())


def test_input_errors_name_the_problem():
    model = built(small_config())
    with pytest.raises(ValueError, match="item_ids"):
        model({"items": tf.zeros([1, 3], tf.int32)})
    with pytest.raises(ValueError, match="item sequences"):
        make_dataset([[2, 3]], [], max_len=4)
    with pytest.raises(ValueError, match="user 0"):
        make_dataset([[2, 3]], [[2]], max_len=4)


@pytest.mark.parametrize("name", ["dspnet", "sasrec"])
def test_fit_steps_apply_the_updates(name):
    # A step whose gradients silently vanish (e.g. a loss scaled outside the tape) must fail.
    config = small_config() if name == "dspnet" else small_config().as_baseline(name)
    model = DSPnet(config)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    data = batch()
    model(data)
    before = [w.copy() for w in model.get_weights()]
    model.fit(tf.data.Dataset.from_tensors(data).repeat(3), epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 3
    changed = [not np.allclose(a, b) for a, b in zip(before, model.get_weights())]
    assert sum(changed) >= len(changed) // 2
    if model.discriminator is not None:
        assert int(model.discriminator_optimizer.iterations) == 3


@pytest.mark.parametrize("name", ["dspnet", "bert4rec"])
def test_fit_traces_the_train_step_once(name, monkeypatch):
    # Variables created inside a tf.function's first call make it trace twice (the trace is
    # most of a small run's time): layers and optimizer slots must exist before the first step.
    from dspnet_tf.models import BERT4Rec

    model_class = BERT4Rec if name == "bert4rec" else DSPnet
    traces = []
    original = model_class.train_step

    def counting_train_step(self, data):
        traces.append(1)
        return original(self, data)

    monkeypatch.setattr(model_class, "train_step", counting_train_step)
    model = model_class(small_config())
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    data = batch()
    before = {}

    class FirstStepWeights(tf.keras.callbacks.Callback):
        # Before the first step every variable exists (fit made the train function) and none
        # has been updated yet. Trainable ones only: get_weights also lists the loss trackers.
        def on_train_batch_begin(self, step, logs=None):
            if not before:
                before.update({v.ref(): v.numpy().copy() for v in self.model.trainable_weights})

    model.fit(tf.data.Dataset.from_tensors(data).repeat(2), epochs=2, verbose=0,
              callbacks=[FirstStepWeights()])
    assert len(traces) == 1
    assert int(model.optimizer.iterations) == 4
    if name == "dspnet":
        assert int(model.discriminator_optimizer.iterations) == 4
    assert len(before) == len(model.trainable_weights) > 0

    def updated(variables):
        return [v.name for v in variables if not np.allclose(before[v.ref()], v.numpy())]

    # Each optimizer moved the weights it owns.
    if name == "dspnet":
        assert updated(model.encoder_variables()) and updated(model.discriminator.trainable_weights)
    else:
        assert updated(model.trainable_weights)


def test_ccr_users_is_a_ceiled_share_of_the_batch_and_at_least_two():
    model = DSPnet(small_config(ccr_view_fraction=0.25))
    got = [int(model._ccr_users(tf.constant(b))) for b in (256, 10, 4, 1)]
    assert got == [64, 3, 2, 1]


@pytest.mark.parametrize("views", ["augmented", "anchored"])
def test_ccr_with_a_view_fraction_reads_only_the_first_users(views):
    """Changing a user outside the CCR share leaves L_CCR as it was; one inside changes it."""
    model = DSPnet(small_config(ccr_views=views, ccr_view_fraction=0.5))
    items = RNG.integers(2, V, size=(8, L + 1)).astype(np.int32)
    scenes = RNG.integers(2, S, size=(8, L + 1)).astype(np.int32)

    def ccr(items_, scenes_):
        return float(model.compute_losses(tf.constant(items_), tf.constant(scenes_))["ccr_loss"])

    base = ccr(items, scenes)
    outside, inside = items.copy(), items.copy()
    outside[6] = RNG.integers(2, V, size=L + 1)
    inside[1] = RNG.integers(2, V, size=L + 1)
    assert ccr(outside, scenes) == pytest.approx(base, abs=1e-6)
    assert abs(ccr(inside, scenes) - base) > 1e-4


def test_adversarial_sample_fraction_regularises_a_random_share_of_the_positions():
    model = DSPnet(small_config(adversarial_sample_fraction=0.25))
    items = RNG.integers(2, V, size=(8, L + 1)).astype(np.int32)
    scenes = RNG.integers(2, S, size=(8, L + 1)).astype(np.int32)
    losses = model.compute_losses(tf.constant(items), tf.constant(scenes))
    every = model.encode(tf.constant(items[:, :-1]), tf.constant(scenes[:, :-1]),
                         training=True)["z"].numpy().reshape(-1, model.dspnet_config.item_dim)
    sampled = losses["user_z"].numpy()
    assert sampled.shape == (int(np.ceil(0.25 * len(every))), every.shape[1])
    # Each sampled row is z at one of the batch's positions, and they are not all the same one.
    nearest = np.abs(sampled[:, None, :] - every[None, :, :]).max(-1).min(-1)
    assert nearest.max() < 1e-5
    assert len({tuple(np.round(row, 4)) for row in sampled}) > 1
