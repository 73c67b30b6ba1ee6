"""A Pusher whose versions appear whole and once: TFX's filesystem push, made crash-safe.

What TFX's own Pusher executor (tfx 1.16, `tfx/components/pusher/executor.py`) does on a
filesystem destination, and why that is not enough for a pipeline that may be killed:

* It copies the model in place, file by file, into `<base>/<unix time>/`, `saved_model.pb`
  last. A poller sees the version folder while it fills; a server that takes `saved_model.pb`
  as "complete" (TF Serving, `serving.model_manager`) can still open it half-written (the copy
  writes the file in place), and a SIGKILL mid-copy leaves a numeric folder without
  `saved_model.pb` (or with a truncated one) for good.
* The version is the wall clock. A run killed after the copy but before ML Metadata recorded
  the Pusher's execution leaves that execution RUNNING; the rerun takes every finished
  component from the cache, runs the Pusher again (it has no successful execution) and pushes
  the same model a second time under a new timestamp.

`AtomicPushExecutor` keeps TFX's blessing check, output artifact and properties (`pushed`,
`pushed_destination`, `pushed_version`) and changes the filesystem push:

1. The model is copied into a hidden staging folder beside the target
   (`<base>/.push-<model key>-<token>`; servers skip names that are not numbers) and renamed
   to `<base>/<version>` in one `os.rename`: on one POSIX filesystem a reader sees no folder or
   the whole folder, whatever moment the process dies.
2. If the newest version under `<base>` already holds exactly this model's files (same paths,
   same bytes), the push is done: the Pusher records that version and copies nothing. This is
   the rerun of a push killed after its rename; a model is pushed once, not once per attempt.
   (Only the newest version counts: re-blessing a model older than what is served pushes it
   again, as a new version, so that it is what gets served.)
3. Staging folders left by a killed push of the same model are removed before the copy, and
   any staging folder older than `STALE_SECONDS` (no push takes a day).
4. The version is the Unix time, as TFX's, but always above the newest version present, so a
   clock stepping back cannot push a version a server would never pick.

Object stores (gs://, s3://) have no atomic folder rename; there the stock in-place copy
(saved_model.pb last) runs after the same "already the newest version" check.

`LatestPushedModelStrategy` is the baseline resolver's side of the same guarantee: the
Evaluator blesses before the Pusher runs, so a run killed in between must not make the rerun's
baseline and warm-start model its own (see its docstring).

The test hook `DSPNET_TEST_PUSHER_PAUSE` (`staged` or `renamed`) stops the push at that point
until the process is killed (tests/reliability/test_pipeline_kill.py); unset, it does nothing.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import os
import shutil
import sys
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from tfx import types
from tfx import v1 as tfx
from tfx.components.pusher import executor as tfx_pusher_executor
from tfx.dsl.components.base import executor_spec
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, proto_utils

STAGING_PREFIX = ".push-"
STALE_SECONDS = 24 * 3600
PAUSE_ENV = "DSPNET_TEST_PUSHER_PAUSE"
PAUSE_POINTS = ("staged", "renamed")


def version_folders(base: str) -> Dict[int, str]:
    """Version -> folder of every numeric folder under `base` (complete or not)."""
    from serving.model_manager import version_number  # pylint: disable=import-outside-toplevel

    if not os.path.isdir(base):
        return {}
    found = {}
    for entry in os.listdir(base):
        number = version_number(entry)
        if number is not None and os.path.isdir(os.path.join(base, entry)):
            found[number] = os.path.join(base, entry)
    return found


def _files(folder: str) -> Dict[str, int]:
    """Relative path -> size of every file under `folder`."""
    sizes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            sizes[os.path.relpath(path, folder)] = os.path.getsize(path)
    return sizes


def same_files(left: str, right: str) -> bool:
    """True if both folders hold the same relative paths with the same bytes."""
    files = _files(left)
    if files != _files(right):  # cheap: paths and sizes first
        return False
    return all(filecmp.cmp(os.path.join(left, f), os.path.join(right, f), shallow=False)
               for f in files)


def model_key(model_path: str) -> str:
    """A short name for one model artifact, used in its staging folders' names."""
    return hashlib.sha256(os.path.abspath(model_path).encode()).hexdigest()[:12]


