"""Push: publish a blessed model to the TF Serving model base, after a serving check.

Decision, in order:

1. Not blessed (``NOT_BLESSED`` marker, or no marker at all) -> nothing is pushed;
   ``<pushed_dir>/push.json`` says why and a ``NOT_PUSHED`` marker is written.
2. Production moved since evaluation (``evaluation.json``'s baseline names another
   version, or none where there is one now: another push landed in between) -> not
   pushed, recorded the same way: the candidate must be compared with the new production.
3. Blessed -> the model is copied to a staging folder and checked in a fresh process
   (``python -m kfp_ct.components.push.canary``) on real raw eval rows. A model that does not
   load or answer raises :class:`KfpCtError`; nothing is pushed.
4. Warmup requests are written into the staged copy's ``assets.extra/``, and the copy is
   published with :func:`kfp_ct.components.common.registry.publish` (atomic: rename locally,
   a claimed number and ``saved_model.pb`` last on gs://), with its audit record, the
   files needed to roll back and check drift, and the serving check's request rows with
   the model's answers (``serving_check.json``: what a canary must answer). The publish
   itself refuses when production moved meanwhile (2. again). ``push.json`` names the
   version; a ``PUSHED`` marker.

No kfp here; TensorFlow only in the canary subprocess and for the warmup file.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from kfp_ct.components.common import podenv, registry, storage, tfenv
from kfp_ct.components.common.artifacts import (BLESSED, BLESSING_JSON, EVALUATION_JSON, NOT_BLESSED,
                                         NOT_PUSHED, PUSH_JSON, PUSHED, RAW_EVAL_FILE,
                                         SCHEMA_FILE, STATS_FILE)
from kfp_ct.components.common.errors import KfpCtError, StorageError
from kfp_ct.components.common.metrics import MAIN_METRIC
from kfp_ct.components.common.params import json_object
from kfp_ct.components.common.problem import load_problem

GIT_COMMIT_ENV = "KFP_CT_GIT_COMMIT"
CANARY_TIMEOUT_S = 600


@dataclasses.dataclass
class PushResult:
    pushed: bool
    version: int | None = None
    path: str = ""
    reason: str = ""
    destination: str = ""
    canary: dict | None = None
    blessed: bool = False
    key_metric: str = ""
    key_metric_value: float | None = None

    def summary(self) -> dict:
        """The pushed Model artifact's metadata: ``uri`` is the published version
        (``<base>/<N>``), the one to serve; absent when nothing was pushed (``reason``)."""
        out = {"pushed": self.pushed, "destination": self.destination,
               "blessed": self.blessed}
        if self.pushed:
            out.update(version=self.version, path=self.path, uri=self.path,
                       key_metric=self.key_metric, key_metric_value=self.key_metric_value)
            if self.canary:
                out["canary_latency_ms_p50"] = self.canary.get("latency_ms_p50")
        else:
            out["reason"] = self.reason
        return out


# ------------------------------------------------------------------------ helpers


def _read_json(path: str) -> dict | None:
    if not path or not storage.exists(path):
        return None
    try:
        data = json.loads(storage.read_text(path))
    except ValueError as exc:
        raise KfpCtError(f"{path} is not valid JSON: {exc}") from None
    return data if isinstance(data, dict) else None


def check_blessing(blessing_dir: str) -> tuple[bool, str, dict | None]:
    """(blessed, reason, blessing.json content) from the gate's output folder."""
    record = _read_json(storage.join(blessing_dir, BLESSING_JSON)) if blessing_dir else None
    if blessing_dir and storage.exists(storage.join(blessing_dir, NOT_BLESSED)):
        failed = [c for c in (record or {}).get("checks", []) or []
                  if isinstance(c, dict) and c.get("verdict") == "fail"]
        detail = "; ".join(f"{c.get('kind')} {c.get('metric')}: {c.get('reason') or 'failed'}"
                           for c in failed)
        return False, "model is NOT_BLESSED by the gate" + (f": {detail}" if detail else ""), record
    if blessing_dir and storage.exists(storage.join(blessing_dir, BLESSED)):
        return True, "", record
    return False, (f"no blessing marker in {blessing_dir or '(no blessing dir given)'} "
                   f"(expected {BLESSED} or {NOT_BLESSED}): treated as not blessed"), record


