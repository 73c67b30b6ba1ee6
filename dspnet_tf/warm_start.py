"""Warm start: a new model's weights from a trained one whose vocabularies changed.

Retrained every day, a recommender sees its vocabularies grow (new items, sometimes a new
scene) and reorder (TF Transform's vocabularies, like `dspnet_tf.data`'s, are frequency
ordered, so an item's id moves as its popularity does). Row i of yesterday's item table is
therefore not today's item i. A warm start has to follow the *raw token*:

  * a token both vocabularies know keeps its trained row, wherever its id moved;
  * a token new today keeps the fresh row the layer's own initialiser gave it;
  * every weight that is not indexed by a vocabulary is copied where its shape matches
    (a weight whose shape changed, e.g. after a change of `item_dim`, stays fresh).

`remap_rows` is that rule for one array and one axis, and `warm_start_weights` applies it to
every weight by name; both are plain numpy, for any model. For a DSPnet, `warm_start` finds
which axes are vocabulary indexed (`vocabulary_axes`: it builds a probe model with larger
vocabularies and sees which dimensions follow them: the item table, the [MASK] row after it,
per-scene kernels, the pointer's scene-pair biases, ...), reads the base model (an export of
`dspnet_tf.export`, e.g. the blessed model the TFX Trainer gets as `fn_args.base_model`, or a
model in memory) and assigns the result. Optimizer slots are not carried: the optimizer starts
fresh on the warm weights. Every export carries its tokens (`write_vocabularies`, called
by `export_serving_model`).

Example (a Keras user's daily retrain):
  >>> model = DSPnet(DSPnetConfig(item_vocab_size=len(items_today), scene_vocab_size=8))
  >>> model.compile(optimizer="adam")
  >>> report = warm_start(model, items_today, scenes_today, base="models/dspnet/1",
  ...                     base_item_tokens=items_then, base_scene_tokens=scenes_then)
  >>> print(report.summary())   # items: 1,980 rows carried, 20 new; ...
  >>> model.fit(dataset, epochs=1)
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from dspnet_tf.config import RESERVED_IDS

# Relative to an export folder (TF Serving copies assets.extra/ but never loads it): the raw
# token of every model id, which a later warm start maps rows by.
VOCABULARIES_FILE = os.path.join("assets.extra", "dspnet_vocabularies.json")
ITEMS, SCENES = "items", "scenes"
# Probe growth of each vocabulary: distinct, so an axis that follows one is told apart.
_PROBE_GROWTH = {ITEMS: 3, SCENES: 5}


class WarmStartError(ValueError):
    """A base model that cannot be read or does not fit; the message names the path."""


def axis_tokens(tokens: Sequence[str], length: int) -> List[str]:
    """The token of each index of a vocabulary-indexed axis of `length`.

    An axis may hold rows after the vocabulary (e.g. the encoders' [MASK] row at id
    vocab_size): those are named by their place after it, so they map to each other too.
    """
    if length < len(tokens):
        raise ValueError(f"an axis of {length} rows is shorter than its vocabulary "
                         f"({len(tokens)} tokens)")
    return list(tokens) + [f"<row {k} after the vocabulary>" for k in range(length - len(tokens))]


def remap_rows(old: np.ndarray, fresh: np.ndarray, old_tokens: Sequence[str],
               new_tokens: Sequence[str], axis: int = 0) -> Tuple[np.ndarray, int]:
    """`fresh` with each index of `axis` whose token `old` knows replaced by old's slice.

    Args:
      old: the trained array; `old.shape[axis]` rows, one per `old_tokens` (then extra rows).
      fresh: the new model's initialised array, one row per `new_tokens` (then extra rows);
        its other dimensions equal old's.
      old_tokens, new_tokens: the raw token of each id of the two vocabularies.
      axis: the vocabulary-indexed axis.

    Returns:
      (the new array, how many of its rows came from `old`).
    """
    result, carried = remap_axes(old, fresh, {axis: (old_tokens, new_tokens)})
    return result, carried[axis]


def remap_axes(old: np.ndarray, fresh: np.ndarray,
               axes: Mapping[int, Tuple[Sequence[str], Sequence[str]]]
               ) -> Tuple[np.ndarray, Dict[int, int]]:
    """`remap_rows` over several vocabulary axes at once (e.g. a [scenes, scenes] bias).

    An entry is carried when its index on every vocabulary axis has a token old knows; the
    rest keep `fresh`'s value.

    Returns:
      (the new array, {axis: how many of its indices were carried}).
    """
    old, fresh = np.asarray(old), np.asarray(fresh)
    if old.ndim != fresh.ndim or any(o != f for i, (o, f) in
                                     enumerate(zip(old.shape, fresh.shape)) if i not in axes):
        raise ValueError(f"shapes {old.shape} and {fresh.shape} differ off the vocabulary "
                         f"axes {sorted(axes)}")
    sources, targets = [], []
    for i in range(fresh.ndim):
        if i not in axes:
            sources.append(np.arange(fresh.shape[i]))
            targets.append(np.arange(fresh.shape[i]))
            continue
        old_tokens, new_tokens = axes[i]
        old_index = {token: k for k, token in
                     enumerate(axis_tokens(old_tokens, old.shape[i]))}
        pairs = [(j, old_index[token]) for j, token in
                 enumerate(axis_tokens(new_tokens, fresh.shape[i])) if token in old_index]
        targets.append(np.asarray([j for j, _ in pairs], dtype=np.int64))
        sources.append(np.asarray([k for _, k in pairs], dtype=np.int64))
    result = fresh.copy()
    result[np.ix_(*targets)] = old[np.ix_(*sources)].astype(fresh.dtype, copy=False)
    return result, {i: len(targets[i]) for i in axes}


@dataclasses.dataclass
class WarmStartReport:
    """What a warm start did: rows carried / new per vocabulary, and each weight's fate."""

    base: str
    rows_carried: Dict[str, int]
    rows_new: Dict[str, int]
    copied: List[str] = dataclasses.field(default_factory=list)
    remapped: List[str] = dataclasses.field(default_factory=list)
    fresh: List[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """One line for a log."""
        rows = "; ".join(f"{name}: {self.rows_carried[name]:,} rows carried, "
                         f"{self.rows_new[name]:,} new" for name in sorted(self.rows_carried))
        fresh = f" ({', '.join(self.fresh)})" if self.fresh else ""
        return (f"warm start from {self.base}: {rows}; weights: {len(self.copied)} copied, "
                f"{len(self.remapped)} remapped by token, {len(self.fresh)} left fresh{fresh}")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)


