"""Start a run of an already-uploaded training pipeline on Kubeflow Pipelines.

Drift-triggered retraining runs inside a pod and talks to the KFP API server through
``kfp.Client`` 2.13. This module wraps the client so that:

* authentication follows the in-cluster rules of kfp 2.13 (see ``KfpLauncher``);
* an unreachable server fails within ``healthz_timeout_s`` instead of kfp's own
  5 x 5 s healthz retry loop (or a hang on a host that never answers);
* every failure is a :class:`LaunchError` (a ``KfpCtError``) whose message names the
  API host, the pipeline name / version and what went wrong, never a raw
  ``kfp_server_api`` traceback.

``kfp`` is imported lazily so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import sys
import urllib.parse
import warnings
from typing import Any, Callable, Optional, TypeVar

from kfp_ct.components.common.errors import KfpCtError

logger = logging.getLogger(__name__)

#: v2beta1 ``RuntimeState`` values after which a run no longer changes.
TERMINAL_STATES = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}
#: Where a projected service-account token (audience ``pipelines.kubeflow.org``) is mounted.
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
#: Environment variable kfp reads for the token path (``kfp.client.KF_PIPELINES_SA_TOKEN_ENV``).
TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
#: Environment variable kfp reads for the API host when ``host`` is not given.
ENDPOINT_ENV = "KF_PIPELINES_ENDPOINT"

_HEALTHZ_PATH = "/apis/v2beta1/healthz"
_VERSIONS_PAGE_SIZE = 100
_MAX_VERSION_PAGES = 50
_NAMES_SHOWN = 20

_T = TypeVar("_T")


class LaunchError(KfpCtError):
    """A training run could not be started or inspected on the KFP API server."""


class EndpointError(KfpCtError):
    """A KFP endpoint that is not an http:// or https:// URL with a host."""


_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+(:[0-9]+)?(/([^/].*)?)?")  # host[:port][/path]
ENDPOINT_EXAMPLES = ("http://127.0.0.1:8888 (kfp-ct local-server) or "
                     "https://HOST/pipeline (a Kubeflow install)")


def check_endpoint(url: str, where: str = "host") -> str:
    """The one check of a KFP endpoint URL, wherever one is given (the client's ``host``,
    the CLI's ``--endpoint``, ``$KF_PIPELINES_ENDPOINT``, the retrain trigger's
    ``kfp_host``): an ``http://`` or ``https://`` URL with a host and, if any, a numeric
    port. kfp.Client would otherwise turn ``ftp://x`` into ``https://ftp://x`` and fail
    seconds later on a name lookup, and take ``localhost:8888`` as a scheme.

    Returns:
        ``url``, unchanged.

    Raises:
        EndpointError: one line naming ``where``, the value and what is wrong with it.
    """
    text = str(url)
    parts = urllib.parse.urlsplit(text.strip())
    scheme = parts.scheme.lower() if "://" in text else ""
    why = ""
    if not scheme:
        hint = f" (http://{text.strip()}?)" if _HOST_PORT.fullmatch(text.strip()) else ""
        why = f"it has no http:// or https:// in front{hint}"
    elif scheme not in ("http", "https"):
        why = f"its scheme is {scheme}://, and the KFP API speaks http:// or https:// only"
    elif not parts.hostname:
        why = "it names no host after the scheme"
    else:
        try:
            parts.port
        except ValueError:
            why = f"its port {parts.netloc.rsplit(':', 1)[-1]!r} is not a number from 0 to 65535"
    if why:
        raise EndpointError(f"{where} {text!r} is not a KFP API URL: {why}; e.g. "
                            f"{ENDPOINT_EXAMPLES}")
    return url


def local_endpoint_token(host: str) -> Optional[tuple]:
    """``(token, file)`` of the ``kfp-ct local-server`` running at ``host``, or None.

    Only for 127.0.0.1 / localhost: the token that server wrote to its runtime file
    (:mod:`kfp_ct.pipelines.entrypoints.local_server.runtime`), so that a client on this
    machine needs no setting. Any other host: None, and nothing is imported.
    """
    if "://127.0.0.1:" not in host and "://localhost:" not in host:
        return None
    from kfp_ct.pipelines.entrypoints.local_server.runtime import find_token

    return find_token(host.strip())


