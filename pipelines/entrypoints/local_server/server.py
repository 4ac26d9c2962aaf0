"""The local KFP v2beta1 REST endpoint: HTTP, routing, auth, validation, the resources.

Paths, query parameters and bodies are those of the KFP API server that ``kfp.Client``
2.13 calls (see ``kfp_server_api/api/*.py``). Bodies are read into ``kfp_server_api``
models with unknown fields refused; answers are models written with their
``attribute_map`` names; errors have the real server's shape ``{"error", "code",
"message", "details"}`` with the HTTP status of the google.rpc code.

Single-user: a ``namespace`` query or field is accepted and ignored. Runs are executed
for real (``executor.Executor``) and recurring runs fire (``scheduler.Scheduler``).

For the Kubeflow Pipelines UI 2.5.0 it also answers the v1beta1 paths that UI calls
(pipelines, versions, templates, runs, experiments, recurring runs as jobs: ``v1.py``
writes the same records in their v1beta1 shapes) and a run's output artifact
(``runs/{id}/nodes/{task}/artifacts/{output}:read``, ``artifacts.py``). A list call's
``filter`` is read as the real server reads it (``kfp_json.parse_api_filter``: Go's
``url.QueryUnescape`` once more after the HTTP layer's decoding). README, "Paths for the
Kubeflow UI".
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime as dt
import email.parser
import email.policy
import hmac
import http.server
import io
import ipaddress
import json
import os
import re
import sys
import tarfile
import threading
import time
import traceback
import urllib.parse
import uuid
import zipfile
from typing import Any, Mapping, Optional

from kfp_server_api import models as m

from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.pipelines.entrypoints import kfp_json, rules
from kfp_ct.pipelines.entrypoints.kfp_json import (CODE_ALREADY_EXISTS, CODE_FAILED_PRECONDITION,
                                            CODE_INTERNAL, CODE_NOT_FOUND,
                                            CODE_UNAUTHENTICATED, CODE_UNIMPLEMENTED,
                                            HttpError, invalid, to_json)
from kfp_ct.pipelines.entrypoints.local_server import artifacts, runtime, ui, v1
from kfp_ct.pipelines.entrypoints.local_server.executor import Executor, set_state, utcnow
from kfp_ct.pipelines.entrypoints.local_server.scheduler import Scheduler
from kfp_ct.pipelines.entrypoints.local_server.spec_check import first_problem
from kfp_ct.pipelines.entrypoints.local_server.store import Store

API = "/apis/v2beta1"
API_V1 = "/apis/v1beta1"  # the paths of it that the Kubeflow Pipelines UI 2.5.0 calls
DEFAULT_EXPERIMENT = "Default"
REQUESTS_LOG = "requests.jsonl"
UPLOAD_FIELD = "uploadfile"
# The largest request bodies taken, refused with 413 from the Content-Length before a byte
# of the body is read. A compiled pipeline is tens of KB (the training pipeline's YAML,
# 48 KB); a JSON body matches the 4 MiB that the real server's gRPC layer receives.
MAX_UPLOAD_BYTES = 32 << 20  # pipeline uploads (multipart/form-data)
MAX_JSON_BYTES = 4 << 20  # every other body
CODE_RESOURCE_EXHAUSTED = 8  # google.rpc.Code of a message over the size limit
# The newest requests kept in memory (LocalServer.requests); every one is also appended to
# requests.jsonl. Kept without a bound, 18,600 calls of a soak grew the server by 27 MiB.
KEPT_REQUESTS = 2000


class LocalServerError(KfpCtError):
    """The local endpoint cannot start as asked (e.g. a non-loopback host)."""


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request the endpoint received.

    Attributes:
        method: HTTP method.
        path: URL path without the query.
        query: Query parameters (last value wins; blank values kept as "").
        headers: Request headers, names lower-cased, the authorization value masked.
        body: The JSON body; for multipart, ``{"multipart": [{"name", "filename",
            "size"}]}`` (the form fields, not their content); None without a body.
        time: When it arrived (epoch s).
    """

    method: str
    path: str
    query: dict
    headers: dict
    body: Any
    time: float = 0.0

    def to_dict(self) -> dict:
        """As one line of requests.jsonl."""
        return dataclasses.asdict(self)


def _not_found(what: str, item_id: str, action: str) -> HttpError:
    return HttpError(404, CODE_NOT_FOUND, f"Failed to {action}: ResourceNotFoundError: "
                                          f"{what} {item_id} not found")


def _already_exists(message: str) -> HttpError:
    return HttpError(409, CODE_ALREADY_EXISTS, f"Already exist error: {message}")


def _mask(headers: Mapping[str, str]) -> dict:
    out = {}
    for key, value in headers.items():
        if key == "authorization":
            scheme = value.split(" ", 1)[0] if value else ""
            value = f"{scheme} ***" if scheme else "***"
        elif key == "cookie":
            value = re.sub(rf"({ui.COOKIE}=)[^;]*", r"\1***", value)
        out[key] = value
    return out


# ---------------------------------------------------------------- compiled IR


def _choose_member(names: list) -> str:
    files = [n for n in names if n.endswith((".yaml", ".yml", ".json"))]
    for preferred in ("pipeline.yaml", "pipeline.yml", "pipeline.json"):
        if preferred in files:
            return preferred
    if len(files) == 1:
        return files[0]
    raise invalid("the package must hold one pipeline .yaml (or pipeline.yaml); it holds "
                  f"{', '.join(files) or 'none'}")


