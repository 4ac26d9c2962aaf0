"""Judging a canary: the version's own serving check, replayed over TF Serving's REST API.

Push ran the version's ``serving_default`` on its warmup rows (real eval rows without
the label and the sensitive columns) and kept both the requests and the answers beside
the version (``kfp_ct/serving_check.json``). The judge sends the same rows to the canary,
``POST <url>/v1/models/<name>[/labels/<label>]:predict`` in TF Serving's columnar format
(``{"signature_name", "inputs": {"examples": [{"b64": ...}]}}``), once as one batch and
then one row at a time for the first few, and checks that every request succeeds and
that every answer is the recorded one: the same output names, shapes and strings, and
numbers within a tolerance (the model server computes in float32 as push did, but may
batch differently).

A version pushed before kfp-ct recorded the answers has no ``serving_check.json``: its
warmup file supplies the requests (TensorFlow reads it) and the answers are checked for
shape and finiteness only; the verdict says so.

Standard library only (plus TensorFlow for that fallback).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from kfp_ct.components.common import registry, storage
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.common.prediction_log import INPUT_KEY, SIGNATURE

SINGLE_REQUESTS = 3
RTOL, ATOL = 1e-3, 1e-4
REQUEST_TIMEOUT_S = 30
MAX_PROBLEMS = 5


@dataclasses.dataclass
class Verdict:
    passed: bool
    requests: int
    reason: str
    checked: str  # "outputs" (compared with the recorded answers) or "shapes"
    latency_ms_p50: float | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Expected:
    requests: list[bytes]
    outputs: dict[str, list] | None  # None: nothing recorded (shapes only)
    source: str


def expected(version_path: str) -> Expected:
    """What the judge sends and expects, from the version's audit files."""
    path = storage.join(version_path, registry.AUDIT_DIR, registry.SERVING_CHECK)
    if storage.exists(path):
        try:
            check = json.loads(storage.read_text(path))
            requests = [base64.b64decode(r) for r in check["requests_b64"]]
            outputs = dict(check["outputs"])
        except (ValueError, KeyError, TypeError) as exc:
            raise KfpCtError(f"cannot judge the canary: {path} is not a serving check "
                             f"record ({type(exc).__name__}: {exc})") from None
        if not requests:
            raise KfpCtError(f"cannot judge the canary: {path} holds no request")
        return Expected(requests, outputs, path)
    warmup = storage.join(version_path, "assets.extra", "tf_serving_warmup_requests")
    if not storage.exists(warmup):
        raise KfpCtError(f"cannot judge the canary: {version_path} has neither "
                         f"{registry.AUDIT_DIR}/{registry.SERVING_CHECK} nor a warmup file")
    return Expected(_warmup_rows(warmup), None, warmup)


def _warmup_rows(path: str) -> list[bytes]:
    import tensorflow as tf

    from kfp_ct.components.common.prediction_log import parse_prediction_log, serialized_examples

    with storage.local_copy(path) as local:
        logs = [parse_prediction_log(r.numpy()) for r in tf.data.TFRecordDataset(local)]
    rows = max((serialized_examples(log) for log in logs), key=len, default=[])
    if not rows:
        raise KfpCtError(f"cannot judge the canary: {path} holds no predict request")
    return rows


def predict_url(url: str, model: str, label: str = "") -> str:
    where = f"/labels/{label}" if label else ""
    return f"{url.rstrip('/')}/v1/models/{model}{where}:predict"


def post(url: str, body: dict, timeout_s: float = REQUEST_TIMEOUT_S,
         headers: dict | None = None) -> tuple[int, Any]:
    """(HTTP status, parsed JSON or the text) of one POST; status 0 when unreachable."""
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc))
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode("utf-8", errors="replace")[:300]