class _ProbeError(Exception):
    """The healthz probe failed (raised from inside ``kfp.Client.__init__``)."""

    def __init__(self, host: str, status: int, detail: str, has_token: bool = False) -> None:
        super().__init__(detail)
        self.host = host
        self.status = status
        self.detail = detail
        self.has_token = has_token


def name_filter(name: str) -> str:
    """The ``filter`` query value that matches ``display_name == name`` on a KFP server.

    The KFP API server URL-decodes a filter once more after its HTTP layer has
    (``parseAPIFilter`` calls ``url.QueryUnescape``), so the JSON is URL-encoded here, as
    the Kubeflow UI encodes it; kfp.Client then encodes it for the URL. Without this a
    ``+`` in the name would reach the server as a space and a ``%`` as an error.

    Args:
        name: The display name to match.

    Returns:
        The URL-encoded JSON ``V2beta1Filter`` (operation 1 is ``EQUALS``).
    """
    return urllib.parse.quote(json.dumps({"predicates": [
        {"operation": 1, "key": "display_name", "stringValue": name}]}), safe="")


def _body_message(body: Any) -> str:
    """Extracts the server's error message from a ``googlerpc.Status`` JSON body.

    Args:
        body: The raw response body (bytes or str), possibly not JSON.

    Returns:
        The ``message`` (or ``error``) field, else the body text cut to 300 characters.
    """
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or "").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(data, dict):
        for key in ("message", "error"):
            if data.get(key):
                return str(data[key])
    return text[:300]


def _probe_healthz(client: Any, timeout_s: float) -> Any:
    """GETs ``/apis/v2beta1/healthz`` once, bounded by ``timeout_s``, with the client's auth.

    Uses the client's own urllib3 pool (same TLS and proxy settings) but no retries and a
    total timeout, unlike ``kfp.Client.get_kfp_healthz`` (5 attempts, 5 s apart, no
    timeout).

    Args:
        client: A constructed (or constructing) ``kfp.Client``.
        timeout_s: Total time allowed for connect + answer.

    Returns:
        A ``kfp_server_api.V2beta1GetHealthzResponse``.

    Raises:
        _ProbeError: unreachable, timed out, non-200 answer or not a KFP API server.
    """
    import kfp_server_api
    import urllib3

    config = client._existing_config
    host = str(config.host or "")
    url = host.rstrip("/") + _HEALTHZ_PATH
    if "://" not in url:  # kfp's in-cluster address has no scheme: it is plain HTTP
        url = "http://" + url
    headers = {"Accept": "application/json"}
    try:
        auth = config.get_api_key_with_prefix("authorization")
    except OSError as exc:
        raise _ProbeError(host, 0, f"cannot read the service-account token: {exc}") from exc
    if auth:
        headers["authorization"] = auth
    has_token = bool(auth)
    try:
        pool = client._healthz_api.api_client.rest_client.pool_manager
    except AttributeError:  # layout of kfp_server_api changed: fall back to a plain pool
        pool = urllib3.PoolManager()
    try:
        resp = pool.request("GET", url, headers=headers, retries=False,
                            timeout=urllib3.Timeout(total=timeout_s))
    except urllib3.exceptions.HTTPError as exc:
        raise _ProbeError(host, 0, f"not reachable (timeout {timeout_s:g} s): "
                                   f"{type(exc).__name__}: {exc}", has_token) from exc
    if 300 <= resp.status < 400:
        raise _ProbeError(host, resp.status,
                          f"healthz redirected to {resp.headers.get('Location', '?')}; an auth "
                          "proxy (Dex / oauth2-proxy) sits in front of the API: use the "
                          "in-cluster address or a token it accepts", has_token)
    if resp.status != 200:
        raise _ProbeError(host, resp.status, _body_message(resp.data), has_token)
    try:
        data = json.loads(resp.data or b"{}")
    except ValueError as exc:
        raise _ProbeError(host, resp.status, "healthz did not answer JSON: is this the KFP "
                                             "API server?", has_token) from exc
    if not isinstance(data, dict):
        raise _ProbeError(host, resp.status, "healthz did not answer a JSON object", has_token)
    return kfp_server_api.V2beta1GetHealthzResponse(multi_user=bool(data.get("multi_user")))


