"""Notices to a webhook: drift, a performance drop, a launch, a failed launch, a retrained
model that was not blessed, a failed run.

The target is a JSON object (the ``notify`` key of the monitoring settings, the
``notify`` parameter of the training pipeline)::

    {"url": "https://hooks.example.com/kfp"}          # inline (lands in the compiled YAML)
    {"url_env": "SLACK_WEBHOOK_URL"}                   # the whole URL from the environment
    {"url_file": "/var/run/secrets/kfp-ct/webhook"}    # ... or from a file (a mounted Secret)

exactly one of the three; optional ``"token_env"`` / ``"token_file"`` (sent as
``Authorization: Bearer <token>``), ``"events"`` (a subset of :data:`EVENTS`; default
all), ``"retries"`` (further tries after the first, default 3) and ``"timeout_s"`` (per
try, default 5).

Each notice is one POST of ``{"text": ..., "event": ..., "record": {...}}``: ``text`` is
Slack-compatible (an incoming webhook shows it), ``record`` is the machine-readable
record. :func:`send` never raises: a target that cannot be reached, a secret that cannot
be read, a 500 on every try, all become a delivery record with ``delivered`` false and the
reason, which the caller keeps with the run's outputs. A notice never fails a run or
blocks a launch.

A resolved URL or token is never written anywhere: delivery records, logs and messages
name the source only (:meth:`NotifyConfig.describe`).

Standard library only (``urllib.request``): a task imports this without TensorFlow or kfp.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, Optional

from kfp_ct.components.common.errors import KfpCtError

#: The notices there are; a target's ``events`` picks some of them.
EVENTS = ("drift", "performance_drop", "estimated_drop", "launched", "launch_failed",
          "not_blessed", "run_failed")
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT_S = 5.0
MAX_RETRIES = 10
MAX_TIMEOUT_S = 60.0
#: The wait before the first retry; it doubles for each further one, up to MAX_BACKOFF_S.
BACKOFF_S = 0.5
MAX_BACKOFF_S = 4.0
#: How many of a failed task's last log lines a run_failed notice carries.
LOG_TAIL_LINES = 20
#: The statuses worth another try; any other 4xx is final (the target refuses the notice).
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})

_KEYS = ("url", "url_env", "url_file", "token_env", "token_file", "events", "retries",
         "timeout_s")
_URL_KEYS = ("url", "url_env", "url_file")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MAX_LINE = 300  # characters of one log line in a notice's text
_MAX_TEXT = 3500  # characters of a notice's text
_USER_AGENT = "kfp-ct-notify"


@dataclasses.dataclass(frozen=True)
class NotifyConfig:
    """Where notices go (see the module docstring); build it with :func:`parse_config`."""

    url: str = ""
    url_env: str = ""
    url_file: str = ""
    token_env: str = ""
    token_file: str = ""
    events: tuple = EVENTS
    retries: int = DEFAULT_RETRIES
    timeout_s: float = DEFAULT_TIMEOUT_S

    def describe(self) -> str:
        """The target in words, with no secret in it: ``env NAME``, ``file PATH``, or the
        inline URL without its user info, query and fragment, and with no more than its
        first path segment (a Slack webhook keeps its token in the path)."""
        if self.url_env:
            return f"env {self.url_env}"
        if self.url_file:
            return f"file {self.url_file}"
        return redact_url(self.url)

    def wants(self, event: str) -> bool:
        """Whether this target takes ``event``."""
        return event in self.events

    def to_json(self) -> dict:
        """The config as JSON (names of secrets only, never their values)."""
        out = {k: getattr(self, k) for k in _URL_KEYS + ("token_env", "token_file")
               if getattr(self, k)}
        if self.url:
            out["url"] = redact_url(self.url)
        out.update(events=list(self.events), retries=self.retries, timeout_s=self.timeout_s)
        return out


def redact_url(url: str) -> str:
    """``url`` with no user info, query or fragment, and its path cut after the first
    segment (``https://hooks.slack.com/services/***``)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "(an unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{port}" if port else "")
    segments = [s for s in parts.path.split("/") if s]
    path = "/" + segments[0] if segments else ""
    if len(segments) > 1:
        path += "/***"
    tail = "?***" if parts.query else ""
    return f"{parts.scheme}://{netloc}{path}{tail}"


def _error(message: str) -> KfpCtError:
    return KfpCtError(f"notify: {message}")


def _http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def parse_config(obj: Any) -> Optional[NotifyConfig]:
    """The notification target from its JSON (a dict, JSON text, or a NotifyConfig).

    Returns:
        The config; None when ``obj`` is None, empty text or an empty object (no target).

    Raises:
        KfpCtError: naming the bad key or value: an unknown key, none or two of ``url`` /
            ``url_env`` / ``url_file``, a URL that is not http(s), a bad env name, an
            unknown event, a retries or timeout out of range.
    """
    if obj is None or isinstance(obj, NotifyConfig):
        return obj
    if isinstance(obj, str):
        text = obj.strip()
        if not text:
            return None
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise _error(f"not valid JSON ({exc}): {text[:40]!r}...") from None
    if not isinstance(obj, Mapping):
        raise _error(f"expected a JSON object such as {{\"url_env\": \"SLACK_WEBHOOK_URL\"}}, "
                     f"got {type(obj).__name__}")
    if not obj:
        return None
    unknown = sorted(set(obj) - set(_KEYS))
    if unknown:
        raise _error(f"unknown key(s) {unknown}; known: {list(_KEYS)}")
    given = [k for k in _URL_KEYS if k in obj]
    if len(given) != 1:
        raise _error("give exactly one of 'url', 'url_env', 'url_file'" +
                     (f"; got {given}" if given else ""))
    out: dict = {}
    for key in _URL_KEYS + ("token_env", "token_file"):
        if key not in obj:
            continue
        value = obj[key]
        if not isinstance(value, str) or not value.strip():
            raise _error(f"{key!r} must be a non-empty string, got {type(value).__name__}")
        value = value.strip()
        if key.endswith("_env") and not _ENV_NAME.match(value):
            raise _error(f"{key!r} must name an environment variable (letters, digits, "
                         f"_), got {value!r}")
        out[key] = value
    if "url" in out and not _http_url(out["url"]):
        raise _error(f"'url' must be an http:// or https:// URL with a host, got "
                     f"{redact_url(out['url'])!r}")
    if "token_env" in out and "token_file" in out:
        raise _error("give at most one of 'token_env', 'token_file'")
    if "events" in obj:
        events = obj["events"]
        if isinstance(events, str):
            events = [events]
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            raise _error(f"'events' must be a list of {list(EVENTS)}, got {obj['events']!r}")
        bad = [e for e in events if e not in EVENTS]
        if bad:
            raise _error(f"'events': unknown event(s) {bad}; known: {list(EVENTS)}")
        out["events"] = tuple(e for e in EVENTS if e in events)
    if "retries" in obj:
        value = obj["retries"]
        if (not isinstance(value, int) or isinstance(value, bool)
                or not 0 <= value <= MAX_RETRIES):
            raise _error(f"'retries' must be an integer in [0, {MAX_RETRIES}], got {value!r}")
        out["retries"] = value
    if "timeout_s" in obj:
        value = obj["timeout_s"]
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not 0 < value <= MAX_TIMEOUT_S):
            raise _error(f"'timeout_s' must be a number in (0, {MAX_TIMEOUT_S:g}], got "
                         f"{value!r}")
        out["timeout_s"] = float(value)
    return NotifyConfig(**out)