def _outputs(answer: Any, names: list[str] | None) -> dict[str, Any]:
    """A columnar answer as {name: value}: with one output TF Serving sends it bare."""
    if not isinstance(answer, dict) or "outputs" not in answer:
        raise ValueError(f"no 'outputs' in the answer: {str(answer)[:200]}")
    out = answer["outputs"]
    if isinstance(out, dict) and (names is None or len(names) != 1 or set(out) == set(names)):
        return out
    if names and len(names) == 1:
        return {names[0]: out}
    return {"output": out}


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _leaves(value: Any):
    if isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def _same(got: Any, want: Any, where: str, problems: list[str]) -> None:
    if _shape(got) != _shape(want):
        problems.append(f"{where}: shape {_shape(got)}, expected {_shape(want)}")
        return
    for i, (g, w) in enumerate(zip(_leaves(got), _leaves(want))):
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            ok = (isinstance(g, (int, float)) and not isinstance(g, bool)
                  and math.isfinite(g) and abs(g - w) <= ATOL + RTOL * abs(w))
        else:
            ok = g == w
        if not ok:
            problems.append(f"{where}: value {i} is {g!r}, expected {w!r}")
            return


def _sane(got: Any, rows: int, where: str, problems: list[str]) -> None:
    shape = _shape(got)
    if not shape or shape[0] != rows:
        problems.append(f"{where}: shape {shape}, expected [{rows}, ...]")
    elif any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(got)):
        problems.append(f"{where}: a value is not finite")


def judge(url: str, model: str, version_path: str, label: str = "",
          post_fn: Callable[..., tuple[int, Any]] = post,
          log: Callable[[str], None] = print, exp: Expected | None = None) -> Verdict:
    """Sends the version's recorded requests to ``url`` and compares the answers.
    ``exp``: what :func:`expected` read for this version already (else it is read).

    Never raises for what the server does (that is the verdict); raises KfpCtError when
    the version has nothing to judge with.
    """
    exp = expected(version_path) if exp is None else exp
    names = sorted(exp.outputs) if exp.outputs is not None else None
    target = predict_url(url, model, label)
    batches = [(list(range(len(exp.requests))), "batch request")]
    batches += [([i], f"single request {i}") for i in range(min(SINGLE_REQUESTS, len(exp.requests)))]
    problems: list[str] = []
    latencies = []
    for rows, where in batches:
        body = {"signature_name": SIGNATURE, "inputs": {INPUT_KEY: [
            {"b64": base64.b64encode(exp.requests[i]).decode()} for i in rows]}}
        started = time.perf_counter()
        status, answer = post_fn(target, body)
        latencies.append(time.perf_counter() - started)
        if status != 200:
            detail = answer.get("error") if isinstance(answer, dict) else answer
            problems.append(f"{where}: " + (f"unreachable ({detail})" if status == 0
                                             else f"HTTP {status}: {str(detail)[:200]}"))
            continue
        try:
            got = _outputs(answer, names)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if exp.outputs is None:
            for name, value in sorted(got.items()):
                _sane(value, len(rows), f"{where}, output {name!r}", problems)
            continue
        if set(got) != set(exp.outputs):
            problems.append(f"{where}: outputs {sorted(got)}, expected {names}")
            continue
        for name in names:
            want = [exp.outputs[name][i] for i in rows]
            _same(got[name], want, f"{where}, output {name!r}", problems)
    latencies.sort()
    p50 = round(1000 * latencies[len(latencies) // 2], 3) if latencies else None
    checked = "outputs" if exp.outputs is not None else "shapes"
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS])
        more = f" (and {len(problems) - MAX_PROBLEMS} more)" if len(problems) > MAX_PROBLEMS else ""
        verdict = Verdict(False, len(batches), f"the canary at {target} answered wrongly: "
                          f"{shown}{more}", checked, p50)
    else:
        what = ("every answer matched the one recorded at push" if checked == "outputs" else
                "every answer was well shaped and finite (this version was pushed before "
                "kfp-ct recorded answers, so they were not compared)")
        verdict = Verdict(True, len(batches), f"{len(batches)} requests of "
                          f"{len(exp.requests)} warmup rows to {target}: {what}", checked, p50)
    log(f"[rollout] judge: {'PASS' if verdict.passed else 'FAIL'}: {verdict.reason}")
    return verdict
