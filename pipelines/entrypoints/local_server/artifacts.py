"""A run's output artifacts: where kfp.local wrote them, and packed as Argo stores them.

A run of the local endpoint lives in ``<state_dir>/runs/<run_id>/``; its ``job.json``
names the pipeline root, and kfp.local writes each task's outputs into its own run folder
under that root: ``<pipeline_root>/<pipeline>-<timestamp>/<task>/<output name>`` (a file,
or a folder for an artifact written as one) beside ``<task>/executor_output.json``. The
worker records that run folder in ``status.json`` (``run_folder`` when it starts,
``run_dir`` when it ends).

What ``GET /apis/v2beta1/runs/{run_id}/nodes/{node_id}/artifacts/{name}:read`` answers
(``ReadArtifact``): on a cluster the server reads the Argo node's output artifact from
the object store, which Argo keeps as a gzip'd tar of the path (a file as one entry named
by its base name, a folder as that name and everything below it); the answer is
``{"data": <those bytes, base64>}``. :func:`pack` makes the same archive.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Optional

from kfp_ct.pipelines.entrypoints.local_server import worker as worker_mod

EXECUTOR_OUTPUT = "executor_output.json"  # kfp.local's record of a task, not an output


def is_component(name: str) -> bool:
    """Whether ``name`` is one path component (no separator, not ``.`` / ``..``)."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0")


def inside(root: str, path: str) -> Optional[str]:
    """The real path of ``path`` when it is ``root`` or below it, links resolved (so a
    link out of ``root`` is not); else None."""
    real_root, real = os.path.realpath(root), os.path.realpath(path)
    return real if real == real_root or real.startswith(real_root + os.sep) else None


def _read_json(path: str) -> dict:
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pipeline_root(state_dir: str, run_id: str) -> Optional[str]:
    """The pipeline root an endpoint run wrote under (its ``job.json``), or None (not
    started, unknown, or ``run_id`` not one path component)."""
    if not is_component(run_id):
        return None
    root = _read_json(os.path.join(state_dir, "runs", run_id, worker_mod.JOB_FILE)).get(
        "pipeline_root")
    return root if isinstance(root, str) and root else None


def run_folder(state_dir: str, run_id: str) -> Optional[str]:
    """kfp.local's run folder of an endpoint run, or None (not started, or unknown).

    From the run's ``status.json`` (``run_folder``, else ``run_dir``); for an older
    status file without them, the only run folder under the pipeline root of its
    ``job.json``.
    """
    if not is_component(run_id):
        return None
    run_dir = os.path.join(state_dir, "runs", run_id)
    status = _read_json(os.path.join(run_dir, worker_mod.STATUS_FILE))
    for key in ("run_folder", "run_dir"):
        folder = status.get(key)
        if isinstance(folder, str) and folder and os.path.isdir(folder):
            return folder
    root = pipeline_root(state_dir, run_id)
    if root is None or not os.path.isdir(root):
        return None
    folders = [d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
               and d not in ("logs", "tmp")]
    return os.path.join(root, folders[0]) if len(folders) == 1 else None


def artifact_file(state_dir: str, run_id: str, task: str, output: str) -> Optional[str]:
    """The file (or folder) that task ``task`` of run ``run_id`` wrote for its output
    ``output``, or None when there is none (the run or task did not write it, or the
    names are not single path components).

    Args:
        state_dir: The endpoint's state folder.
        run_id: The endpoint's run id.
        task: The task's name in the pipeline (``task_details[i].display_name``).
        output: The output's name (an output artifact of the task's component).
    """
    if not (is_component(task) and is_component(output)) or output == EXECUTOR_OUTPUT:
        return None
    folder = run_folder(state_dir, run_id)
    if folder is None:
        return None
    path = os.path.join(folder, task, output)
    if inside(folder, path) is None:
        return None  # a link out of the run folder
    return path if os.path.exists(path) else None


def pack(path: str) -> bytes:
    """``path`` as Argo archives an output artifact: a gzip'd tar holding it under its
    base name (a folder with everything below it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(path, arcname=os.path.basename(path.rstrip(os.sep)))
    return buffer.getvalue()
