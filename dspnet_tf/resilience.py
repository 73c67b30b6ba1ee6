"""Training that survives being killed, and outputs that are never half-written.

`resilient_callbacks` adds Keras' `BackupAndRestore` (a checkpoint of the model, both optimizers
and the epoch counter after every epoch; a rerun of the same command resumes from it, and it is
deleted when training completes) and `TerminateOnNaN`. `replace_directory_atomically` writes a
folder next to its destination and renames it into place, so a reader (a server polling for
versions, a user) never sees a partial SavedModel.
"""

from __future__ import annotations

import os
import shutil
import uuid
from typing import Callable, List

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
