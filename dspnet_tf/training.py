"""Training with validation-based early stopping: one loop for the CLI and the benchmarks."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

import tensorflow as tf

from dspnet_tf.config import DSPnetConfig, example_length
from dspnet_tf.data.sequences import make_dataset, training_windows
from dspnet_tf.data.splits import LeaveOneOutSplit
from dspnet_tf.evaluation.leave_one_out import (
    IN_SCENE,
    NEXT_EVENT,
    TASKS,
    evaluate_last_events,
    rank_last_events,
)
from dspnet_tf.models.dspnet import DSPnet


class EpochTimer(tf.keras.callbacks.Callback):
    """Records each epoch's wall time, from its first step to its last: training throughput.

    Timing `model.fit` from outside also counts the seconds fit spends after its last epoch
    shutting its input pipeline down (about 4 s on the 2-core machine, whatever the model),
    which swamps a short timed run. Keras has no callback that reports epoch time.

    Attributes:
      seconds: one wall time per finished epoch, in order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: List[float] = []
        self._started = 0.0

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        """Starts the epoch's clock."""
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, Any]] = None) -> None:
        """Appends the epoch's wall time to `seconds`."""
        self.seconds.append(time.perf_counter() - self._started)


def fit_with_early_stopping(
    config: DSPnetConfig,
    split: LeaveOneOutSplit,
    epochs: int = 50,
    patience: int = 5,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    seed: int = 0,
    on_epoch: Optional[Callable[[Dict[str, Any]], None]] = None,
    model_factory: Callable[[DSPnetConfig], tf.keras.Model] = DSPnet,
    window_stride: Optional[int] = None,
    selection_task: Optional[str] = None,
) -> Dict[str, Any]:
    """Trains on `split.train`, keeps the weights with the best validation NDCG@10.

    Stops after `patience` epochs without a gain (as RecBole does), and scores the test targets
    with the best-validation weights. Histories longer than `max_len` are cut into windows so
    every training event is a target once (`training_windows`), and batches are bucketed by
    length so short histories are not padded to `max_len`.

    Args:
      model_factory: builds the model from the config (DSPnet, or e.g. BERT4Rec); it must
        return `item_logits` / `scene_logits` when called.
      window_stride: stride of the training windows of max_len + 1 events (default max_len:
        every event is a target once per epoch); see `training_windows`.
      selection_task: the task whose validation NDCG@10 picks the epoch (`serving_task` by
        default: in-scene for a target-conditioned model on a log with several real scenes,
        the task it serves; otherwise next-event).

    Returns:
      dict with `model`, `history` (per-epoch losses, validation metrics, elapsed seconds),
      `best_epoch`, `seconds_to_best`, `valid` (best validation metrics), `selection_task`,
      `test_ranks` (next-event) and `test_ranks_by_task` (both tasks).
    """
    selection_task = selection_task or serving_task(config)
    tf.keras.utils.set_random_seed(seed)
    model = model_factory(config.replace(seed=seed))
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
    train_items, train_scenes = training_windows(*split.train, window=example_length(config.max_len),
                                                 stride=window_stride)
    keep = [i for i, seq in enumerate(train_items) if len(seq) >= 2]
    dataset = make_dataset([train_items[i] for i in keep], [train_scenes[i] for i in keep],
                           max_len=config.max_len, batch_size=batch_size, seed=seed,
                           bucket_by_length=True, whole_histories=False)  # windowed above
    history: List[Dict[str, Any]] = []
    best, best_epoch, best_weights, seconds_to_best = -1.0, -1, None, 0.0
    started = time.time()
    for epoch in range(epochs):
        logs = model.fit(dataset, epochs=1, verbose=0).history
        valid = evaluate_last_events(model, *split.valid, max_len=config.max_len,
                                     task=selection_task)
        record = {"epoch": epoch + 1, "seconds": time.time() - started,
                  **{k: float(v[-1]) for k, v in logs.items()},
                  **{f"valid_{k}": v for k, v in valid.items()}}
        history.append(record)
        if on_epoch:
            on_epoch(record)
        if valid["ndcg@10"] > best:
            best, best_epoch = valid["ndcg@10"], epoch + 1
            best_weights = [w.copy() for w in model.get_weights()]
            seconds_to_best = record["seconds"]
        elif epoch + 1 - best_epoch >= patience:
            break
    model.set_weights(best_weights)
    by_task = {task: rank_last_events(model, *split.test, max_len=config.max_len, task=task)
               for task in TASKS}
    return {
        "model": model,
        "history": history,
        "best_epoch": best_epoch,
        "seconds_to_best": seconds_to_best,
        "valid": next(h for h in history if h["epoch"] == best_epoch),
        "selection_task": selection_task,
        "test_ranks": by_task[NEXT_EVENT],
        "test_ranks_by_task": by_task,
    }


def serving_task(config: DSPnetConfig) -> str:
    """The task a model built from `config` serves: in-scene when it reads the target scene and
    the log has two or more real scenes (one scene: in-scene equals next-event)."""
    if config.target_scene_conditioning and config.real_scene_count >= 2:
        return IN_SCENE
    return NEXT_EVENT