def parse_trigger(trigger: str | dict) -> dict:
    """The trigger record (why this training ran) as a dict; {} when not given."""
    return json_object(trigger, "trigger")


def _write_outcome(pushed_dir: str, record: dict, marker: str) -> None:
    storage.write_text(storage.join(pushed_dir, PUSH_JSON),
                       json.dumps(record, indent=2, sort_keys=True) + "\n")
    text = record.get("reason") or record.get("path") or ""
    storage.write_text(storage.join(pushed_dir, marker), str(text) + "\n")


def compared_production(evaluation: dict | None) -> int | None:
    """The production version evaluate compared the candidate with (None: there was no
    production model); ``registry.ANY_PRODUCTION`` when no evaluation was given.

    Raises:
        KfpCtError: the baseline record names a state but no version.
    """
    if evaluation is None:
        return registry.ANY_PRODUCTION
    baseline = evaluation.get("baseline") or {}
    if baseline.get("state", "none") == "none":  # as the gate reads it: a first push
        return None
    version = baseline.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise KfpCtError(f"{EVALUATION_JSON}: the baseline is {baseline.get('state')!r} but "
                         f"names no version ({version!r}): cannot tell what it compared with")
    return version


def _not_pushed(pushed_dir: str, destination: str, reason: str, blessed: bool = True,
                **extra) -> PushResult:
    _write_outcome(pushed_dir, {"pushed": False, "reason": reason,
                                "destination": destination, **extra}, NOT_PUSHED)
    print(f"[kfp-ct] push: not pushed: {reason}")
    return PushResult(pushed=False, reason=reason, destination=destination, blessed=blessed)


def _production_moved(pushed_dir: str, destination: str,
                      exc: registry.ProductionMovedError) -> PushResult:
    now = "no production" if exc.found is None else f"version {exc.found}"
    return _not_pushed(pushed_dir, destination,
                       f"{exc}; not pushed: the candidate must be evaluated again, against "
                       f"{now} (run the training pipeline again)",
                       compared_with=exc.expected, production=exc.found)


def _check_destination(base: str) -> None:
    """Fails early, naming ``base``, when a local destination cannot be written, or is
    a pod's own disk (components/common/podenv.py)."""
    podenv.check_durable(base)
    if storage.is_gcs(base):
        return
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"Cannot push to {base}: cannot create the directory "
                           f"({exc.strerror or exc})") from exc
    if not os.access(base, os.W_OK | os.X_OK):
        raise StorageError(f"Cannot push to {base}: directory is not writable")


def run_canary_subprocess(model_dir: str, examples_path: str, n: int,
                          timeout_s: int = CANARY_TIMEOUT_S, profile_path: str = "",
                          drop: tuple[str, ...] = (), serving_check_path: str = "",
                          label: str = "", calibration_path: str = "") -> dict:
    """Runs ``kfp_ct.components.push.canary`` in a fresh Python; returns its JSON result.

    ``drop``: columns taken out of every request (the label and sensitive columns), so
    the check sends what serving will get. ``serving_check_path``: where the process
    writes ``serving_check.json`` (the request rows and the model's answer to them).

    Raises:
        KfpCtError: the canary reports a failure, crashes, or times out.
    """
    env = dict(os.environ)
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    # A local warm run names its launcher: the check still gets a process of its own (a
    # fork of one that has only imported TensorFlow), without importing it again.
    python = os.environ.get(tfenv.WARM_LAUNCHER_ENV) or sys.executable
    cmd = [python, "-m", "kfp_ct.components.push.canary", model_dir, examples_path, str(n)]
    if profile_path:
        cmd.append(profile_path)
    if drop:
        cmd += ["--drop", ",".join(drop)]
    if serving_check_path:
        cmd += ["--serving-check", serving_check_path]
    if label and calibration_path:
        cmd += ["--label", label, "--calibration", calibration_path]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise KfpCtError(f"Serving check failed for {model_dir}: no answer within "
                         f"{timeout_s} s") from None
    result = None
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except ValueError:
                continue
            break
    if result is None:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise KfpCtError(f"Serving check failed for {model_dir}: the canary process exited "
                         f"with {proc.returncode} without a result ({tail})")
    if not result.get("ok") or proc.returncode != 0:
        raise KfpCtError(f"Serving check failed for {model_dir}: "
                         f"{result.get('error', 'exit status %d' % proc.returncode)}")
    return result


