"""The local endpoint's ML Metadata store: every run recorded as the KFP v2 backend does.

The official Kubeflow Pipelines UI reads a v2 run's task states, inputs, outputs and
artifacts from ML Metadata (``ml_metadata.MetadataStoreService`` over gRPC-web), not from
the run's ``task_details``. This module keeps a real MLMD store (``ml-metadata`` 1.16.0,
its embedded SQLite store, ``<state>/mlmd.sqlite``) and writes into it what KFP backend
2.5.0's driver and launcher write (``backend/src/v2/metadata/client.go``, read there):

* context ``system.Pipeline`` named after the pipeline, and ``system.PipelineRun`` named
  the run id (custom properties ``namespace``, ``resource_name``, ``pipeline_root``,
  ``store_session_info``), the run's context a child of the pipeline's;
* one ``system.DAGExecution`` for the run (name ``run/<run id>``, ``task_name`` "",
  ``inputs`` the run's parameters, ``total_dag_tasks``) and one per sub-DAG task (e.g.
  ``dsl.ExitHandler``'s group), with ``parent_dag_id``;
* one ``system.ContainerExecution`` (``system.ImporterExecution`` for an importer) per
  task that started, with ``display_name``, ``task_name``, ``parent_dag_id``,
  ``pod_name`` (here the task's name: the endpoint serves its log under it), ``pod_uid``,
  ``namespace``, ``image``, ``inputs`` (the parameters it was given) and, once it ended,
  ``outputs`` (its output parameters); its ``last_known_state`` RUNNING, COMPLETE, FAILED
  or CANCELED;
* its output artifacts (type = the output's schema title, e.g. ``system.Model``; ``uri``;
  the artifact's metadata as custom properties, as the launcher's ``toMLMDArtifact``
  converts them; ``display_name`` the output's name; state LIVE) with an OUTPUT event
  whose path is the output's name, and an INPUT event, named as the task's input, for
  every artifact it read.

Everything is taken from what happened: the worker's ``status.json`` (which tasks
started and ended, and how) and each task's record (``task_records.TASK_RECORD``: the
inputs kfp.local gave it and the outputs it read back). The server process is the only
writer (:meth:`Metadata.record`, from the executor's thread, as each task starts and
ends); the gRPC-web service (:meth:`Metadata.call`) only reads, under the same lock.

Artifact URIs: an artifact under a run's pipeline root is recorded at the URL the
endpoint serves it from (``http://127.0.0.1:<port>/artifacts/runs/<run id>/<path>``), so
that the UI's server fetches it through its ``http`` artifact source; anything else
(``gs://``, an imported local file) keeps its own URI.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any, Callable, Iterable, Mapping, Optional

from kfp_ct.pipelines.entrypoints import task_records

STORE_FILE = "mlmd.sqlite"
RUN_CONTEXT = "system.PipelineRun"
PIPELINE_CONTEXT = "system.Pipeline"
DAG_EXECUTION = "system.DAGExecution"
CONTAINER_EXECUTION = "system.ContainerExecution"
IMPORTER_EXECUTION = "system.ImporterExecution"
#: The worker's task states -> MLMD's Execution.State names.
EXECUTION_STATE = {"RUNNING": "RUNNING", "SUCCEEDED": "COMPLETE", "FAILED": "FAILED",
                   "CANCELED": "CANCELED", "PENDING": "NEW", "SKIPPED": "CANCELED"}
#: The MetadataStoreService methods served (reads only: the server is the one writer).
READ_PREFIXES = ("Get",)


def _struct_value(value: Any, target: Any) -> None:
    """Sets MLMD ``Value`` ``target`` from a JSON value as the launcher converts a
    ``structpb.Value`` (``StructValueToMLMDValue``): strings, numbers as doubles, bools
    as ints, a list as the struct ``{"list": [...]}`` and an object as ``{"struct": {...}}``
    (the UI reads a confusion matrix there); null, which the launcher refuses, as ""."""
    if isinstance(value, bool):
        target.int_value = int(value)
    elif isinstance(value, (int, float)):
        target.double_value = float(value)
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, (list, dict)):  # wrapped as the launcher wraps them
        _set_struct(target, {"list" if isinstance(value, list) else "struct": value})
    elif value is None:
        target.string_value = ""
    else:
        target.string_value = str(value)


def _jsonable(values: Mapping[str, Any]) -> dict:
    return json.loads(json.dumps(dict(values), default=str))


def _set_struct(target: Any, values: Mapping[str, Any]) -> None:
    """Sets MLMD ``Value`` ``target`` to a struct, an empty one included: a ``Value`` with
    no field of its oneof set makes the C++ store abort the process (a CHECK failure)."""
    target.struct_value.SetInParent()
    target.struct_value.update(_jsonable(values))


def _complete(message: Any) -> Any:
    """Gives every custom property of ``message`` a value (see _set_struct)."""
    for value in message.custom_properties.values():
        if value.WhichOneof("value") is None:
            value.string_value = ""
    return message


class Metadata:
    """One MLMD store (SQLite) and the recording of the endpoint's runs into it.

    Args:
        state_dir: The endpoint's state folder; the store is ``<state_dir>/mlmd.sqlite``.
        artifact_uri: Maps ``(run_id, run's pipeline root, local path)`` to the URI to
            record (the endpoint's artifact URL); the default keeps the path.
    """

    def __init__(self, state_dir: str,
                 artifact_uri: Optional[Callable[[str, str, str], str]] = None) -> None:
        from ml_metadata.metadata_store import metadata_store
        from ml_metadata.proto import metadata_store_pb2

        self.path = os.path.join(os.path.abspath(state_dir), STORE_FILE)
        config = metadata_store_pb2.ConnectionConfig()
        config.sqlite.filename_uri = self.path
        config.sqlite.connection_mode = \
            metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self._pb = metadata_store_pb2
        self.store = metadata_store.MetadataStore(config)
        self.lock = threading.Lock()
        self.artifact_uri = artifact_uri or (lambda run_id, root, path: path)
        self._types: dict = {}

    # ------------------------------------------------------------------ types

    def _type_id(self, kind: str, name: str) -> int:
        key = (kind, name)
        if key not in self._types:
            pb = self._pb
            if kind == "execution":
                self._types[key] = self.store.put_execution_type(pb.ExecutionType(name=name))
            elif kind == "context":
                self._types[key] = self.store.put_context_type(pb.ContextType(name=name))
            else:
                self._types[key] = self.store.put_artifact_type(pb.ArtifactType(name=name))
        return self._types[key]

    # --------------------------------------------------------------- contexts

    def _context(self, type_name: str, name: str, properties: Mapping[str, str]) -> Any:
        found = self.store.get_context_by_type_and_name(type_name, name)
        if found is not None:
            return found
        context = self._pb.Context(type_id=self._type_id("context", type_name), name=name)
        for key, value in properties.items():
            context.custom_properties[key].string_value = value
        [context.id] = self.store.put_contexts([context])
        return context

    def run_context(self, run_id: str) -> Any:
        """The ``system.PipelineRun`` context of a run, or None."""
        with self.lock:
            return self.store.get_context_by_type_and_name(RUN_CONTEXT, run_id)

    # ----------------------------------------------------------------- record

    def record(self, run_id: str, spec: Mapping[str, Any], parameters: Mapping[str, Any],
               pipeline_root: str, run_folder: str, run_state: str,
               tasks: Iterable[Mapping[str, Any]]) -> None:
        """Brings the store up to date with one run (called again at every change).

        Args:
            run_id: The endpoint's run id (the run context's name).
            spec: The run's compiled pipeline (a PipelineSpec dict, or
                ``{"pipeline_spec", "platform_spec"}``).
            parameters: The run's runtime parameters.
            pipeline_root: The run's pipeline root (a local folder).
            run_folder: kfp.local's folder of the run under the root ("" before it
                is known).
            run_state: The run's state (RUNNING, SUCCEEDED, FAILED, CANCELED).
            tasks: The worker's task list (``{"name", "state", "start", "end"}``).
        """
        if isinstance(spec.get("pipeline_spec"), Mapping):
            spec = spec["pipeline_spec"]
        with self.lock:
            _Run(self, run_id, spec, parameters, pipeline_root, run_folder, run_state,
                 list(tasks)).sync()

    # ------------------------------------------------------------------ reads

    def call(self, method: str, request: bytes) -> bytes:
        """Runs one read method of ``ml_metadata.MetadataStoreService`` on this store.

        Args:
            method: The method's name (``GetExecutionsByContext``).
            request: Its serialized request message.

        Returns:
            The serialized response.

        Raises:
            PermissionError: a method that writes (this endpoint is the one writer).
            LookupError: no such method.
            ValueError: the request does not parse.
            ml_metadata.errors.StatusError: the store's own error (its code is gRPC's).
        """
        from ml_metadata.proto import metadata_store_service_pb2 as service

        descriptor = service.DESCRIPTOR.services_by_name["MetadataStoreService"]
        found = descriptor.methods_by_name.get(method)
        if found is None:
            raise LookupError(f"ml_metadata.MetadataStoreService has no method {method!r}")
        if not method.startswith(READ_PREFIXES):
            raise PermissionError(f"{method} writes; the local endpoint is the only writer "
                                  "of its metadata store and serves reads only")
        request_cls = getattr(service, found.input_type.name)
        response_cls = getattr(service, found.output_type.name)
        message = request_cls()
        try:
            message.ParseFromString(request)
        except Exception as exc:  # google.protobuf.message.DecodeError
            raise ValueError(f"the {found.input_type.name} does not parse: {exc}") from None
        response = response_cls()
        with self.lock:
            self.store._call(method, message, response)  # noqa: SLF001 (the store's own RPC)
        return response.SerializeToString()

    def close(self) -> None:
        """Releases the store (the SQLite file stays)."""
        with self.lock:
            self.store = None


class _Run:
    """One reconciliation of a run's records (see Metadata.record)."""

    def __init__(self, meta: Metadata, run_id: str, spec: Mapping[str, Any],
                 parameters: Mapping[str, Any], root: str, folder: str, state: str,
                 tasks: list) -> None:
        self.meta, self.store, self.pb = meta, meta.store, meta._pb
        self.run_id, self.spec, self.root, self.folder = run_id, spec, root, folder
        self.parameters, self.state = parameters, state
        # kfp.local names a task after its component (comp-x -> x): the last entry of a
        # name wins, as a retry's entries come after the first attempt's
        self.tasks = {t["name"]: t for t in tasks if t.get("name")}
        self.pipeline_name = (spec.get("pipelineInfo") or {}).get("name") or "pipeline"

    # ----------------------------------------------------------------- helpers

    def _executions(self, context_id: int) -> dict:
        """(parent_dag_id, task_name) -> execution, for the run's executions."""
        out = {}
        for execution in self.store.get_executions_by_context(context_id):
            props = execution.custom_properties
            parent = props["parent_dag_id"].int_value if "parent_dag_id" in props else 0
            out[(parent, props["task_name"].string_value)] = execution
        return out

    def _put(self, execution: Any, events: list = ()) -> int:
        """Writes an execution with its new artifacts and events, attributed to the
        pipeline's and the run's contexts (as PutExecution in the launcher)."""
        for artifact, _ in events:
            _complete(artifact)
        execution_id, _, _ = self.store.put_execution(
            _complete(execution), list(events), list(self.contexts),
            reuse_context_if_already_exist=True)
        return execution_id

    def _state(self, execution: Any, name: str) -> bool:
        """Sets the execution's state; True when it changed."""
        value = self.pb.Execution.State.Value(name)
        if execution.HasField("last_known_state") and execution.last_known_state == value:
            return False
        execution.last_known_state = value
        return True

    # ------------------------------------------------------------------- sync

    def sync(self) -> None:
        pipeline = self.meta._context(PIPELINE_CONTEXT, self.pipeline_name, {})
        run = self.store.get_context_by_type_and_name(RUN_CONTEXT, self.run_id)
        if run is None:
            run = self.meta._context(RUN_CONTEXT, self.run_id, {
                "namespace": "", "resource_name": self.run_id,
                "pipeline_root": (os.path.join(self.root, self.folder) if self.folder
                                  else self.root),
                "store_session_info": ""})
            self.store.put_parent_contexts([self.pb.ParentContext(
                child_id=run.id, parent_id=pipeline.id)])
        self.contexts = [pipeline, run]
        self.existing = self._executions(run.id)
        root_dag = self.spec.get("root") or {}
        root_id = self._dag_execution(0, "", root_dag, self.parameters,
                                      EXECUTION_STATE.get(self.state, "RUNNING"))
        self._dag(root_id, root_dag)

    def _dag_execution(self, parent_id: int, task_name: str, dag_component: Mapping,
                       inputs: Mapping[str, Any], state: str) -> int:
        key = (parent_id, task_name)
        execution = self.existing.get(key)
        total = len(((dag_component.get("dag") or {}).get("tasks") or {}))
        if execution is None:
            execution = self.pb.Execution(type_id=self.meta._type_id("execution",
                                                                     DAG_EXECUTION))
            if not task_name:
                execution.name = f"run/{self.run_id}"
            props = execution.custom_properties
            props["display_name"].string_value = task_name
            props["task_name"].string_value = task_name
            if parent_id:
                props["parent_dag_id"].int_value = parent_id
            _set_struct(props["inputs"], inputs)
            props["total_dag_tasks"].int_value = total
            self._state(execution, state)
            execution.id = self._put(execution)
            self.existing[key] = execution
        elif self._state(execution, state):
            self._put(execution)
        return execution.id

    def _dag(self, dag_id: int, component: Mapping) -> str:
        """Records the tasks of one DAG; returns the DAG's own state from its tasks."""
        tasks = ((component.get("dag") or {}).get("tasks") or {})
        states = []
        # in the order they started: a task's producers are recorded, with their outputs,
        # before it, so its input events name their very artifacts
        for key, task in sorted(tasks.items(), key=lambda kv: self._first_start(kv[1])):
            # the driver's task_name is the task's taskInfo.name (what the UI labels)
            task_name = (task.get("taskInfo") or {}).get("name") or key
            ref, child = self._component_of(task)
            if "dag" in child:
                sub_state = self._sub_dag_state(child)
                if sub_state is None:
                    continue
                sub_id = self._dag_execution(dag_id, task_name, child, {}, sub_state)
                states.append(self._dag(sub_id, child))
                continue
            entry = self.tasks.get(ref.removeprefix("comp-"))
            if entry is None:
                continue
            states.append(self._container(dag_id, task_name, ref, child, entry))
        return _combined(states, len(tasks), self.state)

    def _component_of(self, task: Mapping) -> tuple:
        """``(component name, its spec)`` of a DAG task ({} when the spec lacks it)."""
        ref = (task.get("componentRef") or {}).get("name", "")
        return ref, (self.spec.get("components") or {}).get(ref) or {}

    def _first_start(self, task: Mapping) -> float:
        """When a task (or the first task of a sub-DAG) started; inf when none did."""
        ref, child = self._component_of(task)
        if "dag" in child:
            inner = ((child.get("dag") or {}).get("tasks") or {}).values()
            return min((self._first_start(t) for t in inner), default=float("inf"))
        entry = self.tasks.get(ref.removeprefix("comp-"))
        start = (entry or {}).get("start")
        return float(start) if isinstance(start, (int, float)) else float("inf")

    def _sub_dag_state(self, component: Mapping) -> Optional[str]:
        """A sub-DAG's state from its container tasks (None: none of them started)."""
        states = []
        total = 0
        for task in ((component.get("dag") or {}).get("tasks") or {}).values():
            ref, child = self._component_of(task)
            if "dag" in child:
                inner = self._sub_dag_state(child)
                total += 1
                if inner is not None:
                    states.append(inner)
                continue
            total += 1
            entry = self.tasks.get(ref.removeprefix("comp-"))
            if entry is not None:
                states.append(EXECUTION_STATE.get(entry.get("state") or "", "RUNNING"))
        if not states:
            return None
        return _combined(states, total, self.state)

    def _container(self, dag_id: int, task_name: str, ref: str, component: Mapping,
                   entry: Mapping) -> str:
        state = EXECUTION_STATE.get(entry.get("state") or "", "RUNNING")
        task_root = os.path.join(self.root, self.folder, ref.removeprefix("comp-"))
        record = task_records.read(task_root) if self.folder else None
        key = (dag_id, task_name)
        execution = self.existing.get(key)
        if execution is None:
            kind = IMPORTER_EXECUTION if (record or {}).get("kind") == "importer" \
                else CONTAINER_EXECUTION
            execution = self.pb.Execution(type_id=self.meta._type_id("execution", kind))
            props = execution.custom_properties
            for name, value in (("display_name", task_name), ("task_name", task_name),
                                ("pod_name", ref.removeprefix("comp-")), ("pod_uid", ""),
                                ("namespace", ""), ("image", self._image(component))):
                props[name].string_value = value
            props["parent_dag_id"].int_value = dag_id
            inputs = ((record or {}).get("inputs") or {})
            _set_struct(props["inputs"], inputs.get("parameters") or {})
            self._state(execution, "RUNNING" if state == "COMPLETE" else state)
            execution.id = self._put(execution, self._input_events(inputs))
            self.existing[key] = execution
        done = state in ("COMPLETE", "FAILED", "CANCELED")
        if done and record is not None and record.get("status") and "outputs" in record:
            changed = self._state(execution, state)
            if state == "COMPLETE" and "outputs" not in execution.custom_properties:
                outputs = record.get("outputs") or {}
                _set_struct(execution.custom_properties["outputs"],
                            outputs.get("parameters") or {})
                self._put(execution, self._output_events(component, outputs))
            elif changed:
                self._put(execution)
        elif state == "COMPLETE" and self.state == "RUNNING":
            pass  # its record (outputs) is written just after: COMPLETE comes with them
        elif self._state(execution, state if done or state == "RUNNING" else "RUNNING"):
            self._put(execution)
        return state

    def _image(self, component: Mapping) -> str:
        """The image of a container component, from the spec's deployment config."""
        executors = ((self.spec.get("deploymentSpec") or {}).get("executors") or {})
        executor = executors.get(component.get("executorLabel", "")) or {}
        return ((executor.get("container") or {}).get("image")) or ""

    def _uri(self, path: str) -> str:
        return self.meta.artifact_uri(self.run_id, self.root, path)

    def _input_events(self, inputs: Mapping) -> list:
        pairs = []
        for name, artifacts in (inputs.get("artifacts") or {}).items():
            for artifact in artifacts:
                uri = self._uri(artifact.get("uri") or "")
                found = self.store.get_artifacts_by_uri(uri) if uri else []
                if found:
                    target = found[-1]
                else:  # made outside this run (an input of the pipeline): recorded now
                    target = self._artifact(name, artifact, uri)
                    target.id = self.store.put_artifacts([_complete(target)])[0]
                event = self.pb.Event(type=self.pb.Event.INPUT)
                event.path.steps.add().key = name
                pairs.append((target, event))
        return pairs

    def _artifact(self, name: str, artifact: Mapping, uri: str) -> Any:
        out = self.pb.Artifact(type_id=self.meta._type_id(
            "artifact", artifact.get("schema_title") or "system.Artifact"), uri=uri,
            state=self.pb.Artifact.LIVE)
        for key, value in (artifact.get("metadata") or {}).items():
            _struct_value(value, out.custom_properties[key])
        if "display_name" not in out.custom_properties:
            out.custom_properties["display_name"].string_value = name
        return out

    def _output_events(self, component: Mapping, outputs: Mapping) -> list:
        pairs = []
        for name, artifacts in (outputs.get("artifacts") or {}).items():
            for artifact in artifacts:
                uri = self._uri(artifact.get("uri") or "")
                event = self.pb.Event(type=self.pb.Event.OUTPUT)
                event.path.steps.add().key = name
                pairs.append((self._artifact(name, artifact, uri), event))
        return pairs


