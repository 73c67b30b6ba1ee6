"""Which versions of a model are served: polling the base path, loading, refusing, unloading.

TF Serving's file-system source in a few lines: `<base_path>/<integer version>/saved_model.pb`
marks a complete version (the Pusher writes saved_model.pb last). The manager polls the base path,
loads the versions its policy wants in a background thread, warms each one up with a request
before it takes traffic, and swaps it in atomically, so requests in flight finish on the version
they started with and no request is dropped. A version that fails to load or to answer the
warm-up (e.g. corrupt files) is refused, reported in the status and the log, and the versions
already serving keep serving; it is retried only when its files change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import grpc

from serving.errors import ServingError, without_paths

LOG = logging.getLogger("dspnet.serving")

# ModelVersionStatus.State names, as TF Serving reports them.
LOADING, AVAILABLE, END = "LOADING", "AVAILABLE", "END"


# int64, as TF Serving's version numbers are; a larger folder name is not a version.
_MAX_VERSION = 2 ** 63 - 1
_warned_names: set = set()


def version_number(entry: str) -> Optional[int]:
    """The version a folder name stands for, or None.

    Only canonical decimal numbers in int64 count: `str.isdigit` also accepts "²" (and `int`
    then fails), "01" and "1" would be two folders for one version, and a number above int64
    cannot travel in `model_spec.version`.
    """
    if not (entry.isascii() and entry.isdigit()) or (len(entry) > 1 and entry[0] == "0"):
        return None
    number = int(entry)
    return number if number <= _MAX_VERSION else None


def model_versions(base_path: str) -> Dict[int, str]:
    """Version -> folder of each complete version (`<base>/<integer>/saved_model.pb`) under a
    model base path (TF Serving's layout, what the Pusher writes); empty if there is none.
    Folders whose names are not version numbers are skipped (with one warning each)."""
    found = {}
    try:
        entries = os.listdir(base_path)
    except FileNotFoundError:
        return found
    for entry in entries:
        path = os.path.join(base_path, entry)
        number = version_number(entry)
        if number is None:
            if entry[:1].isdigit() and os.path.isdir(path) and path not in _warned_names:
                _warned_names.add(path)
                LOG.warning("%s: not a version folder name (a decimal number without leading "
                            "zeros, at most %d); skipped", path, _MAX_VERSION)
            continue
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            found[number] = path
    return found


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's model_version_policy: `latest` N versions, `all`, or `specific` versions.

    Parsed from "latest", "latest:2", "all" or "specific:1,3".
    """

    kind: str = "latest"
    count: int = 1
    versions: Tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "VersionPolicy":
        """Parses "latest", "latest:N", "all" or "specific:V1,V2"; else raises ValueError."""
        kind, _, rest = text.strip().partition(":")
        try:
            if kind == "latest":
                count = int(rest) if rest else 1
                if count < 1:
                    raise ValueError
                return cls("latest", count=count)
            if kind == "all" and not rest:
                return cls("all")
            if kind == "specific" and rest:
                return cls("specific", versions=tuple(sorted(int(v) for v in rest.split(","))))
        except ValueError:
            pass
        raise ValueError(f"version policy {text!r}: expected latest, latest:N, all or "
                         "specific:V1,V2")

    def select(self, versions: Sequence[int]) -> List[int]:
        """The versions this policy serves out of those on disk, newest first."""
        ordered = sorted(versions, reverse=True)
        if self.kind == "latest":
            return ordered[: self.count]
        if self.kind == "all":
            return ordered
        return [v for v in ordered if v in self.versions]


@dataclasses.dataclass
class LoadedVersion:
    """A loaded SavedModel version: its callable signatures and their SignatureDefs."""

    version: int
    path: str
    saved_model: object
    signature_defs: Mapping[str, object]  # name -> tensorflow.core.protobuf SignatureDef

    def signature(self, name: str):
        """The callable concrete function of the SavedModel signature `name`."""
        return self.saved_model.signatures[name]


@dataclasses.dataclass
class VersionStatus:
    version: int
    state: str
    error_code: grpc.StatusCode = grpc.StatusCode.OK
    error_message: str = ""


def _read_signature_defs(path: str) -> Mapping[str, object]:
    # The SignatureDefs exactly as written, for GetModelMetadata and input validation.
    from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=import-outside-toplevel

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    if not proto.meta_graphs:
        raise ValueError("saved_model.pb has no MetaGraph")
    return dict(proto.meta_graphs[0].signature_def)


def _fingerprint(path: str) -> Tuple[Tuple[str, int, int, int, int], ...]:
    """Changes when a version's files change, so a refused version is retried then.

    Per file: name, size, mtime, ctime and inode. A file replaced by rename gets a new inode,
    and one rewritten in place gets a new ctime even if its size and mtime are set back.
    """
    entries = []
    for root, _, files in os.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                stat = os.stat(full)
            except FileNotFoundError:  # removed while we walk: the next poll sees the rest
                continue
            entries.append((os.path.relpath(full, path), stat.st_size, stat.st_mtime_ns,
                            stat.st_ctime_ns, stat.st_ino))
    return tuple(sorted(entries))


def _warm_up(loaded: LoadedVersion) -> None:
    """One real request per known signature before the version takes traffic.

    It runs the tracing and table initialisation up front (the first request would otherwise be
    slow) and proves the variables load: corrupt files fail here, not on a client's request.
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    signatures = loaded.saved_model.signatures
    if "serving_default" in signatures:
        inputs = loaded.signature_defs["serving_default"].inputs
        if list(inputs) == ["examples"]:
            signatures["serving_default"](examples=tf.constant([b""]))
    if "predict_raw" in signatures:
        signatures["predict_raw"](item_history=tf.constant([[""]]),
                                  scene_history=tf.constant([[""]]))


class ModelManager:
    """Serves the versions of one model found under a base path.

    Args:
      name: the model name clients ask for (`model_spec.name`).
      base_path: folder of integer version subfolders.
      policy: which versions to serve (default: the newest).
      poll_seconds: how often to look for new versions (0: only when `poll()` is called).
      version_labels: label -> version, for `model_spec.version_label`.
      metrics: a `serving.monitoring.ServingMetrics` to count loads in, or None.
    """

    def __init__(self, name: str, base_path: str, policy: Optional[VersionPolicy] = None,
                 poll_seconds: float = 2.0,
                 version_labels: Optional[Mapping[str, int]] = None, metrics=None) -> None:
        self.metrics = metrics  # a serving.monitoring.ServingMetrics, or None
        self.name = name
        self.base_path = os.path.abspath(base_path)
        self.policy = policy or VersionPolicy()
        self.poll_seconds = poll_seconds
        self.version_labels = dict(version_labels or {})
        self._loaded: Dict[int, LoadedVersion] = {}
        self._status: Dict[int, VersionStatus] = {}
        self._refused: Dict[int, tuple] = {}  # version -> fingerprint of the refused files
        self._lock = threading.Lock()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # -- discovery and loading ------------------------------------------------------------
    def _complete_versions(self) -> Dict[int, str]:
        return model_versions(self.base_path)

    def poll(self) -> None:
        """One pass: load wanted new versions, then unload versions no longer wanted."""
        with self._poll_lock:
            found = self._complete_versions()
            for version, path in list(found.items()):
                refused_as = self._refused.get(version)
                if refused_as is not None:
                    if refused_as == _fingerprint(path):
                        del found[version]  # still the refused files: not a candidate
                    else:
                        del self._refused[version]
            # A refused version drops out of the candidates, so the policy falls back to the
            # next one (repeat until every wanted version loaded or was refused).
            while True:
                wanted = self.policy.select([v for v in found if v not in self._refused])
                to_load = sorted(set(wanted) - set(self._loaded))
                if not to_load:
                    break
                for version in to_load:
                    self._load(version, found[version])
            for version in sorted(set(self._loaded) - set(wanted)):
                with self._lock:
                    self._loaded.pop(version)
                    self._status[version] = VersionStatus(version, END)
                LOG.info("model %s: unloaded version %d", self.name, version)

    def _load(self, version: int, path: str) -> None:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel

        with self._lock:
            self._status[version] = VersionStatus(version, LOADING)
        started = time.time()
        # Taken before loading: files that change while we load (a copy finishing) then
        # differ from what was refused, and the version is retried.
        fingerprint = _fingerprint(path)
        try:
            _load_custom_ops(path)
            loaded = LoadedVersion(version, path, tf.saved_model.load(path),
                                   _read_signature_defs(path))
            _warm_up(loaded)
        except Exception as err:  # pylint: disable=broad-except
            # Anything a broken version throws (DataLossError, NotFoundError, a parse error).
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            self._refused[version] = fingerprint
            if self.metrics is not None:
                self.metrics.load_attempt_count.labels(path, "failure").inc()
            with self._lock:  # the status goes to clients: no server paths in it
                self._status[version] = VersionStatus(
                    version, END, grpc.StatusCode.DATA_LOSS,
                    f"version {version} refused: {type(err).__name__}: "
                    f"{without_paths(first_line)}")
            LOG.error("model %s: refused version %d at %s (%s: %s); still serving %s",
                      self.name, version, path, type(err).__name__, first_line,
                      sorted(self._loaded) or "nothing")
            return
        if self.metrics is not None:
            self.metrics.load_attempt_count.labels(path, "success").inc()
            self.metrics.load_latency.labels(path).observe((time.time() - started) * 1e6)
        with self._lock:
            self._loaded[version] = loaded
            self._status[version] = VersionStatus(version, AVAILABLE)
        LOG.info("model %s: serving version %d (loaded and warmed up in %.1f s)", self.name,
                 version, time.time() - started)

    def start(self) -> None:
        """Loads what is there now, then keeps polling in a daemon thread."""
        self.poll()
        if self.poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="version-poller",
                                            daemon=True)
            self._thread.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # pylint: disable=broad-except
                LOG.exception("model %s: polling %s failed; will retry", self.name,
                              self.base_path)

    def stop(self) -> None:
        """Stops the polling thread (waits up to 30 s for a poll in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # -- lookups for requests ---------------------------------------------------------------
    def resolve(self, name: str, version: Optional[int] = None,
                label: Optional[str] = None) -> LoadedVersion:
        """The version a request asks for, or NOT_FOUND as TF Serving reports it."""
        if name != self.name:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: model {name!r} "
                               f"(this server serves {self.name!r})")
        if label:
            if label not in self.version_labels:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Unrecognized servable version label: {label}")
            version = self.version_labels[label]
        with self._lock:
            loaded = dict(self._loaded)
        if version is None:
            if not loaded:
                raise ServingError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Latest({name}); no version "
                                   "of it is loaded yet")
            return loaded[max(loaded)]
        if version not in loaded:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Specific({name}, {version}); "
                               f"serving versions {sorted(loaded)}")
        return loaded[version]

    def statuses(self, name: str, version: Optional[int] = None) -> List[VersionStatus]:
        """Status of every version seen (or of one), newest first; NOT_FOUND if there is none."""
        if name != self.name:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of "
                                                          f"model {name}")
        with self._lock:
            statuses = [self._status[v] for v in sorted(self._status, reverse=True)]
        if version is not None:
            statuses = [s for s in statuses if s.version == version]
        if not statuses:
            raise ServingError(grpc.StatusCode.NOT_FOUND,
                               f"Could not find version {version} of model {name}"
                               if version is not None else
                               f"Could not find any versions of model {name}")
        return statuses

    @property
    def serving_versions(self) -> List[int]:
        """The versions loaded and answering requests, in ascending order."""
        with self._lock:
            return sorted(self._loaded)


def _load_custom_ops(path: str) -> None:
    """Registers the custom TensorFlow ops an export needs before it can load.

    An export with a ScaNN index (`retrieval="scann"`, said in its dspnet metadata) uses
    scann's ops, which exist only once `scann` is imported; without them the load fails with
    an opaque "Op type not registered". Exports without metadata need nothing.
    """
    from dspnet_tf.export import read_export_metadata  # pylint: disable=import-outside-toplevel
    from dspnet_tf.retrieval import import_scann  # pylint: disable=import-outside-toplevel

    if read_export_metadata(path).get("retrieval") == "scann":
        import_scann()