def vocabulary_rows(old_tokens: Sequence[str], new_tokens: Sequence[str]) -> Tuple[int, int]:
    """(carried, new) among the new vocabulary's real tokens (padding and OOV not counted)."""
    known = set(old_tokens[RESERVED_IDS:])
    real = new_tokens[RESERVED_IDS:]
    carried = sum(1 for token in real if token in known)
    return carried, len(real) - carried


def warm_start_weights(
    new: Mapping[str, np.ndarray],
    old: Mapping[str, np.ndarray],
    vocab_axes: Mapping[str, Mapping[int, str]],
    old_tokens: Mapping[str, Sequence[str]],
    new_tokens: Mapping[str, Sequence[str]],
    base: str = "",
) -> Tuple[Dict[str, np.ndarray], WarmStartReport]:
    """The warm-started value of every weight of `new`, by name (numpy; any model).

    Args:
      new: the new model's initialised weights by name.
      old: the trained weights by name.
      vocab_axes: for each vocabulary-indexed weight, {axis: vocabulary name}.
      old_tokens, new_tokens: {vocabulary name: raw token of each id}.
      base: where `old` came from, for the report.

    Returns:
      (values by name, the report). A weight missing from `old`, or whose shape differs from
      old's off its vocabulary axes, keeps its fresh value.
    """
    report = WarmStartReport(base=base, rows_carried={}, rows_new={})
    for name in new_tokens:
        carried, added = vocabulary_rows(old_tokens.get(name, []), new_tokens[name])
        report.rows_carried[name], report.rows_new[name] = carried, added
    values: Dict[str, np.ndarray] = {}
    for name, fresh in new.items():
        fresh = np.asarray(fresh)
        values[name] = fresh
        if name not in old:
            report.fresh.append(name)
            continue
        value = np.asarray(old[name])
        axes = dict(vocab_axes.get(name, {}))
        if value.ndim != fresh.ndim or any(
                value.shape[i] != fresh.shape[i] for i in range(fresh.ndim) if i not in axes):
            report.fresh.append(name)
            continue
        try:
            value, _ = remap_axes(value, fresh, {
                axis: (old_tokens[vocab], new_tokens[vocab]) for axis, vocab in axes.items()})
        except (KeyError, ValueError):
            report.fresh.append(name)
            continue
        values[name] = value.astype(fresh.dtype, copy=False)
        (report.remapped if axes else report.copied).append(name)
    return values, report