def _combined(states: list, total: int, run_state: str) -> str:
    """A DAG's state from its tasks' states, as the driver settles a DAG."""
    if any(s == "FAILED" for s in states):
        return "FAILED"
    if any(s == "RUNNING" for s in states):
        return "RUNNING"
    if states and len(states) >= total and all(s in ("COMPLETE", "CACHED") for s in states):
        return "COMPLETE"
    if run_state in ("FAILED", "CANCELED"):
        return EXECUTION_STATE[run_state]
    return "RUNNING"


def upstream(store: Any, artifact_id: int) -> list:
    """Lineage: the executions that made an artifact, nearest first, walked up through
    their input artifacts, with the standard ``ml_metadata`` API only (any reader of
    ``<state>/mlmd.sqlite`` can run the same calls).

    Args:
        store: An ``ml_metadata.metadata_store.MetadataStore``.
        artifact_id: The artifact to start from (e.g. a pushed ``system.Model``).

    Returns:
        ``[{"execution_id", "task", "run", "pipeline", "image", "state", "parameters",
        "inputs": {name: {"id", "type", "uri"}}}]``: for each execution the run and the
        pipeline (its contexts), the code (image) and parameters it ran with and the
        artifacts it read.
    """
    from google.protobuf import json_format
    from ml_metadata.proto import metadata_store_pb2 as pb

    types: dict = {}

    def type_name(kind: str, type_id: int) -> str:
        if (kind, type_id) not in types:
            getter = (store.get_artifact_types_by_id if kind == "artifact"
                      else store.get_context_types_by_id)
            types[(kind, type_id)] = getter([type_id])[0].name
        return types[(kind, type_id)]

    found, todo, seen = [], [artifact_id], set()
    while todo:
        for event in store.get_events_by_artifact_ids([todo.pop(0)]):
            if event.type != pb.Event.OUTPUT or event.execution_id in seen:
                continue
            seen.add(event.execution_id)
            [execution] = store.get_executions_by_id([event.execution_id])
            contexts = {type_name("context", c.type_id): c.name
                        for c in store.get_contexts_by_execution(execution.id)}
            props = execution.custom_properties
            inputs = {}
            for read in store.get_events_by_execution_ids([execution.id]):
                if read.type != pb.Event.INPUT:
                    continue
                [artifact] = store.get_artifacts_by_id([read.artifact_id])
                inputs[read.path.steps[0].key] = {
                    "id": artifact.id, "uri": artifact.uri,
                    "type": type_name("artifact", artifact.type_id)}
                todo.append(artifact.id)
            found.append({
                "execution_id": execution.id, "task": props["task_name"].string_value,
                "run": contexts.get(RUN_CONTEXT, ""),
                "pipeline": contexts.get(PIPELINE_CONTEXT, ""),
                "image": props["image"].string_value if "image" in props else "",
                "state": pb.Execution.State.Name(execution.last_known_state),
                "parameters": json_format.MessageToDict(props["inputs"].struct_value)
                if "inputs" in props else {},
                "inputs": inputs})
    return found