def package_text(data: bytes, filename: str) -> str:
    """The pipeline document of an uploaded file: YAML / JSON, or a .tar.gz / .zip of one.

    Raises:
        HttpError: 400 when it is not readable.
    """
    try:
        if data[:2] == b"\x1f\x8b":
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                member = _choose_member([t.name for t in tar if t.isfile()])
                handle = tar.extractfile(member)
                data = handle.read() if handle else b""
        elif data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                data = archive.read(_choose_member(archive.namelist()))
    except (tarfile.TarError, zipfile.BadZipFile, OSError, KeyError) as exc:
        raise invalid(f"{filename}: not a readable .tar.gz / .zip package: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"{filename}: not a text file (a compiled KFP pipeline is YAML or "
                      "JSON)") from None


def check_pipeline_document(spec: Any, platform: Any = None, where: str = "pipeline_spec"
                            ) -> dict:
    """Checks a compiled pipeline the way kfp parses it; returns the stored shape.

    Args:
        spec: The PipelineSpec dict (a compiled YAML's first document).
        platform: The PlatformSpec dict (its second document), if any.
        where: What to call it in messages.

    Returns:
        The spec dict, or ``{"pipeline_spec": spec, "platform_spec": platform}`` when the
        platform spec is not empty (kfp 2.13's ``_PipelineDoc.to_dict()``).

    Raises:
        HttpError: 400 naming what does not parse.
    """
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    if not isinstance(spec, dict):
        raise invalid(f"{where} must be a compiled KFP pipeline (a mapping), got "
                      f"{type(spec).__name__}")
    try:
        parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    except json_format.ParseError as exc:
        raise invalid(f"{where} is not a compiled KFP pipeline (PipelineSpec): {exc}") from None
    if not parsed.pipeline_info.name or not parsed.HasField("root"):
        raise invalid(f"{where} is not a compiled KFP pipeline: it has no "
                      f"{'pipelineInfo.name' if not parsed.pipeline_info.name else 'root'}"
                      " (compile it with kfp.compiler.Compiler)")
    problem = first_problem(parsed)  # the graph, as the backend's compiler and driver
    if problem:
        raise invalid(f"{where}: invalid v2 pipeline spec: {problem}")
    if platform in (None, {}):
        return spec
    if not isinstance(platform, dict):
        raise invalid(f"the platform spec of {where} must be a mapping")
    try:
        platform_parsed = json_format.ParseDict(platform, pipeline_spec_pb2.PlatformSpec())
    except json_format.ParseError as exc:
        raise invalid(f"the second document of {where} is not a KFP PlatformSpec: {exc}"
                      ) from None
    if platform_parsed == pipeline_spec_pb2.PlatformSpec():
        return spec
    return {"pipeline_spec": spec, "platform_spec": platform}


def parse_pipeline_file(text: str, filename: str) -> dict:
    """Parses an uploaded compiled pipeline (one or two YAML documents, or JSON).

    Returns:
        The stored ``pipeline_spec`` (see check_pipeline_document).

    Raises:
        HttpError: 400 naming the problem.
    """
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise invalid(f"{filename} is not YAML / JSON: {exc}") from None
    if not docs:
        raise invalid(f"{filename} is empty")
    if len(docs) > 2:
        raise invalid(f"{filename} has {len(docs)} YAML documents; a compiled KFP pipeline "
                      "has one (the pipeline spec) or two (then the platform spec)")
    return check_pipeline_document(docs[0], docs[1] if len(docs) > 1 else None, filename)


def check_inline_spec(doc: Any, where: str) -> dict:
    """Checks a ``pipeline_spec`` given inline in a run or recurring run."""
    if isinstance(doc, dict) and isinstance(doc.get("pipeline_spec"), dict):
        extra = sorted(set(doc) - {"pipeline_spec", "platform_spec"})
        if extra:
            raise invalid(f"{where}: unknown field(s) {', '.join(extra)} beside "
                          "pipeline_spec / platform_spec")
        return check_pipeline_document(doc["pipeline_spec"], doc.get("platform_spec"), where)
    return check_pipeline_document(doc, None, where)


def parse_multipart(content_type: str, raw: bytes) -> dict:
    """Reads a multipart/form-data body with the stdlib email parser.

    Returns:
        ``{field name: (file name or None, bytes)}``.

    Raises:
        HttpError: 400 when it is not multipart/form-data.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise invalid(f"the upload must be multipart/form-data with the file in the "
                      f"{UPLOAD_FIELD!r} field, got Content-Type {content_type or 'none'!r}")
    head = (f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n").encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise invalid("the multipart body has no parts (is the boundary right?)")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


# ------------------------------------------------------------------- the API


def _query_name(query: Mapping) -> str:
    return (query.get("name") or query.get("display_name") or "").strip()


def _file_stem(filename: Optional[str]) -> str:
    base = os.path.basename(filename or "")
    for ext in (".tar.gz", ".tgz", ".zip", ".yaml", ".yml", ".json"):
        if base.endswith(ext):
            return base[:-len(ext)]
    return base


class Api:
    """The resources and their rules, behind the HTTP handler.

    Args:
        store: The endpoint's state.
        executor: Runs the runs.
        token: The bearer token every path but healthz needs (None: no auth).
    """

    def __init__(self, store: Store, executor: Executor, token: Optional[str],
                 token_file: str = "") -> None:
        self.store = store
        self.executor = executor
        self.token = token
        self.token_file = token_file

    # ----------------------------------------------------------------- auth

    def check_auth(self, headers: Mapping[str, str]) -> None:
        """Raises 401 (code 16) unless the request carries ``Bearer <token>``."""
        if self.token is None:
            return
        where = (f"; the token is in {self.token_file} (kfp-ct and its Client find it by "
                 "themselves on this machine)" if self.token_file else "")
        value = headers.get("authorization", "")
        cookie = ui.cookie_token(headers)
        if not value and cookie is not None:  # a browser, through the Kubeflow UI's server
            origin = headers.get("origin", "")
            if origin and not ui.loopback_origin(origin):
                raise HttpError(401, CODE_UNAUTHENTICATED,
                                f"Unauthenticated: a request carrying the {ui.COOKIE} cookie "
                                f"from the page {origin!r}, which is not on this machine's "
                                "loopback")
            if not self.valid_token(cookie):
                raise HttpError(401, CODE_UNAUTHENTICATED,
                                f"Unauthenticated: the {ui.COOKIE} cookie does not hold this "
                                f"endpoint's token (log in again at {ui.LOGIN_PATH}){where}")
            return
        if not value:
            raise HttpError(401, CODE_UNAUTHENTICATED,
                            "Unauthenticated: the request has no Authorization header; this "
                            "endpoint needs 'Authorization: Bearer <token>' (kfp.Client: "
                            f"existing_token=...){where}")
        scheme, _, given = value.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HttpError(401, CODE_UNAUTHENTICATED,
                            f"Unauthenticated: the Authorization header is not a bearer token "
                            f"(scheme {scheme!r}); send 'Authorization: Bearer <token>'{where}")
        if not self.valid_token(given.strip()):
            raise HttpError(401, CODE_UNAUTHENTICATED,
                            f"Unauthenticated: the bearer token is not valid for this "
                            f"endpoint{where}")

    def valid_token(self, given: str) -> bool:
        """Whether ``given`` is the token (constant time); True when there is none."""
        if self.token is None:
            return True
        return hmac.compare_digest(given.encode(), self.token.encode())

    # --------------------------------------------------------------- healthz

    def healthz(self, query: dict, body: Any) -> Any:
        """GET /healthz."""
        return m.V2beta1GetHealthzResponse(multi_user=False)

    # ------------------------------------------------------------- list pages

    # What the real server puts before a refused list option (filter, sort, page), by call.
    _LIST_WORDS = {
        "pipelines": "Failed to list pipelines due invalid list options: pageToken: {token}, "
                     "pageSize: {size}, sortBy: {sort}, filter: {filter}",
        "pipeline versions": "Failed to list pipeline versions due invalid list options: "
                             "pageToken: {token}, pageSize: {size}, sortBy: {sort}, "
                             "filter: {filter}",
        "experiments": "Failed to create list options",
        "runs": "Failed to create list options",
        "recurring runs": "Failed to list recurring runs due to error parsing the listing "
                          "options"}

    def _page(self, items: list, query: dict, keys: Mapping, call: str,
              api_version: str = "v2beta1") -> tuple:
        """``kfp_json.list_page`` with the filter read as the real server reads it
        (``parseAPIFilter``: unescaped once more; v1beta1 predicates have ``op``), and a
        refused option worded as that call of the real server words it."""
        try:
            return kfp_json.list_page(items, query, keys, api_version=api_version)
        except HttpError as err:
            if err.code != kfp_json.CODE_INVALID_ARGUMENT:
                raise
            words = self._LIST_WORDS[call].format(
                token=query.get("page_token", ""), size=query.get("page_size") or 0,
                sort=query.get("sort_by", ""), filter=query.get("filter", ""))
            raise HttpError(err.status, err.code, f"{words}: {err.message}") from None

    # ------------------------------------------------------------- pipelines

    _PIPELINE_KEYS = {"display_name": "display_name", "name": "display_name",
                      "created_at": "created_at", "pipeline_id": "pipeline_id",
                      "id": "pipeline_id", "description": "description"}
    _VERSION_KEYS = {"display_name": "display_name", "name": "display_name",
                     "created_at": "created_at", "pipeline_version_id": "pipeline_version_id",
                     "id": "pipeline_version_id", "description": "description"}

    def list_pipelines(self, query: dict, body: Any) -> Any:
        """GET /pipelines."""
        page, token, total = self._page(self.store.list("pipeline"), query,
                                        self._PIPELINE_KEYS, "pipelines")
        return m.V2beta1ListPipelinesResponse(pipelines=page, total_size=total,
                                              next_page_token=token or None)

    def _get_pipeline(self, pipeline_id: str, action: str) -> m.V2beta1Pipeline:
        pipeline = self.store.get("pipeline", pipeline_id)
        if pipeline is None:
            raise _not_found("Pipeline", pipeline_id, action)
        return pipeline

    def get_pipeline(self, query: dict, body: Any, pipeline_id: str) -> Any:
        """GET /pipelines/{pipeline_id}."""
        return self._get_pipeline(pipeline_id, "get a pipeline")

    def get_pipeline_by_name(self, query: dict, body: Any, name: str) -> Any:
        """GET /pipelines/names/{name}."""
        pipeline = self.store.pipeline_by_name(name)
        if pipeline is None:
            raise _not_found("Pipeline named", name, "get a pipeline by name")
        return pipeline

    def _new_pipeline(self, name: str, description: Optional[str]) -> m.V2beta1Pipeline:
        if not name:
            raise invalid("the pipeline name is empty; give one (kfp.Client: "
                          "pipeline_name=..., or the query parameter name=...)")
        if self.store.pipeline_by_name(name) is not None:
            raise _already_exists(f"Failed to create a pipeline: a pipeline named {name!r} "
                                  "already exists; upload a new version of it instead "
                                  "(upload_version)")
        pipeline = m.V2beta1Pipeline(pipeline_id=str(uuid.uuid4()), display_name=name,
                                     description=description or None, created_at=utcnow())
        self.store.add_pipeline(pipeline)
        return pipeline

    def _new_version(self, pipeline_id: str, name: str, description: Optional[str],
                     spec: dict) -> m.V2beta1PipelineVersion:
        if not name:
            raise invalid("the pipeline version name is empty")
        if self.store.version_named(pipeline_id, name):
            raise _already_exists(f"Failed to create a pipeline version: pipeline "
                                  f"{pipeline_id} already has a version named {name!r}")
        version = m.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=str(uuid.uuid4()),
            display_name=name, description=description or None, created_at=utcnow(),
            pipeline_spec=spec)
        self.store.add_version(version)
        return version

    def create_pipeline(self, query: dict, body: Any) -> Any:
        """POST /pipelines: a pipeline without versions."""
        pipeline = kfp_json.from_json(body, m.V2beta1Pipeline, "pipeline")
        with self.store.lock:
            return self._new_pipeline((pipeline.display_name or "").strip(),
                                      pipeline.description)

    def _uploaded(self, form: dict) -> tuple:
        if UPLOAD_FIELD not in form:
            raise invalid(f"the upload has no {UPLOAD_FIELD!r} file field (fields: "
                          f"{', '.join(sorted(form)) or 'none'})")
        filename, data = form[UPLOAD_FIELD]
        filename = filename or UPLOAD_FIELD
        return filename, parse_pipeline_file(package_text(data, filename), filename)

    def upload_pipeline(self, query: dict, form: dict) -> Any:
        """POST /pipelines/upload: a pipeline and its first version, same name."""
        filename, spec = self._uploaded(form)
        name = _query_name(query) or _file_stem(filename)
        with self.store.lock:
            pipeline = self._new_pipeline(name, query.get("description"))
            self._new_version(pipeline.pipeline_id, name, query.get("description"), spec)
        return pipeline

    def upload_pipeline_version(self, query: dict, form: dict) -> Any:
        """POST /pipelines/upload_version?pipelineid=..."""
        pipeline_id = (query.get("pipelineid") or query.get("pipeline_id") or "").strip()
        if not pipeline_id:
            raise invalid("upload_version needs the query parameter pipelineid (the "
                          "pipeline to add the version to)")
        filename, spec = self._uploaded(form)
        name = _query_name(query) or _file_stem(filename)
        with self.store.lock:
            self._get_pipeline(pipeline_id, "upload a pipeline version")
            return self._new_version(pipeline_id, name, query.get("description"), spec)

    def delete_pipeline(self, query: dict, body: Any, pipeline_id: str) -> Any:
        """DELETE /pipelines/{id}: refused while it has versions (unless cascade=true)."""
        with self.store.lock:
            self._get_pipeline(pipeline_id, "delete a pipeline")
            versions = self.store.list("version", "pipeline_id=?", (pipeline_id,))
            if versions and (query.get("cascade") or "").lower() != "true":
                raise invalid(f"Failed to delete pipeline {pipeline_id} as it has existing "
                              f"pipeline versions (e.g. {versions[-1].pipeline_version_id}); "
                              "delete them first")
            for version in versions:
                self.store.delete("version", version.pipeline_version_id)
            self.store.delete("pipeline", pipeline_id)
        return {}

    def list_pipeline_versions(self, query: dict, body: Any, pipeline_id: str) -> Any:
        """GET /pipelines/{id}/versions."""
        self._get_pipeline(pipeline_id, "list pipeline versions")
        items = self.store.list("version", "pipeline_id=?", (pipeline_id,))
        page, token, total = self._page(items, query, self._VERSION_KEYS, "pipeline versions")
        return m.V2beta1ListPipelineVersionsResponse(pipeline_versions=page, total_size=total,
                                                     next_page_token=token or None)

    def _get_version(self, pipeline_id: str, version_id: str,
                     action: str) -> m.V2beta1PipelineVersion:
        version = self.store.get("version", version_id)
        if version is None or (pipeline_id and version.pipeline_id != pipeline_id):
            raise _not_found("Pipeline version", f"{version_id} of pipeline {pipeline_id}",
                             action)
        return version

    def get_pipeline_version(self, query: dict, body: Any, pipeline_id: str,
                             pipeline_version_id: str) -> Any:
        """GET /pipelines/{id}/versions/{version_id}."""
        return self._get_version(pipeline_id, pipeline_version_id, "get a pipeline version")

    def delete_pipeline_version(self, query: dict, body: Any, pipeline_id: str,
                                pipeline_version_id: str) -> Any:
        """DELETE /pipelines/{id}/versions/{version_id} (its runs keep their spec)."""
        with self.store.lock:
            self._get_version(pipeline_id, pipeline_version_id, "delete a pipeline version")
            self.store.delete("version", pipeline_version_id)
        return {}

    def unimplemented(self, query: dict, body: Any, **ids: str) -> Any:
        """Paths the real server has and this endpoint does not."""
        raise HttpError(501, CODE_UNIMPLEMENTED,
                        "Unimplemented: the local endpoint does not fetch pipelines from a "
                        "package URL; upload the compiled file (POST /apis/v2beta1/"
                        "pipelines/upload or upload_version)")

    # ----------------------------------------------------------- experiments

    _EXPERIMENT_KEYS = {"display_name": "display_name", "name": "display_name",
                        "created_at": "created_at", "experiment_id": "experiment_id",
                        "id": "experiment_id", "storage_state": "storage_state",
                        "description": "description"}

    def _experiment_keys(self) -> dict:
        """_EXPERIMENT_KEYS and ``last_run_created_at`` (the UI sorts its experiment list
        by it): the creation time of the experiment's newest run, read from the runs only
        when a sort or filter names it."""
        newest: dict = {}

        def last_run_created_at(experiment: m.V2beta1Experiment) -> Any:
            if not newest:
                newest[None] = None
                for run in self.store.list("run"):
                    seen = newest.get(run.experiment_id)
                    if run.created_at is not None and (seen is None or run.created_at > seen):
                        newest[run.experiment_id] = run.created_at
            return newest.get(experiment.experiment_id)

        return dict(self._EXPERIMENT_KEYS, last_run_created_at=last_run_created_at)

    def default_experiment_id(self) -> str:
        """The id of the "Default" experiment (created when missing)."""
        with self.store.lock:
            existing = self.store.experiment_by_name(DEFAULT_EXPERIMENT)
            if existing is not None:
                return existing.experiment_id
            return self._new_experiment(DEFAULT_EXPERIMENT, "All runs created without "
                                                            "specifying an experiment will "
                                                            "be grouped here.").experiment_id

    def _new_experiment(self, name: str, description: Optional[str]) -> m.V2beta1Experiment:
        if self.store.experiment_by_name(name) is not None:
            raise _already_exists(f"Failed to create a new experiment: Experiment with name "
                                  f"{name} already exists")
        experiment = m.V2beta1Experiment(experiment_id=str(uuid.uuid4()), display_name=name,
                                         description=description or None,
                                         created_at=utcnow(), storage_state="AVAILABLE")
        self.store.add_experiment(experiment)
        return experiment

    def list_experiments(self, query: dict, body: Any) -> Any:
        """GET /experiments."""
        page, token, total = self._page(self.store.list("experiment"), query,
                                        self._experiment_keys(), "experiments")
        return m.V2beta1ListExperimentsResponse(experiments=page, total_size=total,
                                                next_page_token=token or None)

    def create_experiment(self, query: dict, body: Any) -> Any:
        """POST /experiments."""
        experiment = kfp_json.from_json(body, m.V2beta1Experiment, "experiment")
        name = (experiment.display_name or "").strip()
        if not name:
            raise invalid("Experiment name is empty. Please specify a valid experiment name")
        with self.store.lock:
            return self._new_experiment(name, experiment.description)

    def _get_experiment(self, experiment_id: str, action: str) -> m.V2beta1Experiment:
        experiment = self.store.get("experiment", experiment_id)
        if experiment is None:
            raise _not_found("Experiment", experiment_id, action)
        return experiment

    def get_experiment(self, query: dict, body: Any, experiment_id: str) -> Any:
        """GET /experiments/{id}."""
        return self._get_experiment(experiment_id, "get an experiment")

    def delete_experiment(self, query: dict, body: Any, experiment_id: str) -> Any:
        """DELETE /experiments/{id} (its runs stay)."""
        with self.store.lock:
            self._get_experiment(experiment_id, "delete an experiment")
            self.store.delete("experiment", experiment_id)
        return {}

    def _set_experiment_storage(self, experiment_id: str, state: str) -> Any:
        with self.store.lock:
            experiment = self._get_experiment(experiment_id, f"set an experiment {state}")
            experiment.storage_state = state
            self.store.save_experiment(experiment)
        return {}

    def archive_experiment(self, query: dict, body: Any, experiment_id: str) -> Any:
        """POST /experiments/{id}:archive."""
        return self._set_experiment_storage(experiment_id, "ARCHIVED")

    def unarchive_experiment(self, query: dict, body: Any, experiment_id: str) -> Any:
        """POST /experiments/{id}:unarchive."""
        return self._set_experiment_storage(experiment_id, "AVAILABLE")

    # ---------------------------------------------------------------- runs

    _RUN_KEYS = {"display_name": "display_name", "name": "display_name",
                 "created_at": "created_at", "scheduled_at": "scheduled_at",
                 "finished_at": "finished_at", "state": "state", "run_id": "run_id",
                 "id": "run_id", "experiment_id": "experiment_id",
                 "recurring_run_id": "recurring_run_id", "storage_state": "storage_state",
                 "description": "description"}

    def _resolve_source(self, spec: Any, ref: Optional[m.V2beta1PipelineVersionReference],
                        version_id: Optional[str], what: str, action: str) -> tuple:
        """The (version reference, spec document, pipeline name) a run or recurring run uses."""
        if ref is None and version_id:
            ref = m.V2beta1PipelineVersionReference(pipeline_version_id=version_id)
        if (ref is None) == (spec is None):
            raise invalid(f"a {what} needs exactly one of pipeline_spec and "
                          "pipeline_version_reference")
        if ref is None:
            document = check_inline_spec(spec, f"{what}.pipeline_spec")
            name = rules.pipeline_spec_of(document).get("pipelineInfo", {}).get("name", "")
            return None, document, f"pipeline {name!r}"
        if not ref.pipeline_version_id:
            if not ref.pipeline_id:
                raise invalid(f"{what}.pipeline_version_reference has no pipeline_id")
            self._get_pipeline(ref.pipeline_id, action)
            version = self._latest_version(ref.pipeline_id)  # the server runs the latest
            if version is None:
                raise _not_found("A version of pipeline", ref.pipeline_id, action)
        else:
            if ref.pipeline_id:
                self._get_pipeline(ref.pipeline_id, action)
            version = self._get_version(ref.pipeline_id or "", ref.pipeline_version_id, action)
        pipeline = self.store.get("pipeline", version.pipeline_id)
        name = pipeline.display_name if pipeline else version.display_name
        ref = m.V2beta1PipelineVersionReference(pipeline_id=version.pipeline_id,
                                                pipeline_version_id=version.pipeline_version_id)
        return ref, version.pipeline_spec, f"pipeline {name!r} (version {version.display_name!r})"

    def _runtime_config(self, config: Optional[m.V2beta1RuntimeConfig], document: Any,
                        pipeline: str) -> m.V2beta1RuntimeConfig:
        config = config or m.V2beta1RuntimeConfig()
        params = rules.check_parameters(document, config.parameters or {}, pipeline=pipeline)
        return m.V2beta1RuntimeConfig(parameters=params, pipeline_root=config.pipeline_root)

    def new_run(self, *, display_name: str, description: Optional[str],
                experiment_id: Optional[str], ref: Any, inline_spec: Any, document: Any,
                config: m.V2beta1RuntimeConfig, service_account: Optional[str],
                recurring_run_id: Optional[str] = None,
                scheduled_at: Optional[dt.datetime] = None) -> m.V2beta1Run:
        """Stores a PENDING run and wakes the executor (checks already done)."""
        with self.store.lock:
            experiment_id = experiment_id or self.default_experiment_id()
            self._get_experiment(experiment_id, "create a run")
            now = utcnow()
            run = m.V2beta1Run(
                experiment_id=experiment_id, run_id=str(uuid.uuid4()),
                display_name=display_name, description=description or None,
                storage_state="AVAILABLE", pipeline_version_reference=ref,
                pipeline_spec=inline_spec, runtime_config=config,
                service_account=service_account or "pipeline-runner", created_at=now,
                scheduled_at=scheduled_at or now, recurring_run_id=recurring_run_id)
            set_state(run, "PENDING", now)
            self.store.add_run(run, document)
        self.executor.wake()
        return run

    def create_run(self, query: dict, body: Any) -> Any:
        """POST /runs."""
        run = kfp_json.from_json(body, m.V2beta1Run, "run")
        name = (run.display_name or "").strip()
        if not name:
            raise invalid("The run name is empty. Please specify a valid name")
        with self.store.lock:
            ref, document, pipeline = self._resolve_source(
                run.pipeline_spec, run.pipeline_version_reference, run.pipeline_version_id,
                "run", "create a run")
            if run.experiment_id:
                self._get_experiment(run.experiment_id, "create a run")
            config = self._runtime_config(run.runtime_config, document, pipeline)
            return self.new_run(display_name=name, description=run.description,
                                experiment_id=run.experiment_id, ref=ref,
                                inline_spec=document if ref is None else None,
                                document=document, config=config,
                                service_account=run.service_account)

    def list_runs(self, query: dict, body: Any) -> Any:
        """GET /runs (experiment_id, filter, sort_by, paging)."""
        if query.get("experiment_id"):
            items = self.store.list("run", "experiment_id=?", (query["experiment_id"],))
        else:
            items = self.store.list("run")
        page, token, total = self._page(items, query, self._RUN_KEYS, "runs")
        return m.V2beta1ListRunsResponse(runs=page, total_size=total,
                                         next_page_token=token or None)

    def _get_run(self, run_id: str, action: str) -> m.V2beta1Run:
        run = self.store.get("run", run_id)
        if run is None:
            raise _not_found("Run", run_id, action)
        return run

    def get_run(self, query: dict, body: Any, run_id: str) -> Any:
        """GET /runs/{id}."""
        return self._get_run(run_id, "get a run")

    def terminate_run(self, query: dict, body: Any, run_id: str) -> Any:
        """POST /runs/{id}:terminate: ends the worker; the run becomes CANCELED."""
        run = self._get_run(run_id, "terminate a run")
        if not self.executor.terminate(run_id):
            raise HttpError(400, CODE_FAILED_PRECONDITION,
                            f"Failed to terminate a run: run {run_id} is already "
                            f"{run.state}")
        return {}

    def delete_run(self, query: dict, body: Any, run_id: str) -> Any:
        """DELETE /runs/{id} (an active run is terminated first; its folder stays)."""
        self._get_run(run_id, "delete a run")
        self.executor.terminate(run_id)
        self.store.delete("run", run_id)
        return {}

    def retry_run(self, query: dict, body: Any, run_id: str) -> Any:
        """POST /runs/{id}:retry: a FAILED or CANCELED run runs again (executor.retry)."""
        self._get_run(run_id, "retry a run")
        state = self.executor.retry(run_id)
        if state is not None:
            raise HttpError(400, CODE_FAILED_PRECONDITION,
                            f"Failed to retry run {run_id}: Workflow must be Failed/Error to "
                            f"retry (the run is {state})")
        return {}

    def _set_run_storage(self, run_id: str, state: str) -> Any:
        with self.store.lock:
            run = self._get_run(run_id, f"set a run {state}")
            run.storage_state = state
            self.store.save_run(run)
        return {}

    def archive_run(self, query: dict, body: Any, run_id: str) -> Any:
        """POST /runs/{id}:archive."""
        return self._set_run_storage(run_id, "ARCHIVED")

    def unarchive_run(self, query: dict, body: Any, run_id: str) -> Any:
        """POST /runs/{id}:unarchive."""
        return self._set_run_storage(run_id, "AVAILABLE")

    # ------------------------------------------------------- recurring runs

    _RECURRING_KEYS = {"display_name": "display_name", "name": "display_name",
                       "created_at": "created_at", "updated_at": "updated_at",
                       "recurring_run_id": "recurring_run_id", "id": "recurring_run_id",
                       "status": "status", "experiment_id": "experiment_id",
                       "description": "description"}

    @staticmethod
    def _check_trigger(trigger: Optional[m.V2beta1Trigger]) -> m.V2beta1Trigger:
        if trigger is None or (trigger.cron_schedule is None) == (
                trigger.periodic_schedule is None):
            raise invalid("a recurring run needs a trigger with exactly one of cron_schedule "
                          "and periodic_schedule")
        schedule = trigger.cron_schedule or trigger.periodic_schedule
        start, end = rules.check_window(schedule.start_time, schedule.end_time)
        if trigger.cron_schedule is not None:
            cron = rules.check_cron(trigger.cron_schedule.cron)
            return m.V2beta1Trigger(cron_schedule=m.V2beta1CronSchedule(
                start_time=start, end_time=end, cron=cron))
        interval = rules.check_interval(trigger.periodic_schedule.interval_second)
        return m.V2beta1Trigger(periodic_schedule=m.V2beta1PeriodicSchedule(
            start_time=start, end_time=end, interval_second=str(interval)))

    def create_recurring_run(self, query: dict, body: Any) -> Any:
        """POST /recurringruns."""
        rr = kfp_json.from_json(body, m.V2beta1RecurringRun, "recurring_run")
        name = (rr.display_name or "").strip()
        if not name:
            raise invalid("The recurring run name is empty. Please specify a valid name")
        trigger = self._check_trigger(rr.trigger)
        limit = rules.check_max_concurrency(rr.max_concurrency)
        if rr.mode not in (None, "ENABLE", "DISABLE", "MODE_UNSPECIFIED"):
            raise invalid(f"mode {rr.mode!r} is not ENABLE or DISABLE")
        with self.store.lock:
            ref, document, pipeline = self._resolve_source(
                rr.pipeline_spec, rr.pipeline_version_reference, rr.pipeline_version_id,
                "recurring run", "create a recurring run")
            experiment_id = rr.experiment_id or self.default_experiment_id()
            self._get_experiment(experiment_id, "create a recurring run")
            config = self._runtime_config(rr.runtime_config, document, pipeline)
            now = utcnow()
            enabled = rr.mode != "DISABLE"
            stored = m.V2beta1RecurringRun(
                recurring_run_id=str(uuid.uuid4()), display_name=name,
                description=rr.description or None, pipeline_version_reference=ref,
                pipeline_spec=document if ref is None else None, runtime_config=config,
                service_account=rr.service_account or "pipeline-runner",
                max_concurrency=str(limit), trigger=trigger,
                mode="ENABLE" if enabled else "DISABLE", created_at=now, updated_at=now,
                status="ENABLED" if enabled else "DISABLED",
                no_catchup=bool(rr.no_catchup), experiment_id=experiment_id)
            self.store.add_recurring_run(stored, document, anchor=now.timestamp())
        return stored

    def list_recurring_runs(self, query: dict, body: Any) -> Any:
        """GET /recurringruns (experiment_id, filter, sort_by, paging)."""
        if query.get("experiment_id"):
            items = self.store.list("recurring_run", "experiment_id=?",
                                    (query["experiment_id"],))
        else:
            items = self.store.list("recurring_run")
        page, token, total = self._page(items, query, self._RECURRING_KEYS, "recurring runs")
        return m.V2beta1ListRecurringRunsResponse(recurring_runs=page, total_size=total,
                                                  next_page_token=token or None)

    def _get_recurring(self, recurring_run_id: str, action: str) -> m.V2beta1RecurringRun:
        recurring = self.store.get("recurring_run", recurring_run_id)
        if recurring is None:
            raise _not_found("Recurring run", recurring_run_id, action)
        return recurring

    def get_recurring_run(self, query: dict, body: Any, recurring_run_id: str) -> Any:
        """GET /recurringruns/{id}."""
        return self._get_recurring(recurring_run_id, "get a recurring run")

    def delete_recurring_run(self, query: dict, body: Any, recurring_run_id: str) -> Any:
        """DELETE /recurringruns/{id} (its runs stay)."""
        with self.store.lock:
            self._get_recurring(recurring_run_id, "delete a recurring run")
            self.store.delete("recurring_run", recurring_run_id)
        return {}

    def enable_recurring_run(self, query: dict, body: Any, recurring_run_id: str) -> Any:
        """POST /recurringruns/{id}:enable.

        The schedule's last slot stays, as the backend keeps ``LastTriggeredTime``: the
        slots missed while disabled are caught up (all, or with no_catchup the latest)."""
        with self.store.lock:
            rr = self._get_recurring(recurring_run_id, "enable a recurring run")
            if rr.status != "ENABLED":
                rr.status, rr.mode, rr.updated_at, rr.error = "ENABLED", "ENABLE", utcnow(), None
                self.store.save_recurring_run(rr)
        return {}

    def disable_recurring_run(self, query: dict, body: Any, recurring_run_id: str) -> Any:
        """POST /recurringruns/{id}:disable."""
        with self.store.lock:
            rr = self._get_recurring(recurring_run_id, "disable a recurring run")
            if rr.status != "DISABLED":
                rr.status, rr.mode, rr.updated_at = "DISABLED", "DISABLE", utcnow()
                self.store.save_recurring_run(rr)
        return {}

    def update_recurring_run(self, query: dict, body: Any, recurring_run_id: str) -> Any:
        """PATCH /recurringruns/{id}: a kfp-ct extension (the KFP API has no update call).

        The body is a recurring run holding only what changes: ``trigger`` (cron or
        interval, start / end), ``runtime_config.parameters`` (merged over the current
        ones), ``pipeline_version_reference`` / ``pipeline_version_id`` or
        ``pipeline_spec``, ``max_concurrency``, ``no_catchup``, ``display_name``,
        ``description``. The id, status, runs in progress and the schedule's last slot stay,
        so the next slot counts on from the last one under the new trigger.
        """
        change = kfp_json.from_json(body, m.V2beta1RecurringRun, "recurring_run")
        with self.store.lock:
            rr = self._get_recurring(recurring_run_id, "update a recurring run")
            if change.trigger is not None:
                rr.trigger = self._check_trigger(change.trigger)
            if change.max_concurrency is not None:
                rr.max_concurrency = str(rules.check_max_concurrency(change.max_concurrency))
            if change.no_catchup is not None:
                rr.no_catchup = bool(change.no_catchup)
            if (change.display_name or "").strip():
                rr.display_name = change.display_name.strip()
            if change.description is not None:
                rr.description = change.description or None
            document = self.store.recurring_spec(recurring_run_id)
            pipeline = f"the pipeline of recurring run {recurring_run_id}"
            if (change.pipeline_spec is not None or change.pipeline_version_reference
                    is not None or change.pipeline_version_id):
                ref, document, pipeline = self._resolve_source(
                    change.pipeline_spec, change.pipeline_version_reference,
                    change.pipeline_version_id, "recurring run", "update a recurring run")
                rr.pipeline_version_reference = ref
                rr.pipeline_spec = document if ref is None else None
            config = rr.runtime_config or m.V2beta1RuntimeConfig()
            params = dict(config.parameters or {})
            given = change.runtime_config
            params.update((given.parameters or {}) if given is not None else {})
            rr.runtime_config = self._runtime_config(m.V2beta1RuntimeConfig(
                parameters=params, pipeline_root=(given.pipeline_root if given is not None
                                                  and given.pipeline_root
                                                  else config.pipeline_root)),
                document, pipeline)
            rr.updated_at = utcnow()
            self.store.set_recurring_spec(recurring_run_id, document)
            self.store.save_recurring_run(rr)
        return rr

    def fire(self, recurring: m.V2beta1RecurringRun, slot: dt.datetime) -> None:
        """The scheduler's hook: the run of one slot of a recurring run.

        The slot's time reaches the run: its ``scheduled_at`` (as on the backend), the
        backend's macros in string parameters (``[[ScheduledTime]]``,
        ``{{$.scheduledTime.strftime('%Y-%m-%d')}}``; ``rules.fill_schedule_macros``), and
        ``dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER`` in its spec (RFC 3339 UTC). The
        last two go beyond KFP backend 2.5.0, which fills neither for a v2 pipeline, and
        kfp.local, which leaves the placeholder as it is.
        """
        slot_utc = slot.astimezone(dt.timezone.utc)
        document = rules.fill_schedule_time(
            self.store.recurring_spec(recurring.recurring_run_id), slot_utc)
        config = recurring.runtime_config or m.V2beta1RuntimeConfig()
        now = utcnow()
        config = m.V2beta1RuntimeConfig(
            parameters={name: rules.fill_schedule_macros(value, slot_utc, now)
                        for name, value in (config.parameters or {}).items()},
            pipeline_root=config.pipeline_root)
        inline = None if recurring.pipeline_spec is None else document
        self.new_run(display_name=f"{recurring.display_name}-{slot_utc:%Y%m%d%H%M%S}",
                     description=recurring.description, experiment_id=recurring.experiment_id,
                     ref=recurring.pipeline_version_reference,
                     inline_spec=inline, document=document, config=config,
                     service_account=recurring.service_account,
                     recurring_run_id=recurring.recurring_run_id, scheduled_at=slot_utc)

    # -------------------------------------------------------- run artifacts

    @staticmethod
    def _task_of(run: m.V2beta1Run, node_id: str) -> Optional[str]:
        """The task a node id names: a ``task_details`` entry's task_id or its name."""
        details = (run.run_details.task_details if run.run_details else None) or []
        for task in details:
            if node_id in (task.task_id, task.display_name):
                return task.display_name
        return None

    def _read_artifact(self, run_id: str, node_id: str, artifact_name: str,
                       experiment_id: str = "") -> Any:
        """ReadArtifact: the output ``artifact_name`` of task ``node_id`` as the real
        server packs an Argo artifact (a gzip'd tar), base64 in ``data``; 404 in the
        server's words (which quote the request's fields) for a missing run, task or
        output."""
        fields = (("experiment_id", experiment_id), ("run_id", run_id), ("node_id", node_id),
                  ("artifact_name", artifact_name))
        request = " ".join(f"{k}:{kfp_json.go_quote(v)}" for k, v in fields if v)
        where = f"failed to read artifact '{request}'"
        run = self.store.get("run", run_id)
        if run is None:
            raise HttpError(404, CODE_NOT_FOUND,
                            f"{where}: ResourceNotFoundError: Run {run_id} not found")
        task = self._task_of(run, node_id)
        path = (artifacts.artifact_file(self.executor.state_dir, run_id, task, artifact_name)
                if task else None)
        if path is None:
            raise HttpError(404, CODE_NOT_FOUND,
                            f"{where}: ResourceNotFoundError: artifact runs/{run_id}/nodes/"
                            f"{node_id}/artifacts/{artifact_name} not found")
        return {"data": base64.b64encode(artifacts.pack(path)).decode("ascii")}

    def read_artifact(self, query: dict, body: Any, run_id: str, node_id: str,
                      artifact_name: str) -> Any:
        """GET /runs/{run_id}/nodes/{node_id}/artifacts/{artifact_name}:read.

        ``node_id`` is a task of the run: its ``task_details[].task_id`` or its name
        (``display_name``, the ``pod_name`` the ML Metadata records give)."""
        return self._read_artifact(run_id, node_id, artifact_name,
                                   query.get("experiment_id") or "")

    # -------------------------------------------------------------- v1beta1
    # The v1beta1 paths the Kubeflow Pipelines UI 2.5.0 calls, answered from the same
    # records as v2beta1 (their shapes: v1.py), with the words of the real server's v1
    # handlers (pipeline_server.go, run_server.go, experiment_server.go, job_server.go).

    def healthz_v1(self, query: dict, body: Any) -> Any:
        """GET /apis/v1beta1/healthz (the UI's own server asks it for its healthz)."""
        return {"commit_sha": "unknown", "tag_name": "unknown", "multi_user": False}

    @staticmethod
    def _missing(chain: str, what: str, item_id: str) -> HttpError:
        """A 404 worded as the real server's error chain ends: ``ResourceNotFoundError``."""
        return HttpError(404, CODE_NOT_FOUND,
                         f"{chain}: ResourceNotFoundError: {what} {item_id} not found")

    @staticmethod
    def _resource_key(query: dict, name: str) -> Optional[tuple]:
        """``(type, id)`` of a ``<name>.type`` / ``<name>.id`` query (a v1beta1 ResourceKey,
        the type by name or number), or None when neither is given."""
        if not any(k.startswith(name + ".") for k in query):
            return None
        value = (query.get(f"{name}.type") or "0").strip()
        kind = v1.RESOURCE_TYPES.get(value, value)
        if kind not in v1.RESOURCE_TYPES.values():
            raise invalid(f"{name}.type: {value!r} is not a ResourceType (one of "
                          f"{', '.join(v1.RESOURCE_TYPES.values())})")
        return kind, query.get(f"{name}.id") or ""

    def _version_name(self, ref: Any) -> str:
        """The name of the pipeline version a run or recurring run uses ("" if none)."""
        if ref is None or not ref.pipeline_version_id:
            return ""
        version = self.store.get("version", ref.pipeline_version_id)
        return version.display_name if version is not None else ""

    def _latest_version(self, pipeline_id: str) -> Optional[m.V2beta1PipelineVersion]:
        """The newest version of a pipeline, or None when it has none."""
        versions = self.store.list("version", "pipeline_id=?", (pipeline_id,))
        return versions[-1] if versions else None

    def list_pipelines_v1(self, query: dict, body: Any) -> Any:
        """GET /apis/v1beta1/pipelines: pipelines with their latest version as default."""
        key = self._resource_key(query, "resource_reference_key")
        head = "Failed to list pipelines (v1beta1)"
        if key is not None and key[0] == "UNKNOWN_RESOURCE_TYPE":
            raise HttpError(400, kfp_json.CODE_INVALID_ARGUMENT,
                            f"{head} due to filter validation error: Unrecognized resource "
                            "reference type: Invalid input error: Failed to convert "
                            "unsupported v1beta1 API resource type UNKNOWN_RESOURCE_TYPE")
        if key is not None and key[0] != "NAMESPACE":
            model_type = v1.MODEL_TYPES[key[0]]
            raise invalid(f"{head} due to invalid resource references for pipelines: "
                          f"&{{{model_type} {key[1]}}}")
        page, token, total = self._page(self.store.list("pipeline"), query,
                                        self._PIPELINE_KEYS, "pipelines", "v1beta1")
        return v1.message({
            "pipelines": [v1.pipeline(p, self._latest_version(p.pipeline_id)) for p in page],
            "total_size": total, "next_page_token": token})

    def get_pipeline_v1(self, query: dict, body: Any, pipeline_id: str) -> Any:
        """GET /apis/v1beta1/pipelines/{id}: with its latest version as ``default_version``
        (a pipeline without versions is a 404, as on the real server)."""
        head = f"Failed to get a pipeline (v1beta1) {pipeline_id}"
        pipeline = self.store.get("pipeline", pipeline_id)
        if pipeline is None:
            raise self._missing(f"{head}. Check error stack: Failed to get a pipeline with "
                                f"id {pipeline_id}", "Pipeline", pipeline_id)
        latest = self._latest_version(pipeline_id)
        if latest is None:
            raise self._missing(f"{head} due to error fetching the latest pipeline version: "
                                "Failed to get the latest pipeline version for a pipeline",
                                "PipelineVersion", pipeline_id)
        return v1.pipeline(pipeline, latest)

    def delete_pipeline_v1(self, query: dict, body: Any, pipeline_id: str) -> Any:
        """DELETE /apis/v1beta1/pipelines/{id}: refused while it has versions."""
        head = f"Failed to delete pipeline (v1beta1) {pipeline_id}. Check error stack"
        with self.store.lock:
            if self.store.get("pipeline", pipeline_id) is None:
                raise self._missing(f"{head}: Failed to delete pipeline with id {pipeline_id} "
                                    "as it was not found", "Pipeline", pipeline_id)
            latest = self._latest_version(pipeline_id)
            if latest is not None:
                raise HttpError(400, kfp_json.CODE_INVALID_ARGUMENT,
                                f"{head}: Invalid input error: Failed to delete pipeline with "
                                f"id {pipeline_id} as it has existing pipeline versions (e.g. "
                                f"{latest.pipeline_version_id})")
            self.store.delete("pipeline", pipeline_id)
        return {}

    def get_template_v1(self, query: dict, body: Any, pipeline_id: str) -> Any:
        """GET /apis/v1beta1/pipelines/{id}/templates: its latest version's spec as YAML."""
        head = (f"Failed to get the default template (v1beta1) for pipeline {pipeline_id}. "
                "Check error stack")
        if self.store.get("pipeline", pipeline_id) is None:
            raise self._missing(f"{head}: Failed to get the latest template as pipeline was "
                                "not found", "Pipeline", pipeline_id)
        latest = self._latest_version(pipeline_id)
        if latest is None:
            raise self._missing(f"{head}: Failed to get the latest template for a pipeline",
                                "PipelineVersion", pipeline_id)
        return {"template": v1.spec_yaml(latest.pipeline_spec)}

    def list_pipeline_versions_v1(self, query: dict, body: Any) -> Any:
        """GET /apis/v1beta1/pipeline_versions?resource_key.type=PIPELINE&resource_key.id=
        (the type is not looked at, as on the real server), with paging, sort and filter."""
        key = self._resource_key(query, "resource_key")
        if key is None:
            raise invalid("Failed to list pipeline versions (v1beta1) due to missing "
                          "pipeline id")
        self._page([], query, self._VERSION_KEYS, "pipeline versions", "v1beta1")  # first
        pipeline_id = key[1]
        head = (f"Failed to list pipeline versions (v1beta1) with pipeline id {pipeline_id}. "
                "Check error stack")
        if not pipeline_id:
            raise HttpError(400, kfp_json.CODE_INVALID_ARGUMENT,
                            f"{head}: Invalid input error: Failed to list pipeline versions. "
                            "Pipeline id cannot be empty")
        if self.store.get("pipeline", pipeline_id) is None:
            raise self._missing(f"{head}: Failed to list pipeline versions due to error "
                                f"fetching the namespace for pipeline {pipeline_id}: Failed to "
                                f"get namespace for pipeline id {pipeline_id}: Failed to get a "
                                f"pipeline with id {pipeline_id}", "Pipeline", pipeline_id)
        items = self.store.list("version", "pipeline_id=?", (pipeline_id,))
        page, token, total = self._page(items, query, self._VERSION_KEYS, "pipeline versions",
                                        "v1beta1")
        return v1.message({"versions": [v1.pipeline_version(v) for v in page],
                           "next_page_token": token, "total_size": total})

    def get_pipeline_version_v1(self, query: dict, body: Any, version_id: str) -> Any:
        """GET /apis/v1beta1/pipeline_versions/{id}."""
        version = self.store.get("version", version_id)
        if version is None:
            raise self._missing(f"Failed to get a pipeline version (v1beta1) {version_id}: "
                                f"Failed to get a pipeline version with id {version_id}",
                                "PipelineVersion", version_id)
        return v1.pipeline_version(version)

    def delete_pipeline_version_v1(self, query: dict, body: Any, version_id: str) -> Any:
        """DELETE /apis/v1beta1/pipeline_versions/{id} (its runs keep their spec)."""
        with self.store.lock:
            if self.store.get("version", version_id) is None:
                raise self._missing(f"Failed to delete a pipeline version (v1beta1) "
                                    f"{version_id} due error fetching a pipeline id: Failed to "
                                    f"get a pipeline version with id {version_id}",
                                    "PipelineVersion", version_id)
            self.store.delete("version", version_id)
        return {}

    def get_pipeline_version_template_v1(self, query: dict, body: Any,
                                         version_id: str) -> Any:
        """GET /apis/v1beta1/pipeline_versions/{id}/templates: its spec as YAML text."""
        version = self.store.get("version", version_id)
        if version is None:
            raise self._missing(f"Failed to get a pipeline template for pipeline version "
                                f"{version_id}: Failed to get pipeline version template as "
                                f"pipeline version id {version_id} was not found",
                                "PipelineVersion", version_id)
        return {"template": v1.spec_yaml(version.pipeline_spec)}

    def upload_pipeline_v1(self, query: dict, form: dict) -> Any:
        """POST /apis/v1beta1/pipelines/upload: as v2beta1, answered as an ApiPipeline."""
        pipeline = self.upload_pipeline(query, form)
        return v1.pipeline(pipeline, self._latest_version(pipeline.pipeline_id))

    def upload_pipeline_version_v1(self, query: dict, form: dict) -> Any:
        """POST /apis/v1beta1/pipelines/upload_version: answered as an ApiPipelineVersion."""
        return v1.pipeline_version(self.upload_pipeline_version(query, form))

    def list_experiments_v1(self, query: dict, body: Any) -> Any:
        """GET /apis/v1beta1/experiments (paging, sort, a v1beta1 filter)."""
        key = self._resource_key(query, "resource_reference_key")
        if key is not None and key[0] == "UNKNOWN_RESOURCE_TYPE":
            raise HttpError(400, kfp_json.CODE_INVALID_ARGUMENT,
                            "Validating v1beta1 filter failed: Unrecognized resource reference "
                            "type: Invalid input error: Failed to convert unsupported v1beta1 "
                            "API resource type UNKNOWN_RESOURCE_TYPE")
        if key is not None and key[0] != "NAMESPACE":
            model_type = v1.MODEL_TYPES[key[0]]
            raise invalid("Failed to list v1beta1 experiment due to invalid resource reference "
                          "key. It must be of type 'Namespace' and contain an existing or empty "
                          f"namespace, but you provided {key[1]} of type {model_type}")
        page, token, total = self._page(self.store.list("experiment"), query,
                                        self._experiment_keys(), "experiments", "v1beta1")
        return v1.message({"experiments": [v1.experiment(e) for e in page],
                           "total_size": total, "next_page_token": token})

    def get_experiment_v1(self, query: dict, body: Any, experiment_id: str) -> Any:
        """GET /apis/v1beta1/experiments/{id}."""
        experiment = self.store.get("experiment", experiment_id)
        if experiment is None:
            raise self._missing("Failed to fetch v1beta1 experiment", "Experiment",
                                experiment_id)
        return v1.experiment(experiment)

    def get_run_v1(self, query: dict, body: Any, run_id: str) -> Any:
        """GET /apis/v1beta1/runs/{id}: an ApiRunDetail (the spec in
        ``run.pipeline_spec.pipeline_manifest``, by which the UI knows a v2 run)."""
        run = self.store.get("run", run_id)
        if run is None:
            raise self._missing(f"Failed to get a v1beta1 run: Failed to fetch run {run_id}",
                                "Run", run_id)
        return v1.run_detail(run, self.store.run_spec(run_id),
                             self._version_name(run.pipeline_version_reference))

    def delete_run_v1(self, query: dict, body: Any, run_id: str) -> Any:
        """DELETE /apis/v1beta1/runs/{id}: as v2beta1 (an active run is terminated)."""
        if self.store.get("run", run_id) is None:
            raise self._missing(f"Failed to delete a v1beta1 run: Failed to delete run {run_id} "
                                f"as it does not exist: Failed to fetch run {run_id}", "Run",
                                run_id)
        return self.delete_run(query, body, run_id)

    def read_artifact_v1(self, query: dict, body: Any, run_id: str, node_id: str,
                         artifact_name: str) -> Any:
        """GET /apis/v1beta1/runs/{run_id}/nodes/{node_id}/artifacts/{name}:read."""
        return self._read_artifact(run_id, node_id, artifact_name)

    def get_job_v1(self, query: dict, body: Any, job_id: str) -> Any:
        """GET /apis/v1beta1/jobs/{id}: a recurring run as an ApiJob."""
        recurring = self.store.get("recurring_run", job_id)
        if recurring is None:
            raise self._missing("Failed to fetch a v1beta1 recurring run", "Job", job_id)
        return v1.job(recurring, self.store.recurring_spec(job_id),
                      self._version_name(recurring.pipeline_version_reference))