@functools.lru_cache(maxsize=None)
def _bounded_client_class() -> type:
    """Builds a ``kfp.Client`` subclass with a bounded healthz and no context-file writes.

    Returns:
        The subclass; construct it with ``healthz_timeout_s=`` plus ``kfp.Client`` kwargs.
    """
    # Not ``kfp.Client``: inside a KFP task (``_KFP_RUNTIME=true``, as the launcher runs in
    # the retraining trigger's pod) ``kfp/__init__`` leaves the client out; the module
    # itself imports fine.
    from kfp.client import Client

    class _BoundedClient(Client):  # type: ignore[misc, valid-type]
        """``kfp.Client`` whose healthz is a single bounded probe (result cached)."""

        def __init__(self, *, healthz_timeout_s: float, **kwargs: Any) -> None:
            self._kfpct_healthz_timeout_s = healthz_timeout_s
            self._kfpct_healthz: Any = None
            super().__init__(**kwargs)

        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:  # noqa: ARG002
            if self._kfpct_healthz is None:
                self._kfpct_healthz = _probe_healthz(self, self._kfpct_healthz_timeout_s)
            return self._kfpct_healthz

        def set_user_namespace(self, namespace: str) -> None:
            # kfp persists this to ~/.config/kfp/context.json (fails on a read-only
            # home in a pod); keep it in memory for this client only.
            self._context_setting["namespace"] = namespace

    return _BoundedClient