# --- DSPnet -----------------------------------------------------------------------------------
def weight_keys(names: Sequence[str]) -> List[str]:
    """Stable keys for a model's weight names, in the model's weight order.

    Keras numbers unnamed layers per process (`dense_6`, `layer_normalization_4`), so the
    same weight has another name in another process, or in a second model of the same one
    (the TFX Trainer builds one per day). The key drops the numbering and the `:0` and counts
    repeats in order: the n-th `item_encoder/block/dense/kernel` is `.../kernel#n`. Two
    models built from one code path list their weights in the same order, so keys match.
    """
    seen: Dict[str, int] = collections.Counter()
    keys = []
    for name in names:
        base = re.sub(r":\d+$", "", name)
        base = "/".join(re.sub(r"_\d+$", "", part) for part in base.split("/"))
        keys.append(base if seen[base] == 0 else f"{base}#{seen[base]}")
        seen[base] += 1
    return keys


def _keyed_variables(model: tf.keras.Model) -> Dict[str, tf.Variable]:
    """The model's weights by `weight_keys`, without its metrics' state (reset each epoch)."""
    metric_state = {id(v) for metric in model.metrics for v in metric.variables}
    variables = [v for v in model.variables if id(v) not in metric_state]
    return dict(zip(weight_keys([v.name for v in variables]), variables))


def build_variables(model: tf.keras.Model) -> None:
    """Creates every variable of a DSPnet, including those of training-only layers.

    A Keras model creates its weights on first use; the warm start must assign them before
    training, so one eager loss on a tiny batch of OOV ids builds them (as `fit` would), and the
    discriminator is called once. The weights it creates are the layers' own initial values.
    """
    from dspnet_tf.models.dspnet import DSPnet  # pylint: disable=import-outside-toplevel

    if not isinstance(model, DSPnet):
        if not model.built:
            raise WarmStartError(f"build {model.name} (call it on a batch) before a warm start")
        return
    oov_only = tf.ones([2, 3], tf.int32)  # id 1 (OOV) exists in every vocabulary
    model.compute_losses(oov_only, oov_only, training=True)
    if model.discriminator is not None:
        model.discriminator(tf.zeros([1, model.dspnet_config.item_dim]))


def vocabulary_axes(model: tf.keras.Model) -> Dict[str, Dict[int, str]]:
    """{weight name: {axis: "items" | "scenes"}} for a built DSPnet.

    A probe DSPnet with the same config but 3 more items and 5 more scenes is built; an axis
    3 longer in it follows the item vocabulary, 5 longer the scene vocabulary. So every table,
    kernel and bias indexed by a vocabulary is found without a list to keep up to date. The
    probe costs a second model's memory for a moment (its item table is the model's size).
    """
    from dspnet_tf.models.dspnet import DSPnet  # pylint: disable=import-outside-toplevel

    config = model.dspnet_config
    probe = DSPnet(config.replace(
        item_vocab_size=config.item_vocab_size + _PROBE_GROWTH[ITEMS],
        scene_vocab_size=config.scene_vocab_size + _PROBE_GROWTH[SCENES]), name=model.name)
    build_variables(probe)
    probe_shapes = {name: v.shape.as_list() for name, v in _keyed_variables(probe).items()}
    by_growth = {growth: vocab for vocab, growth in _PROBE_GROWTH.items()}
    axes: Dict[str, Dict[int, str]] = {}
    for name, variable in _keyed_variables(model).items():
        shape = variable.shape.as_list()
        if probe_shapes.get(name) is None or len(probe_shapes[name]) != len(shape):
            continue
        found = {axis: by_growth[p - s] for axis, (s, p) in
                 enumerate(zip(shape, probe_shapes[name])) if p - s in by_growth}
        if found:
            axes[name] = found
    del probe
    return axes