# ----------------------------------------------------------------------------- secrets


class _Undeliverable(Exception):
    """The notice cannot be sent at all (its secret is not there); the message names the
    source, never a value."""


def _read_secret(env: str, path: str, what: str) -> str:
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise _Undeliverable(f"the {what} environment variable {env} is not set")
        return value
    try:
        with open(path, encoding="utf-8") as fh:
            value = fh.read().strip()
    except OSError as exc:
        raise _Undeliverable(f"cannot read the {what} file {path}: "
                             f"{exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise _Undeliverable(f"the {what} file {path} is not UTF-8 text") from None
    if not value:
        raise _Undeliverable(f"the {what} file {path} is empty")
    return value


def _resolve(cfg: NotifyConfig) -> tuple:
    """(url, token or "") with the secrets read; raises _Undeliverable."""
    url = cfg.url or _read_secret(cfg.url_env, cfg.url_file, "webhook URL")
    if not _http_url(url):
        raise _Undeliverable(f"the webhook URL from {cfg.describe()} is not an http(s) URL "
                             "with a host")
    token = ""
    if cfg.token_env or cfg.token_file:
        token = _read_secret(cfg.token_env, cfg.token_file, "token")
    return url, token


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret (and the URL's path and query) replaced by ***."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _secret_parts(url: str, token: str) -> list:
    parts = [url, token]
    try:
        split = urllib.parse.urlsplit(url)
        parts += [split.path, split.query, split.netloc if "@" in split.netloc else "",
                  urllib.parse.unquote(split.path)]
    except ValueError:
        pass
    return [p for p in parts if p and p != "/"]


# ----------------------------------------------------------------------------- sending


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is not followed: it would carry the token (and the notice) elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002
        return None


def _backoff(attempt: int, retry_after: Optional[str]) -> float:
    wait = min(MAX_BACKOFF_S, BACKOFF_S * (2 ** (attempt - 1)))
    if retry_after:
        try:
            wait = max(wait, min(MAX_BACKOFF_S, float(retry_after)))
        except ValueError:
            pass
    return wait


def _reason(exc: BaseException, timeout_s: float) -> str:
    """A short reason for a failed try (no URL in it: urllib's reasons carry none)."""
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout_s:g} s (timeout)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, urllib.error.URLError):
        return f"cannot connect: {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"