class KfpConnection:
    """A ``kfp.Client`` 2.13 that fails fast and names the host and the auth it tried.

    Auth (kfp.Client 2.13):

    * ``host == ""`` (and no ``$KF_PIPELINES_ENDPOINT``): ``kfp.Client()`` is built
      without a host. In a pod it targets ``ml-pipeline.kubeflow.svc.cluster.local:8888``
      and loads the service-account token itself from ``$KF_PIPELINES_SA_TOKEN_PATH`` or
      ``DEFAULT_TOKEN_PATH``.
    * explicit ``host`` (or ``$KF_PIPELINES_ENDPOINT``, which kfp treats the same way):
      kfp loads no token. ``existing_token`` is sent as a bearer token when given;
      otherwise ``ServiceAccountTokenVolumeCredentials`` is passed when ``token_path`` is
      given or the ``$KF_PIPELINES_SA_TOKEN_PATH`` / default file exists; otherwise no
      credentials.

    Args:
        host: KFP API base URL (``http://ml-pipeline.kubeflow:8888``); ``""`` = in-cluster.
        namespace: Profile namespace (multi-user); ``""`` lets kfp decide.
        token_path: Service-account token file for an explicit host.
        healthz_timeout_s: Time allowed for the first contact with the API server.
        existing_token: A bearer token for an explicit host (e.g. a user's token).
        token_source: Where ``existing_token`` came from, for messages on 401/403.
    """

    def __init__(self, host: str = "", namespace: str = "", token_path: str = "",
                 healthz_timeout_s: float = 10.0, existing_token: str = "",
                 token_source: str = "") -> None:
        if healthz_timeout_s <= 0:
            raise LaunchError(f"healthz_timeout_s must be > 0, got {healthz_timeout_s}")
        if host:
            check_endpoint(host, "host")
        elif os.environ.get(ENDPOINT_ENV, ""):
            check_endpoint(os.environ[ENDPOINT_ENV], f"${ENDPOINT_ENV}")
        self.host = host
        self.namespace = namespace
        self.token_path = token_path
        self.existing_token = existing_token
        self.token_source = token_source or "existing_token"
        self.healthz_timeout_s = float(healthz_timeout_s)
        self._client: Any = None
        self._api_host = host or os.environ.get(ENDPOINT_ENV, "") or "<in-cluster default>"
        self._auth = "not decided yet"

    @property
    def api_host(self) -> str:
        """The API host in use (as kfp.Client resolved it, once connected)."""
        return self._api_host

    @property
    def auth(self) -> str:
        """The auth tried, in words."""
        return self._auth

    def connect(self) -> Any:
        """The connected ``kfp.Client`` (built and probed once); see ``_connect``."""
        return self._connect()

    def call(self, step: str, fn: Callable[[], _T]) -> _T:
        """Runs one kfp.Client call; errors become a LaunchError (see ``_call``)."""
        return self._call(step, fn)

    def error(self, what: str, status: int = 0) -> LaunchError:
        """A LaunchError naming the host (and the auth on 401/403)."""
        return self._error(what, status)

    # ------------------------------------------------------------------ messages

    def _where(self) -> str:
        """What the calls are about, added to messages in parentheses ("" = nothing)."""
        return ""

    def _error(self, what: str, status: int = 0) -> LaunchError:
        """Builds a LaunchError naming the host, the subject and, for 401/403, the auth."""
        where = self._where()
        message = f"KFP API {self._api_host}: {what}" + (f" ({where})" if where else "")
        if status in (401, 403):
            message += f"; auth tried: {self._auth}"
        return LaunchError(message)

    def _call(self, step: str, fn: Callable[[], _T]) -> _T:
        """Runs one kfp.Client call, turning its exceptions into a LaunchError.

        Args:
            step: What the call does, for the message ("listing pipelines").
            fn: The call.

        Returns:
            What ``fn`` returns.

        Raises:
            LaunchError: on an HTTP error answer, a network error, an unreadable token or
                a ValueError from kfp (e.g. several pipelines with the same name).
        """
        import kfp_server_api
        import urllib3

        try:
            with contextlib.redirect_stdout(sys.stderr):  # kfp prints UI links to stdout
                return fn()
        except kfp_server_api.ApiException as exc:
            status = int(exc.status or 0)
            detail = _body_message(exc.body) if exc.body else str(exc.reason or "")
            if status == 0:
                raise self._error(f"{step} failed: {detail}") from exc
            reason = f" {exc.reason}" if exc.reason else ""
            raise self._error(f"{step} answered HTTP {status}{reason}: {detail}",
                              status) from exc
        except urllib3.exceptions.HTTPError as exc:
            raise self._error(f"{step} failed, server not reachable "
                              f"({type(exc).__name__}: {exc})") from exc
        except OSError as exc:
            raise self._error(f"{step} failed: cannot read the token ({exc})") from exc
        except ValueError as exc:
            raise self._error(f"{step} failed: {exc}") from exc

    # ---------------------------------------------------------------- connection

    def _explicit_credentials(self) -> str:
        """Picks the token file for an explicit host and records the auth description.

        Returns:
            The token file path, or ``""`` for no credentials.

        Raises:
            LaunchError: ``token_path`` was given but is not a readable file.
        """
        if self.token_path:
            if not os.path.isfile(self.token_path):
                self._auth = f"service-account token from {self.token_path}"
                raise self._error(f"token_path {self.token_path} does not exist or is not "
                                  "a file")
            self._auth = f"service-account token from {self.token_path}"
            return self.token_path
        env_path = os.environ.get(TOKEN_PATH_ENV, "")
        if env_path and os.path.isfile(env_path):
            self._auth = f"service-account token from {env_path} (${TOKEN_PATH_ENV})"
            return env_path
        if os.path.isfile(DEFAULT_TOKEN_PATH):
            self._auth = f"service-account token from {DEFAULT_TOKEN_PATH}"
            return DEFAULT_TOKEN_PATH
        note = f" (${TOKEN_PATH_ENV}={env_path} does not exist)" if env_path else ""
        self._auth = "no credentials" + note
        return ""

    @staticmethod
    def _describe_default_auth(host: str, has_token: bool) -> str:
        """Describes the auth kfp.Client chose by itself (host == "").

        Args:
            host: The API host kfp.Client resolved.
            has_token: Whether its configuration carries an ``authorization`` key.

        Returns:
            E.g. "service-account token from PATH (loaded by kfp.Client in-cluster)".
        """
        if host.split("://")[-1].startswith("ml-pipeline."):
            path = os.environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH
            if has_token:
                return f"service-account token from {path} (loaded by kfp.Client in-cluster)"
            return f"no credentials (kfp.Client found no token at {path})"
        if "/services/ml-pipeline:http/proxy" in host:
            return ("kubeconfig credentials" if has_token else "no credentials") + \
                " (kube-apiserver proxy from kubeconfig)"
        return "token set by kfp.Client" if has_token else "no credentials"

    def _connect(self) -> Any:
        """Builds (once) the kfp.Client and checks healthz within ``healthz_timeout_s``.

        Returns:
            The connected client.

        Raises:
            LaunchError: the server is unreachable, refuses the credentials or is not KFP.
        """
        if self._client is not None:
            return self._client
        import kfp.client

        explicit_host = self.host or os.environ.get(ENDPOINT_ENV, "")
        kwargs: dict = {"healthz_timeout_s": self.healthz_timeout_s}
        if explicit_host:
            kwargs["host"] = explicit_host
            token_file = ""
            if self.existing_token:
                kwargs["existing_token"] = self.existing_token
                self._auth = f"bearer token from {self.token_source}"
            else:
                token_file = self._explicit_credentials()
                found = None if token_file else local_endpoint_token(explicit_host)
                if found:
                    kwargs["existing_token"], where = found
                    self._auth = f"bearer token from the local endpoint's token ({where})"
            if token_file:
                kwargs["credentials"] = kfp.client.ServiceAccountTokenVolumeCredentials(
                    path=token_file)
        else:
            self._auth = "kfp.Client in-cluster default"
        client = None
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
                warnings.simplefilter("ignore", FutureWarning)
                client = _bounded_client_class()(**kwargs)
            self._note_client(client, explicit_host)
            client.get_kfp_healthz()  # no-op if the constructor already probed
        except _ProbeError as exc:
            self._api_host = exc.host or self._api_host
            if not explicit_host:
                self._auth = self._describe_default_auth(exc.host, exc.has_token)
            hint = ""
            if not explicit_host and not exc.host.split("://")[-1].startswith("ml-pipeline."):
                hint = (" (host='' outside a pod: kfp.Client found no in-cluster config and "
                        "fell back to kubeconfig / localhost; pass host=)")
            if exc.status == 0:
                raise self._error(f"healthz probe failed: {exc.detail}{hint}") from None
            raise self._error(f"healthz answered HTTP {exc.status}: {exc.detail}",
                              exc.status) from None
        except OSError as exc:
            raise self._error(f"cannot set up kfp.Client: {exc}") from exc
        self._client = client
        return client

    def _note_client(self, client: Any, explicit_host: str) -> None:
        """Records the host and auth kfp.Client resolved, for error messages."""
        config = getattr(client, "_existing_config", None)
        host = str(getattr(config, "host", "") or "")
        if config is not None and host and "://" not in host:
            # kfp's in-cluster address has no scheme; urllib3 2.x warns (and 3.x will
            # fail) on scheme-less URLs. The service speaks plain HTTP on 8888.
            host = config.host = "http://" + host
        self._api_host = host or explicit_host or self._api_host
        if not explicit_host:
            has_token = bool(config is not None and config.api_key.get("authorization"))
            self._auth = self._describe_default_auth(self._api_host, has_token)

