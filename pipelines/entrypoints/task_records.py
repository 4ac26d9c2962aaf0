"""What each task of a kfp.local run received and returned, kept beside its outputs.

kfp.local 2.13 keeps a task's inputs only in memory and its outputs in
``executor_output.json`` (containers; an importer's in memory too). The local endpoint
records every run in ML Metadata as the KFP v2 driver and launcher do
(``local_server/metadata.py``), and retries a failed run re-using the outputs of the tasks
that succeeded. Both need, per task, the inputs it was given and the outputs kfp.local
read back from it. While :func:`recording` is active, each task of the run writes
``<task root>/kfp_ct_task.json`` (``TASK_RECORD``), when it starts and again when it ends::

    {"task": "train", "kind": "container" | "importer", "image": "...",
     "start": <epoch s>, "end": <epoch s>, "status": "SUCCESS" | "FAILURE",
     "reused": false,
     "inputs": {"parameters": {name: value}, "artifacts": {name: [ARTIFACT]}},
     "outputs": {"parameters": {name: value}, "artifacts": {name: [ARTIFACT]}}}

    ARTIFACT = {"name", "uri", "schema_title", "schema_version", "metadata"}

The inputs are the arguments kfp.local resolved for the task (upstream outputs, the
pipeline's parameters, constants); the outputs are what kfp.local read back from the
task (``executor_output.json``, output parameter files), so both are what happened.

**Re-use** (``reuse``): a task named there whose record in the same task root says
SUCCESS is not run again: its outputs are read back from the files it left, with
kfp.local's own reader (``executor_output_utils.get_outputs_for_task``), and its record
gets ``"reused": true``. The run must use the same run folder as before
(``reuse_folder``), so every path is the one the task wrote.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Any, Collection, Iterator, Optional

TASK_RECORD = "kfp_ct_task.json"


def _artifact(artifact: Any) -> dict:
    return {"name": getattr(artifact, "name", ""), "uri": getattr(artifact, "uri", ""),
            "schema_title": getattr(artifact, "schema_title", "system.Artifact"),
            "schema_version": getattr(artifact, "schema_version", "0.0.1"),
            "metadata": dict(getattr(artifact, "metadata", None) or {})}


def _is_artifact(value: Any) -> bool:
    return hasattr(value, "schema_title") and hasattr(value, "uri")


def _split(values: Optional[dict]) -> dict:
    """``{"parameters", "artifacts"}`` of kfp.local's name -> value mapping."""
    params, artifacts = {}, {}
    for name, value in (values or {}).items():
        if _is_artifact(value):
            artifacts[name] = [_artifact(value)]
        elif isinstance(value, list) and value and all(_is_artifact(v) for v in value):
            artifacts[name] = [_artifact(v) for v in value]
        else:
            params[name] = value
    return {"parameters": params, "artifacts": artifacts}


def read(task_root: str) -> Optional[dict]:
    """The record of the task whose root is ``task_root``; None when absent or unreadable."""
    try:
        with open(os.path.join(task_root, TASK_RECORD)) as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write(task_root: str, record: dict) -> None:
    os.makedirs(task_root, exist_ok=True)
    path = os.path.join(task_root, TASK_RECORD)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(record, fh, indent=1, default=str)
    os.replace(tmp, path)


@contextlib.contextmanager
def recording(reuse_folder: Optional[str] = None,
              reuse: Collection[str] = ()) -> Iterator[None]:
    """Records every task kfp.local runs in this process (see the module docstring).

    Args:
        reuse_folder: The run folder name (under the pipeline root) of an earlier attempt
            of this run: kfp.local runs in it again instead of a new one.
        reuse: The tasks (kfp.local's task names) whose successful outputs in that
            folder are re-used instead of running them.
    """
    from kfp.local import (executor_input_utils, executor_output_utils, importer_handler,
                           logging_utils, status, task_dispatcher)

    real_task = task_dispatcher.run_single_task_implementation
    real_importer = importer_handler.run_importer
    real_folder = executor_input_utils.get_local_pipeline_resource_name
    reuse = set(reuse)

    def task_root(kw: dict) -> tuple:
        name = executor_input_utils.get_local_task_resource_name(kw["component_name"])
        return name, executor_input_utils.construct_local_task_root(
            pipeline_root=kw["pipeline_root"],
            pipeline_resource_name=kw["pipeline_resource_name"], task_resource_name=name)

    def reused(name: str, root: str, kw: dict, previous: dict) -> tuple:
        with logging_utils.local_logger_context():
            shown = logging_utils.format_task_name(name)
            logging.info(f"Executing task {shown}")
            logging.info(f"[kfp-ct] re-used: task {name} succeeded in the earlier attempt "
                         f"of this run; its outputs in {root} are read back, not remade")
            executor_input = executor_input_utils.construct_executor_input(
                component_spec=kw["component_spec"], arguments=kw["arguments"],
                task_root=root, block_input_artifact=False)
            outputs = executor_output_utils.get_outputs_for_task(
                executor_input=executor_input, component_spec=kw["component_spec"])
            logging.info(f"Task {shown} finished with status "
                         f"{logging_utils.format_status(status.Status.SUCCESS)}")
            logging_utils.print_horizontal_line()
        now = time.time()
        _write(root, dict(previous, reused=True, start=now, end=now,
                          first_start=previous.get("first_start", previous.get("start")),
                          first_end=previous.get("first_end", previous.get("end")),
                          inputs=_split(kw["arguments"]), outputs=_split(outputs)))
        return outputs, status.Status.SUCCESS

    def run_task(*args: Any, **kw: Any) -> tuple:
        if args:  # kfp.local passes keywords; anything else runs unrecorded
            return real_task(*args, **kw)
        name, root = task_root(kw)
        if name in reuse:
            previous = read(root)
            if previous and previous.get("status") == "SUCCESS":
                return reused(name, root, kw, previous)
        container = kw["executor_spec"].container
        record = {"task": name, "kind": "container", "image": container.image,
                  "start": time.time(), "reused": False, "inputs": _split(kw["arguments"])}
        _write(root, record)
        outputs, state = real_task(**kw)
        record.update(end=time.time(), status=state.name, outputs=_split(outputs))
        _write(root, record)
        return outputs, state

    def run_importer(*args: Any, **kw: Any) -> tuple:
        if args:
            return real_importer(*args, **kw)
        name, root = task_root(kw)
        record = {"task": name, "kind": "importer", "image": "", "start": time.time(),
                  "reused": False, "inputs": _split(kw["arguments"])}
        outputs, state = real_importer(**kw)
        record.update(end=time.time(), status=state.name, outputs=_split(outputs))
        _write(root, record)
        return outputs, state

    def folder(pipeline_name: str) -> str:
        return reuse_folder or real_folder(pipeline_name)

    task_dispatcher.run_single_task_implementation = run_task
    importer_handler.run_importer = run_importer
    executor_input_utils.get_local_pipeline_resource_name = folder
    try:
        yield
    finally:
        task_dispatcher.run_single_task_implementation = real_task
        importer_handler.run_importer = real_importer
        executor_input_utils.get_local_pipeline_resource_name = real_folder
