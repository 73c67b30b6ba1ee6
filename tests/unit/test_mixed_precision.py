"""Mixed precision (issue 38): every model the quality benchmark builds trains under Keras's
mixed policies and computes what float32 computes within bfloat16's rounding; the policy is
saved (SavedModel, config) and the serving export stays float32; `DSPnetConfig.precision`
validates, round-trips and resolves "auto" by the CPU's flags and None by the global policy."""

from __future__ import annotations

import json
import logging
import types

import numpy as np
import pytest
import tensorflow as tf

from dspnet_tf import ConfigError, DSPnet, DSPnetConfig, cli, config as config_module
from dspnet_tf.config import BASELINES, PRECISIONS
from dspnet_tf.data import make_dataset
from dspnet_tf.evaluation.quality_benchmark import KNOWN_MODELS, POPULARITY_MODELS, model_config
from dspnet_tf.export import export_serving_model, make_history_example
from dspnet_tf.models import BERT4Rec

V, S, L = 40, 6, 8
# Tiny widths, so every model builds and steps in about a second (the tracing dominates).
TINY = dict(max_len=L, item_dim=16, scene_dim=8, num_blocks=1, num_heads=2, dropout=0.0,
            sfe_hidden=16, ccr_context_dim=4, discriminator_hidden=8, num_sampled=16, seed=1)
# Every model of the benchmark's table, studies and options (the popularity floors have no
# layers).
TRAINED_MODELS = [m for m in KNOWN_MODELS if m not in POPULARITY_MODELS]
# The fit step, traced as `fit` runs it: DSPnet, every baseline, and the ablations and item
# losses whose training step has parts of its own (the discriminator's step, target attention,
# the sampled losses).
FIT_MODELS = ["dspnet", "bert4rec", *BASELINES, "dspnet_adv", "dspnet_target_attention",
              "dspnet+sampled_softmax", "dspnet+sampled_bce"]
# bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 per value). Measured at these widths,
# initial weights, over every model of TRAINED_MODELS: the next-item and next-scene losses and
# their total within 8.2e-4 relative of float32, the CCR term within 1.0e-2 (its temperature
# 0.2 sharpens the similarities of bfloat16 states), the generator term within 1.2e-3, the
# scores within 0.05. The tolerances leave about 3x room.
LOSS_RTOL = 3e-3
REGULARISER_RTOL = 3e-2
SCORE_ATOL = 0.15


@pytest.fixture(autouse=True)
def _float32_policy_after():
    """Every test leaves the process's global policy at Keras's default, float32."""
    yield
    tf.keras.mixed_precision.set_global_policy("float32")


def benchmark_config(name: str, **changes) -> DSPnetConfig:
    """What the quality benchmark builds for `name` (`dspnet+<item_loss>` for a loss variant)."""
    name, _, item_loss = name.partition("+")
    split = types.SimpleNamespace(item_vocab=[""] * V, scene_vocab=[""] * S,
                                  training_repeat_share=0.3)
    overrides = dict(TINY, **({"item_loss": item_loss} if item_loss else {}), **changes)
    return model_config(name, split, overrides)


def build(name: str, config: DSPnetConfig):
    if name == "bert4rec":
        return BERT4Rec(config, num_sampled=16)
    return DSPnet(config)


def sequences(n=8, seed=0):
    """[n, L + 1] training sequences (inputs and the event after them), some left padded."""
    rng = np.random.default_rng(seed)
    items = rng.integers(2, V, size=(n, L + 1))
    scenes = rng.integers(2, S, size=(n, L + 1))
    for row in range(n):
        items[row, : row % 4] = 0
        scenes[row, : row % 4] = 0
    return tf.constant(items, tf.int32), tf.constant(scenes, tf.int32)


def training_data():
    items, scenes = sequences(16, seed=1)
    return make_dataset(items.numpy().tolist(), scenes.numpy().tolist(), max_len=L, batch_size=8,
                        shuffle=False)


def losses_of(model, items, scenes):
    """Every loss term on fixed sequences; eager, no optimizer, so the random streams are the
    same for any two models (seeds are (config seed, step 0, salt))."""
    if isinstance(model, BERT4Rec):
        tf.random.set_seed(0)  # the sampled softmax's own sampler is stateful
        return {"loss": float(model.cloze_loss(items[:, 1:], tf.constant([0, 1], tf.int64)))}
    return {k: float(v) for k, v in model.compute_losses(items, scenes).items()
            if not k.startswith("user_z")}


