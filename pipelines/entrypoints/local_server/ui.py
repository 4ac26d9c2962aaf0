"""What the official Kubeflow Pipelines UI needs from the endpoint beyond the JSON API.

The UI 2.5.0 (its React app and its Node server, unmodified) talks to three back ends:
the API server (``ML_PIPELINE_SERVICE_HOST/PORT``), ML Metadata over gRPC-web
(``METADATA_ENVOY_SERVICE_SERVICE_HOST/PORT``) and artifact stores (its ``/artifacts/get``
handler; for an ``http://`` URI it fetches ``HTTP_BASE_URL`` + the URI's host and path,
adding the request's ``HTTP_AUTHORIZATION_KEY`` header). The endpoint is all three:

* ``POST /ml_metadata.MetadataStoreService/<Method>``: the read methods of the run
  metadata store (``metadata.Metadata``), gRPC-web framed (``grpcweb``);
* ``GET /artifacts/runs/<run id>/<path>``: a file a run wrote under its pipeline root
  (the URI recorded for each artifact in ML Metadata); a folder is listed as text;
* ``GET /apis/v1beta1|v2beta1/runs/<run id>/nodes/<task>/log``: a task's log (the UI asks
  there for a pod's log with ``STREAM_LOGS_FROM_SERVER_API=true``; the ``pod_name`` in ML
  Metadata is the task's name);
* ``GET /login?token=T[&next=URL]`` and ``POST /login`` (form field ``token``): the token
  exchanged for a cookie, for a browser. The UI's server adds no bearer token to what it
  proxies, but it passes the browser's ``Cookie`` header on (its API and metadata
  proxies forward every header; its artifact fetch forwards the header named by
  ``HTTP_AUTHORIZATION_KEY``: set it to ``cookie``). Cookies are per host, not per port,
  so a cookie set by the endpoint on 127.0.0.1 is sent by the browser to the UI on
  127.0.0.1 too, and comes back to the endpoint through the UI's server.

The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page
makes the browser send it) and ``Path=/``; a cookie-authenticated request that carries an
``Origin`` must come from a loopback origin. The token itself is checked as the bearer
token is (constant time). Trade-offs, in the README: every server on 127.0.0.1 that the
browser visits receives the cookie (cookies ignore ports), and the token is in the
browser's cookie jar until it ends the session (the cookie has no Max-Age).
"""

from __future__ import annotations

import html
import http.cookies
import mimetypes
import os
import re
import urllib.parse
from typing import Any, Mapping, Optional

from kfp_ct.pipelines.entrypoints.local_server import artifacts, grpcweb

COOKIE = "kfp_ct_token"
LOGIN_PATH = "/login"
ARTIFACTS_PREFIX = "/artifacts/runs/"
METADATA_SERVICE = "/ml_metadata.MetadataStoreService/"
_LOG_PATH = re.compile(r"/apis/(?:v1beta1|v2beta1)/runs/([^/]+)/nodes/([^/]+)/log")
LOGS_DIR = "logs"  # kfp-ct's runner writes <pipeline root>/logs/<task>.log


class Answer:
    """A non-JSON answer: status, content type, body and extra headers."""

    def __init__(self, status: int, content_type: str, body: bytes,
                 headers: Optional[dict] = None) -> None:
        self.status, self.content_type, self.body = status, content_type, body
        self.headers = headers or {}


def is_ui_path(method: str, path: str) -> bool:
    """Whether ``path`` is one of this module's (not the JSON API's)."""
    return (path == LOGIN_PATH or path.startswith(ARTIFACTS_PREFIX)
            or path.startswith(METADATA_SERVICE) or bool(_LOG_PATH.fullmatch(path)))


def cookie_token(headers: Mapping[str, str]) -> Optional[str]:
    """The token in the request's ``kfp_ct_token`` cookie, if any."""
    raw = headers.get("cookie", "")
    if not raw:
        return None
    jar = http.cookies.SimpleCookie()
    try:
        jar.load(raw)
    except http.cookies.CookieError:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def loopback_origin(origin: str) -> bool:
    """Whether an ``Origin`` header names a page on this machine's loopback."""
    parsed = urllib.parse.urlsplit(origin)
    return parsed.scheme in ("http", "https") and parsed.hostname in (
        "127.0.0.1", "localhost", "::1")


def safe_next(target: str) -> str:
    """Where ``/login`` sends the browser after: a loopback http(s) URL only, else ""."""
    if target and loopback_origin(target):
        return target
    return ""


def login_cookie(token: str) -> str:
    """The ``Set-Cookie`` value that holds the token."""
    return f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"


def _page(title: str, text: str, form: bool = False, target: str = "") -> bytes:
    body = f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>"
    if form:
        body += ('<form method="post" action="/login"><label>Token <input name="token" '
                 'type="password" autocomplete="off"></label>'
                 f'<input type="hidden" name="next" value="{html.escape(target)}">'
                 '<button type="submit">Log in</button></form>')
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title></head><body>{body}</body></html>").encode()