def send(cfg: Any, event: str, text: str, record: Mapping) -> dict:
    """POSTs one notice; never raises.

    Args:
        cfg: The target (a NotifyConfig, or its JSON for :func:`parse_config`); None: no
            target (the notice is skipped).
        event: One of :data:`EVENTS`.
        text: The Slack-compatible line(s) people read.
        record: The machine-readable record (JSON-serializable; other values become text).

    Returns:
        The delivery record ``{"event", "target", "delivered", "attempts", "status",
        "error"}``: ``target`` is the config's description (no secret), ``attempts`` the
        tries made, ``status`` the last HTTP status (None when none came back), ``error``
        why it was not delivered ("" when it was). A notice the target does not take (an
        event not in its ``events``, or no target) adds ``"skipped"`` with the reason and
        makes no request. Retried with a growing wait on connection errors, timeouts, 5xx
        and 429; any other 4xx is final.
    """
    out: dict = {"event": event, "target": "", "delivered": False, "attempts": 0,
                 "status": None, "error": ""}
    secrets: list = []
    try:
        cfg = parse_config(cfg)
        if cfg is None:
            out["skipped"] = "no notification target is configured"
            return out
        out["target"] = cfg.describe()
        if event not in EVENTS:
            out["error"] = f"unknown event {event!r}; known: {list(EVENTS)}"
            return out
        if not cfg.wants(event):
            out["skipped"] = f"the target takes only {list(cfg.events)}"
            return out
        try:
            url, token = _resolve(cfg)
        except _Undeliverable as exc:
            out["error"] = str(exc)
            return out
        secrets = _secret_parts(url, token)
        body = json.dumps({"text": text, "event": event, "record": dict(record or {})},
                          default=str).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "User-Agent": _USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        opener = urllib.request.build_opener(_NoRedirect)
        for attempt in range(1, cfg.retries + 2):
            out["attempts"] = attempt
            retry_after = None
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with opener.open(request, timeout=cfg.timeout_s) as response:
                    response.read(65536)
                    out["status"] = response.status
                if 200 <= out["status"] < 300:
                    out["delivered"], out["error"] = True, ""
                    return out
                out["error"] = f"HTTP {out['status']}"
                retry = False
            except urllib.error.HTTPError as exc:
                out["status"] = exc.code
                with contextlib.suppress(Exception):
                    exc.read(65536)
                out["error"] = f"HTTP {exc.code} {exc.reason}".strip()
                if 300 <= exc.code < 400:
                    out["error"] += " (redirects are not followed)"
                retry = exc.code in RETRY_STATUSES
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
            except (urllib.error.URLError, http.client.HTTPException, OSError,
                    ValueError) as exc:
                out["status"] = None
                out["error"] = _reason(exc, cfg.timeout_s)
                retry = not isinstance(exc, ValueError)
            if not retry or attempt > cfg.retries:
                break
            time.sleep(_backoff(attempt, retry_after))
        out["error"] = f"{out['error']} (after {out['attempts']} attempt" \
                       f"{'s' if out['attempts'] != 1 else ''})"
    except Exception as exc:  # never raise: a notice must not fail the run
        out["error"] = f"{type(exc).__name__}: {exc}"
    out["error"] = _scrub(out["error"], secrets)
    return out


# ----------------------------------------------------------------------------- texts

_HEADS = {
    "drift": "drift found",
    "performance_drop": "performance dropped",
    "estimated_drop": "estimated performance dropped",
    "launched": "retraining launched",
    "launch_failed": "retraining launch failed",
    "not_blessed": "retrained model not blessed",
    "run_failed": "run failed",
}


