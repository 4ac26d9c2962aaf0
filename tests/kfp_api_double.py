"""A test double of the Kubeflow Pipelines v2beta1 REST API server.

It answers the paths ``kfp.Client`` 2.13 calls to start a run of an uploaded pipeline
version, on ``127.0.0.1`` and a free port, in a background thread::

    GET  /apis/v2beta1/healthz
    GET  /apis/v2beta1/pipelines                      (filter / sort_by / page_* / namespace)
    GET  /apis/v2beta1/pipelines/{pipeline_id}/versions
    GET  /apis/v2beta1/experiments                    (filter / namespace)
    POST /apis/v2beta1/experiments
    POST /apis/v2beta1/runs
    GET  /apis/v2beta1/runs/{run_id}

JSON shapes come from the ``kfp_server_api`` models: responses are built as model
objects and written with their ``attribute_map`` names; request bodies are read into
model objects, and a field the model does not know is refused with 400. Errors use the
server's ``googlerpc.Status`` shape plus ``error``: ``{"error", "code", "message",
"details"}``.

Usage::

    with kfp_api_double(token="secret") as api:
        pipeline_id, [v1, v2] = api.add_pipeline("train", versions=["v1", "v2"])
        ...  # point kfp.Client at api.url
        api.requests  # every request: method, path, query, headers, body
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import json
import re
import threading
import urllib.parse
import uuid
from typing import Any, Iterator, Optional, Sequence, Union

from kfp_server_api import models as m

# JSON <-> model conversion, filters and paging are the local endpoint's (one copy).
from kfp_ct.pipelines.entrypoints.kfp_json import (CODE_ALREADY_EXISTS, CODE_INVALID_ARGUMENT,
                                            CODE_NOT_FOUND, CODE_UNAUTHENTICATED,
                                            CODE_UNIMPLEMENTED, from_json, to_json)
from kfp_ct.pipelines.entrypoints.kfp_json import HttpError as _HttpError
from kfp_ct.pipelines.entrypoints.kfp_json import list_page as _list

_EPOCH = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
_TERMINAL = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}

VersionSpec = Union[str, "tuple[str, dt.datetime]"]


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the double received.

    Attributes:
        method: HTTP method.
        path: URL path without the query.
        query: Query parameters (last value wins; blank values kept as "").
        headers: Request headers, names lower-cased.
        body: Parsed JSON body, or None (no body / not JSON).
    """

    method: str
    path: str
    query: dict
    headers: dict
    body: Any


# -------------------------------------------------------------------- the double