def _problem_text(problem: str) -> str:
    text = (problem or "").strip()
    if text and not text.startswith("{"):
        text = storage.read_text(text)
    return text


def _code_version() -> dict:
    import kfp_ct.components

    return {"kfp_ct": kfp_ct.components.__version__, "git_commit": os.environ.get(GIT_COMMIT_ENV, "")}


def _check_serving_check(path: str, records: list[bytes]) -> None:
    """The serving check's record must hold exactly the warmup rows, in order: a rollout
    sends those to a canary and compares its answers with the recorded ones.

    Raises:
        KfpCtError: no record, or one of other rows.
    """
    import base64

    try:
        with open(path) as fh:
            sent = json.load(fh).get("requests_b64")
    except (OSError, ValueError, AttributeError) as exc:
        raise KfpCtError(f"Serving check failed: no usable {registry.SERVING_CHECK} "
                         f"({exc})") from None
    if sent != [base64.b64encode(r).decode("ascii") for r in records]:
        raise KfpCtError(f"Serving check failed: {registry.SERVING_CHECK} does not hold the "
                         f"{len(records)} warmup request rows")


def _extra_file(extra: dict, name: str, directory: str, filename: str) -> None:
    if directory:
        path = storage.join(directory, filename)
        if storage.exists(path):
            extra[name] = storage.read_bytes(path)


# --------------------------------------------------------------------------- push