# (path regex, {method: handler}); the first match wins, so fixed names go first.
_ID = r"[^/:]+"
ROUTES = [
    (f"{API}/healthz", {"GET": "healthz"}),
    (f"{API}/pipelines", {"GET": "list_pipelines", "POST": "create_pipeline"}),
    (f"{API}/pipelines/upload", {"POST": "upload_pipeline"}),
    (f"{API}/pipelines/upload_version", {"POST": "upload_pipeline_version"}),
    (f"{API}/pipelines/create", {"POST": "unimplemented"}),
    (f"{API}/pipelines/names/(?P<name>[^/]+)", {"GET": "get_pipeline_by_name"}),
    (f"{API}/pipelines/(?P<pipeline_id>{_ID})",
     {"GET": "get_pipeline", "DELETE": "delete_pipeline"}),
    (f"{API}/pipelines/(?P<pipeline_id>{_ID})/versions",
     {"GET": "list_pipeline_versions", "POST": "unimplemented"}),
    (f"{API}/pipelines/(?P<pipeline_id>{_ID})/versions/(?P<pipeline_version_id>{_ID})",
     {"GET": "get_pipeline_version", "DELETE": "delete_pipeline_version"}),
    (f"{API}/experiments", {"GET": "list_experiments", "POST": "create_experiment"}),
    (f"{API}/experiments/(?P<experiment_id>{_ID})",
     {"GET": "get_experiment", "DELETE": "delete_experiment"}),
    (f"{API}/experiments/(?P<experiment_id>{_ID}):archive", {"POST": "archive_experiment"}),
    (f"{API}/experiments/(?P<experiment_id>{_ID}):unarchive",
     {"POST": "unarchive_experiment"}),
    (f"{API}/runs", {"GET": "list_runs", "POST": "create_run"}),
    (f"{API}/runs/(?P<run_id>{_ID})", {"GET": "get_run", "DELETE": "delete_run"}),
    (f"{API}/runs/(?P<run_id>{_ID}):terminate", {"POST": "terminate_run"}),
    (f"{API}/runs/(?P<run_id>{_ID}):retry", {"POST": "retry_run"}),
    (f"{API}/runs/(?P<run_id>{_ID}):archive", {"POST": "archive_run"}),
    (f"{API}/runs/(?P<run_id>{_ID}):unarchive", {"POST": "unarchive_run"}),
    (f"{API}/runs/(?P<run_id>{_ID})/nodes/(?P<node_id>[^/]+)/artifacts/"
     f"(?P<artifact_name>[^/]+):read", {"GET": "read_artifact"}),
    (f"{API}/recurringruns", {"GET": "list_recurring_runs", "POST": "create_recurring_run"}),
    (f"{API}/recurringruns/(?P<recurring_run_id>{_ID})",
     {"GET": "get_recurring_run", "DELETE": "delete_recurring_run",
      "PATCH": "update_recurring_run"}),  # PATCH: a kfp-ct extension
    (f"{API}/recurringruns/(?P<recurring_run_id>{_ID}):enable",
     {"POST": "enable_recurring_run"}),
    (f"{API}/recurringruns/(?P<recurring_run_id>{_ID}):disable",
     {"POST": "disable_recurring_run"}),
    # v1beta1: what the Kubeflow Pipelines UI 2.5.0 calls (README "Paths for the Kubeflow UI")
    (f"{API_V1}/healthz", {"GET": "healthz_v1"}),
    (f"{API_V1}/pipelines", {"GET": "list_pipelines_v1", "POST": "unimplemented"}),
    (f"{API_V1}/pipelines/upload", {"POST": "upload_pipeline_v1"}),
    (f"{API_V1}/pipelines/upload_version", {"POST": "upload_pipeline_version_v1"}),
    (f"{API_V1}/pipelines/(?P<pipeline_id>{_ID})",
     {"GET": "get_pipeline_v1", "DELETE": "delete_pipeline_v1"}),
    (f"{API_V1}/pipelines/(?P<pipeline_id>{_ID})/templates", {"GET": "get_template_v1"}),
    (f"{API_V1}/pipeline_versions",
     {"GET": "list_pipeline_versions_v1", "POST": "unimplemented"}),
    (f"{API_V1}/pipeline_versions/(?P<version_id>{_ID})",
     {"GET": "get_pipeline_version_v1", "DELETE": "delete_pipeline_version_v1"}),
    (f"{API_V1}/pipeline_versions/(?P<version_id>{_ID})/templates",
     {"GET": "get_pipeline_version_template_v1"}),
    (f"{API_V1}/experiments", {"GET": "list_experiments_v1"}),
    (f"{API_V1}/experiments/(?P<experiment_id>{_ID})", {"GET": "get_experiment_v1"}),
    (f"{API_V1}/runs/(?P<run_id>{_ID})", {"GET": "get_run_v1", "DELETE": "delete_run_v1"}),
    (f"{API_V1}/runs/(?P<run_id>{_ID})/nodes/(?P<node_id>[^/]+)/artifacts/"
     f"(?P<artifact_name>[^/]+):read", {"GET": "read_artifact_v1"}),
    (f"{API_V1}/jobs/(?P<job_id>{_ID})", {"GET": "get_job_v1"}),
]
_NO_AUTH = {"healthz", "healthz_v1"}
_MULTIPART = {"upload_pipeline", "upload_pipeline_version", "upload_pipeline_v1",
              "upload_pipeline_version_v1"}