class KfpApiDouble:
    """In-memory KFP v2beta1 API server on 127.0.0.1 (see the module docstring).

    Args:
        token: If set, every path but healthz requires ``Authorization: Bearer <token>``
            and answers 401 (code 16) otherwise.
        multi_user: Healthz reports multi-user mode, and experiments must be listed and
            created with a namespace (as the real server in multi-user mode).
    """

    def __init__(self, token: Optional[str] = None, multi_user: bool = False) -> None:
        self.token = token
        self.multi_user = multi_user
        self._lock = threading.RLock()
        self._requests: list = []
        self._pipelines: dict = {}  # id -> V2beta1Pipeline
        self._versions: dict = {}  # pipeline id -> [V2beta1PipelineVersion]
        self._experiments: dict = {}  # id -> V2beta1Experiment
        self._runs: dict = {}  # id -> V2beta1Run
        self._ticks = 0
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------- lifecycle

    def start(self) -> "KfpApiDouble":
        """Binds 127.0.0.1 on a free port and serves in a daemon thread."""
        double = self

        class Handler(_Handler):
            api = double

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="kfp-api-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and closes the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "KfpApiDouble":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123``."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------ test helpers

    @property
    def requests(self) -> list:
        """A copy of the recorded requests, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str, path: str) -> list:
        """Recorded requests with this method and exact path."""
        return [r for r in self.requests if r.method == method and r.path == path]

    def _now(self) -> dt.datetime:
        """A deterministic clock: one second later on every call."""
        with self._lock:
            self._ticks += 1
            return _EPOCH + dt.timedelta(seconds=self._ticks)

    def add_pipeline(self, name: str, versions: Sequence[VersionSpec] = ("v1",),
                     namespace: str = "", pipeline_spec: Optional[dict] = None) -> tuple:
        """Seeds a pipeline and its versions.

        Args:
            name: Pipeline display name.
            versions: Version display names, created one second apart in this order, or
                ``(name, created_at)`` tuples to set the creation time.
            namespace: Pipeline namespace ("" = shared).
            pipeline_spec: Spec stored on every version (default: a minimal spec).

        Returns:
            ``(pipeline_id, [version_id, ...])`` in the order given.
        """
        with self._lock:
            pipeline_id = str(uuid.uuid4())
            self._pipelines[pipeline_id] = m.V2beta1Pipeline(
                pipeline_id=pipeline_id, display_name=name, created_at=self._now(),
                namespace=namespace or None)
            self._versions[pipeline_id] = []
            version_ids = []
            for spec in versions:
                vname, created = (spec, None) if isinstance(spec, str) else spec
                version_id = str(uuid.uuid4())
                self._versions[pipeline_id].append(m.V2beta1PipelineVersion(
                    pipeline_id=pipeline_id, pipeline_version_id=version_id,
                    display_name=vname, created_at=created or self._now(),
                    pipeline_spec=pipeline_spec or _minimal_spec(name)))
                version_ids.append(version_id)
            return pipeline_id, version_ids

    def set_run_state(self, run_id: str, state: str) -> None:
        """Moves a run to ``state`` (a V2beta1RuntimeState value)."""
        if state not in m.V2beta1RuntimeState.allowable_values:
            raise ValueError(f"{state!r} is not one of "
                             f"{m.V2beta1RuntimeState.allowable_values}")
        with self._lock:
            run = self._runs[run_id]
            now = self._now()
            run.state = state
            run.state_history = list(run.state_history or []) + [
                m.V2beta1RuntimeStatus(update_time=now, state=state)]
            if state in _TERMINAL:
                run.finished_at = now

    def run_json(self, run_id: str) -> dict:
        """The stored run as the server would answer it."""
        with self._lock:
            return to_json(self._runs[run_id])

    def experiments_json(self) -> list:
        """All experiments as JSON, oldest first."""
        with self._lock:
            return [to_json(e) for e in self._experiments.values()]

    # --------------------------------------------------------------- handlers

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _check_auth(self, headers: dict) -> None:
        if self.token is None:
            return
        value = headers.get("authorization", "")
        if not value:
            raise _HttpError(401, CODE_UNAUTHENTICATED,
                             "Unauthenticated: Request header error: there is no user "
                             "identity header.")
        if value != f"Bearer {self.token}":
            raise _HttpError(401, CODE_UNAUTHENTICATED,
                             "Unauthenticated: Failed to authenticate the request: the "
                             "bearer token is not valid")

    def healthz(self, query: dict, body: Any) -> Any:
        return m.V2beta1GetHealthzResponse(multi_user=self.multi_user)

    def list_pipelines(self, query: dict, body: Any) -> Any:
        namespace = query.get("namespace", "")
        with self._lock:
            items = [p for p in self._pipelines.values() if (p.namespace or "") == namespace]
        page, token, total = _list(items, query, {"display_name": "display_name",
                                                  "name": "display_name",
                                                  "created_at": "created_at",
                                                  "pipeline_id": "pipeline_id"})
        return m.V2beta1ListPipelinesResponse(pipelines=page, total_size=total or None,
                                              next_page_token=token or None)

    def list_pipeline_versions(self, query: dict, body: Any, pipeline_id: str) -> Any:
        with self._lock:
            if pipeline_id not in self._versions:
                raise _HttpError(404, CODE_NOT_FOUND,
                                 f"Failed to list pipeline versions: ResourceNotFoundError: "
                                 f"Pipeline {pipeline_id} not found")
            items = list(self._versions[pipeline_id])
        page, token, total = _list(items, query, {"display_name": "display_name",
                                                  "name": "display_name",
                                                  "created_at": "created_at",
                                                  "pipeline_version_id":
                                                      "pipeline_version_id"})
        return m.V2beta1ListPipelineVersionsResponse(pipeline_versions=page,
                                                     total_size=total or None,
                                                     next_page_token=token or None)

    def list_experiments(self, query: dict, body: Any) -> Any:
        namespace = query.get("namespace", "")
        if self.multi_user and not namespace:
            raise _HttpError(400, CODE_INVALID_ARGUMENT,
                             "Invalid input error: In multi-user mode, ListExperiments "
                             "requires filtering by namespace")
        with self._lock:
            items = [e for e in self._experiments.values()
                     if not self.multi_user or e.namespace == namespace]
        page, token, total = _list(items, query, {"display_name": "display_name",
                                                  "name": "display_name",
                                                  "created_at": "created_at",
                                                  "experiment_id": "experiment_id"})
        return m.V2beta1ListExperimentsResponse(experiments=page, total_size=total or None,
                                                next_page_token=token or None)

    def create_experiment(self, query: dict, body: Any) -> Any:
        exp = from_json(body, m.V2beta1Experiment, "experiment")
        if not exp.display_name:
            raise _HttpError(400, CODE_INVALID_ARGUMENT,
                             "Invalid input error: Experiment name is empty. Please specify "
                             "a valid experiment name")
        namespace = exp.namespace or ""
        if self.multi_user and not namespace:
            raise _HttpError(400, CODE_INVALID_ARGUMENT,
                             "Invalid input error: In multi-user mode, experiment namespace "
                             "must be set")
        return self._add_experiment(exp.display_name, exp.description,
                                    namespace if self.multi_user else "")

    def _add_experiment(self, name: str, description: Optional[str],
                        namespace: str) -> Any:
        with self._lock:
            for existing in self._experiments.values():
                if existing.display_name == name and (existing.namespace or "") == namespace:
                    raise _HttpError(409, CODE_ALREADY_EXISTS,
                                     f"Failed to create a new experiment: AlreadyExistsError: "
                                     f"Experiment with name {name} already exists")
            exp = m.V2beta1Experiment(experiment_id=str(uuid.uuid4()), display_name=name,
                                      description=description, created_at=self._now(),
                                      namespace=namespace or None,
                                      storage_state="AVAILABLE")
            self._experiments[exp.experiment_id] = exp
            return exp

    def create_run(self, query: dict, body: Any) -> Any:
        run = from_json(body, m.V2beta1Run, "run")
        if not run.display_name:
            raise _HttpError(400, CODE_INVALID_ARGUMENT,
                             "Invalid input error: The run name is empty. Please specify a "
                             "valid name")
        ref = run.pipeline_version_reference
        if (ref is None) == (run.pipeline_spec is None):
            raise _HttpError(400, CODE_INVALID_ARGUMENT,
                             "Invalid input error: a run needs exactly one of pipeline_spec "
                             "and pipeline_version_reference")
        with self._lock:
            if ref is not None:
                ref = self._resolve_version(ref)
            experiment_id = run.experiment_id or self._default_experiment_id()
            if experiment_id not in self._experiments:
                raise _HttpError(404, CODE_NOT_FOUND,
                                 f"Failed to create a run: ResourceNotFoundError: Experiment "
                                 f"{experiment_id} not found")
            config = run.runtime_config or m.V2beta1RuntimeConfig()
            now = self._now()
            stored = m.V2beta1Run(
                experiment_id=experiment_id, run_id=str(uuid.uuid4()),
                display_name=run.display_name, description=run.description,
                storage_state="AVAILABLE", pipeline_version_reference=ref,
                pipeline_spec=run.pipeline_spec,
                runtime_config=m.V2beta1RuntimeConfig(parameters=config.parameters or {},
                                                      pipeline_root=config.pipeline_root),
                service_account=run.service_account or "pipeline-runner",
                created_at=now, scheduled_at=now, state="PENDING",
                state_history=[m.V2beta1RuntimeStatus(update_time=now, state="PENDING")])
            self._runs[stored.run_id] = stored
            return stored

    def _resolve_version(self, ref: Any) -> Any:
        if not ref.pipeline_id:
            raise _HttpError(400, CODE_INVALID_ARGUMENT,
                             "Invalid input error: pipeline_version_reference.pipeline_id "
                             "is empty")
        versions = self._versions.get(ref.pipeline_id)
        if versions is None:
            raise _HttpError(404, CODE_NOT_FOUND,
                             f"Failed to create a run: ResourceNotFoundError: Pipeline "
                             f"{ref.pipeline_id} not found")
        if not ref.pipeline_version_id:  # the server runs the latest version
            if not versions:
                raise _HttpError(404, CODE_NOT_FOUND, f"Failed to create a run: pipeline "
                                                      f"{ref.pipeline_id} has no versions")
            latest = max(versions, key=lambda v: v.created_at)
            return m.V2beta1PipelineVersionReference(
                pipeline_id=ref.pipeline_id, pipeline_version_id=latest.pipeline_version_id)
        if not any(v.pipeline_version_id == ref.pipeline_version_id for v in versions):
            raise _HttpError(404, CODE_NOT_FOUND,
                             f"Failed to create a run: ResourceNotFoundError: Pipeline "
                             f"version {ref.pipeline_version_id} of pipeline "
                             f"{ref.pipeline_id} not found")
        return ref

    def _default_experiment_id(self) -> str:
        for exp in self._experiments.values():
            if exp.display_name == "Default" and not exp.namespace:
                return exp.experiment_id
        return self._add_experiment("Default", "Default experiment", "").experiment_id

    def get_run(self, query: dict, body: Any, run_id: str) -> Any:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise _HttpError(404, CODE_NOT_FOUND,
                                 f"Failed to get a run: ResourceNotFoundError: Run {run_id} "
                                 "not found")
            return run


def _minimal_spec(name: str) -> dict:
    return {"pipelineInfo": {"name": name}, "schemaVersion": "2.1.0",
            "sdkVersion": "kfp-2.13.0", "root": {"dag": {"tasks": {}}}}


_ROUTES = [
    ("/apis/v2beta1/healthz", {"GET": "healthz"}),
    ("/apis/v2beta1/pipelines", {"GET": "list_pipelines"}),
    ("/apis/v2beta1/pipelines/(?P<pipeline_id>[^/:]+)/versions",
     {"GET": "list_pipeline_versions"}),
    ("/apis/v2beta1/experiments", {"GET": "list_experiments", "POST": "create_experiment"}),
    ("/apis/v2beta1/runs", {"POST": "create_run"}),
    ("/apis/v2beta1/runs/(?P<run_id>[^/:]+)", {"GET": "get_run"}),
]
_NO_AUTH = {"healthz"}


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes one request to the KfpApiDouble set as the ``api`` class attribute."""

    api: KfpApiDouble
    server_version = "kfp-api-double/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # keep pytest output quiet

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in
                 urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: Any = None
        body_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = str(exc)
        self.api._record(RecordedRequest(method=method, path=parsed.path, query=query,
                                         headers=headers, body=body))
        try:
            handler, kwargs = self._route(method, parsed.path)
            if handler not in _NO_AUTH:
                self.api._check_auth(headers)
            if body_error is not None:
                raise _HttpError(400, CODE_INVALID_ARGUMENT,
                                 f"Invalid input error: body is not JSON: {body_error}")
            if method == "POST" and body is None:
                raise _HttpError(400, CODE_INVALID_ARGUMENT,
                                 "Invalid input error: the request has no body")
            result = getattr(self.api, handler)(query, body, **kwargs)
            self._send(200, to_json(result))
        except _HttpError as err:
            status = m.GooglerpcStatus(code=err.code, message=err.message, details=[])
            self._send(err.status, {"error": err.message, **to_json(status), "details": []})

    def _route(self, method: str, path: str) -> tuple:
        for pattern, methods in _ROUTES:
            match = re.fullmatch(pattern, path)
            if match:
                if method not in methods:
                    raise _HttpError(405, CODE_UNIMPLEMENTED, "Method Not Allowed")
                return methods[method], match.groupdict()
        raise _HttpError(404, CODE_NOT_FOUND, "Not Found")

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def kfp_api_double(token: Optional[str] = None,
                   multi_user: bool = False) -> Iterator[KfpApiDouble]:
    """Runs a KfpApiDouble for the duration of a ``with`` block.

    Args:
        token: Bearer token to require (None = no auth).
        multi_user: Report and behave as a multi-user deployment.

    Yields:
        The started double; stopped (socket closed) on exit.
    """
    api = KfpApiDouble(token=token, multi_user=multi_user).start()
    try:
        yield api
    finally:
        api.stop()


__all__ = ["KfpApiDouble", "RecordedRequest", "kfp_api_double", "to_json", "from_json"]