class KfpLauncher(KfpConnection):
    """Starts runs of an uploaded pipeline version and reads their state.

    Auth and fast failure: see :class:`KfpConnection`.

    Args:
        pipeline_name: Display name of the uploaded pipeline.
        pipeline_version: Display name of the version to run; ``""`` = newest by
            ``created_at``.
        experiment: Experiment display name; created if missing.
        host: KFP API base URL (``http://ml-pipeline.kubeflow:8888``); ``""`` = in-cluster.
        namespace: Profile namespace of the experiment (multi-user). ``""`` lets kfp
            decide (in multi-user mode: the pod's own namespace).
        token_path: Service-account token file for an explicit host.
        healthz_timeout_s: Time allowed for the first contact with the API server.
    """

    def __init__(self, pipeline_name: str, pipeline_version: str = "",
                 experiment: str = "kfp-ct-retraining", host: str = "", namespace: str = "",
                 token_path: str = "", healthz_timeout_s: float = 10.0) -> None:
        if not pipeline_name:
            raise LaunchError("KfpLauncher: pipeline_name is empty")
        if not experiment:
            raise LaunchError(f"KfpLauncher: experiment is empty (pipeline {pipeline_name!r})")
        if healthz_timeout_s <= 0:
            raise LaunchError(f"KfpLauncher: healthz_timeout_s must be > 0, "
                              f"got {healthz_timeout_s}")
        super().__init__(host=host, namespace=namespace, token_path=token_path,
                         healthz_timeout_s=healthz_timeout_s)
        self.pipeline_name = pipeline_name
        self.pipeline_version = pipeline_version
        self.experiment = experiment

    def _where(self) -> str:
        version = repr(self.pipeline_version) if self.pipeline_version else "latest version"
        return f"pipeline {self.pipeline_name!r}, {version}"

    # ------------------------------------------------------------------- lookups

    def _find_pipeline_id(self, client: Any) -> str:
        """Finds the pipeline by display name (shared first, then in ``namespace``)."""
        pipeline_id = self._call("looking up the pipeline by name",
                                 lambda: client.get_pipeline_id(self.pipeline_name))
        if not pipeline_id and self.namespace:
            # get_pipeline_id lists shared pipelines only (no namespace parameter).
            resp = self._call("looking up the pipeline in namespace " + self.namespace,
                              lambda: client.list_pipelines(
                                  filter=name_filter(self.pipeline_name),
                                  namespace=self.namespace, page_size=2))
            found = resp.pipelines or []
            if len(found) > 1:
                raise self._error(f"several pipelines are named {self.pipeline_name!r} in "
                                  f"namespace {self.namespace}")
            pipeline_id = found[0].pipeline_id if found else None
        if not pipeline_id:
            where = f" (shared or in namespace {self.namespace})" if self.namespace else ""
            raise self._error(f"no pipeline named {self.pipeline_name!r}{where}; "
                              f"pipelines there: {self._existing_pipeline_names(client)}")
        return str(pipeline_id)

    def _existing_pipeline_names(self, client: Any) -> str:
        """Names of up to ``_NAMES_SHOWN`` existing pipelines, for an error message."""
        names: list = []
        try:
            with contextlib.redirect_stdout(sys.stderr):
                resp = client.list_pipelines(page_size=_NAMES_SHOWN)
                names = [p.display_name for p in resp.pipelines or []]
                if self.namespace:
                    resp = client.list_pipelines(page_size=_NAMES_SHOWN,
                                                 namespace=self.namespace)
                    names += [p.display_name for p in resp.pipelines or []]
        except Exception as exc:  # noqa: BLE001 - best effort, the lookup already failed
            return f"(could not list them: {type(exc).__name__})"
        return ", ".join(repr(n) for n in names) if names else "none"

    def _list_versions(self, client: Any, pipeline_id: str,
                       name_filter: Optional[str] = None) -> list:
        """All versions of a pipeline (optionally filtered), following page tokens."""
        versions: list = []
        token = ""
        for _ in range(_MAX_VERSION_PAGES):
            resp = self._call("listing pipeline versions", lambda: client.list_pipeline_versions(
                pipeline_id, page_token=token, page_size=_VERSIONS_PAGE_SIZE,
                sort_by="created_at desc", filter=name_filter))
            versions.extend(resp.pipeline_versions or [])
            token = resp.next_page_token or ""
            if not token:
                break
        return versions

    @staticmethod
    def _newest(versions: list) -> Any:
        """The version with the latest ``created_at`` (missing dates sort first)."""
        return max(versions, key=lambda v: v.created_at.timestamp() if v.created_at
                   else float("-inf"))

    def _find_version(self, client: Any, pipeline_id: str) -> Any:
        """The pinned version by display name, or the newest by ``created_at``."""
        if self.pipeline_version:
            matches = self._list_versions(client, pipeline_id,
                                          name_filter(self.pipeline_version))
            if matches:
                return self._newest(matches)
            existing = self._list_versions(client, pipeline_id)
            names = ", ".join(repr(v.display_name) for v in existing[:_NAMES_SHOWN]) or "none"
            raise self._error(f"pipeline {self.pipeline_name!r} ({pipeline_id}) has no "
                              f"version named {self.pipeline_version!r}; versions there, "
                              f"newest first: {names}")
        versions = self._list_versions(client, pipeline_id)
        if not versions:
            raise self._error(f"pipeline {self.pipeline_name!r} ({pipeline_id}) has no "
                              "versions")
        return self._newest(versions)

    # ------------------------------------------------------------------- public

    def launch(self, params: dict, run_name: str, if_declared: dict | None = None) -> dict:
        """Starts a run of the pipeline version with ``params``, caching disabled.

        Finds the pipeline by display name, the version (by display name if pinned, else
        the newest by created_at), gets or creates the experiment by name (in
        ``namespace`` if given), creates a run with ``params`` as runtime parameters.

        Note: kfp 2.13 applies ``enable_caching=False`` only to runs submitted from a
        package file; for a run of an uploaded version the caching options compiled into
        that version apply. A warning is logged when the version caches any task.

        Args:
            params: Runtime parameters of the pipeline (JSON-serializable values).
            run_name: Display name of the new run.
            if_declared: More parameters, each sent only when the version declares it (a
                version uploaded before kfp-ct added the parameter would refuse the run).

        Returns:
            ``{"run_id", "pipeline_id", "version_id", "experiment_id", "host", "state"}``.

        Raises:
            LaunchError: the server, pipeline, version or experiment cannot be used, or
                the server refused the run.
        """
        if not run_name:
            raise self._error("run_name is empty")
        if not isinstance(params, dict):
            raise self._error(f"params must be a dict, got {type(params).__name__}")
        try:
            json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise self._error(f"params are not JSON-serializable: {exc}") from exc

        client = self._connect()
        pipeline_id = self._find_pipeline_id(client)
        version = self._find_version(client, pipeline_id)
        version_id = str(version.pipeline_version_id)
        declared = declared_parameters(version.pipeline_spec)
        params = {**{k: v for k, v in (if_declared or {}).items() if k in declared}, **params}
        cached = _cached_tasks(version.pipeline_spec)
        if cached:
            logger.warning("pipeline %r version %r caches tasks %s: enable_caching=False does "
                           "not apply to runs of uploaded versions in kfp 2.13; compile the "
                           "pipeline with caching off", self.pipeline_name,
                           version.display_name, ", ".join(cached))
        namespace = self.namespace or None
        experiment = self._call(f"getting or creating experiment {self.experiment!r}",
                                lambda: client.create_experiment(name=self.experiment,
                                                                 namespace=namespace))
        run = self._call(f"creating run {run_name!r}", lambda: client.run_pipeline(
            experiment_id=experiment.experiment_id, job_name=run_name, params=dict(params),
            pipeline_id=pipeline_id, version_id=version_id, enable_caching=False))
        if not run.run_id:
            raise self._error(f"creating run {run_name!r}: the server answered no run_id")
        logger.info("started run %s (%s) of pipeline %r version %r on %s", run.run_id,
                    run_name, self.pipeline_name, version.display_name, self._api_host)
        return {
            "run_id": str(run.run_id),
            "pipeline_id": pipeline_id,
            "version_id": version_id,
            "experiment_id": str(experiment.experiment_id),
            "host": self._api_host,
            "state": str(run.state or "UNKNOWN"),
        }

    def state(self, run_id: str) -> str:
        """The run's v2beta1 state string, or ``"UNKNOWN"`` if it cannot be read.

        Args:
            run_id: Id returned by :meth:`launch`.

        Returns:
            E.g. ``"PENDING"``, ``"RUNNING"``, ``"SUCCEEDED"``; ``"UNKNOWN"`` when the
            server cannot be reached or does not answer (the caller treats it as still
            running). The reason is logged as a warning.
        """
        try:
            client = self._connect()
            run = self._call(f"reading run {run_id}", lambda: client.get_run(run_id))
        except KfpCtError as exc:
            logger.warning("state of run %s unknown: %s", run_id, exc)
            return "UNKNOWN"
        return str(run.state or "UNKNOWN")