_NO_BODY_POSTS = {"terminate_run", "retry_run", "archive_run", "unarchive_run",
                  "enable_recurring_run", "disable_recurring_run", "archive_experiment",
                  "unarchive_experiment", "unimplemented"}


def route(method: str, path: str) -> tuple:
    """``(handler name, path parameters)`` of a request.

    Raises:
        HttpError: 404 for an unknown path, 405 for a method the path does not take.
    """
    for pattern, methods in ROUTES:
        match = re.fullmatch(pattern, path)
        if match:
            if method not in methods:
                raise HttpError(405, CODE_UNIMPLEMENTED,
                                f"Method Not Allowed: {method} {path} (allowed: "
                                f"{', '.join(sorted(methods))})")
            params = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items()}
            return methods[method], params
    raise HttpError(404, CODE_NOT_FOUND, f"Not Found: {path} is not a path of the KFP API "
                                         "this local endpoint serves (the v2beta1 API "
                                         "kfp.Client uses, and the v1beta1 paths the Kubeflow "
                                         "Pipelines UI calls)")


def _too_large(what: str, limit: int, seen: str) -> HttpError:
    return HttpError(413, CODE_RESOURCE_EXHAUSTED,
                     f"Request body too large: {what} may be at most {limit} bytes "
                     f"({limit >> 20} MiB) on this endpoint; got {seen}")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes one request to the LocalServer set as the ``owner`` class attribute."""

    owner: "LocalServer"
    server_version = "kfp-ct-local-endpoint/1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # requests.jsonl has them

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

    def _read_body(self, limit: int, what: str) -> bytes:
        """The body, refused with a 413 HttpError once it is larger than ``limit``: from
        the Content-Length before anything is read, or as chunks arrive."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, total = [], 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                total += size
                if total > limit:
                    raise _too_large(what, limit, f"more than {limit} bytes sent chunked")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            raise _too_large(what, limit, f"Content-Length {length}")
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self, method: str) -> None:
        owner = self.owner
        parsed = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in
                 urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in self.headers.items()}
        content_type = headers.get("content-type", "")
        try:
            upload = route(method, parsed.path)[0] in _MULTIPART
        except HttpError:
            upload = False  # answered below, after the (small) body is read
        try:
            raw = self._read_body(owner.max_upload_bytes if upload else MAX_JSON_BYTES,
                                  "a pipeline upload" if upload else "a JSON body")
        except HttpError as err:  # the body is left unread: this connection ends here
            self.close_connection = True
            owner._record(RecordedRequest(method=method, path=parsed.path, query=query,
                                          headers=_mask(headers), body=None, time=time.time()))
            self._send(err.status, err.payload())
            return
        except (ValueError, OSError) as exc:
            self._send(400, invalid(f"cannot read the request body: {exc}").payload())
            return
        if ui.is_ui_path(method, parsed.path):  # the Kubeflow UI's other back ends
            shown = dict(query, token="***") if "token" in query else query
            kept = None  # a gRPC-web call's request is kept (base64): it names what was read
            kind = headers.get("content-type", "")
            if raw and ui.grpcweb.is_grpc_web(kind) and len(raw) <= 4096:
                kept = raw.decode("ascii", "replace") if ui.grpcweb.is_text(kind) \
                    else base64.b64encode(raw).decode("ascii")
            owner._record(RecordedRequest(method=method, path=parsed.path, query=shown,
                                          headers=_mask(headers), body=kept,
                                          time=time.time()))
            self._send_answer(owner.ui_answer(method, parsed.path, query, headers, raw))
            return
        body: Any = None
        form: Optional[dict] = None
        body_error: Optional[HttpError] = None
        if content_type.lower().startswith("multipart/"):
            try:
                form = parse_multipart(content_type, raw)
                body = {"multipart": [{"name": k, "filename": f, "size": len(d)}
                                      for k, (f, d) in form.items()]}
            except HttpError as err:
                body_error = err
        elif raw:
            try:
                body = json.loads(raw)
            except ValueError as exc:
                body_error = invalid(f"the body is not JSON: {exc}")
        owner._record(RecordedRequest(method=method, path=parsed.path, query=query,
                                      headers=_mask(headers), body=body, time=time.time()))
        try:
            handler, params = route(method, parsed.path)
            if handler not in _NO_AUTH:
                owner.api.check_auth(headers)
            if body_error is not None:
                raise body_error
            if handler in _MULTIPART:
                if form is None:
                    parse_multipart(content_type, raw)  # raises with the reason
                result = getattr(owner.api, handler)(query, form)
            else:
                if method == "POST" and body is None and handler not in _NO_BODY_POSTS:
                    raise invalid("the request has no body (a JSON object)")
                result = getattr(owner.api, handler)(query, body, **params)
            self._send(200, to_json(result))
        except HttpError as err:
            self._send(err.status, err.payload())
        except rules.RuleError as err:
            self._send(400, invalid(str(err)).payload())
        except Exception as exc:  # a bug: say so, keep serving
            traceback.print_exc(file=sys.stderr)
            err = HttpError(500, CODE_INTERNAL, f"Internal error: {type(exc).__name__}: {exc}")
            self._send(500, err.payload())

    def _send_answer(self, answer: "ui.Answer") -> None:
        """A non-JSON answer (ui.py's), never sniffed as another type by a browser."""
        self._send_bytes(answer.status, answer.content_type, answer.body,
                         {"X-Content-Type-Options": "nosniff", **answer.headers})

    def _send(self, status: int, payload: Any) -> None:
        self._send_bytes(status, "application/json", json.dumps(payload).encode())

    def _send_bytes(self, status: int, content_type: str, data: bytes,
                    headers: Optional[Mapping[str, str]] = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


def loopback_host(host: str) -> str:
    """The IPv4 loopback address to bind for ``host``.

    Raises:
        LocalServerError: ``host`` is not a loopback address (the endpoint is for this
            machine only: it runs whatever pipeline it is sent).
    """
    if host in ("localhost", ""):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not address.is_loopback or address.version != 4:
        raise LocalServerError(f"host {host!r}: the local endpoint listens on the IPv4 "
                               "loopback only (127.0.0.1): it runs any pipeline it is sent, "
                               "so it must not be reachable from other machines")
    return str(address)


class LocalServer:
    """The local KFP v2beta1 endpoint: HTTP API, executor and scheduler.

    Args:
        state_dir: Where the state lives: ``state.sqlite``, ``requests.jsonl`` and
            ``runs/<run_id>/`` (job.json, status.json, log.txt, outputs/). An existing
            folder is resumed: PENDING runs are queued again, runs left RUNNING are FAILED
            ("interrupted: the local server restarted").
        host: A loopback address (anything else is refused).
        port: The port; 0 picks a free one.
        token: If set, every path but healthz needs ``Authorization: Bearer <token>``, and
            it is written to ``<state_dir>/token`` (mode 0600). None: no auth (what
            ``kfp-ct local-server --no-token`` runs; the command line and :func:`serve`
            make a token when none is given).
        poll_s: How often the scheduler and executor look (seconds).
        max_upload_bytes: The largest pipeline upload taken (413 above it).
        metadata: Record every run in the ML Metadata store ``<state_dir>/mlmd.sqlite``
            and serve its reads over gRPC-web for the Kubeflow UI (``metadata.py``).

    Usage::

        with LocalServer(state_dir) as server:
            client = kfp.Client(host=server.url)
    """

    def __init__(self, state_dir: str, host: str = "127.0.0.1", port: int = 0,
                 token: Optional[str] = None, poll_s: float = 0.25,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES, metadata: bool = True) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.record_metadata = metadata
        self.metadata: Any = None  # metadata.Metadata once started (None: not recorded)
        if max_upload_bytes < 1 << 20:
            raise LocalServerError(f"the upload limit must be at least 1 MiB, got "
                                   f"{max_upload_bytes} bytes")
        self.max_upload_bytes = max_upload_bytes
        self.host = loopback_host(host)
        self._port = port
        self.token = token or None
        self.poll_s = poll_s
        self._requests: collections.deque = collections.deque(maxlen=KEPT_REQUESTS)
        self._requests_lock = threading.Lock()
        self._store: Optional[Store] = None
        self._httpd: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self.executor: Optional[Executor] = None
        self.scheduler: Optional[Scheduler] = None
        self.api: Optional[Api] = None

    # --------------------------------------------------------------- lifecycle

    def start(self) -> "LocalServer":
        """Opens the state, recovers interrupted runs, binds and serves in threads.

        Returns:
            self.

        Raises:
            LocalServerError: the port is taken or the state folder is unusable.
        """
        from kfp_ct.pipelines.entrypoints.local_server.store import StoreError

        os.makedirs(os.path.join(self.state_dir, "runs"), exist_ok=True)
        try:
            self._store = Store(self.state_dir)
        except StoreError as exc:
            raise LocalServerError(str(exc)) from None
        if self.record_metadata:
            from kfp_ct.pipelines.entrypoints.local_server.metadata import Metadata

            self.metadata = Metadata(self.state_dir, artifact_uri=lambda run_id, root, path:
                                     ui.artifact_url(self.url, run_id, root, path))
        self.executor = Executor(self._store, self.state_dir, poll_s=self.poll_s,
                                 metadata=self.metadata)
        token_file = ""
        if self.token is not None:
            token_file = runtime.write_private(runtime.token_path(self.state_dir),
                                               self.token + "\n")
        self.api = Api(self._store, self.executor, self.token, token_file)
        self.executor.recover()
        self.api.default_experiment_id()
        owner = self

        class Handler(_Handler):
            pass

        Handler.owner = owner
        try:
            httpd = http.server.ThreadingHTTPServer((self.host, self._port), Handler)
        except OSError as exc:
            self._store.close()
            raise LocalServerError(f"cannot listen on {self.host}:{self._port}: "
                                   f"{exc.strerror or exc}") from None
        httpd.daemon_threads = True
        self._httpd = httpd
        self.scheduler = Scheduler(self._store, self.api.fire, poll_s=self.poll_s)
        self.executor.start()
        self.scheduler.start()
        self._thread = threading.Thread(target=httpd.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="kfp-ct-local-endpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops accepting, ends a running worker (its run FAILED), stops the threads."""
        if self._httpd is not None:
            self._httpd.shutdown()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.executor is not None:
            self.executor.stop()
        if self._httpd is not None:
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._store is not None:
            self._store.close()
            self._store = None
        if self.metadata is not None:
            self.metadata.close()
            self.metadata = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------- properties

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise LocalServerError("the local endpoint is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8888``."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list:
        """The newest KEPT_REQUESTS requests since start (RecordedRequest), oldest first."""
        with self._requests_lock:
            return list(self._requests)

    @property
    def store(self) -> Store:
        """The state (for tools and tests)."""
        if self._store is None:
            raise LocalServerError("the local endpoint is not started")
        return self._store

    def ui_answer(self, method: str, path: str, query: dict, headers: dict,
                  raw: bytes) -> "ui.Answer":
        """The Kubeflow UI's other back ends (``ui.py``): login, ML Metadata over
        gRPC-web, artifact files and task logs; all but login need the token."""
        def not_allowed(allowed: str) -> "ui.Answer":
            return ui.Answer(405, "text/plain; charset=utf-8",
                             f"Method Not Allowed: {method} {path} (allowed: {allowed})"
                             .encode(), {"Allow": allowed})

        content_type = headers.get("content-type", "")
        if path == ui.LOGIN_PATH:
            if method not in ("GET", "POST"):
                return not_allowed("GET, POST")
            return ui.login(method, query, raw,
                            None if self.token is None else self.api.valid_token)
        try:
            self.api.check_auth(headers)
        except HttpError as err:
            return ui.unauthenticated(path, content_type, err.message)
        if path.startswith(ui.METADATA_SERVICE):
            if method != "POST":
                return not_allowed("POST")
            return ui.metadata_call(self.metadata, path, content_type, raw)
        if method != "GET":
            return not_allowed("GET")
        if path.startswith(ui.ARTIFACTS_PREFIX):
            return ui.artifact_file(self.state_dir, path)
        return ui.task_log(self.state_dir, path)

    def _record(self, request: RecordedRequest) -> None:
        line = json.dumps(request.to_dict(), default=str)
        with self._requests_lock:
            self._requests.append(request)
            with open(os.path.join(self.state_dir, REQUESTS_LOG), "a") as fh:
                fh.write(line + "\n")


def serve(state_dir: str, port: int, token: Optional[str] = None,
          no_token: bool = False, max_upload_bytes: int = MAX_UPLOAD_BYTES,
          metadata: bool = True) -> None:
    """Runs the endpoint until SIGINT / SIGTERM (what ``kfp-ct local-server`` calls).

    A token is required by default: with ``token`` None one is made
    (``secrets.token_urlsafe(32)``). It is written to ``<state>/token`` (0600) and to this
    process's runtime file (see :mod:`.runtime`), where ``kfp-ct`` and its ``Client``
    find it; the runtime file is removed on stop. Prints one line, then blocks::

        kfp-ct local endpoint on http://127.0.0.1:PORT (state: DIR) token: TOKEN (also in DIR/token)

    With ``no_token`` the line ends ``WARNING: no token: any local account can run code
    as USER through this endpoint``. On a signal it stops cleanly (a running worker is
    ended, its run FAILED).

    Args:
        state_dir: The state folder (created or resumed).
        port: The port on 127.0.0.1 (0: a free one).
        token: The bearer token to require (None: a new one, unless ``no_token``).
        no_token: Serve without auth (any local account can then use the endpoint).
        max_upload_bytes: The largest pipeline upload taken (413 above it).
        metadata: Record runs in ML Metadata for the Kubeflow UI (LocalServer).

    Raises:
        LocalServerError: it cannot start (port taken, unusable state folder).
    """
    import getpass
    import signal

    stop = threading.Event()
    previous = {}

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    if no_token:
        token = None
    elif not token:
        token = runtime.new_token()
    server = LocalServer(state_dir, port=port, token=token,
                         max_upload_bytes=max_upload_bytes, metadata=metadata).start()
    runtime_file = ""
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
        runtime_file = runtime.write_runtime_file(server.url, server.port, token,
                                                  server.state_dir)
        line = f"kfp-ct local endpoint on {server.url} (state: {server.state_dir})"
        if token is None:
            line += (f" WARNING: no token: any local account can run code as "
                     f"{getpass.getuser()} through this endpoint")
        else:
            line += f" token: {token} (also in {runtime.token_path(server.state_dir)})"
        print(line, flush=True)
        if token is not None:  # for a browser: the Kubeflow UI on 127.0.0.1 (ui.py)
            print(f"Kubeflow UI: log in once at {server.url}{ui.LOGIN_PATH} (the token "
                  "becomes an HttpOnly cookie for 127.0.0.1)", flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        if runtime_file:
            runtime.remove_runtime_file(runtime_file)
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