def run_push(model_dir: str, blessing_dir: str, push_destination: str, raw_eval_dir: str,
             pushed_dir: str, statistics_dir: str = "", schema_dir: str = "",
             problem: str = "", evaluation_dir: str = "", run_info: dict | None = None,
             canary_rows: int = 16, trigger: str | dict = "") -> PushResult:
    """Pushes a blessed model to ``push_destination`` as a new version.

    Args:
        model_dir: The candidate SavedModel (local or gs://).
        blessing_dir: The gate's output (BLESSED / NOT_BLESSED marker, blessing.json).
        push_destination: The TF Serving model base, local path or gs://.
        raw_eval_dir: Holds eval_raw.tfrecord (serialized raw tf.Examples).
        pushed_dir: Where push.json and the PUSHED / NOT_PUSHED marker go.
        statistics_dir, schema_dir, evaluation_dir: Kept with the version when present.
        problem: The problem spec (inline JSON or a path), kept with the version.
        run_info: The parent run (e.g. run id, task name), kept with the version.
        canary_rows: How many eval rows the serving check and warmup requests use.
        trigger: Why this training ran, JSON text or a dict (e.g. drift: the monitoring
            run, the window, the features that moved); kept in the version's metadata
            as ``trigger``.

    Returns:
        A PushResult; ``pushed`` is False (with ``reason``) for a model not blessed, and
        when production is no longer the version the evaluation compared it with.

    Raises:
        KfpCtError: the serving check failed or the destination cannot be written;
            nothing is published then.
    """
    trigger = parse_trigger(trigger)
    blessed, reason, blessing = check_blessing(blessing_dir)
    if not blessed:
        return _not_pushed(pushed_dir, push_destination, reason, blessed=False)

    _check_destination(push_destination)
    raw_eval = storage.join(raw_eval_dir, RAW_EVAL_FILE)
    if not storage.exists(raw_eval):
        raise KfpCtError(f"Cannot check the model before pushing: no eval rows at {raw_eval}")
    evaluation = _read_json(storage.join(evaluation_dir, EVALUATION_JSON)) \
        if evaluation_dir else None
    expected = compared_production(evaluation)
    if expected is registry.ANY_PRODUCTION:
        print("[kfp-ct] push: no evaluation record: production is not checked against it")
    try:
        registry.check_production(push_destination, expected)
    except registry.ProductionMovedError as exc:
        return _production_moved(pushed_dir, push_destination, exc)

    work = tempfile.mkdtemp(prefix="kfp-ct-push-")
    try:
        staged = os.path.join(work, "model")
        storage.download(model_dir, staged)
        if not os.path.isfile(os.path.join(staged, registry.SAVED_MODEL)):
            raise KfpCtError(f"Cannot push {model_dir}: no {registry.SAVED_MODEL} in it "
                             "(not a SavedModel)")
        local_eval = raw_eval
        if storage.is_gcs(raw_eval):
            local_eval = storage.download(raw_eval, os.path.join(work, RAW_EVAL_FILE))
        profile_path = os.path.join(work, registry.PREDICTION_PROFILE)
        spec = load_problem(problem) if problem else None
        # Serving never gets the label; sensitive columns never leave the training data.
        private = ((spec.label,) + tuple(spec.sensitive)) if spec else ()
        check_path = os.path.join(work, registry.SERVING_CHECK)
        calibration_path = os.path.join(work, registry.CALIBRATION)
        classification = spec is not None and spec.task == "classification"
        canary = run_canary_subprocess(staged, local_eval, canary_rows,
                                       profile_path=profile_path, drop=private,
                                       serving_check_path=check_path,
                                       label=spec.label if classification else "",
                                       calibration_path=calibration_path)

        from kfp_ct.components.push import canary as canary_lib

        records = canary_lib.strip_columns(
            canary_lib.read_records(local_eval, canary_rows), private)
        _check_serving_check(check_path, records)
        model_name = os.path.basename(push_destination.rstrip("/")) or "model"
        canary_lib.write_warmup_requests(staged, records, model_name=model_name)

        metrics = ((evaluation or {}).get("candidate") or {}).get("overall") or {}
        task = (evaluation or {}).get("task")
        metadata = {
            "metrics": metrics,
            "key_metric": MAIN_METRIC.get(task or "", ""),
            "blessing": {"blessed": True,
                         "checks": (blessing or {}).get("checks", []),
                         "notes": (blessing or {}).get("notes", [])},
            "problem": _problem_text(problem),
            "code_version": _code_version(),
            "parent_run": dict(run_info or {}),
            "source_model_dir": model_dir,
            "created_at": datetime.datetime.now(datetime.timezone.utc)
                                  .isoformat(timespec="seconds"),
            "serving_check": canary,
        }
        if trigger:
            metadata["trigger"] = trigger
        extra: dict[str, bytes] = {}
        _extra_file(extra, registry.STATISTICS, statistics_dir, STATS_FILE)
        _extra_file(extra, registry.DRIFT_REFERENCE, statistics_dir, registry.DRIFT_REFERENCE)
        _extra_file(extra, registry.SCHEMA, schema_dir, SCHEMA_FILE)
        _extra_file(extra, registry.EVALUATION, evaluation_dir, EVALUATION_JSON)
        _extra_file(extra, registry.BLESSING, blessing_dir, BLESSING_JSON)
        _extra_file(extra, registry.PREDICTION_PROFILE, work, registry.PREDICTION_PROFILE)
        _extra_file(extra, registry.SERVING_CHECK, work, registry.SERVING_CHECK)
        _extra_file(extra, registry.CALIBRATION, work, registry.CALIBRATION)
        if metadata["problem"]:
            extra[registry.PROBLEM] = metadata["problem"].encode()
        if spec is not None and spec.module_file:
            # The user module ran with the task's rights and shaped this model: kept
            # beside it, with its digest, so the version can be audited and reproduced.
            code = storage.read_bytes(spec.module_file)
            extra[registry.USER_MODULE] = code
            metadata["user_module"] = {"path": spec.module_file,
                                       "sha256": hashlib.sha256(code).hexdigest(),
                                       "kept_as": f"{registry.AUDIT_DIR}/{registry.USER_MODULE}"}
        metadata["warmup_requests"] = {"rows": len(records), "columns_left_out": list(private)}

        try:
            info = registry.publish(push_destination, staged, metadata, extra,
                                    expected_production=expected)
        except registry.ProductionMovedError as exc:  # another push landed meanwhile
            return _production_moved(pushed_dir, push_destination, exc)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    record = {"pushed": True, "version": info.version, "path": info.path,
              "destination": push_destination}
    _write_outcome(pushed_dir, record, PUSHED)
    print(f"[kfp-ct] push: pushed version {info.version} to {info.path}")
    key_value = metrics.get(metadata["key_metric"])
    return PushResult(pushed=True, version=info.version, path=info.path,
                      destination=push_destination, canary=canary, blessed=True,
                      key_metric=metadata["key_metric"],
                      key_metric_value=key_value if isinstance(key_value, (int, float))
                      else None)
