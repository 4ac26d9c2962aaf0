"""Upload, run and schedule kfp-ct pipelines on a KFP API server, from Python.

One import for a notebook::

    from kfp_ct.pipelines.entrypoints.client import Client

    kfp = Client("http://127.0.0.1:8888")          # or a Kubeflow host, or "" in a pod
    version = kfp.upload("training")               # compiles, uploads a new version
    run = kfp.run("training", {"push_destination": "/srv/models/penguins"})
    run = kfp.wait(run.run_id)                     # RunInfo: state, error, tasks
    daily = kfp.schedule("training", "train-daily", cron="0 0 3 * * *", params={...})
    kfp.disable_schedule(daily.recurring_run_id)

It is a thin layer over ``kfp.Client`` 2.13 that knows the backend's rules and says them
before the server does (:mod:`kfp_ct.pipelines.entrypoints.rules`), fails within ``timeout_s``
when the host does not answer (instead of kfp's 25 s retry loop), and turns every error
into a :class:`~kfp_ct.components.common.errors.KfpCtError` whose message names the host, the
pipeline and, on 401/403, the auth that was tried.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import tempfile
import time
from typing import Any, Callable, Mapping, Optional, Sequence

from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.retrain.kfp_launcher import (ENDPOINT_ENV, TERMINAL_STATES, KfpConnection,
                                                    check_endpoint, name_filter)
from kfp_ct.pipelines.entrypoints import catalog, rules

#: Environment variables the client reads when an argument is not given.
TOKEN_ENV = "KFP_CT_TOKEN"
NAMESPACE_ENV = "KFP_CT_NAMESPACE"
DEFAULT_EXPERIMENT = "kfp-ct"
DEFAULT_TIMEOUT_S = 1.5  # healthz; with process start, an unanswering host is reported in < 3 s
_PAGE = 100


class ClientError(KfpCtError):
    """A request could not be made or was refused; the message says why and where."""


@dataclasses.dataclass(frozen=True)
class PipelineVersion:
    """An uploaded pipeline version.

    Attributes:
        pipeline: Pipeline display name.
        pipeline_id: Server id of the pipeline.
        version: Version display name.
        version_id: Server id of the version.
        created_at: When the server created it (UTC), if it said.
        uploaded: False when an identical version was already there and is reused.
    """

    pipeline: str
    pipeline_id: str
    version: str
    version_id: str
    created_at: Optional[dt.datetime] = None
    uploaded: bool = True


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One task of a run, as the server reports it."""

    name: str
    state: str
    start_time: Optional[dt.datetime] = None
    end_time: Optional[dt.datetime] = None


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """A run's identity and state.

    Attributes:
        run_id: Server id.
        name: Display name.
        state: v2beta1 state (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED``...).
        error: The server's error message for a failed run ("" otherwise).
        created_at, finished_at: Times (UTC) if known.
        pipeline_id, version_id: What it runs (empty for an inline spec).
        recurring_run_id: The schedule that created it, if any.
        tasks: Task states, when the server reports them.
    """

    run_id: str
    name: str
    state: str
    error: str = ""
    created_at: Optional[dt.datetime] = None
    finished_at: Optional[dt.datetime] = None
    pipeline_id: str = ""
    version_id: str = ""
    recurring_run_id: str = ""
    tasks: tuple = ()

    @property
    def done(self) -> bool:
        """The run will not change any more."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A recurring run.

    Attributes:
        recurring_run_id: Server id.
        name: Display name.
        status: ``ENABLED`` or ``DISABLED``.
        trigger: ``cron 0 0 3 * * *`` or ``every 3600 s``.
        max_concurrency: How many of its runs may be active at once.
        no_catchup: Missed slots are skipped (only the latest runs).
        pipeline_id, version_id: What it runs.
        created_at: When it was created (UTC).
    """

    recurring_run_id: str
    name: str
    status: str
    trigger: str
    max_concurrency: int
    no_catchup: bool
    pipeline_id: str = ""
    version_id: str = ""
    created_at: Optional[dt.datetime] = None


# Answers of an endpoint without the kfp-ct schedule update (the KFP API server's gateway).
UPDATE_UNSUPPORTED = (404, 405, 501)


