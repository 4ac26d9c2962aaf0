"""The v1beta1 shapes of the local endpoint's records, for the Kubeflow Pipelines UI.

The UI 2.5.0 still calls a few v1beta1 paths (a pipeline with its default version, a
version, a template, a run as ``ApiRunDetail``, a recurring run as ``ApiJob``, an
experiment). The real server answers them from the same rows as v2beta1
(``backend/src/apiserver/server/api_converter.go`` at 2.5.0: ``toApiPipelineV1``,
``toApiPipelineVersionV1``, ``toApiExperimentV1``, ``toApiRunV1`` /
``toApiRunDetailV1``, ``toApiJobV1``); these functions do the same from the stored
v2beta1 models, so there is one state and two views of it.

The JSON is what grpc-gateway 1.16's default marshaller writes (``OrigName``, no
``EmitDefaults``): snake_case names, empty strings / zero numbers / false / empty lists
and enum zero values left out, int64 as strings, enums by name, and every timestamp in
whole seconds (the server keeps ``*InSec``), also a zero one (``1970-01-01T00:00:00Z``,
e.g. ``finished_at`` of a run that has not finished).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

import yaml

EPOCH = "1970-01-01T00:00:00Z"
# model.RuntimeState.ToV1 (v2beta1 state -> the v1beta1 run status)
RUN_STATUS = {"PENDING": "Pending", "PAUSED": "Pending", "RUNNING": "Running",
              "SUCCEEDED": "Succeeded", "SKIPPED": "Skipped", "FAILED": "Failed",
              "CANCELED": "Failed", "CANCELING": "Terminating"}
# v1beta1 ResourceType names by number (a query may give either)
RESOURCE_TYPES = {"0": "UNKNOWN_RESOURCE_TYPE", "1": "EXPERIMENT", "2": "JOB", "3": "PIPELINE",
                  "4": "PIPELINE_VERSION", "5": "NAMESPACE"}
# the real server's model type of a resource type, as its errors name it
MODEL_TYPES = {"EXPERIMENT": "Experiment", "JOB": "Job", "PIPELINE": "pipeline",
               "PIPELINE_VERSION": "PipelineVersion"}


def timestamp(value: Optional[dt.datetime]) -> str:
    """A ``google.protobuf.Timestamp{Seconds: ...}`` as JSON: whole seconds, UTC."""
    if value is None:
        return EPOCH
    utc = value.astimezone(dt.timezone.utc) if value.tzinfo else value
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def message(fields: dict) -> dict:
    """The fields the marshaller writes: proto3 defaults ("", 0, false, [], {} of a
    map, None) left out. Messages meant to show even when empty are added after."""
    return {k: v for k, v in fields.items()
            if v is not None and v != "" and v != [] and v != {} and v is not False
            and not (isinstance(v, int) and not isinstance(v, bool) and v == 0)}


def reference(kind: str, item_id: str, relationship: str) -> dict:
    """One ``ApiResourceReference`` (``key{type, id}``, ``relationship``)."""
    return {"key": message({"type": kind, "id": item_id}), "relationship": relationship}


def spec_yaml(document: Any) -> str:
    """The pipeline spec as YAML text, as the server keeps it (``V2Spec.Bytes``):
    keys sorted, and the platform spec as a second document when there is one."""
    def dump(doc: Any) -> str:
        return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False,
                              allow_unicode=True, width=1 << 30)

    if isinstance(document, dict) and isinstance(document.get("pipeline_spec"), dict):
        text = dump(document["pipeline_spec"])
        if document.get("platform_spec"):
            text += "\n---\n" + dump(document["platform_spec"])
        return text
    return dump(document)


def pipeline_version(version: Any) -> dict:
    """``ApiPipelineVersion`` of a V2beta1PipelineVersion (``toApiPipelineVersionV1``)."""
    url = version.code_source_url or ""
    return message({
        "id": version.pipeline_version_id, "name": version.display_name,
        "created_at": timestamp(version.created_at), "code_source_url": url,
        "package_url": {"pipeline_url": url} if url else None,
        "resource_references": ([reference("PIPELINE", version.pipeline_id, "OWNER")]
                                if version.pipeline_id else []),
        "description": version.description})


def pipeline(item: Any, default_version: Any) -> dict:
    """``ApiPipeline`` of a V2beta1Pipeline with its latest version as the default one
    (``toApiPipelineV1``; a v2 pipeline has no v1 ``parameters``)."""
    default = pipeline_version(default_version) if default_version is not None else None
    url = (default or {}).get("package_url")
    return message({"id": item.pipeline_id, "created_at": timestamp(item.created_at),
                 "name": item.display_name, "description": item.description, "url": url,
                 "default_version": default})


def experiment(item: Any) -> dict:
    """``ApiExperiment`` of a V2beta1Experiment (``toApiExperimentV1``): its namespace
    reference is always there, with an empty id in single-user mode."""
    state = {"AVAILABLE": "STORAGESTATE_AVAILABLE",
             "ARCHIVED": "STORAGESTATE_ARCHIVED"}.get(item.storage_state or "")
    return message({"id": item.experiment_id, "name": item.display_name,
                 "description": item.description, "created_at": timestamp(item.created_at),
                 "resource_references": [reference("NAMESPACE", "", "OWNER")],
                 "storage_state": state})


def _spec(ref: Any, version_name: str, document: Any, config: Any) -> dict:
    """``ApiPipelineSpec``: the pipeline ids and name, the spec as ``pipeline_manifest``
    (so the UI knows a v2 pipeline) and the runtime config."""
    params = dict((config.parameters if config is not None else None) or {})
    root = (config.pipeline_root if config is not None else None) or ""
    runtime = message({"parameters": params, "pipeline_root": root})
    return message({"pipeline_id": ref.pipeline_id if ref is not None else "",
                 "pipeline_name": version_name, "pipeline_manifest": spec_yaml(document),
                 "runtime_config": runtime or None})


def run(item: Any, document: Any, version_name: str = "") -> dict:
    """``ApiRun`` of a V2beta1Run (``Run.ToV1`` then ``toApiRunV1``).

    Args:
        item: The run.
        document: The pipeline spec it runs (``Store.run_spec``).
        version_name: The name of its pipeline version ("" for an inline spec).
    """
    ref = item.pipeline_version_reference
    refs = []
    if item.experiment_id:
        refs.append(reference("EXPERIMENT", item.experiment_id, "OWNER"))
    if item.recurring_run_id:
        refs.append(reference("JOB", item.recurring_run_id, "CREATOR"))
    if ref is not None and ref.pipeline_version_id:
        refs.append(reference("PIPELINE_VERSION", ref.pipeline_version_id, "CREATOR"))
    elif ref is not None and ref.pipeline_id:
        refs.append(reference("PIPELINE", ref.pipeline_id, "CREATOR"))
    return message({
        "id": item.run_id, "name": item.display_name,
        "storage_state": "STORAGESTATE_ARCHIVED" if item.storage_state == "ARCHIVED" else None,
        "description": item.description,
        "pipeline_spec": _spec(ref, version_name, document, item.runtime_config),
        "resource_references": refs, "service_account": item.service_account,
        "created_at": timestamp(item.created_at), "scheduled_at": timestamp(item.scheduled_at),
        "finished_at": timestamp(item.finished_at),
        "status": RUN_STATUS.get(item.state or "", "Unknown")})


def run_detail(item: Any, document: Any, version_name: str = "") -> dict:
    """``ApiRunDetail`` (``toApiRunDetailV1``): the run and its ``pipeline_runtime``.

    On a cluster ``pipeline_runtime`` holds the Argo workflow the run became (its
    ``workflow_manifest`` / ``pipeline_manifest``); no Argo workflow exists here, so it is
    the empty message, what the server writes for a run with neither.
    """
    return {"run": run(item, document, version_name), "pipeline_runtime": {}}


def job(item: Any, document: Any, version_name: str = "") -> dict:
    """``ApiJob`` of a V2beta1RecurringRun (``Job.ToV1`` then ``toApiJobV1``)."""
    ref = item.pipeline_version_reference
    refs = []
    if item.experiment_id:
        refs.append(reference("EXPERIMENT", item.experiment_id, "OWNER"))
    if ref is not None and ref.pipeline_id:
        refs.append(reference("PIPELINE", ref.pipeline_id, "CREATOR"))
    if ref is not None and ref.pipeline_version_id:
        refs.append(reference("PIPELINE_VERSION", ref.pipeline_version_id, "CREATOR"))
    def window(schedule: Any) -> dict:
        return {"start_time": timestamp(schedule.start_time) if schedule.start_time else None,
                "end_time": timestamp(schedule.end_time) if schedule.end_time else None}

    trigger = None
    if item.trigger is not None and item.trigger.cron_schedule is not None:
        cron = item.trigger.cron_schedule
        trigger = {"cron_schedule": message({**window(cron), "cron": cron.cron})}
    elif item.trigger is not None and item.trigger.periodic_schedule is not None:
        periodic = item.trigger.periodic_schedule
        trigger = {"periodic_schedule": message({
            **window(periodic),
            "interval_second": str(int(periodic.interval_second or 0)) or None})}
    status = item.status if item.status in ("ENABLED", "DISABLED") else "STATUS_UNSPECIFIED"
    concurrency = int(item.max_concurrency or 0)
    return message({
        "id": item.recurring_run_id, "name": item.display_name,
        "description": item.description,
        "pipeline_spec": _spec(ref, version_name, document, item.runtime_config),
        "resource_references": refs, "service_account": item.service_account,
        "max_concurrency": str(concurrency) if concurrency else None, "trigger": trigger,
        "created_at": timestamp(item.created_at), "updated_at": timestamp(item.updated_at),
        "status": status, "enabled": item.status == "ENABLED",
        "no_catchup": bool(item.no_catchup)})
