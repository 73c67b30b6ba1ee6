"""Server-side request batching with TF Serving's `BatchingParameters` semantics.

Concurrent requests for the same model version and signature (and, unless inputs may be padded,
the same inner shapes) wait in one queue; batch threads take them out as one batch, call the
model once on the concatenated rows and hand each request its own slice of the outputs. That is
what `tensorflow_model_server --enable_batching` does (its shared batch scheduler), and what
lets a server on two cores answer many concurrent clients: one model call on 32 rows costs far
less than 32 calls on one.

The knobs mean what they mean in TF Serving:
  * max_batch_size: rows per model call at most; a request larger than it runs alone.
  * batch_timeout_micros: how long the oldest request of an open batch may wait for others
    (0: a batch is whatever is queued when a thread is free).
  * max_enqueued_batches: the queue's bound, in batches; a request that would exceed it is
    refused at once with UNAVAILABLE, never queued without bound.
  * num_batch_threads: model calls that run at the same time.
  * allowed_batch_sizes: a batch is padded (repeating its first row) up to the next allowed
    size, so the model sees few distinct shapes; the padding is dropped from the answers.
  * pad_variable_length_inputs: requests whose inner dimensions differ (e.g. `predict_raw`
    histories of different lengths) share a batch, padded with "" (strings) or 0 at the end.

Written here because TF Serving's batching is C++ inside its binary; the Python batching in
TensorFlow (`tf.nondifferentiable_batch_function`) batches inside one graph, not across RPCs.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Deque, Dict, Iterable, List, Mapping, Optional, Tuple

import grpc
import numpy as np

from serving.errors import ServingError
from serving.model_manager import LoadedVersion

LOG = logging.getLogger("dspnet.serving")
RunModel = Callable[[LoadedVersion, str, Mapping[str, np.ndarray]], Dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """`BatchingParameters`, with TF Serving's defaults where a field is not set.

    Attributes: as the module docstring describes them.
    """

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 100
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: Tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    def __post_init__(self) -> None:
        problems = [f"{name} must be >= 1, got {getattr(self, name)}"
                    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads")
                    if getattr(self, name) < 1]
        if self.batch_timeout_micros < 0:
            problems.append(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = list(self.allowed_batch_sizes)
        if sizes and (sizes != sorted(set(sizes)) or sizes[0] < 1):
            problems.append(f"allowed_batch_sizes {sizes} must be positive and strictly "
                            "increasing")
        if sizes and sizes[-1] != self.max_batch_size:
            problems.append(f"the last allowed batch size {sizes[-1]} must equal "
                            f"max_batch_size {self.max_batch_size}")
        if problems:
            raise ValueError("batching parameters: " + "; ".join(problems))

    @classmethod
    def from_proto(cls, params) -> "BatchingOptions":
        """From a parsed `tensorflow.serving.BatchingParameters` message."""
        defaults = cls()
        values = {}
        for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                     "num_batch_threads"):
            values[name] = (getattr(params, name).value if params.HasField(name)
                            else getattr(defaults, name))
        return cls(allowed_batch_sizes=tuple(params.allowed_batch_sizes),
                   pad_variable_length_inputs=params.pad_variable_length_inputs, **values)

    @classmethod
    def read(cls, path: str) -> "BatchingOptions":
        """From a `--batching_parameters_file` (text proto); ValueError names the file."""
        from google.protobuf import text_format  # pylint: disable=import-outside-toplevel

        from serving.deploy_configs import (  # pylint: disable=import-outside-toplevel
            read_batching_parameters,
        )

        try:
            return cls.from_proto(read_batching_parameters(path))
        except (text_format.ParseError, ValueError) as err:
            raise ValueError(f"{path}: {err}") from None


class _Task:
    """One request waiting in a queue."""

    __slots__ = ("inputs", "rows", "enqueued", "done", "outputs", "error")

    def __init__(self, inputs: Mapping[str, np.ndarray], rows: int) -> None:
        self.inputs = inputs
        self.rows = rows
        self.enqueued = time.monotonic()
        self.done = threading.Event()
        self.outputs: Optional[Dict[str, np.ndarray]] = None
        self.error: Optional[BaseException] = None


class _Queue:
    """The requests of one (version, signature, shape) batching key."""

    def __init__(self, loaded: LoadedVersion, signature_name: str) -> None:
        self.loaded = loaded
        self.signature_name = signature_name
        self.tasks: Deque[_Task] = collections.deque()
        self.rows = 0


def _pad_to(array: np.ndarray, trailing: Tuple[int, ...]) -> np.ndarray:
    if array.shape[1:] == trailing:
        return array
    fill = b"" if array.dtype == object else 0
    padded = np.full((array.shape[0],) + trailing, fill, dtype=array.dtype)
    padded[tuple(slice(0, size) for size in array.shape)] = array
    return padded


class Batcher:
    """Merges concurrent requests into model calls (see the module docstring).

    Args:
      options: the batching parameters.
      run_model: calls one signature of a loaded version on numpy inputs -> all its outputs.
      metrics: a `serving.monitoring.ServingMetrics` to record batch sizes, padding and queueing
        latency in, or None.
      model_name: the label of those metrics.
    """

    def __init__(self, options: BatchingOptions, run_model: RunModel, metrics=None,
                 model_name: str = "") -> None:
        self.options = options
        self._run_model = run_model
        self._metrics = metrics
        self._model_name = model_name
        self._queues: Dict[tuple, _Queue] = {}
        self._cond = threading.Condition()
        self._stopping = False
        self._threads = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for thread in self._threads:
            thread.start()

    # -- requests --------------------------------------------------------------------------
    def _key(self, loaded: LoadedVersion, signature_name: str,
             inputs: Mapping[str, np.ndarray]) -> tuple:
        shapes = tuple(sorted(
            (name, str(value.dtype), value.ndim if self.options.pad_variable_length_inputs
             else value.shape[1:]) for name, value in inputs.items()))
        return (loaded.version, id(loaded), signature_name, shapes)

    def run(self, loaded: LoadedVersion, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_filter: Iterable[str] = ()) -> Dict[str, np.ndarray]:
        """The outputs of one request, computed in a batch with whatever else is queued."""
        rows = {value.shape[0] if value.ndim else 1 for value in inputs.values()}
        if len(rows) != 1:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"inputs have different batch sizes {sorted(rows)}; a batched "
                               "signature needs one")
        count = rows.pop()
        if count == 0 or count > self.options.max_batch_size or any(
                value.ndim == 0 for value in inputs.values()):
            outputs = self._run_model(loaded, signature_name, inputs)  # nothing to merge with
        else:
            outputs = self._enqueue(loaded, signature_name, inputs, count)
        wanted = list(output_filter) or list(outputs)
        return {name: outputs[name] for name in wanted}

    def _enqueue(self, loaded: LoadedVersion, signature_name: str,
                 inputs: Mapping[str, np.ndarray], count: int) -> Dict[str, np.ndarray]:
        task = _Task(inputs, count)
        key = self._key(loaded, signature_name, inputs)
        limit = self.options.max_enqueued_batches * self.options.max_batch_size
        with self._cond:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(loaded, signature_name)
            if queue.rows + count > limit:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the batch queue of model {self._model_name!r} version {loaded.version} "
                    f"signature {signature_name!r} is full ({self.options.max_enqueued_batches} "
                    "batches enqueued); retry later")
            queue.tasks.append(task)
            queue.rows += count
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    # -- batch threads ---------------------------------------------------------------------
    def _ready(self, now: float) -> Tuple[Optional[tuple], float]:
        """(a key with a batch to run now, or None; seconds until the next one may be)."""
        # Shutting down: whatever is queued runs now, without waiting for company.
        timeout = 0.0 if self._stopping else self.options.batch_timeout_micros / 1e6
        wait = 3600.0
        oldest_key, oldest = None, None
        for key, queue in self._queues.items():
            if not queue.tasks:
                continue
            first = queue.tasks[0].enqueued
            if queue.rows >= self.options.max_batch_size or now - first >= timeout:
                if oldest is None or first < oldest:
                    oldest_key, oldest = key, first
            else:
                wait = min(wait, first + timeout - now)
        return oldest_key, max(wait, 0.0)

    def _take(self, key: tuple) -> Tuple[_Queue, List[_Task]]:
        queue = self._queues[key]
        tasks, rows = [], 0
        while queue.tasks and rows + queue.tasks[0].rows <= self.options.max_batch_size:
            task = queue.tasks.popleft()
            tasks.append(task)
            rows += task.rows
        queue.rows -= rows
        if not queue.tasks:
            del self._queues[key]  # keys of unloaded versions do not pile up
        return queue, tasks

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping and not self._queues:
                        return
                    key, wait = self._ready(time.monotonic())
                    if key is not None:
                        queue, tasks = self._take(key)
                        break
                    self._cond.wait(timeout=wait)
                if self._queues:
                    self._cond.notify()  # another thread may take the next batch
            self._run_batch(queue, tasks)

    def _run_batch(self, queue: _Queue, tasks: List[_Task]) -> None:
        started = time.monotonic()
        names = list(tasks[0].inputs)
        try:
            merged = {}
            for name in names:
                parts = [task.inputs[name] for task in tasks]
                if self.options.pad_variable_length_inputs and parts[0].ndim > 1:
                    trailing = tuple(max(part.shape[axis] for part in parts)
                                     for axis in range(1, parts[0].ndim))
                    parts = [_pad_to(part, trailing) for part in parts]
                merged[name] = np.concatenate(parts) if len(parts) > 1 else parts[0]
            rows = sum(task.rows for task in tasks)
            target = next((size for size in self.options.allowed_batch_sizes if size >= rows),
                          rows)
            if target > rows:
                merged = {name: np.concatenate([value, np.repeat(value[:1], target - rows, 0)])
                          for name, value in merged.items()}
            if self._metrics is not None:
                labels = (self._model_name, queue.signature_name)
                self._metrics.batch_size.labels(*labels).observe(target)
                self._metrics.padding_size.labels(*labels).observe(target - rows)
                for task in tasks:
                    self._metrics.queuing_latency.labels(*labels).observe(
                        (started - task.enqueued) * 1e6)
            outputs = self._run_model(queue.loaded, queue.signature_name, merged)
            offset = 0
            for task in tasks:
                task.outputs = {name: value[offset:offset + task.rows]
                                for name, value in outputs.items()}
                offset += task.rows
        except BaseException as err:  # pylint: disable=broad-except
            # A batch fails as a whole (e.g. one malformed Example): each request then runs
            # alone, so only the bad one gets the error and the others their answers.
            if len(tasks) > 1 and isinstance(err, ServingError):
                for task in tasks:
                    try:
                        task.outputs = self._run_model(queue.loaded, queue.signature_name,
                                                       task.inputs)
                    except BaseException as single:  # pylint: disable=broad-except
                        task.error = single
            else:
                for task in tasks:
                    task.error = err
        finally:
            for task in tasks:
                task.done.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Refuses new requests, finishes the queued ones, stops the batch threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def queued_rows(self) -> int:
        """Rows waiting in every queue now (0 when idle; the overload test reads it)."""
        with self._cond:
            return sum(queue.rows for queue in self._queues.values())