def declared_parameters(pipeline_spec) -> set:
    """The root input parameters a version's ``pipeline_spec`` declares (empty if unknown)."""
    if not isinstance(pipeline_spec, dict):
        return set()
    spec = pipeline_spec.get("pipeline_spec", pipeline_spec)
    root = spec.get("root") if isinstance(spec, dict) else None
    inputs = ((root or {}).get("inputDefinitions") or {}).get("parameters") or {}
    return set(inputs) if isinstance(inputs, dict) else set()


def _cached_tasks(pipeline_spec: Any) -> list:
    """Names of tasks whose compiled caching option is on: the root DAG's and those of
    its groups (a ``dsl.ExitHandler`` puts the body in a sub-DAG component).

    Args:
        pipeline_spec: A version's ``pipeline_spec`` as the server returns it (the spec
            itself, or ``{"pipeline_spec": ..., "platform_spec": ...}``).

    Returns:
        Sorted task names with ``cachingOptions.enableCache`` true; ``[]`` if unknown.
    """
    if not isinstance(pipeline_spec, dict):
        return []
    spec = pipeline_spec.get("pipeline_spec", pipeline_spec)
    if not isinstance(spec, dict):
        return []
    dags = [(spec.get("root") or {}).get("dag") or {}]
    dags += [(c or {}).get("dag") or {} for c in (spec.get("components") or {}).values()
             if isinstance(c, dict)]
    tasks = [(name, task) for dag in dags for name, task in (dag.get("tasks") or {}).items()]
    cached = []
    for name, task in tasks:
        options = (task or {}).get("cachingOptions") or (task or {}).get("caching_options") \
            or {}
        if options.get("enableCache") or options.get("enable_cache"):
            cached.append(name)
    return sorted(cached)