def remove_stale_staging(base: str, key: str, now: Optional[float] = None) -> List[str]:
    """Removes staging folders of model `key` (a killed push of the model about to be pushed)
    and any staging folder older than `STALE_SECONDS`; returns what it removed."""
    now = time.time() if now is None else now
    removed = []
    for entry in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        if not entry.startswith(STAGING_PREFIX):
            continue
        path = os.path.join(base, entry)
        try:
            old = now - os.stat(path).st_mtime > STALE_SECONDS
        except FileNotFoundError:
            continue
        if entry.startswith(f"{STAGING_PREFIX}{key}-") or old:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _pause_for_tests(point: str) -> None:
    """The kill tests' hook: with DSPNET_TEST_PUSHER_PAUSE=point, say so and wait to be killed."""
    if os.environ.get(PAUSE_ENV) != point:
        return
    print(f"{PAUSE_ENV}: paused after {point}", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


def _is_local(path: str) -> bool:
    return "://" not in path


class AtomicPushExecutor(tfx_pusher_executor.Executor):
    """TFX's Pusher executor with a staged, renamed and idempotent filesystem push."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        """Pushes a blessed model as TFX's Pusher does, staged and renamed on a local
        filesystem, and only once: if the newest version already holds the model's exact files
        (a rerun of a push killed after its rename), that version is recorded as the push.

        Inputs, outputs and properties are TFX's Pusher's (`model`, `model_blessing`;
        `pushed_model` with `pushed`, `pushed_destination`, `pushed_version`).
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        model_push = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.PUSHED_MODEL_KEY])
        if not self.CheckBlessing(input_dict):
            self._MarkNotPushed(model_push)
            return
        model_path = self.GetModelPath(input_dict)
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.PUSH_DESTINATION_KEY],
                                  destination)
        if destination.WhichOneof("destination") != "filesystem":
            raise NotImplementedError(f"AtomicPushExecutor pushes to a filesystem; the push "
                                      f"destination is {destination.WhichOneof('destination')}")
        versioning = destination.filesystem.versioning
        if versioning not in (pusher_pb2.Versioning.AUTO, pusher_pb2.Versioning.UNIX_TIMESTAMP):
            raise NotImplementedError(f"Invalid Versioning {versioning}")
        base = destination.filesystem.base_directory
        pushed = self._already_newest(base, model_path) if _is_local(base) else None
        if pushed is not None:
            logging.info("Model %s is already the newest version %s under %s; nothing copied.",
                         model_path, pushed[1], base)
            serving_path, version = pushed
        elif _is_local(base):
            serving_path, version = self._push_atomically(model_path, base)
        else:
            super().Do(input_dict, output_dict, exec_properties)  # in place, saved_model.pb last
            return
        io_utils.copy_dir(model_path, model_push.uri)  # TFX's archive of what was pushed
        self._MarkPushed(model_push, pushed_destination=serving_path, pushed_version=version)
        logging.info("Model pushed to %s (version %s).", serving_path, version)

    @staticmethod
    def _already_newest(base: str, model_path: str) -> Optional[Tuple[str, str]]:
        versions = version_folders(base)
        if not versions:
            return None
        newest = max(versions)
        path = versions[newest]
        if os.path.isfile(os.path.join(path, "saved_model.pb")) and same_files(model_path, path):
            return path, str(newest)
        return None

    @staticmethod
    def _push_atomically(model_path: str, base: str) -> Tuple[str, str]:
        os.makedirs(base, exist_ok=True)
        key = model_key(model_path)
        for path in remove_stale_staging(base, key):
            logging.info("Removed %s, left by a push that did not finish.", path)
        staging = os.path.join(base, f"{STAGING_PREFIX}{key}-{uuid.uuid4().hex[:8]}")
        try:
            io_utils.copy_dir(model_path, staging)
            _pause_for_tests("staged")
            while True:
                newest = max(version_folders(base), default=0)
                version = str(max(int(time.time()), newest + 1))
                serving_path = os.path.join(base, version)
                try:
                    # Atomic; refuses (ENOTEMPTY/EEXIST) a version another push just made.
                    os.rename(staging, serving_path)
                    break
                except OSError as err:
                    if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _pause_for_tests("renamed")
        return serving_path, version