@pytest.mark.parametrize("name", FIT_MODELS)
def test_fit_steps_under_the_global_mixed_bfloat16_policy(name):
    # The set-up: a Keras user sets the global policy and builds the default model.
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build(name, benchmark_config(name))
    assert model.dspnet_config.precision == "mixed_bfloat16"  # resolved and saved
    model.compile(optimizer=tf.keras.optimizers.Adam(0.01))
    data = training_data()
    model.fit(data.take(1), epochs=1, verbose=0)  # builds every variable
    assert model.item_encoder.compute_dtype == "bfloat16"
    assert {v.dtype for v in model.variables} == {tf.float32}
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(data, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 3
    for key, values in history.history.items():
        assert np.isfinite(values).all(), (key, values)
    changed = [not np.allclose(a, b) for a, b in zip(before, model.get_weights())]
    assert sum(changed) >= len(changed) // 2
    items, scenes = sequences()
    outputs = model({"item_ids": items[:, 1:], "scene_ids": scenes[:, 1:]})
    for key, value in outputs.items():
        assert value.dtype == tf.float32, key
        assert np.isfinite(value.numpy()).all(), key
    if getattr(model, "discriminator", None) is not None:
        assert int(model.discriminator_optimizer.iterations) == 3


@pytest.mark.parametrize("name", TRAINED_MODELS)
def test_bfloat16_losses_match_float32_with_the_same_weights(name):
    items, scenes = sequences()
    config = benchmark_config(name)
    models = {p: build(name, config.replace(precision=p)) for p in ("float32", "mixed_bfloat16")}
    for model in models.values():
        losses_of(model, items, scenes)  # builds every layer, the training-only ones too
    models["mixed_bfloat16"].set_weights(models["float32"].get_weights())
    expected, got = (losses_of(m, items, scenes) for m in models.values())
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        rtol = REGULARISER_RTOL if key in ("ccr_loss", "adv_generator_loss") else LOSS_RTOL
        assert got[key] == pytest.approx(value, rel=rtol), key
    inputs = {"item_ids": items[:, 1:], "scene_ids": scenes[:, 1:]}
    reference, half = (m(inputs) for m in models.values())
    scored = reference["item_logits"].numpy() > -1e8  # padding / OOV are -1e9 in both
    difference = np.abs(half["item_logits"].numpy() - reference["item_logits"].numpy())[scored]
    assert difference.max() < SCORE_ATOL
    # The half model does compute in bfloat16 (float32 weights in a float32 model would match
    # to the last digit).
    assert difference.max() > 0
    assert half["item_logits"].dtype == half["scene_logits"].dtype == tf.float32


@pytest.mark.parametrize("name", ["dspnet_adv", "bert4rec"])
def test_mixed_float16_scales_the_loss_and_updates_like_float32(name):
    # A fixed loss scale and plain SGD: an update that forgot to unscale the gradients would be
    # 1024 x too large, one that forgot to scale the loss would leave float16 gradients to
    # underflow; either way the two models' updates would part.
    items, scenes = sequences()
    data = {"item_ids": items, "scene_ids": scenes}
    config = benchmark_config(name)
    models = {}
    for precision in ("float32", "mixed_float16"):
        model = build(name, config.replace(precision=precision))
        losses_of(model, items, scenes)
        optimizers = {"optimizer": tf.keras.optimizers.SGD(0.5)}
        if name != "bert4rec":
            optimizers["discriminator_optimizer"] = tf.keras.optimizers.SGD(0.5)
        if precision == "mixed_float16":
            optimizers = {k: tf.keras.mixed_precision.LossScaleOptimizer(
                v, dynamic=False, initial_scale=1024) for k, v in optimizers.items()}
        model.compile(**optimizers)
        models[precision] = model
    models["mixed_float16"].set_weights(models["float32"].get_weights())
    before = [v.numpy() for v in models["float32"].trainable_variables]
    updates = {}
    for precision, model in models.items():
        tf.random.set_seed(0)  # BERT4Rec's sampled softmax draws from a stateful sampler
        model.train_on_batch(data)
        updates[precision] = np.concatenate([
            (v.numpy() - b).ravel() for v, b in zip(model.trainable_variables, before)])
    reference, half = updates["float32"], updates["mixed_float16"]
    assert np.linalg.norm(reference) > 0
    assert np.linalg.norm(half) / np.linalg.norm(reference) == pytest.approx(1.0, abs=0.1)
    assert np.dot(half, reference) / (np.linalg.norm(half) * np.linalg.norm(reference)) > 0.98


def test_compile_adds_loss_scaling_under_mixed_float16_only():
    models = {}
    for precision, scaled in (("mixed_bfloat16", False), ("mixed_float16", True)):
        models[precision] = model = DSPnet(benchmark_config("dspnet_adv", precision=precision))
        model.compile(optimizer="adam")
        for optimizer in (model.optimizer, model.discriminator_optimizer):
            assert isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer) == scaled
    # The float16 model trains with Keras's default, dynamic loss scale (a step whose scaled
    # gradients overflow is skipped and the scale halved).
    history = models["mixed_float16"].fit(training_data(), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_savedmodel_round_trip_keeps_the_policy(tmp_path):
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = DSPnet(benchmark_config("dspnet"))
    model.compile(optimizer="adam")
    model.fit(training_data(), epochs=1, verbose=0)
    items, scenes = sequences()
    inputs = {"item_ids": items[:, 1:], "scene_ids": scenes[:, 1:], "target_scene": scenes[:, -1]}
    expected = model(inputs)  # fit's custom step never calls the model: this builds it
    path = str(tmp_path / "saved")
    model.save(path)
    # Loaded where the global policy is float32: the saved config still says bfloat16.
    tf.keras.mixed_precision.set_global_policy("float32")
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded, DSPnet)
    assert loaded.dspnet_config == model.dspnet_config
    assert loaded.dspnet_config.precision == "mixed_bfloat16"
    assert loaded.item_encoder.compute_dtype == "bfloat16"
    got = loaded(inputs)
    for key in expected:
        assert got[key].dtype == tf.float32
        np.testing.assert_array_equal(got[key].numpy(), expected[key].numpy())
    loaded.compile(optimizer="adam")
    assert np.isfinite(loaded.train_on_batch({"item_ids": items, "scene_ids": scenes},
                                             return_dict=True)["loss"])