def _short(value: Any, limit: int = _MAX_LINE) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _names(values: Any, limit: int = 8) -> str:
    items = []
    for v in values or []:
        items.append(str(v.get("feature") or v.get("name") or v) if isinstance(v, Mapping)
                     else str(v))
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def event_text(event: str, summary: Mapping) -> str:
    """A short Slack-style text for a notice (``*kfp-ct: drift found* at `base` ...``).

    Args:
        event: One of :data:`EVENTS`.
        summary: What the sender knows; every key is optional: ``model_base``,
            ``drifted`` (feature names or records with ``feature``), ``reasons`` (list of
            text), ``metric`` / ``value`` / ``baseline`` / ``tolerance``, ``version``,
            ``launched_run`` (the retraining's run id or name), ``run_name`` / ``run_id``
            (the run that sends it), ``reason`` / ``error``, ``url`` (a link to the run).

    Returns:
        One to four lines; each part is cut to a few hundred characters.
    """
    summary = summary or {}
    head = f"*kfp-ct: {_HEADS.get(event, event)}*"
    if summary.get("model_base"):
        head += f" at `{_short(summary['model_base'], 200)}`"
    lines = [head]
    detail = []
    if summary.get("drifted"):
        detail.append(f"moved: {_names(summary['drifted'])}")
    if summary.get("metric"):
        part = f"{summary['metric']}"
        if summary.get("value") is not None:
            part += f" {_fmt(summary['value'])}"
        if summary.get("baseline") is not None:
            part += f" (baseline {_fmt(summary['baseline'])}"
            part += (f", tolerance {_fmt(summary['tolerance'])})"
                     if summary.get("tolerance") is not None else ")")
        detail.append(part)
    if summary.get("version") is not None:
        detail.append(f"version {summary['version']}")
    if summary.get("launched_run"):
        detail.append(f"retraining run {summary['launched_run']}")
    if detail:
        lines.append(_short("; ".join(detail)))
    for reason in list(summary.get("reasons") or [])[:2]:
        lines.append(f"- {_short(reason)}")
    why = summary.get("error") or summary.get("reason")
    if why:
        lines.append(_short(why))
    run = summary.get("run_name") or summary.get("run_id")
    if run or summary.get("url"):
        lines.append(" ".join(filter(None, [f"run `{_short(run, 120)}`" if run else "",
                                            _short(summary.get("url") or "", 300)])))
    return "\n".join(lines)[:_MAX_TEXT]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _tail(lines: Iterable[str], n: int = LOG_TAIL_LINES) -> list:
    kept = [str(line).rstrip("\n") for line in (lines or [])]
    kept = [line for line in kept if line.strip()]
    return [line[:_MAX_LINE] for line in kept[-n:]]


def run_failed_text(pipeline: str, run: str, task: str, log_tail: list) -> str:
    """The text of a failed-run notice: pipeline, run and failed task on the first line,
    the last lines of the task's log in a code block."""
    head = f"*kfp-ct: run failed*: pipeline `{_short(pipeline or '?', 120)}`, " \
           f"run `{_short(run or '?', 160)}`"
    head += f", failed task `{_short(task, 120)}`" if task else ", no task had failed yet"
    tail = _tail(log_tail)
    if not tail:
        return head
    block = "\n".join(line.replace("```", "'''") for line in tail)
    room = _MAX_TEXT - len(head) - 10
    if len(block) > room:
        block = block[-room:]
    return f"{head}\n```\n{block}\n```"


def announce_failed_run(cfg: Any, pipeline: str, run_id: str, run_name: str,
                        failed_task: str, log_tail: list, error: str = "",
                        where: str = "") -> dict:
    """Sends the ``run_failed`` notice of a failed run; never raises.

    Args:
        cfg: The target (see :func:`send`).
        pipeline: The pipeline's name.
        run_id: The run's id; run_name: its name.
        failed_task: The task that failed ("" when none is known).
        log_tail: Its log's lines; the last :data:`LOG_TAIL_LINES` are sent.
        error: The run's error message, when there is one.
        where: Where it ran ("local", "local endpoint", "cluster"), for the record.

    Returns:
        The delivery record of :func:`send`.
    """
    tail = _tail(log_tail)
    record = {"pipeline": pipeline, "run_id": run_id, "run_name": run_name,
              "failed_task": failed_task, "error": _short(error, 1000) if error else "",
              "log_tail": tail}
    if where:
        record["where"] = where
    return send(cfg, "run_failed", run_failed_text(pipeline, run_name or run_id,
                                                   failed_task, tail), record)
