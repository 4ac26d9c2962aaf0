"""Durable training checkpoints, so a retried train task resumes where the last one stopped.

Keras' ``BackupAndRestore`` writes its state to a local folder after every epoch. On a
cluster a retry is a new pod with an empty disk, so that folder alone would make every
retry start from zero. :class:`DurableBackup` mirrors it to durable storage (a local
path or ``gs://``, through ``kfp_ct.components.common.storage``) after every epoch and brings
the newest copy back before training starts.

Layout under the durable folder (one per run: ``<root>/<run id>/train``)::

    epoch-000003/...   the BackupAndRestore folder as it was after epoch 3
    LATEST             "epoch-000003", written only after that copy is complete

A copy is complete before ``LATEST`` names it and the older copy is removed after, so a
task killed in the middle of an upload leaves the previous copy in force. After a
successful training the run's folder is removed.

The durable root is ``checkpoint_root`` when given, else
``<push_destination>/kfp_ct_checkpoints`` (durable by definition, and a folder TF Serving
ignores: only numeric folders are versions).
"""

from __future__ import annotations

import os
import re

from kfp_ct.components.common import storage

CHECKPOINTS_DIR = "kfp_ct_checkpoints"
LATEST = "LATEST"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def durable_location(checkpoint_root: str, push_destination: str, run_id: str) -> str:
    """Where this run's train checkpoints live; "" when there is no durable place to
    name (no root and no destination, or no run id to keep runs apart)."""
    root = checkpoint_root or (storage.join(push_destination, CHECKPOINTS_DIR)
                               if push_destination else "")
    if not root or not run_id:
        return ""
    return storage.join(root, _SAFE.sub("-", run_id).strip("-") or "run", "train")


class DurableBackup:
    """A local BackupAndRestore folder mirrored to ``durable`` after every epoch."""

    def __init__(self, durable: str, local: str):
        self.durable = durable.rstrip("/")
        self.local = local
        self.restored_from = ""

    def restore(self) -> str:
        """Copies the newest complete copy into the (empty) local folder; returns its
        name ("" when there is none)."""
        pointer = storage.join(self.durable, LATEST)
        if not storage.exists(pointer):
            return ""
        name = storage.read_text(pointer).strip()
        storage.remove_tree(self.local)
        storage.download(storage.join(self.durable, name), self.local)
        self.restored_from = name
        return name

    def save(self, epoch: int) -> None:
        """Uploads the local folder as epoch ``epoch`` (1-based), then points LATEST at it."""
        if not os.path.isdir(self.local):
            return
        name = f"epoch-{epoch:06d}"
        previous = ""
        pointer = storage.join(self.durable, LATEST)
        if storage.exists(pointer):
            previous = storage.read_text(pointer).strip()
        storage.upload_tree(self.local, storage.join(self.durable, name), last=("checkpoint",))
        storage.write_text(pointer, name)
        if previous and previous != name:
            storage.remove_tree(storage.join(self.durable, previous))

    def clear(self) -> None:
        """Removes the run's durable folder (after a successful training), and the
        local ``kfp_ct_checkpoints`` folder above it when nothing else is left there."""
        storage.remove_tree(self.durable)
        if storage.is_gcs(self.durable):
            return
        run_dir = os.path.dirname(self.durable)
        for parent in (run_dir, os.path.dirname(run_dir)):
            if parent != run_dir and os.path.basename(parent) != CHECKPOINTS_DIR:
                break  # a checkpoint_root the user named stays
            try:
                os.rmdir(parent)  # only when empty
            except OSError:
                break

    def callback(self):
        """The Keras callback; list it after BackupAndRestore, which writes the folder."""
        import tf_keras as keras

        mirror = self

        class MirrorBackup(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                mirror.save(epoch + 1)
                print(f"[train] checkpoint after epoch {epoch + 1} kept at {mirror.durable}",
                      flush=True)

        return MirrorBackup()