def test_export_under_the_policy_serves_float32(tmp_path):
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = DSPnet(benchmark_config("dspnet"))
    items, scenes = sequences()
    model({"item_ids": items, "scene_ids": scenes})
    assert model.item_encoder.compute_dtype == "bfloat16"
    item_tokens = ["", "<oov>"] + [f"i{i}" for i in range(2, V)]
    scene_tokens = ["", "<oov>"] + [f"s{s}" for s in range(2, S)]
    path = export_serving_model(model, str(tmp_path / "1"), None, item_tokens, scene_tokens,
                                top_k=5)
    loaded = tf.saved_model.load(path)
    low = (tf.float16, tf.bfloat16)
    for name, signature in loaded.signatures.items():
        for spec in signature.structured_input_signature[1].values():
            assert spec.dtype not in low, name
        for key, spec in signature.structured_outputs.items():
            assert spec.dtype not in low, (name, key)
    history = [row for row in items[:3, 1:].numpy().tolist()]
    history_scenes = scenes[:3, 1:].numpy().tolist()
    examples = tf.constant([
        make_history_example([item_tokens[i] for i in row if i],
                             [scene_tokens[s] for s, i in zip(srow, row) if i])
        for row, srow in zip(history, history_scenes)])
    served = loaded.signatures["serving_default"](examples=examples)
    assert served["item_scores"].dtype == served["scene_probs"].dtype == tf.float32
    # The served scores are the model's own, within bfloat16's rounding: the graph's fused
    # kernels round at other points than eager ops (measured: up to 0.017 apart; float32
    # models agree to 1e-6).
    direct = model({"item_ids": items[:3, 1:], "scene_ids": scenes[:3, 1:]})["item_logits"]
    top = tf.math.top_k(direct[:, 2:], 5)
    np.testing.assert_allclose(served["item_scores"].numpy(), top.values.numpy(), atol=0.05)
    embedding = loaded.signatures["encode_users"](examples=examples)["user_embedding"]
    assert embedding.dtype == tf.float32
    np.testing.assert_allclose(
        embedding.numpy(),
        model.user_representation({"item_ids": items[:3, 1:], "scene_ids": scenes[:3, 1:]}),
        atol=0.05)