def _in_pod() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def _task_infos(run: Any) -> tuple:
    details = getattr(getattr(run, "run_details", None), "task_details", None) or []
    out = []
    for task in details:
        name = str(task.display_name or task.task_id or "?")
        # The DAG itself, drivers and the exit handler's group are not tasks a person ran.
        if name.startswith(("root", "exit-handler-")) or name.endswith("-driver"):
            continue
        out.append(TaskInfo(name, str(task.state or "UNKNOWN"), task.start_time,
                            task.end_time))
    return tuple(sorted(out, key=lambda t: (t.start_time is None, t.start_time or 0)))


def run_info(run: Any) -> RunInfo:
    """A :class:`RunInfo` from a ``kfp_server_api.V2beta1Run``."""
    ref = run.pipeline_version_reference
    error = getattr(run.error, "message", "") if run.error else ""
    return RunInfo(run_id=str(run.run_id), name=str(run.display_name or ""),
                   state=str(run.state or "UNKNOWN"), error=str(error or ""),
                   created_at=run.created_at, finished_at=run.finished_at,
                   pipeline_id=str(getattr(ref, "pipeline_id", "") or ""),
                   version_id=str(getattr(ref, "pipeline_version_id", "") or ""),
                   recurring_run_id=str(run.recurring_run_id or ""), tasks=_task_infos(run))


def schedule_info(job: Any) -> Schedule:
    """A :class:`Schedule` from a ``kfp_server_api.V2beta1RecurringRun``."""
    trigger = ""
    if job.trigger is not None and job.trigger.cron_schedule is not None:
        trigger = f"cron {job.trigger.cron_schedule.cron}"
    elif job.trigger is not None and job.trigger.periodic_schedule is not None:
        trigger = f"every {job.trigger.periodic_schedule.interval_second} s"
    ref = job.pipeline_version_reference
    return Schedule(recurring_run_id=str(job.recurring_run_id), name=str(job.display_name),
                    status=str(job.status or job.mode or ""), trigger=trigger,
                    max_concurrency=int(job.max_concurrency or 1),
                    no_catchup=bool(job.no_catchup),
                    pipeline_id=str(getattr(ref, "pipeline_id", "") or ""),
                    version_id=str(getattr(ref, "pipeline_version_id", "") or ""),
                    created_at=job.created_at)


def compiled_document(text: str, where: str) -> tuple[dict, dict]:
    """The pipeline spec of a compiled YAML, and the document a KFP server stores for it.

    Returns:
        ``(spec, stored)``: ``stored`` is the spec, or ``{"pipeline_spec": ...,
        "platform_spec": ...}`` when the YAML has a platform document (kfp 2.13's
        ``_PipelineDoc.to_dict()``, what a version's ``pipeline_spec`` holds).

    Raises:
        ClientError: not YAML, or not a compiled KFP pipeline.
    """
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise ClientError(f"pipeline package {where}: not YAML ({exc})") from None
    spec = docs[0] if docs else None
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise ClientError(f"pipeline package {where}: not a compiled KFP pipeline (no root / "
                          "pipelineInfo); compile it with `kfp-ct compile` or kfp's compiler")
    platform = docs[1] if len(docs) > 1 else None
    return spec, ({"pipeline_spec": spec, "platform_spec": platform} if platform else spec)


def read_package(path: str) -> tuple[str, dict, dict]:
    """Reads a compiled pipeline YAML; returns ``(text, spec, stored)``
    (see :func:`compiled_document`).

    Raises:
        ClientError: missing file, not YAML, or not a compiled KFP pipeline.
    """
    if not os.path.isfile(path):
        raise ClientError(f"pipeline package {path}: no such file")
    with open(path) as fh:
        text = fh.read()
    return (text, *compiled_document(text, path))