def login(method: str, query: Mapping[str, str], body: bytes, valid: Any) -> Answer:
    """``/login``: the token (query ``token`` or form field ``token``) for a cookie.

    Args:
        method: GET or POST.
        query: The query parameters.
        body: The request body (a form, for POST).
        valid: ``valid(token) -> bool``, the endpoint's constant-time check; None when
            the endpoint has no token.
    """
    form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"))) \
        if method == "POST" else {}
    token = form.get("token") or query.get("token") or ""
    target = safe_next(form.get("next") or query.get("next") or "")
    if valid is None:
        return Answer(200, "text/html; charset=utf-8", _page(
            "No token needed", "This endpoint runs without a token (--no-token)."))
    if not token:
        return Answer(200, "text/html; charset=utf-8", _page(
            "kfp-ct local endpoint", "Paste the token that kfp-ct local-server printed "
            "(also in <state>/token).", form=True, target=target))
    if not valid(token):
        return Answer(401, "text/html; charset=utf-8", _page(
            "Wrong token", "That is not this endpoint's token; nothing was set.", form=True,
            target=target))
    headers = {"Set-Cookie": login_cookie(token), "Cache-Control": "no-store",
               "Referrer-Policy": "no-referrer"}
    if target:
        headers["Location"] = target
        return Answer(303, "text/html; charset=utf-8", _page("Logged in", target), headers)
    return Answer(200, "text/html; charset=utf-8", _page(
        "Logged in", "This browser now holds the endpoint's token as an HttpOnly cookie "
        "for 127.0.0.1: open the Kubeflow Pipelines UI on 127.0.0.1."), headers)


def artifact_url(base_url: str, run_id: str, root: str, path: str) -> str:
    """The URL the endpoint serves ``path`` from when it lies under the run's pipeline
    root ``root``; otherwise ``path`` itself (a ``gs://`` URI, an imported file)."""
    real = artifacts.inside(root, path) if path and "://" not in path else None
    if real is None:
        return path
    rel = os.path.relpath(real, os.path.realpath(root))
    return (f"{base_url}{ARTIFACTS_PREFIX}{urllib.parse.quote(run_id)}/"
            f"{urllib.parse.quote(rel)}")


def artifact_file(state_dir: str, path: str) -> Answer:
    """``GET /artifacts/runs/<run id>/<path>``: the file (or a folder's listing)."""
    rest = urllib.parse.unquote(path[len(ARTIFACTS_PREFIX):])
    run_id, _, rel = rest.partition("/")
    root = artifacts.pipeline_root(state_dir, run_id)
    if root is None:
        return _not_found(f"run {run_id} has no outputs on this endpoint")
    target = artifacts.inside(root, os.path.join(root, rel))
    if target is None:
        return _not_found(f"{rel} is not under run {run_id}'s pipeline root")
    if os.path.isdir(target):
        names = sorted(os.listdir(target))
        listing = "".join(f"{n}/\n" if os.path.isdir(os.path.join(target, n)) else f"{n}\n"
                          for n in names)
        return Answer(200, "text/plain; charset=utf-8", listing.encode())
    try:
        with open(target, "rb") as fh:
            data = fh.read()
    except OSError:
        return _not_found(f"run {run_id} has no file {rel}")
    kind = mimetypes.guess_type(target)[0]
    if kind is None:
        kind = "text/html" if data[:200].lstrip().lower().startswith(
            (b"<!doctype html", b"<html")) else "application/octet-stream"
    return Answer(200, kind, data)


def task_log(state_dir: str, path: str) -> Answer:
    """``GET /apis/.../runs/<run id>/nodes/<task>/log``: what the task printed."""
    match = _LOG_PATH.fullmatch(path)
    run_id, task = urllib.parse.unquote(match.group(1)), urllib.parse.unquote(match.group(2))
    root = artifacts.pipeline_root(state_dir, run_id)
    if root is None or not artifacts.is_component(task):
        return _not_found(f"run {run_id} has no log of {task}")
    try:
        with open(os.path.join(root, LOGS_DIR, f"{task}.log"), "rb") as fh:
            return Answer(200, "text/plain; charset=utf-8", fh.read())
    except OSError:
        return _not_found(f"run {run_id} has no log of task {task} (it has not started)")


def metadata_call(metadata: Any, path: str, content_type: str, body: bytes) -> Answer:
    """``POST /ml_metadata.MetadataStoreService/<Method>``: one gRPC-web call."""
    method = path[len(METADATA_SERVICE):]

    def call(request: bytes) -> bytes:
        if metadata is None:
            raise grpcweb.GrpcWebError(grpcweb.UNIMPLEMENTED,
                                       "this endpoint keeps no metadata store")
        try:
            return metadata.call(method, request)
        except LookupError as exc:
            raise grpcweb.GrpcWebError(grpcweb.UNIMPLEMENTED, str(exc)) from None
        except PermissionError as exc:
            raise grpcweb.GrpcWebError(grpcweb.PERMISSION_DENIED, str(exc)) from None
        except ValueError as exc:
            raise grpcweb.GrpcWebError(grpcweb.INVALID_ARGUMENT, str(exc)) from None
        except Exception as exc:  # ml_metadata.errors.StatusError carries gRPC's code
            code = getattr(exc, "error_code", grpcweb.INTERNAL)
            raise grpcweb.GrpcWebError(int(code), f"{type(exc).__name__}: {exc}") from None

    if not grpcweb.is_grpc_web(content_type):
        return Answer(415, "text/plain; charset=utf-8",
                      f"{path} speaks gRPC-web (Content-Type application/grpc-web-text or "
                      f"application/grpc-web+proto), got {content_type or 'none'}".encode())
    kind, data = grpcweb.respond(content_type, body, call)
    return Answer(200, kind, data, {"grpc-accept-encoding": "identity"})


def unauthenticated(path: str, content_type: str, message: str) -> Answer:
    """A 401 in the shape the path's client understands (gRPC-web: status 16)."""
    if path.startswith(METADATA_SERVICE) and grpcweb.is_grpc_web(content_type):
        kind, data = grpcweb.error(content_type, grpcweb.UNAUTHENTICATED, message)
        return Answer(200, kind, data)
    return Answer(401, "text/plain; charset=utf-8", message.encode())


def _not_found(message: str) -> Answer:
    return Answer(404, "text/plain; charset=utf-8", message.encode())