def test_precision_validates_round_trips_and_is_saved_resolved():
    config = DSPnetConfig(item_vocab_size=V, scene_vocab_size=S, precision="mixed_bfloat16")
    assert DSPnetConfig.from_json(config.to_json()) == config
    assert DSPnetConfig(item_vocab_size=V, scene_vocab_size=S).precision is None  # the default
    with pytest.raises(ConfigError, match="precision"):
        DSPnetConfig(item_vocab_size=V, scene_vocab_size=S, precision="bfloat16")
    assert PRECISIONS == cli.PRECISION_CHOICES

    # None follows the global policy when the model is built, and the model saves the name.
    model = DSPnet(benchmark_config("dspnet"))
    assert model.get_config()["config"]["precision"] == "float32"
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = DSPnet(benchmark_config("dspnet"))
    assert model.get_config()["config"]["precision"] == "mixed_bfloat16"
    clone = DSPnet.from_config(json.loads(json.dumps(model.get_config())))
    assert clone.dspnet_config == model.dspnet_config
    # An explicit precision wins over the global policy, in every layer.
    explicit = DSPnet(benchmark_config("dspnet", precision="float32"))
    assert {layer.compute_dtype for layer in explicit._flatten_layers()} == {"float32"}
    # A Keras `dtype` argument is a precision too; one that contradicts the config is refused.
    tf.keras.mixed_precision.set_global_policy("float32")
    assert DSPnet(benchmark_config("dspnet"), dtype="mixed_float16").dspnet_config.precision == \
        "mixed_float16"
    with pytest.raises(ConfigError, match="precision"):
        DSPnet(benchmark_config("dspnet", precision="float32"), dtype="mixed_bfloat16")
    tf.keras.mixed_precision.set_global_policy("float64")
    with pytest.raises(ConfigError, match="global policy"):
        DSPnet(benchmark_config("dspnet"))


@pytest.mark.parametrize("flags, expected", [
    ({"fpu", "avx2", "avx512f"}, "float32"),
    ({"fpu", "avx512f", "avx512_bf16"}, "mixed_bfloat16"),
    ({"fpu", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),
])
def test_auto_resolves_by_the_cpu_flags_and_is_saved(flags, expected, monkeypatch, caplog):
    monkeypatch.setattr(config_module, "_read_cpu_flags", lambda: frozenset(flags))
    config_module._log_auto_precision.cache_clear()  # pylint: disable=protected-access
    config = benchmark_config("dspnet", precision="auto")
    with caplog.at_level(logging.INFO, logger="dspnet_tf.config"):
        assert config.resolved_precision == expected
        first = DSPnet(config)
        second = BERT4Rec(config)
    assert first.dspnet_config.precision == second.dspnet_config.precision == expected
    assert first.get_config()["config"]["precision"] == expected
    compute = "bfloat16" if expected == "mixed_bfloat16" else "float32"
    assert first.item_encoder.compute_dtype == second.item_encoder.compute_dtype == compute
    decisions = [r.getMessage() for r in caplog.records if "precision 'auto'" in r.getMessage()]
    assert len(decisions) == 1 and expected in decisions[0]  # logged once


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\n"
                       "flags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n")
    read_flags = config_module._read_cpu_flags  # pylint: disable=protected-access
    assert {"avx512_bf16", "avx512f", "fpu"} <= read_flags(str(cpuinfo))
    assert read_flags(str(tmp_path / "missing")) == frozenset()


def test_dspnet_train_precision_flag(tmp_path, monkeypatch):
    from dspnet_tf import resilience

    models = {}

    def keep_model(target, write):
        models["trained"] = write.__self__  # the trained model; saving is tested elsewhere
        return target

    monkeypatch.setattr(resilience, "replace_directory_atomically", keep_model)
    assert cli.main(["train", "--users", "40", "--epochs", "1", "--max-len", "6",
                     "--precision", "mixed_bfloat16", "--out", str(tmp_path)]) == 0
    trained = models["trained"]
    assert trained.dspnet_config.precision == "mixed_bfloat16"
    assert trained.item_encoder.compute_dtype == "bfloat16"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(np.isfinite(v) for v in metrics.values() if isinstance(v, float))


def test_benchmark_quality_precision_flag_resolves_auto_once(tmp_path, monkeypatch):
    from dspnet_tf.evaluation import quality_benchmark

    calls = []

    def record(data, out_dir, **kwargs):
        calls.append(kwargs)
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / "results.md").write_text("table\n")

    monkeypatch.setattr(quality_benchmark, "run_quality_benchmark", record)
    monkeypatch.setattr(config_module, "_read_cpu_flags", lambda: frozenset({"avx512_bf16"}))
    base = ["benchmark", "quality", "--data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert cli.main(base + ["--precision", "auto"]) == 0
    assert cli.main(base + ["--precision", "mixed_float16"]) == 0
    assert cli.main(base) == 0
    assert [c["overrides"].get("precision") for c in calls] == [
        "mixed_bfloat16", "mixed_float16", None]