def write_vocabularies(export_dir: str, item_tokens: Sequence[str],
                       scene_tokens: Sequence[str]) -> str:
    """Writes `assets.extra/dspnet_vocabularies.json` (each model id's raw token) into an
    export; returns its path. `dspnet_tf.export.export_serving_model` calls it."""
    path = os.path.join(export_dir, VOCABULARIES_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as handle:
        handle.write(json.dumps({ITEMS: list(item_tokens), SCENES: list(scene_tokens)}))
    return path


def read_exported_model(export_dir: str, tokens: Optional[Dict[str, List[str]]] = None
                        ) -> Tuple[Dict[str, np.ndarray], Dict[str, List[str]]]:
    """The trained weights (by name) and vocabularies of an export of `export_serving_model`.

    Reads the checkpoint and the object graph, not the serving graph: fast, and no TF
    Transform ops are needed. The vocabularies come from `tokens` if given, else from the
    export's `assets.extra/dspnet_vocabularies.json` (`write_vocabularies`; every
    `export_serving_model` writes it).

    Raises:
      WarmStartError: naming the path and what is missing or unreadable.
    """
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel

    pb_path = os.path.join(export_dir, "saved_model.pb")
    vocab_path = os.path.join(export_dir, VOCABULARIES_FILE)
    needed = [(pb_path, "a SavedModel")]
    if tokens is None:
        needed.append((vocab_path, "each id's raw token, written by write_vocabularies"))
    for path, what in needed:
        if not tf.io.gfile.exists(path):
            raise WarmStartError(f"cannot warm start from {export_dir}: {path} is missing "
                                 f"(expected {what}); train from scratch instead")
    try:
        if tokens is None:
            with tf.io.gfile.GFile(vocab_path) as handle:
                payload = json.loads(handle.read())
            tokens = {ITEMS: [str(t) for t in payload[ITEMS]],
                      SCENES: [str(t) for t in payload[SCENES]]}
        saved_model = saved_model_pb2.SavedModel()
        with tf.io.gfile.GFile(pb_path, "rb") as handle:
            saved_model.ParseFromString(handle.read())
        graph = saved_model.meta_graphs[0].object_graph_def
        children = {c.local_name: c.node_id for c in graph.nodes[0].children}
        if "model_variables" not in children:
            raise WarmStartError(f"cannot warm start from {export_dir}: its SavedModel has no "
                                 "model_variables (not an export of dspnet_tf.export)")
        reader = tf.train.load_checkpoint(os.path.join(export_dir, "variables", "variables"))
        names, values = [], []
        for child in graph.nodes[children["model_variables"]].children:
            names.append(graph.nodes[child.node_id].variable.name)
            values.append(reader.get_tensor(
                f"model_variables/{child.local_name}/.ATTRIBUTES/VARIABLE_VALUE"))
    except WarmStartError:
        raise
    except Exception as error:  # pylint: disable=broad-except
        raise WarmStartError(f"cannot warm start from {export_dir}: reading it failed with "
                             f"{type(error).__name__}: {error}") from error
    # The export lists model.variables, metric state included: the trained weights are the
    # ones a freshly built model also has (looked up by key), so the extra entries are unused.
    return dict(zip(weight_keys(names), values)), tokens


def warm_start(
    model: tf.keras.Model,
    item_tokens: Sequence[str],
    scene_tokens: Sequence[str],
    base: Union[str, tf.keras.Model],
    base_item_tokens: Optional[Sequence[str]] = None,
    base_scene_tokens: Optional[Sequence[str]] = None,
) -> WarmStartReport:
    """Initialises a DSPnet from a trained one, mapping vocabulary rows by raw token.

    Call it after `compile` and before `fit`. The model's variables are built first
    (`build_variables`), so new tokens get the layers' own initial rows.

    Args:
      model: the new DSPnet (its vocabulary sizes are today's).
      item_tokens, scene_tokens: the raw token of each of its ids (0 padding, 1 OOV first).
      base: an export folder of `dspnet_tf.export.export_serving_model`, or a trained DSPnet
        in memory.
      base_item_tokens, base_scene_tokens: the base's tokens; needed for a model in memory,
        optional for an export folder that carries them (`write_vocabularies`).

    Returns:
      The report (rows carried / new per vocabulary; `summary()` for a log line).

    Raises:
      WarmStartError: the base cannot be read, or a model base comes without its tokens.
    """
    given = None
    if base_item_tokens is not None and base_scene_tokens is not None:
        given = {ITEMS: [str(t) for t in base_item_tokens],
                 SCENES: [str(t) for t in base_scene_tokens]}
    if isinstance(base, str):
        old, old_tokens = read_exported_model(base, given)
        base_name = base
    else:
        if given is None:
            raise WarmStartError("a base model in memory needs base_item_tokens and "
                                 "base_scene_tokens")
        old = {name: v.numpy() for name, v in _keyed_variables(base).items()}
        old_tokens, base_name = given, base.name
    new_tokens = {ITEMS: list(item_tokens), SCENES: list(scene_tokens)}
    config = getattr(model, "dspnet_config", None)
    if config is not None and (len(item_tokens) != config.item_vocab_size
                               or len(scene_tokens) != config.scene_vocab_size):
        raise WarmStartError(
            f"{len(item_tokens)} item / {len(scene_tokens)} scene tokens for a model of "
            f"item_vocab_size={config.item_vocab_size}, scene_vocab_size="
            f"{config.scene_vocab_size}")
    build_variables(model)
    variables = _keyed_variables(model)
    values, report = warm_start_weights(
        {name: v.numpy() for name, v in variables.items()}, old, vocabulary_axes(model),
        old_tokens, new_tokens, base=base_name)
    for name in report.copied + report.remapped:
        variables[name].assign(values[name])
    return report
