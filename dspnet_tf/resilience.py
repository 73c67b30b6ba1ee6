"""Training that survives being killed, and outputs that are never half-written.

`resilient_callbacks` adds Keras' `BackupAndRestore` (a checkpoint of the model, both optimizers
and the epoch counter after every epoch; a rerun of the same command resumes from it, and it is
deleted when training completes) and `TerminateOnNaN`. `replace_directory_atomically` writes a
folder next to its destination and renames it into place, so a reader (a server polling for
versions, a user) never sees a partial SavedModel; `atomic_write` does the same for one file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from typing import IO, Callable, Iterator, List, Optional

import tensorflow as tf


def has_backup(backup_dir: str) -> bool:
    """True if an interrupted run left a checkpoint to resume from."""
    return tf.io.gfile.exists(backup_dir) and bool(tf.io.gfile.glob(
        os.path.join(backup_dir, "**", "checkpoint")) or tf.io.gfile.glob(
        os.path.join(backup_dir, "checkpoint")))


def resilient_callbacks(backup_dir: str) -> List[tf.keras.callbacks.Callback]:
    """BackupAndRestore (per epoch, deleted on success) and TerminateOnNaN."""
    return [tf.keras.callbacks.BackupAndRestore(backup_dir=backup_dir, save_freq="epoch",
                                                delete_checkpoint=True),
            tf.keras.callbacks.TerminateOnNaN()]


def replace_directory_atomically(target: str, write: Callable[[str], None]) -> str:
    """Calls `write(staging_dir)`, then renames the staging folder to `target`.

    An existing `target` is swapped out only after the new one is complete; if `write` fails,
    `target` is untouched and the staging folder is removed.
    """
    target = os.path.abspath(target)
    parent = os.path.dirname(target)
    os.makedirs(parent, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    staging = os.path.join(parent, f".{os.path.basename(target)}.partial-{token}")
    try:
        write(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = None
    if os.path.exists(target):
        retired = os.path.join(parent, f".{os.path.basename(target)}.old-{token}")
        os.rename(target, retired)
    os.rename(staging, target)
    if retired:
        shutil.rmtree(retired, ignore_errors=True)
    return target


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", encoding: Optional[str] = "utf-8",
                 newline: Optional[str] = None) -> Iterator[IO]:
    """Opens a temporary file next to `path`; when the block ends without error, renames it
    onto `path` (`os.replace`, atomic on one filesystem).

    If the block or the write fails (a full disk, an interrupt), `path` keeps its earlier
    content and the temporary file is removed: a reader never sees a half-written file. The
    temporary name is unique, so two writers of the same path do not share one.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    binary = "b" in mode
    try:
        # "x": a fresh file with the usual permissions (umask), never an existing one.
        with open(tmp, mode.replace("w", "x"), encoding=None if binary else encoding,
                  newline=None if binary else newline) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