class LatestPushedModelStrategy(tfx.dsl.experimental.ResolverStrategy):
    """The latest blessed Model whose push ML Metadata recorded, with its ModelBlessing.

    `LatestBlessedModelStrategy` (TFX's) takes the latest blessed model, and the Evaluator
    publishes its blessing before the Pusher runs. A run killed between the two (while the
    Pusher copies, say) leaves its own model blessed, so the rerun's resolver returns that
    model: the Evaluator's baseline and the Trainer's warm-start `base_model` change, both miss
    the cache, the Trainer trains again from the killed run's model and the rerun pushes a
    different model, a second version if the killed push had already renamed its folder. The
    model a baseline or a warm start should come from is the one being served: the latest
    model a Pusher execution that ML Metadata recorded as finished (COMPLETE or CACHED) pushed
    (`pushed` = 1). In an uninterrupted pipeline that is the latest blessed model, as before.

    Same channels as `LatestBlessedModelStrategy` (`model`, `model_blessing`). Kubeflow V2's
    compiler knows only TFX's two built-in strategies, so a pipeline compiled for it keeps
    `LatestBlessedModelStrategy` (`tfx_pipeline.pipeline.create_pipeline`).
    """

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        """{model: [the latest blessed and pushed Model], model_blessing: [its blessing]}, or
        empty lists when no blessed model was pushed yet (a first run: no baseline)."""
        from tfx.types import standard_artifacts  # pylint: disable=import-outside-toplevel

        if any(not artifacts for artifacts in input_dict.values()):
            return {key: [] for key in input_dict}
        model_channel = next(k for k, v in input_dict.items()
                          if isinstance(v[0], standard_artifacts.Model))
        blessing_key = next(k for k, v in input_dict.items()
                            if isinstance(v[0], standard_artifacts.ModelBlessing))
        blessings = {b.get_int_custom_property("current_model_id"): b
                     for b in input_dict[blessing_key] if b.get_int_custom_property("blessed") == 1}
        models = [m for m in input_dict[model_channel] if m.id in blessings]
        pushed = pushed_model_ids(store, [m.id for m in models])
        for model in sorted(models, key=lambda m: m.id, reverse=True):
            if model.id in pushed:
                return {model_channel: [model], blessing_key: [blessings[model.id]]}
        return {model_channel: [], blessing_key: []}


def pushed_model_ids(store, model_ids: List[int]) -> set:
    """The ids among `model_ids` of Models that an execution recorded as finished read and
    output a PushedModel with `pushed` = 1 for (a Pusher's record of a push)."""
    from ml_metadata.proto import metadata_store_pb2  # pylint: disable=import-outside-toplevel

    if not model_ids:
        return set()
    readers: Dict[int, set] = {}  # execution id -> the models it read
    for event in store.get_events_by_artifact_ids(model_ids):
        if event.type == metadata_store_pb2.Event.INPUT:
            readers.setdefault(event.execution_id, set()).add(event.artifact_id)
    finished = {e.id for e in store.get_executions_by_id(list(readers))
                if e.last_known_state in (metadata_store_pb2.Execution.COMPLETE,
                                          metadata_store_pb2.Execution.CACHED)}
    outputs = [e for e in store.get_events_by_execution_ids(list(finished))
               if e.type == metadata_store_pb2.Event.OUTPUT]
    artifacts = {a.id: a for a in store.get_artifacts_by_id([e.artifact_id for e in outputs])}
    type_ids = {a.type_id for a in artifacts.values()}
    pushed_types = {t.id for t in store.get_artifact_types_by_id(list(type_ids))
                    if t.name == "PushedModel"}
    pushed = set()
    for event in outputs:
        artifact = artifacts.get(event.artifact_id)
        if (artifact is not None and artifact.type_id in pushed_types
                and artifact.custom_properties["pushed"].int_value == 1):
            pushed |= readers[event.execution_id]
    return pushed


class AtomicPusher(tfx.components.Pusher):
    """`tfx.components.Pusher` with `AtomicPushExecutor`: same spec, inputs and outputs."""

    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(AtomicPushExecutor)