class Client:
    """kfp-ct's operations on a KFP API server (kfp.Client 2.13 underneath).

    Args:
        host: API base URL, e.g. ``http://127.0.0.1:8888`` (``kfp-ct local-server``) or a
            Kubeflow host. None: ``$KF_PIPELINES_ENDPOINT``; ``""`` inside a pod: kfp's
            in-cluster address with the pod's service-account token.
        namespace: Profile namespace for experiments and runs (multi-user Kubeflow).
            None: ``$KFP_CT_NAMESPACE``; "" lets the server decide.
        token: Bearer token to send. None: ``$KFP_CT_TOKEN``; when neither is set (nor a
            service-account token file) and ``host`` is a ``kfp-ct local-server`` on
            127.0.0.1/localhost, the token that server wrote to its runtime file (found
            by port: :func:`~kfp_ct.components.retrain.kfp_launcher.local_endpoint_token`).
        token_path: Service-account token file (``ServiceAccountTokenVolumeCredentials``),
            when no bearer token is given; ``$KF_PIPELINES_SA_TOKEN_PATH`` or the
            projected-token default path are tried too.
        timeout_s: Time allowed for the first contact (healthz) with the server.
        token_source: Where ``token`` came from, for messages on 401/403.
    """

    def __init__(self, host: Optional[str] = None, namespace: Optional[str] = None,
                 token: Optional[str] = None, token_path: str = "",
                 timeout_s: float = DEFAULT_TIMEOUT_S, token_source: str = "") -> None:
        where = "host"
        if host is None:
            host, where = os.environ.get(ENDPOINT_ENV, ""), f"${ENDPOINT_ENV}"
        if not host and not _in_pod():
            raise ClientError(f"no KFP endpoint: pass host (CLI: --endpoint) or set "
                              f"${ENDPOINT_ENV}, e.g. http://127.0.0.1:8888 for "
                              "`kfp-ct local-server`; inside a pod it may stay empty")
        if host:
            check_endpoint(host, where)
        token_source = token_source or "the token argument (--existing-token)"
        if token is None:
            token = os.environ.get(TOKEN_ENV, "")
            token_source = f"${TOKEN_ENV}"
        self.host = host
        self.namespace = os.environ.get(NAMESPACE_ENV, "") if namespace is None else namespace
        self._conn = KfpConnection(host=host, namespace=self.namespace,
                                   token_path=token_path, healthz_timeout_s=timeout_s,
                                   existing_token=token or "", token_source=token_source)

    # ------------------------------------------------------------------ plumbing

    @property
    def api_host(self) -> str:
        return self._conn.api_host

    def _kfp(self) -> Any:
        return self._conn.connect()

    def _call(self, step: str, fn: Callable[[], Any]) -> Any:
        return self._conn.call(step, fn)

    def _error(self, what: str) -> ClientError:
        return ClientError(str(self._conn.error(what)))

    # ----------------------------------------------------------------- pipelines

    def _pipeline_id(self, name: str, required: bool = True) -> str:
        kfp = self._kfp()
        pipeline_id = self._call(f"looking up pipeline {name!r}",
                                 lambda: kfp.get_pipeline_id(name))
        if not pipeline_id and required:
            names = self.pipelines()
            raise self._error(f"no pipeline named {name!r}; pipelines there: "
                              f"{', '.join(repr(n) for n in names) or 'none'} "
                              "(upload it with `kfp-ct upload`)")
        return str(pipeline_id or "")

    def pipelines(self) -> list[str]:
        """Display names of the pipelines on the server (shared ones)."""
        kfp = self._kfp()
        names, token = [], ""
        while True:
            resp = self._call("listing pipelines", lambda: kfp.list_pipelines(
                page_token=token, page_size=_PAGE, sort_by="created_at"))
            names += [p.display_name for p in resp.pipelines or []]
            token = resp.next_page_token or ""
            if not token:
                return names

    def _version_objects(self, pipeline_id: str, name: str = "") -> list:
        kfp = self._kfp()
        flt = name_filter(name) if name else None
        out, token = [], ""
        while True:
            resp = self._call("listing pipeline versions", lambda: kfp.list_pipeline_versions(
                pipeline_id, page_token=token, page_size=_PAGE, sort_by="created_at desc",
                filter=flt))
            out += list(resp.pipeline_versions or [])
            token = resp.next_page_token or ""
            if not token:
                return out

    def versions(self, pipeline: str = "training") -> list[PipelineVersion]:
        """The versions of an uploaded pipeline, newest first."""
        name = self._display_name(pipeline)
        pipeline_id = self._pipeline_id(name)
        return [PipelineVersion(name, pipeline_id, v.display_name, v.pipeline_version_id,
                                v.created_at) for v in self._version_objects(pipeline_id)]

    @staticmethod
    def _display_name(pipeline: str) -> str:
        try:
            return catalog.entry(pipeline).display_name
        except KfpCtError:
            return pipeline

    def _resolve_version(self, pipeline: str, version: str = "") -> tuple:
        """``(display name, pipeline_id, version object)`` of a named or the newest version."""
        name = self._display_name(pipeline)
        pipeline_id = self._pipeline_id(name)
        if version:
            found = self._version_objects(pipeline_id, version) or [
                v for v in self._version_objects(pipeline_id)
                if v.pipeline_version_id == version]
            if not found:
                existing = [v.display_name for v in self._version_objects(pipeline_id)]
                raise self._error(f"pipeline {name!r} has no version {version!r}; versions "
                                  f"there, newest first: "
                                  f"{', '.join(repr(v) for v in existing[:20]) or 'none'}")
            return name, pipeline_id, found[0]
        found = self._version_objects(pipeline_id)
        if not found:
            raise self._error(f"pipeline {name!r} ({pipeline_id}) has no versions")
        return name, pipeline_id, found[0]

    def _version_spec(self, pipeline_id: str, version: Any) -> dict:
        spec = version.pipeline_spec
        if not spec:
            kfp = self._kfp()
            full = self._call("reading the pipeline version", lambda: kfp.get_pipeline_version(
                pipeline_id, version.pipeline_version_id))
            spec = full.pipeline_spec
        return spec or {}

    def upload(self, pipeline: str = "training", package: str = "", name: str = "",
               version: str = "", description: str = "") -> PipelineVersion:
        """Uploads a pipeline as a new version (the pipeline is created on first upload).

        Args:
            pipeline: A shipped pipeline (``training``, ``monitoring``...), compiled here.
            package: A compiled YAML to upload instead.
            name: Pipeline display name (default: the compiled ``pipelineInfo.name``).
            version: Version name (default: :func:`catalog.version_name`: package
                version, git commit, spec hash when the checkout is dirty).
            description: Shown in the UI.

        Returns:
            The version; ``uploaded=False`` when a version of that name with the same
            spec was already there (nothing sent).

        Raises:
            ClientError: the package is not a compiled pipeline, the version name is taken
                by a different spec, or the server refused the upload.
        """
        if package:
            text, spec, stored = read_package(package)
        else:
            text = catalog.compiled_text(pipeline)
            spec, stored = compiled_document(text, pipeline)
        name = name or spec["pipelineInfo"]["name"]
        version = version or catalog.version_name(text)
        kfp = self._kfp()
        pipeline_id = self._pipeline_id(name, required=False)
        if pipeline_id:
            same = self._version_objects(pipeline_id, version)
            if same:
                # The whole document: a change in platform settings alone (a timeout, a
                # toleration) is a different version too.
                existing = self._version_spec(pipeline_id, same[0])
                if json.dumps(existing, sort_keys=True) == json.dumps(stored, sort_keys=True):
                    return PipelineVersion(name, pipeline_id, version,
                                           same[0].pipeline_version_id, same[0].created_at,
                                           uploaded=False)
                raise self._error(f"pipeline {name!r} already has a version {version!r} "
                                  "with a different spec; name this one with --version")
        else:
            import kfp_server_api

            body = kfp_server_api.V2beta1Pipeline(display_name=name,
                                                  description=description or None)
            created = self._call(f"creating pipeline {name!r}",
                                 lambda: kfp._pipelines_api.pipeline_service_create_pipeline(
                                     body=body))
            pipeline_id = str(created.pipeline_id)
        with tempfile.TemporaryDirectory(prefix="kfp-ct-upload-") as tmp:
            path = os.path.join(tmp, "pipeline.yaml")
            with open(path, "w") as fh:
                fh.write(text)
            made = self._call(f"uploading version {version!r} of pipeline {name!r}",
                              lambda: kfp.upload_pipeline_version(
                                  path, version, pipeline_id=pipeline_id,
                                  description=description or None))
        return PipelineVersion(name, pipeline_id, version, str(made.pipeline_version_id),
                               made.created_at)

    # ----------------------------------------------------------------------- runs

    def _experiment_id(self, experiment: str) -> str:
        import contextlib
        import io

        kfp = self._kfp()

        def get_or_create():  # kfp prints the experiment's UI link each time: not shown
            with contextlib.redirect_stdout(io.StringIO()):
                return kfp.create_experiment(name=experiment, namespace=self.namespace or None)

        exp = self._call(f"getting or creating experiment {experiment!r}", get_or_create)
        return str(exp.experiment_id)

    def version_spec(self, pipeline: str = "training", version: str = "") -> dict:
        """The compiled spec of an uploaded version (newest unless named)."""
        _, pipeline_id, ver = self._resolve_version(pipeline, version)
        return dict(self._version_spec(pipeline_id, ver))

    def _checked(self, pipeline: str, version: str, params: Optional[Mapping]) -> tuple:
        """``(name, pipeline_id, version, parameters)``: the version resolved, the
        parameters checked against its declarations (:func:`rules.check_parameters`)."""
        name, pipeline_id, ver = self._resolve_version(pipeline, version)
        values = rules.check_parameters(self._version_spec(pipeline_id, ver),
                                        dict(params or {}),
                                        pipeline=f"pipeline {name!r} version "
                                                 f"{ver.display_name!r}")
        return name, pipeline_id, ver, values

    def _experiment_of(self, experiment: str) -> Optional[str]:
        """The id of an existing experiment by name (None for "")."""
        if not experiment:
            return None
        kfp = self._kfp()
        exp = self._call(f"reading experiment {experiment!r}", lambda: kfp.get_experiment(
            experiment_name=experiment, namespace=self.namespace or None))
        return str(exp.experiment_id)

    def run(self, pipeline: str = "training", params: Optional[Mapping] = None,
            version: str = "", experiment: str = DEFAULT_EXPERIMENT, run_name: str = ""
            ) -> RunInfo:
        """Starts a run of an uploaded version (newest unless ``version`` names one).

        Parameters are checked against that version's declarations before anything is
        sent: an undeclared name, a value of the wrong type or a missing required
        parameter is a :class:`rules.RuleError`.
        """
        name, pipeline_id, ver, values = self._checked(pipeline, version, params)
        experiment_id = self._experiment_id(experiment)
        run_name = run_name or f"{name}-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}"
        kfp = self._kfp()
        run = self._call(f"creating run {run_name!r}", lambda: kfp.run_pipeline(
            experiment_id=experiment_id, job_name=run_name, params=values,
            pipeline_id=pipeline_id, version_id=ver.pipeline_version_id))
        return run_info(run)

    def get_run(self, run_id: str) -> RunInfo:
        """The run's current state."""
        kfp = self._kfp()
        return run_info(self._call(f"reading run {run_id}", lambda: kfp.get_run(run_id)))

    def list_runs(self, experiment: str = "", limit: int = 20) -> list[RunInfo]:
        """Runs, newest first (of one experiment if named)."""
        kfp = self._kfp()
        experiment_id = self._experiment_of(experiment)
        resp = self._call("listing runs", lambda: kfp.list_runs(
            experiment_id=experiment_id, namespace=self.namespace or None,
            page_size=limit, sort_by="created_at desc"))
        return [run_info(r) for r in resp.runs or []]

    def wait(self, run_id: str, timeout_s: float = 6 * 3600, poll_s: float = 2.0,
             progress: Optional[Callable[[RunInfo], None]] = None) -> RunInfo:
        """Polls the run until it ends; ``progress`` is called when its state or tasks change.

        Raises:
            TimeoutError: the run did not end within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        seen = None
        while True:
            info = self.get_run(run_id)
            key = (info.state, tuple((t.name, t.state) for t in info.tasks))
            if progress is not None and key != seen:
                progress(info)
            seen = key
            if info.done:
                return info
            if time.monotonic() >= deadline:
                raise TimeoutError(f"run {run_id} still {info.state} after {timeout_s:g} s")
            time.sleep(poll_s)

    # ------------------------------------------------------------------ schedules

    def schedule(self, pipeline: str = "training", name: str = "", *, cron: str = "",
                 interval_s: Optional[int] = None, params: Optional[Mapping] = None,
                 version: str = "", experiment: str = DEFAULT_EXPERIMENT,
                 max_concurrency: int = 1, no_catchup: bool = True,
                 start_time: Any = None, end_time: Any = None, enabled: bool = True,
                 description: str = "") -> Schedule:
        """Creates a recurring run of an uploaded version (newest unless named).

        Args:
            pipeline: Shipped pipeline name or display name of an uploaded one.
            name: The schedule's display name.
            cron: Six fields, seconds first (``0 0 3 * * *``), or ``@hourly`` etc.
            interval_s: Or: every this many seconds.
            params: Runtime parameters (checked against the version).
            version: Version name or id (default: newest). kfp 2.13 needs both the
                pipeline id and the version id; both are sent.
            experiment: Experiment name (created if missing).
            max_concurrency: 1..10 active runs of this schedule at once.
            no_catchup: Skip missed slots (only the latest runs) after a pause.
            start_time, end_time: RFC 3339 times or datetimes bounding the schedule.
            enabled: Start enabled.
            description: Shown in the UI.

        A string parameter may hold ``{schedule_date}`` (the slot's UTC date, YYYY-MM-DD)
        or ``{schedule_time}`` (RFC 3339 UTC), e.g. ``window_path=data/date={schedule_date}/``:
        they are sent as the backend's scheduled-time macros, which ``kfp-ct local-server``
        fills per run with that run's slot. KFP backend 2.5.0 does not fill them for v2
        pipelines (kubeflow/pipelines issue 12494): there the run gets the macro as written.
        """
        if not name:
            raise rules.RuleError("a schedule needs a name")
        cron, interval, concurrency, start, end = rules.check_schedule(
            cron, interval_s, max_concurrency, start_time, end_time)
        _, pipeline_id, ver, values = self._checked(pipeline, version, params)
        values = {k: rules.schedule_templates(v) for k, v in (values or {}).items()}
        experiment_id = self._experiment_id(experiment)
        kfp = self._kfp()

        def rfc3339(when: Optional[dt.datetime]) -> Optional[str]:
            return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") \
                if when else None

        job = self._call(f"creating schedule {name!r}", lambda: kfp.create_recurring_run(
            experiment_id=experiment_id, job_name=name, description=description or None,
            start_time=rfc3339(start), end_time=rfc3339(end), interval_second=interval,
            cron_expression=cron or None, max_concurrency=concurrency,
            no_catchup=no_catchup, params=values, pipeline_id=pipeline_id,
            version_id=ver.pipeline_version_id, enabled=enabled))
        return schedule_info(job)

    def schedules(self, experiment: str = "") -> list[Schedule]:
        """Recurring runs (of one experiment if named), newest first."""
        kfp = self._kfp()
        experiment_id = self._experiment_of(experiment)
        out, token = [], ""
        while True:
            resp = self._call("listing schedules", lambda: kfp.list_recurring_runs(
                page_token=token, page_size=_PAGE, sort_by="created_at desc",
                experiment_id=experiment_id, namespace=self.namespace or None))
            out += [schedule_info(j) for j in resp.recurring_runs or []]
            token = resp.next_page_token or ""
            if not token:
                return out

    def _schedule_id(self, schedule: str) -> str:
        """A schedule's id from its id or its (unique) display name."""
        found = [s for s in self.schedules() if schedule in (s.recurring_run_id, s.name)]
        ids = {s.recurring_run_id for s in found}
        if len(ids) > 1:
            raise self._error(f"several schedules are named {schedule!r}: "
                              f"{', '.join(sorted(ids))}; give the id")
        if not ids:
            raise self._error(f"no schedule {schedule!r} (by id or name)")
        return ids.pop()

    def get_schedule(self, schedule: str) -> Schedule:
        kfp = self._kfp()
        job_id = self._schedule_id(schedule)
        return schedule_info(self._call(f"reading schedule {schedule!r}",
                                        lambda: kfp.get_recurring_run(job_id)))

    def enable_schedule(self, schedule: str) -> Schedule:
        """Enables a schedule (by id or name)."""
        kfp = self._kfp()
        job_id = self._schedule_id(schedule)
        self._call(f"enabling schedule {schedule!r}", lambda: kfp.enable_recurring_run(job_id))
        return self.get_schedule(job_id)

    def disable_schedule(self, schedule: str) -> Schedule:
        """Disables a schedule (by id or name): no new runs until enabled."""
        kfp = self._kfp()
        job_id = self._schedule_id(schedule)
        self._call(f"disabling schedule {schedule!r}",
                   lambda: kfp.disable_recurring_run(job_id))
        return self.get_schedule(job_id)

    def _schedule_version(self, schedule: str, current: Any, version: str) -> Any:
        """A version (name or id) of the pipeline a schedule runs."""
        ref = current.pipeline_version_reference
        if ref is None or not ref.pipeline_id:
            raise self._error(f"schedule {schedule!r} runs an inline pipeline spec; it has "
                              "no pipeline whose version could change")
        found = self._version_objects(ref.pipeline_id, version) or [
            v for v in self._version_objects(ref.pipeline_id)
            if v.pipeline_version_id == version]
        if not found:
            raise self._error(f"the pipeline of schedule {schedule!r} has no version "
                              f"{version!r}")
        return found[0]

    def schedule_spec(self, schedule: str, version: str = "") -> dict:
        """The compiled spec a schedule runs (or would run with ``version``): what its
        parameters are checked against."""
        kfp = self._kfp()
        job_id = self._schedule_id(schedule)
        current = self._call(f"reading schedule {schedule!r}",
                             lambda: kfp.get_recurring_run(job_id))
        ref = current.pipeline_version_reference
        if ref is None or not ref.pipeline_id:
            return dict(current.pipeline_spec or {})
        if version:
            ver = self._schedule_version(schedule, current, version)
        else:
            ver = self._call(f"reading schedule {schedule!r}'s version",
                             lambda: kfp.get_pipeline_version(ref.pipeline_id,
                                                              ref.pipeline_version_id))
        return dict(self._version_spec(ref.pipeline_id, ver))

    def update_schedule(self, schedule: str, *, cron: str = "",
                        interval_s: Optional[int] = None, params: Optional[Mapping] = None,
                        version: str = "", max_concurrency: Optional[int] = None,
                        no_catchup: Optional[bool] = None, description: Optional[str] = None
                        ) -> Schedule:
        """Changes a schedule in place (by id or name): same id, its runs in progress go on.

        Only what is given changes: the trigger (``cron`` or ``interval_s``; start and end
        stay), ``params`` (merged over the current ones; ``{schedule_date}`` as in
        :meth:`schedule`), ``version`` (name or id, of the pipeline it runs),
        ``max_concurrency``, ``no_catchup``, ``description``.

        Sends ``PATCH /apis/v2beta1/recurringruns/{id}``, a kfp-ct extension that
        ``kfp-ct local-server`` serves. The KFP API (backend 2.x) has no update call: there
        (404/405/501) this refuses, and says the steps that replace the schedule and what
        they lose, rather than taking them unasked.
        """
        if cron and interval_s:
            raise rules.RuleError("give cron or interval_s, not both")
        if max_concurrency is not None:
            max_concurrency = rules.check_max_concurrency(max_concurrency)
        kfp = self._kfp()
        job_id = self._schedule_id(schedule)
        current = self._call(f"reading schedule {schedule!r}",
                             lambda: kfp.get_recurring_run(job_id))
        body: dict = {}
        if cron or interval_s:
            old = current.trigger.cron_schedule or current.trigger.periodic_schedule
            cron, interval, _, start, end = rules.check_schedule(
                cron, interval_s, max_concurrency or 1, old.start_time, old.end_time)
            window = {k: v.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                      for k, v in (("start_time", start), ("end_time", end)) if v}
            body["trigger"] = ({"cron_schedule": {"cron": cron, **window}} if cron else
                               {"periodic_schedule": {"interval_second": str(interval),
                                                      **window}})
        if params:
            body["runtime_config"] = {"parameters": {
                k: rules.schedule_templates(v) for k, v in params.items()}}
        if version:
            ref = current.pipeline_version_reference
            body["pipeline_version_reference"] = {
                "pipeline_id": ref.pipeline_id,
                "pipeline_version_id": self._schedule_version(schedule, current,
                                                              version).pipeline_version_id}
        if max_concurrency is not None:
            body["max_concurrency"] = str(max_concurrency)
        if no_catchup is not None:
            body["no_catchup"] = bool(no_catchup)
        if description is not None:
            body["description"] = description
        if not body:
            raise rules.RuleError("nothing to change: give a trigger, parameters, a version, "
                                  "max_concurrency, catch-up or a description")

        def patch() -> Any:
            import kfp_server_api

            api = kfp._recurring_run_api.api_client
            try:
                return api.call_api(
                    "/apis/v2beta1/recurringruns/{recurring_run_id}", "PATCH",
                    {"recurring_run_id": job_id}, [],
                    {"Accept": "application/json", "Content-Type": "application/json"},
                    body=body, response_type="V2beta1RecurringRun", auth_settings=["Bearer"],
                    _return_http_data_only=True)
            except kfp_server_api.ApiException as exc:
                if exc.status in UPDATE_UNSUPPORTED:
                    return exc
                raise

        made = self._call(f"updating schedule {schedule!r}", patch)
        if isinstance(made, Exception):
            raise self._error(
                f"this endpoint has no schedule update (HTTP {made.status} to PATCH "
                f"/apis/v2beta1/recurringruns/{job_id}; the KFP API has no update call, only "
                f"kfp-ct local-server has it). Nothing was changed. To replace schedule "
                f"{schedule!r} instead: `kfp-ct schedule disable {job_id}`, "
                f"`kfp-ct schedule create ...` with the new settings, then `kfp-ct schedule "
                f"delete {job_id}`. What that loses: the new schedule has a new id, the old "
                f"runs stay listed under the old id, and the new one counts from its "
                f"creation (no catch-up of slots missed in between)")
        return schedule_info(made)

    def delete_schedule(self, schedule: str) -> str:
        """Deletes a schedule (by id or name); its runs stay. Returns the id."""
        kfp = self._kfp()
        job_id = self._schedule_id(schedule)
        self._call(f"deleting schedule {schedule!r}", lambda: kfp.delete_recurring_run(job_id))
        return job_id

    def runs_of_schedule(self, schedule: str) -> list[RunInfo]:
        """Runs a schedule created, newest first."""
        job_id = self._schedule_id(schedule)
        return [r for r in self.list_runs(limit=200) if r.recurring_run_id == job_id]


def parse_params(pipeline_doc: Mapping, pairs: Sequence[str], params_file: str = "",
                 pipeline: str = "the pipeline") -> dict:
    """Runtime parameters from ``NAME=VALUE`` pairs and/or a JSON/YAML file.

    The file's values are taken as typed; a pair's text is read by the declared type
    (:func:`rules.parse_parameter_text`). Pairs win over the file.
    """
    values: dict = {}
    if params_file:
        import yaml

        if not os.path.isfile(params_file):
            raise rules.RuleError(f"parameters file {params_file}: no such file")
        with open(params_file) as fh:
            text = fh.read()
        try:  # JSON is YAML, but the json module reads it about 1000 times faster
            data = json.loads(text)
        except ValueError:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise rules.RuleError(f"parameters file {params_file}: not JSON or YAML "
                                      f"({exc})") from None
        if not isinstance(data, dict):
            raise rules.RuleError(f"parameters file {params_file}: expected a mapping of "
                                  f"name to value, got {type(data).__name__}")
        values.update(data)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise rules.RuleError(f"parameter {pair!r}: expected NAME=VALUE")
        values[name.strip()] = rules.parse_parameter_text(pipeline_doc, name.strip(), text,
                                                          pipeline)
    return values
