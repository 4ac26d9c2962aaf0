"""The model registry at a TF Serving model base (local directory or gs://).

This is the one module that knows the serving layout::

    <base>/<version>/saved_model.pb          TF Serving loads the newest numeric dir
    <base>/<version>/variables/ assets/ assets.extra/
    <base>/<version>/kfp_ct/metadata.json    our audit record (+ statistics.pb,
                                             schema.pbtxt, problem.json, metrics.json)

A version is never visible half-written: locally it is assembled in
``<base>/.tmp-<uuid>/`` and renamed into place; on gs:// ``saved_model.pb`` is
uploaded last, so a partial upload has no ``saved_model.pb`` ("incomplete").

No kfp, no TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Any

from components.common import storage
from components.common.errors import RegistryError, StorageError
from components.common.metrics import MAIN_METRIC

SAVED_MODEL = "saved_model.pb"
AUDIT_DIR = "kfp_ct"
METADATA = "metadata.json"
# Audit files kept beside each version (push writes them; evaluate, validate and the drift
# check read them).
STATISTICS = "statistics.pb"  # TFDV statistics of the training data (the drift baseline)
DRIFT_REFERENCE = "drift_reference.json"  # exact training counts per drift cell
SCHEMA = "schema.pbtxt"
PROBLEM = "problem.json"
EVALUATION = "evaluation.json"
BLESSING = "blessing.json"
PREDICTION_PROFILE = "prediction_profile.json"  # the model's predictions on its eval rows
# Retraining launch records (create-only, one per launch): <base>/RETRAIN_DIR/
RETRAIN_DIR = "kfp_ct_retraining"

COMPLETE = "complete"
INCOMPLETE = "incomplete"
CORRUPT = "corrupt"

_VERSION_RE = re.compile(r"[0-9]+")
_RENAME_RETRIES = 100


@dataclasses.dataclass
class VersionInfo:
    version: int
    path: str
    state: str  # "complete" | "incomplete" | "corrupt"
    metadata: dict | None
    detail: str = ""


# ------------------------------------------------------------------------ reading


def _numeric_children(base: str) -> list[int]:
    if not storage.isdir(base):
        return []
    return sorted(int(n) for n in storage.listdir(base) if _VERSION_RE.fullmatch(n))


def _inspect(base: str, version: int) -> VersionInfo:
    path = storage.join(base, str(version))
    if not storage.is_gcs(path) and not os.path.isdir(path):
        return VersionInfo(version, path, INCOMPLETE, None, "not a directory")
    if not storage.exists(storage.join(path, SAVED_MODEL)):
        return VersionInfo(
            version, path, INCOMPLETE, None,
            f"no {SAVED_MODEL} (aborted or unfinished push; never served)",
        )
    meta_path = storage.join(path, AUDIT_DIR, METADATA)
    if not storage.exists(meta_path):
        return VersionInfo(
            version, path, CORRUPT, None,
            f"{SAVED_MODEL} present but {AUDIT_DIR}/{METADATA} is missing",
        )
    try:
        metadata = json.loads(storage.read_text(meta_path))
    except (ValueError, StorageError) as exc:
        return VersionInfo(
            version, path, CORRUPT, None,
            f"{SAVED_MODEL} present but {AUDIT_DIR}/{METADATA} does not parse: {exc}",
        )
    if not isinstance(metadata, dict):
        return VersionInfo(
            version, path, CORRUPT, None,
            f"{AUDIT_DIR}/{METADATA} holds a {type(metadata).__name__}, not a JSON object",
        )
    return VersionInfo(version, path, COMPLETE, metadata, "")


def list_versions(base: str) -> list[VersionInfo]:
    """Every numeric version under ``base``, ascending; [] when ``base`` is missing."""
    return [_inspect(base, v) for v in _numeric_children(base)]


def audit_file(info: VersionInfo, name: str) -> str:
    """Path of an audit file kept beside a version (``<version>/kfp_ct/<name>``)."""
    return storage.join(info.path, AUDIT_DIR, name)


def production(base: str) -> VersionInfo | None:
    """The version TF Serving serves: the highest one with ``saved_model.pb``.

    Returned even when corrupt (check ``.state``), so callers can say what they found.
    """
    for info in reversed(list_versions(base)):
        if info.state != INCOMPLETE:
            return info
    return None


# ------------------------------------------------------------------------ writing


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _check_extra_name(name: str) -> str:
    norm = name.replace("\\", "/")
    parts = norm.split("/")
    if not norm or norm.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RegistryError(f"Bad audit file name {name!r}: use a relative path inside {AUDIT_DIR}/")
    if norm == METADATA:
        raise RegistryError(f"{METADATA} is written from the metadata argument, not extra_files")
    return norm


def _metadata_bytes(metadata: dict, version: int, pushed_at: str) -> bytes:
    record = dict(metadata)
    record["version"] = version
    record["pushed_at"] = pushed_at
    try:
        return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"Model metadata is not JSON-serializable: {exc}") from exc


def _write_audit(stage: str, extra: dict[str, bytes]) -> None:
    for name, data in extra.items():
        target = os.path.join(stage, AUDIT_DIR, *name.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)


def publish(
    base: str,
    local_model_dir: str,
    metadata: dict,
    extra_files: dict[str, bytes] | None = None,
) -> VersionInfo:
    """Publish a SavedModel directory as the new highest version under ``base``.

    ``metadata`` is written to ``kfp_ct/metadata.json`` with ``version`` and
    ``pushed_at`` (UTC, ISO 8601) added; ``extra_files`` (name -> bytes) go beside it.
    """
    if not isinstance(metadata, dict):
        raise RegistryError(f"metadata must be a dict, got {type(metadata).__name__}")
    extra = {}
    for name, data in (extra_files or {}).items():
        extra[_check_extra_name(name)] = data.encode() if isinstance(data, str) else bytes(data)
    _metadata_bytes(metadata, 0, "")  # fail early on unserializable metadata

    with storage.local_copy(local_model_dir) as model_dir:
        if not os.path.isdir(model_dir):
            raise StorageError(f"Cannot publish {local_model_dir}: not a directory")
        if not os.path.isfile(os.path.join(model_dir, SAVED_MODEL)):
            raise RegistryError(
                f"Cannot publish {local_model_dir}: no {SAVED_MODEL} in it (not a SavedModel)"
            )
        if storage.is_gcs(base):
            return _publish_gcs(base, model_dir, metadata, extra)
        return _publish_local(base, model_dir, metadata, extra)


STALE_STAGE_SECONDS = 3600


def _remove_stale_stages(base: str, max_age_s: float = STALE_STAGE_SECONDS) -> list[str]:
    """Removes `.tmp-*` staging folders left by killed pushes, once they are old enough
    that no push still running can own them. Returns the removed paths."""
    removed, now = [], time.time()
    for name in os.listdir(base):
        path = os.path.join(base, name)
        if name.startswith(".tmp-") and os.path.isdir(path):
            try:
                if now - os.path.getmtime(path) > max_age_s:
                    shutil.rmtree(path)
                    removed.append(path)
            except OSError:
                pass  # another push removed it first, or it is not ours to remove
    return removed


def _publish_local(base: str, model_dir: str, metadata: dict, extra: dict) -> VersionInfo:
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"Cannot publish to {base}: cannot create the directory ({exc.strerror or exc})"
        ) from exc
    if not os.access(base, os.W_OK | os.X_OK):
        raise StorageError(f"Cannot publish to {base}: directory is not writable")
    _remove_stale_stages(base)
    stage = os.path.join(base, f".tmp-{uuid.uuid4().hex}")
    try:
        try:
            shutil.copytree(model_dir, stage)
            _write_audit(stage, extra)
        except OSError as exc:
            raise StorageError(
                f"Cannot publish to {base}: writing {stage} failed ({exc.strerror or exc})"
            ) from exc
        version = max(_numeric_children(base), default=0) + 1
        for _ in range(_RENAME_RETRIES):
            pushed_at = _now()
            meta_bytes = _metadata_bytes(metadata, version, pushed_at)
            _write_audit(stage, {METADATA: meta_bytes})
            target = os.path.join(base, str(version))
            if not os.path.lexists(target):
                try:
                    os.rename(stage, target)
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                        raise StorageError(
                            f"Cannot publish to {target}: {exc.strerror or exc}"
                        ) from exc
                else:
                    return VersionInfo(version, target, COMPLETE, json.loads(meta_bytes), "")
            # Another writer took this number meanwhile: take the next one.
            version = max(max(_numeric_children(base), default=0), version) + 1
        raise RegistryError(f"Cannot publish to {base}: no free version number after retries")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _publish_gcs(base: str, model_dir: str, metadata: dict, extra: dict) -> VersionInfo:
    version = max(_numeric_children(base), default=0) + 1
    target = storage.join(base, str(version))
    pushed_at = _now()
    meta_bytes = _metadata_bytes(metadata, version, pushed_at)
    stage_root = tempfile.mkdtemp(prefix="kfp-ct-publish-")
    try:
        stage = os.path.join(stage_root, "model")
        shutil.copytree(model_dir, stage)
        _write_audit(stage, {**extra, METADATA: meta_bytes})
        # saved_model.pb last: until it lands the version is "incomplete", never served.
        storage.upload_tree(stage, target, last=(SAVED_MODEL,))
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    return VersionInfo(version, target, COMPLETE, json.loads(meta_bytes), "")


def rollback(base: str, to_version: int, reason: str = "") -> VersionInfo:
    """Republish complete version ``to_version`` as a new highest version.

    TF Serving's default policy serves the newest version, so the copy is what gets
    served; its metadata records ``rollback_of`` and ``rollback_reason``.
    """
    versions = {v.version: v for v in list_versions(base)}
    source = versions.get(int(to_version))
    if source is None:
        known = ", ".join(str(v) for v in sorted(versions)) or "none"
        raise RegistryError(
            f"Cannot roll back {base} to version {to_version}: no such version "
            f"(versions present: {known})"
        )
    if source.state != COMPLETE:
        raise RegistryError(
            f"Cannot roll back {base} to version {to_version}: it is {source.state} "
            f"({source.detail})"
        )
    metadata: dict[str, Any] = dict(source.metadata or {})
    metadata["rolled_back_from_pushed_at"] = metadata.pop("pushed_at", None)
    metadata.pop("version", None)
    metadata["rollback_of"] = int(to_version)
    metadata["rollback_reason"] = reason
    return publish(base, source.path, metadata)


# ---------------------------------------------------------------------- describing


def _key_metric(metadata: dict | None) -> str:
    metrics = (metadata or {}).get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        return ""
    name = (metadata or {}).get("key_metric")
    if name not in metrics:  # versions pushed before key_metric: the task's main metric
        name = next((m for m in MAIN_METRIC.values() if m in metrics), next(iter(metrics)))
    value = metrics[name]
    if isinstance(value, float):
        value = f"{value:.4g}"
    return f"{name}={value}"


def _trigger(metadata: dict | None) -> str:
    """Why a version was trained, in a few words (e.g. "drift: island, sex (launch 3)")."""
    trigger = (metadata or {}).get("trigger")
    if not isinstance(trigger, dict) or not trigger:
        return ""
    if trigger.get("kind") == "drift":
        features = ", ".join(str(f) for f in trigger.get("drifted") or []) or "-"
        launch = trigger.get("launch")
        return f"drift: {features}" + (f" (launch {launch})" if launch else "")
    return str(trigger.get("kind") or "")


def describe(base: str) -> str:
    """A plain-text table of the versions under ``base`` (``*`` marks production)."""
    versions = list_versions(base)
    if not versions:
        return f"No model versions under {base}\n"
    prod = production(base)
    header = ("", "VERSION", "STATE", "PUSHED_AT", "METRIC", "ROLLBACK_OF", "TRIGGER", "DETAIL")
    rows = [header]
    for v in versions:
        meta = v.metadata or {}
        rb = meta.get("rollback_of")
        rows.append((
            "*" if prod is not None and v.version == prod.version else "",
            str(v.version),
            v.state,
            str(meta.get("pushed_at", "")),
            _key_metric(meta),
            "" if rb is None else str(rb),
            _trigger(meta),
            v.detail,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"Model base: {base}"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines) + "\n"
