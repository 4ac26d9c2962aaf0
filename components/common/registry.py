"""The model registry at a TF Serving model base (local directory or gs://).

This is the one module that knows the serving layout::

    <base>/<version>/saved_model.pb          TF Serving loads the newest numeric dir
    <base>/<version>/variables/ assets/ assets.extra/
    <base>/<version>/kfp_ct/metadata.json    our audit record (+ statistics.pb,
                                             schema.pbtxt, problem.json, metrics.json)
    <base>/<version>/kfp_ct/manifest.json    every file of the version: path, size, sha256
    <base>/<version>/kfp_ct/CLAIM            gs:// only: the create-only object that
                                             reserved the version number

A version is never visible half-written: locally it is assembled in
``<base>/.tmp-<uuid>/`` and renamed into place; on gs:// the number is first claimed with
a create-only ``kfp_ct/CLAIM`` (two pushes never share a number) and ``saved_model.pb``
is uploaded last, so a partial upload has no ``saved_model.pb`` ("incomplete").

States: ``incomplete`` (no ``saved_model.pb``: never served), ``corrupt`` (served by TF
Serving as the newest, but it cannot load: a file of the manifest missing or of another
size, a ``saved_model.pb`` that does not parse, missing variables; or an unreadable audit
record) and ``complete``. The check costs one listing plus two small reads per version;
versions pushed before manifests existed get structural checks (``saved_model.pb``
parses as protobuf wire format, the checkpoint index and its shards are there).
:func:`verify` also compares every file's sha256 with the manifest (rollback uses it).

No kfp, no TensorFlow here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
import uuid
from typing import Any, Iterator

from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import RegistryError, StorageError
from kfp_ct.components.common.metrics import MAIN_METRIC

SAVED_MODEL = "saved_model.pb"
AUDIT_DIR = "kfp_ct"
METADATA = "metadata.json"
MANIFEST = "manifest.json"  # every file of the version: path, size, sha256 (at publish)
CLAIM = "CLAIM"  # gs:// only: written create-only first, it reserves the version number
MANIFEST_FORMAT = 1
# Audit files kept beside each version (push writes them; evaluate, validate and the drift
# check read them).
STATISTICS = "statistics.pb"  # TFDV statistics of the training data (the drift baseline)
DRIFT_REFERENCE = "drift_reference.json"  # exact training counts per drift cell
SCHEMA = "schema.pbtxt"
PROBLEM = "problem.json"
EVALUATION = "evaluation.json"
BLESSING = "blessing.json"
PREDICTION_PROFILE = "prediction_profile.json"  # the model's predictions on its eval rows
# The serving check's requests (the warmup rows) and the model's answers to them: what a
# rollout's judge sends to a canary and expects back (components/rollout/judge.py).
SERVING_CHECK = "serving_check.json"
USER_MODULE = "user_module.py"  # the problem's module_file, as it was when trained
# Classification: the model's top score on its eval rows against whether it was right,
# fitted at push (components/common/performance.py); the drift check estimates a window's
# accuracy from it before labels arrive.
CALIBRATION = "calibration.json"
# Retraining launch records (create-only, one per launch): <base>/RETRAIN_DIR/
RETRAIN_DIR = "kfp_ct_retraining"
# Rollout records (create-only, one per step of a rollout): <base>/ROLLOUT_DIR/rollout-<n>.json
ROLLOUT_DIR = "kfp_ct_rollouts"
# Per-version copies a KServe InferenceService loads: <base>/SERVING_DIR/<v>/<v>/ (one
# numbered folder under the storageUri, the layout its TF Serving runtime reads).
SERVING_DIR = "kfp_ct_serving"
# Monitoring history (create-only, one record per monitoring run):
# <base>/MONITOR_DIR/record-<n>.json (components/common/history.py)
MONITOR_DIR = "kfp_ct_monitoring"

COMPLETE = "complete"
INCOMPLETE = "incomplete"
CORRUPT = "corrupt"

_VERSION_RE = re.compile(r"[0-9]+")
_RENAME_RETRIES = 100
_CLAIM_RETRIES = 100
_MANIFEST_REL = f"{AUDIT_DIR}/{MANIFEST}"
_METADATA_REL = f"{AUDIT_DIR}/{METADATA}"
_CLAIM_REL = f"{AUDIT_DIR}/{CLAIM}"
_PER_VERSION = (_MANIFEST_REL, _CLAIM_REL)  # never copied from one version to another
_VARIABLES_INDEX = "variables/variables.index"
_SHARD_RE = re.compile(r"variables/variables\.data-([0-9]{5})-of-([0-9]{5})")
_GCS_READERS = 8  # parallel reads of audit records when listing a gs:// base


class _Unchecked:
    def __repr__(self) -> str:
        return "ANY_PRODUCTION"


# publish(..., expected_production=ANY_PRODUCTION): no check of what production is.
ANY_PRODUCTION: Any = _Unchecked()


class ProductionMovedError(RegistryError):
    """Production is not the version the candidate was compared with."""

    def __init__(self, base: str, expected: int | None, found: int | None) -> None:
        self.base, self.expected, self.found = base, expected, found
        seen = ("no production model (first push)" if expected is None
                else f"production version {expected}")
        now = "there is none now" if found is None else f"production is version {found} now"
        super().__init__(f"production of {base} moved: the candidate was compared with "
                         f"{seen}, but {now}")


@dataclasses.dataclass
class VersionInfo:
    version: int
    path: str
    state: str  # "complete" | "incomplete" | "corrupt"
    metadata: dict | None
    detail: str = ""


# ------------------------------------------------------ protobuf / checkpoint walkers


class _WireError(ValueError):
    """Bytes that are not the protobuf / table structure they should be."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _WireError(f"a varint runs past byte {end}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _WireError(f"a varint longer than 10 bytes ends at byte {pos}")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of the message in buf[start:end].

    Raises _WireError where the bytes are not wire format: a field running past the end
    (a truncated message), field number 0, or a wire type SavedModel protos never use
    (groups, 6, 7)."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _WireError(f"field number 0 at byte {at}")
        if wire == 0:
            value_end = _varint(buf, pos, end)[1]
        elif wire == 1:
            value_end = pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos, end)
            value_end = pos + size
        elif wire == 5:
            value_end = pos + 4
        else:
            raise _WireError(f"wire type {wire} (field {field}) at byte {at}")
        if value_end > end:
            raise _WireError(f"field {field} at byte {at} runs past the end "
                             f"({value_end} > {end}): truncated")
        yield field, wire, pos, value_end
        pos = value_end


def _saved_model_needs_variables(data: bytes) -> bool:
    """Walks a SavedModel's wire format: SavedModel.meta_graphs (2) -> MetaGraphDef with
    graph_def (2), saver_def (3), object_graph_def (7). True when loading it reads a
    checkpoint (every TF2 SavedModel, a TF1 one with a saver)."""
    meta_graphs = [(s, e) for f, w, s, e in _fields(data, 0, len(data)) if f == 2 and w == 2]
    if not meta_graphs:
        raise _WireError("no meta graph in it")
    needs = has_graph = False
    for start, end in meta_graphs:
        for field, wire, _, _ in _fields(data, start, end):
            has_graph |= field == 2 and wire == 2
            needs |= field in (3, 7) and wire == 2
    if not has_graph:
        raise _WireError("its meta graph holds no graph")
    return needs


_TABLE_MAGIC = 0xDB4775248B80FB57  # the end of every TensorFlow table (checkpoint index)
_TABLE_FOOTER = 48


def _first_table_entry(data: bytes, offset: int, size: int) -> tuple[bytes, bytes] | None:
    """The first (key, value) of a table block; None for a compressed block."""
    if offset + size + 5 > len(data) - _TABLE_FOOTER or size < 4:
        raise _WireError(f"a block ({offset}+{size}) lies outside the file")
    if data[offset + size] != 0:
        return None  # compressed: not worth a decompressor here
    end = offset + size - 4 * (1 + int.from_bytes(data[offset + size - 4:offset + size], "little"))
    if end <= offset:
        return None  # an empty block
    shared, pos = _varint(data, offset, end)
    key_len, pos = _varint(data, pos, end)
    value_len, pos = _varint(data, pos, end)
    if shared or pos + key_len + value_len > end:
        raise _WireError("the first entry of a block is malformed")
    return data[pos:pos + key_len], data[pos + key_len:pos + key_len + value_len]


def _checkpoint_shards(index: bytes) -> int | None:
    """The number of data shards a checkpoint index (variables.index) names, from its
    header entry (BundleHeaderProto.num_shards); None when it cannot be read cheaply.
    Raises _WireError for bytes that are not a table (truncated, overwritten)."""
    if len(index) < _TABLE_FOOTER:
        raise _WireError(f"{len(index)} bytes, shorter than a table footer")
    if int.from_bytes(index[-8:], "little") != _TABLE_MAGIC:
        raise _WireError("it does not end with the table magic number: truncated")
    footer = index[-_TABLE_FOOTER:-8]
    pos = _varint(footer, _varint(footer, 0, 40)[1], 40)[1]  # skip the metaindex handle
    index_offset, pos = _varint(footer, pos, 40)
    index_size, _ = _varint(footer, pos, 40)
    entry = _first_table_entry(index, index_offset, index_size)
    if entry is None:
        return None
    data_offset, pos = _varint(entry[1], 0, len(entry[1]))
    data_size, _ = _varint(entry[1], pos, len(entry[1]))
    header = _first_table_entry(index, data_offset, data_size)
    if header is None or header[0] != b"":  # the header's key is "" (it sorts first)
        return None
    for field, wire, start, end in _fields(header[1], 0, len(header[1])):
        if field == 1 and wire == 0:
            return _varint(header[1], start, end)[0]
    return 0


# ------------------------------------------------------------------------ reading


def _numeric_children(base: str) -> list[int]:
    if not storage.isdir(base):
        return []
    return sorted(int(n) for n in storage.listdir(base) if _VERSION_RE.fullmatch(n))


def _version_files(base: str) -> dict[int, dict[str, int] | None]:
    """{version: {relative path: size}} for each numeric child of ``base`` (None: a local
    name that is not a directory). One listing of the whole base on gs://."""
    out: dict[int, dict[str, int] | None] = {}
    if storage.is_gcs(base):
        for rel, size in storage.list_files(base).items():
            head, _, rest = rel.partition("/")
            if rest and _VERSION_RE.fullmatch(head):
                files = out.setdefault(int(head), {})
                assert files is not None
                files[rest] = size
        return out
    if not os.path.isdir(base):
        return out
    for name in storage.listdir(base):
        if _VERSION_RE.fullmatch(name):
            path = os.path.join(base, name)
            out[int(name)] = storage.list_files(path) if os.path.isdir(path) else None
    return out


def _summary(problems: list[str], limit: int = 3) -> str:
    more = len(problems) - limit
    return "; ".join(problems[:limit]) + (f"; and {more} more" if more > 0 else "")


def _read_manifest(path: str) -> dict[str, tuple[int, str]]:
    """{relative path: (size, sha256)} from a version's manifest; ValueError if malformed."""
    try:
        doc = json.loads(storage.read_text(storage.join(path, _MANIFEST_REL)))
        entries = {str(e["path"]): (int(e["size"]), str(e["sha256"])) for e in doc["files"]}
    except (StorageError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{_MANIFEST_REL} does not parse: {exc}") from None
    if not entries:
        raise ValueError(f"{_MANIFEST_REL} lists no file")
    return entries


def _manifest_problems(entries: dict[str, tuple[int, str]], files: dict[str, int]) -> list[str]:
    """What differs between the manifest and a listing: a folder or file that is missing,
    a file whose size is not the one pushed."""
    missing = [rel for rel in entries if rel not in files]
    problems = []
    for folder in sorted({rel.split("/", 1)[0] for rel in missing if "/" in rel}):
        inside = [rel for rel in entries if rel.startswith(folder + "/")]
        if all(rel in missing for rel in inside):
            problems.append(f"{folder}/ is missing ({len(inside)} file(s) when pushed)")
            missing = [rel for rel in missing if not rel.startswith(folder + "/")]
    problems += [f"{rel} is missing ({entries[rel][0]} bytes when pushed)" for rel in missing]
    for rel, (size, _) in sorted(entries.items()):
        if rel in files and files[rel] != size:
            how = "truncated: " if files[rel] < size else ""
            problems.append(f"{rel} is {how}{files[rel]} bytes, {size} when pushed")
    return problems


def _structural_problems(path: str, files: dict[str, int]) -> list[str]:
    """Checks of a version pushed before manifests: saved_model.pb parses as a SavedModel
    (wire format), and the checkpoint it needs is there (index + every shard)."""
    if files.get(SAVED_MODEL, 0) == 0:
        return [f"{SAVED_MODEL} is empty"]
    try:
        needs_variables = _saved_model_needs_variables(
            storage.read_bytes(storage.join(path, SAVED_MODEL)))
    except _WireError as exc:
        return [f"{SAVED_MODEL} does not parse as a SavedModel ({exc}): truncated or "
                "overwritten"]
    shards = {rel: m for rel in files if (m := _SHARD_RE.fullmatch(rel))}
    if _VARIABLES_INDEX not in files:
        if not needs_variables and not shards:
            return []
        where = "variables/ is missing" if not any(r.startswith("variables/") for r in files) \
            else f"{_VARIABLES_INDEX} is missing"
        return [f"{where} (the SavedModel needs its checkpoint)"]
    try:
        count = _checkpoint_shards(storage.read_bytes(storage.join(path, _VARIABLES_INDEX)))
    except _WireError as exc:
        return [f"{_VARIABLES_INDEX} is not a checkpoint index ({exc})"]
    if count is None:  # an index we cannot read cheaply: the shard names say how many
        totals = {int(m.group(2)) for m in shards.values()}
        if not totals:
            return ["no variables/variables.data-* shard next to the index"]
        count = max(totals)
    wanted = [f"variables/variables.data-{i:05d}-of-{count:05d}" for i in range(count)]
    return [f"{rel} is missing (the index names {count} shard(s))"
            for rel in wanted if rel not in files]


def _sha256(path: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _content_problems(local_dir: str, entries: dict[str, tuple[int, str]]) -> list[str]:
    """Files of a local copy whose content is not what the manifest recorded."""
    problems = []
    for rel, (size, sha) in sorted(entries.items()):
        target = os.path.join(local_dir, *rel.split("/"))
        if not os.path.isfile(target):
            problems.append(f"{rel} is missing ({size} bytes when pushed)")
            continue
        got_size, got_sha = _sha256(target)
        if (got_size, got_sha) != (size, sha):
            problems.append(f"{rel} is not the file pushed (sha256 {got_sha[:12]}..., "
                            f"{sha[:12]}... when pushed)")
    return problems


def _inspect(base: str, version: int, files: dict[str, int] | None = None,
             known: bool = False) -> VersionInfo:
    """The state of one version from a listing of its files (``known``: ``files`` is
    that listing already, None meaning "not a directory")."""
    path = storage.join(base, str(version))
    if not known:
        files = None if not storage.is_gcs(path) and not os.path.isdir(path) \
            else storage.list_files(path)
    if files is None:
        return VersionInfo(version, path, INCOMPLETE, None, "not a directory")
    if SAVED_MODEL not in files:
        return VersionInfo(
            version, path, INCOMPLETE, None,
            f"no {SAVED_MODEL} (aborted or unfinished push; never served)",
        )
    if _METADATA_REL not in files:
        return VersionInfo(
            version, path, CORRUPT, None,
            f"{SAVED_MODEL} present but {AUDIT_DIR}/{METADATA} is missing",
        )
    try:
        metadata = json.loads(storage.read_text(storage.join(path, _METADATA_REL)))
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
    if _MANIFEST_REL in files:
        problems, audit = _against_manifest(path, lambda e: _manifest_problems(e, files))
    else:
        problems, audit = _structural_problems(path, files), []
    return _judged(VersionInfo(version, path, COMPLETE, metadata, ""), problems, audit)


def _by_kind(entries: dict[str, tuple[int, str]]) -> tuple[dict, dict]:
    """(model files, audit files) of a manifest: only the model's decide if it loads."""
    audit_prefix = AUDIT_DIR + "/"
    return ({r: e for r, e in entries.items() if not r.startswith(audit_prefix)},
            {r: e for r, e in entries.items() if r.startswith(audit_prefix)})


def _against_manifest(version_dir: str, check) -> tuple[list[str], list[str]]:
    """(model problems, audit problems): ``check`` (manifest entries -> problems) run on
    the model's and on the audit files of the manifest in ``version_dir``; a manifest
    that cannot be read is a model problem."""
    try:
        model, kept = _by_kind(_read_manifest(version_dir))
    except ValueError as exc:
        return [str(exc)], []
    return check(model), check(kept)


def _judged(info: VersionInfo, problems: list[str], audit: list[str]) -> VersionInfo:
    """``corrupt`` when a model file is wrong; an audit file that is wrong (the model
    still loads) is only reported in the detail."""
    detail = _summary(problems + [f"audit record: {p}" for p in audit])
    return dataclasses.replace(info, state=CORRUPT if problems else info.state, detail=detail)


def list_versions(base: str) -> list[VersionInfo]:
    """Every numeric version under ``base``, ascending; [] when ``base`` is missing.

    Cost: one listing of the base (gs://; locally a walk of each version), then for each
    version with ``saved_model.pb`` two small reads (metadata, manifest), in parallel on
    gs://. Versions without a manifest also read ``saved_model.pb`` and the index.
    """
    files = _version_files(base)
    numbers = sorted(files)
    if storage.is_gcs(base) and len(numbers) > 1:
        with concurrent.futures.ThreadPoolExecutor(min(_GCS_READERS, len(numbers))) as pool:
            return list(pool.map(lambda v: _inspect(base, v, files[v], known=True), numbers))
    return [_inspect(base, v, files[v], known=True) for v in numbers]


def verify(info: VersionInfo) -> VersionInfo:
    """``info`` checked in depth: every file's sha256 against the manifest (gs://: the
    version is downloaded). Returns a fresh VersionInfo, ``corrupt`` with what differs
    when a file is not the one pushed. Versions without a manifest get the structural
    checks only."""
    if info.state != COMPLETE:
        return info
    path = info.path.rstrip("/")
    base = path.rpartition("/")[0] if storage.is_gcs(path) else os.path.dirname(path)
    checked = _inspect(base, info.version)
    if checked.state != COMPLETE:
        return checked
    with storage.local_copy(checked.path) as local:
        return _verified(checked, local)


def _verified(checked: VersionInfo, local: str) -> VersionInfo:
    """``checked`` (complete by the cheap checks) against the sha256s of its manifest,
    on ``local``, a local copy of it."""
    if not os.path.isfile(os.path.join(local, *_MANIFEST_REL.split("/"))):
        return checked  # pushed before manifests: the structural checks are all there is
    problems, audit = _against_manifest(local, lambda e: _content_problems(local, e))
    return _judged(dataclasses.replace(checked, detail=""), problems, audit)


def audit_file(info: VersionInfo, name: str) -> str:
    """Path of an audit file kept beside a version (``<version>/kfp_ct/<name>``)."""
    return storage.join(info.path, AUDIT_DIR, name)


def _served(files: dict[int, dict[str, int] | None]) -> list[int]:
    """Versions with ``saved_model.pb`` (what TF Serving may load), newest first."""
    return sorted((v for v, f in files.items() if f is not None and SAVED_MODEL in f),
                  reverse=True)


def production(base: str) -> VersionInfo | None:
    """The version TF Serving serves: the highest one with ``saved_model.pb``.

    Returned even when corrupt (check ``.state``), so callers can say what they found.
    Cost: one listing and the checks of that one version.
    """
    files = _version_files(base)
    served = _served(files)
    return _inspect(base, served[0], files[served[0]], known=True) if served else None


def production_version(base: str) -> int | None:
    """The number of the version TF Serving serves (the highest with ``saved_model.pb``),
    None when there is none. One listing; nothing is read."""
    served = _served(_version_files(base))
    return served[0] if served else None


def check_production(base: str, expected: int | None) -> None:
    """Raises ProductionMovedError unless production is ``expected`` (None: no production
    model); ``ANY_PRODUCTION`` checks nothing."""
    if expected is ANY_PRODUCTION:
        return
    found = production_version(base)
    if found != expected:
        raise ProductionMovedError(base, expected, found)


def recovery(base: str, broken: VersionInfo | None = None,
             versions: list[VersionInfo] | None = None) -> str:
    """What brings back a loadable production model: the rollback command to the newest
    loadable version (other than ``broken``), or what to do when there is none."""
    versions = list_versions(base) if versions is None else versions
    skip = broken.version if broken is not None else None
    loadable = [v for v in versions if v.state == COMPLETE and v.version != skip]
    what = f"version {broken.version} is {broken.state}" if broken is not None else ""
    if loadable:
        reason = shlex.quote(f"{what}; back to {loadable[-1].version}" if what
                             else f"back to {loadable[-1].version}")
        return (f"recover with: kfp-ct rollback {shlex.quote(base)} {loadable[-1].version} "
                f"--reason {reason}")
    return (f"no loadable version under {base} to roll back to (kfp-ct versions "
            f"{shlex.quote(base)} lists them): restore the files of the corrupt version(s), "
            "or move them out of the base so that the next training run pushes as a "
            "first model")


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
    if norm in (MANIFEST, CLAIM):
        raise RegistryError(f"{norm} is written by publish itself, not from extra_files")
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


def _stage(model_dir: str, stage: str, extra: dict[str, bytes]) -> dict[str, tuple[int, str]]:
    """Copies the model into ``stage`` with the audit files; returns (size, sha256) of
    every file but the per-version ones (metadata, manifest, claim: written per number)."""
    # Out of room: one line naming the base, not one per file naming the staging folder.
    storage.copy_local_tree(model_dir, stage, name=os.path.dirname(stage))
    for rel in _PER_VERSION + (_METADATA_REL,):  # a rollback copies another version's
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(stage, *rel.split("/")))
    _write_audit(stage, extra)
    return {rel: _sha256(os.path.join(stage, *rel.split("/")))
            for rel in storage.list_files(stage)}


def _write_numbered(stage: str, entries: dict[str, tuple[int, str]], metadata: dict,
                    version: int) -> bytes:
    """Writes metadata.json for ``version`` and the manifest of every file into ``stage``;
    returns the metadata bytes."""
    meta_bytes = _metadata_bytes(metadata, version, _now())
    files = dict(entries)
    files[_METADATA_REL] = (len(meta_bytes), hashlib.sha256(meta_bytes).hexdigest())
    manifest = {"format": MANIFEST_FORMAT, "version": version,
                "files": [{"path": rel, "size": size, "sha256": sha}
                          for rel, (size, sha) in sorted(files.items())]}
    _write_audit(stage, {METADATA: meta_bytes,
                         MANIFEST: (json.dumps(manifest, indent=1) + "\n").encode()})
    return meta_bytes


def publish(
    base: str,
    local_model_dir: str,
    metadata: dict,
    extra_files: dict[str, bytes] | None = None,
    expected_production: int | None = ANY_PRODUCTION,
) -> VersionInfo:
    """Publish a SavedModel directory as the new highest version under ``base``.

    ``metadata`` is written to ``kfp_ct/metadata.json`` with ``version`` and
    ``pushed_at`` (UTC, ISO 8601) added; ``extra_files`` (name -> bytes) go beside it;
    ``kfp_ct/manifest.json`` lists every file with its size and sha256.

    ``expected_production``: the version the candidate was compared with (None: there
    was no production model). When production is another one at the moment the number is
    taken (or, on gs://, just before ``saved_model.pb`` lands), nothing is published and
    :class:`ProductionMovedError` is raised. The default checks nothing.
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
            return _publish_gcs(base, model_dir, metadata, extra, expected_production)
        return _publish_local(base, model_dir, metadata, extra, expected_production)


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


@contextlib.contextmanager
def _locked(base: str) -> Iterator[None]:
    """Holds an exclusive flock on the local base folder (no file is left behind), so
    that checking production and renaming a version into place is one step for every
    kfp-ct push on this file system. Where flock is not supported, it does nothing."""
    try:
        fd = os.open(base, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _publish_local(base: str, model_dir: str, metadata: dict, extra: dict,
                   expected: int | None) -> VersionInfo:
    try:
        os.makedirs(base, exist_ok=True)
    except OSError as exc:
        raise StorageError(
            f"Cannot publish to {base}: cannot create the directory ({exc.strerror or exc})"
        ) from exc
    if not os.access(base, os.W_OK | os.X_OK):
        raise StorageError(f"Cannot publish to {base}: directory is not writable")
    check_production(base, expected)  # fail before copying a large model for nothing
    _remove_stale_stages(base)
    stage = os.path.join(base, f".tmp-{uuid.uuid4().hex}")
    try:
        try:
            entries = _stage(model_dir, stage, extra)
        except OSError as exc:
            need = storage.tree_bytes(model_dir) + sum(len(d) for d in extra.values())
            raise storage.space_error(exc, base, need) or StorageError(
                f"Cannot publish to {base}: writing {stage} failed ({exc.strerror or exc})"
            ) from exc
        with _locked(base):
            check_production(base, expected)
            version = max(_numeric_children(base), default=0) + 1
            for _ in range(_RENAME_RETRIES):
                try:
                    meta_bytes = _write_numbered(stage, entries, metadata, version)
                except OSError as exc:
                    raise storage.space_error(exc, base, len(json.dumps(metadata))) or \
                        StorageError(f"Cannot publish to {base}: writing the audit record "
                                     f"failed ({exc.strerror or exc})") from exc
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
                        return VersionInfo(version, target, COMPLETE, json.loads(meta_bytes))
                # Another writer took this number meanwhile: take the next one.
                version = max(max(_numeric_children(base), default=0), version) + 1
        raise RegistryError(f"Cannot publish to {base}: no free version number after retries")
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _claim_gcs(base: str) -> int:
    """Reserves the next version number on gs:// with a create-only ``kfp_ct/CLAIM``
    (``ifGenerationMatch=0``): of two pushes only one creates it; the other takes the
    next number. A number whose folder already holds other files is never taken."""
    record = (json.dumps({"claimed_at": _now(), "host": socket.gethostname(),
                          "pid": os.getpid(), "id": uuid.uuid4().hex}) + "\n").encode()
    version = max(_numeric_children(base), default=0) + 1
    for _ in range(_CLAIM_RETRIES):
        target = storage.join(base, str(version))
        claim = storage.join(target, _CLAIM_REL)
        if storage.create_only(claim, record):
            if set(storage.list_files(target)) == {_CLAIM_REL}:
                return version
            storage.remove_tree(claim)  # a writer without claims is using this number
        version = max(max(_numeric_children(base), default=0), version) + 1
    raise RegistryError(f"Cannot publish to {base}: no free version number after "
                        f"{_CLAIM_RETRIES} claims")


def _publish_gcs(base: str, model_dir: str, metadata: dict, extra: dict,
                 expected: int | None) -> VersionInfo:
    check_production(base, expected)  # fail before anything is written
    stage_root = tempfile.mkdtemp(prefix="kfp-ct-publish-")
    try:
        stage, last = os.path.join(stage_root, "model"), os.path.join(stage_root, "last")
        entries = _stage(model_dir, stage, extra)
        version = _claim_gcs(base)
        target = storage.join(base, str(version))
        try:
            check_production(base, expected)
        except ProductionMovedError:
            storage.remove_tree(storage.join(target, _CLAIM_REL))  # nothing else written
            raise
        meta_bytes = _write_numbered(stage, entries, metadata, version)
        os.makedirs(last)
        os.rename(os.path.join(stage, SAVED_MODEL), os.path.join(last, SAVED_MODEL))
        # Everything but saved_model.pb: until it lands the version is "incomplete", never
        # served. An exception or an interrupt leaves it so (with its claim: the number is
        # not reused).
        storage.upload_tree(stage, target, last=())
        try:
            check_production(base, expected)
        except ProductionMovedError:
            storage.remove_tree(target)  # ours alone: the claim reserved it
            raise
        storage.upload_tree(last, target, last=())
    finally:
        shutil.rmtree(stage_root, ignore_errors=True)
    return VersionInfo(version, target, COMPLETE, json.loads(meta_bytes), "")


def rollback(base: str, to_version: int, reason: str = "") -> VersionInfo:
    """Republish complete version ``to_version`` as a new highest version.

    TF Serving's default policy serves the newest version, so the copy is what gets
    served; its metadata records ``rollback_of`` and ``rollback_reason``. A version that
    cannot be loaded (not complete, or a file whose sha256 is not the one pushed) is
    refused, naming what is wrong and the newest loadable version.
    """
    versions = list_versions(base)
    by_number = {v.version: v for v in versions}
    source = by_number.get(int(to_version))
    if source is None:
        known = ", ".join(str(v) for v in sorted(by_number)) or "none"
        raise RegistryError(
            f"Cannot roll back {base} to version {to_version}: no such version "
            f"(versions present: {known})"
        )
    if source.state == COMPLETE:
        metadata: dict[str, Any] = dict(source.metadata or {})
        metadata["rolled_back_from_pushed_at"] = metadata.pop("pushed_at", None)
        metadata.pop("version", None)
        metadata["rollback_of"] = int(to_version)
        metadata["rollback_reason"] = reason
        with storage.local_copy(source.path) as local:  # gs://: downloaded once
            source = _verified(source, local)
            if source.state == COMPLETE:
                return publish(base, local, metadata)
    by_number[source.version] = source
    loadable = [v.version for v in by_number.values() if v.state == COMPLETE]
    newest = (f"the newest loadable version is {max(loadable)}" if loadable
              else "no version under it is loadable")
    raise RegistryError(
        f"Cannot roll back {base} to version {to_version}: it is {source.state} "
        f"({source.detail}); {newest}"
    )


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
    launch = trigger.get("launch")
    suffix = f" (launch {launch})" if launch else ""
    if trigger.get("kind") == "drift":
        features = ", ".join(str(f) for f in trigger.get("drifted") or []) or "-"
        return f"drift: {features}{suffix}"
    if trigger.get("kind") in ("performance", "estimated_performance"):
        part = trigger.get("realized" if trigger["kind"] == "performance" else "estimated")
        if isinstance(part, dict) and part.get("value") is not None \
                and part.get("baseline") is not None:
            return (f"{trigger['kind']}: {part.get('metric')} {part['value']:.3f}, "
                    f"{part['baseline']:.3f} at push{suffix}")
        return f"{trigger['kind']}{suffix}"
    return str(trigger.get("kind") or "")


def pushed_by_run(base: str, run_name: str) -> list[VersionInfo]:
    """The complete versions under ``base`` that the run ``run_name`` published: its push
    (metadata ``parent_run.run_name``) or a retraining it launched (``trigger.monitor_run``).

    What a run reports about its outcome comes from here, the registry, and not from
    which task was running when it stopped. [] for a missing base or an empty name.
    """
    if not run_name:
        return []
    found = []
    for info in list_versions(base):
        meta = info.metadata or {}
        parent = meta.get("parent_run") if isinstance(meta.get("parent_run"), dict) else {}
        trigger = meta.get("trigger") if isinstance(meta.get("trigger"), dict) else {}
        monitor = trigger.get("monitor_run") if isinstance(trigger.get("monitor_run"), dict) else {}
        if info.state == COMPLETE and run_name in (parent.get("run_name"), monitor.get("run_name")):
            found.append(info)
    return found


def pushed_by_launch(base: str, seq: int) -> VersionInfo | None:
    """The complete version that retraining launch ``seq`` of ``base`` published (its
    metadata's ``trigger.launch``), or None."""
    for info in reversed(list_versions(base)):
        trigger = (info.metadata or {}).get("trigger")
        if (info.state == COMPLETE and isinstance(trigger, dict)
                and trigger.get("launch") == seq):
            return info
    return None


# ------------------------------------------------------------------- rollouts

ROLLOUT_STATES = ("canary", "promoted", "rolled_back", "removed", "unchanged")
_ROLLOUT_RE = re.compile(r"rollout-([0-9]+)\.json")


def record_rollout(base: str, record: dict) -> int:
    """Appends one rollout step (create-only ``<base>/kfp_ct_rollouts/rollout-<n>.json``,
    so two rollouts writing at once both keep their record); returns its number.

    ``record``: ``target`` (where it is served, e.g. ``kserve:team-a/penguins``),
    ``version``, ``state`` (ROLLOUT_STATES), ``percent`` of the traffic it takes,
    ``previous`` (the version that served before, or None), ``reason``.
    """
    if record.get("state") not in ROLLOUT_STATES:
        raise RegistryError(f"unknown rollout state {record.get('state')!r}")
    folder = storage.join(base, ROLLOUT_DIR)
    seq = storage.create_numbered(
        folder, _ROLLOUT_RE, lambda n: f"rollout-{n}.json",
        lambda n: (json.dumps(dict(record, seq=n, at=_now()), indent=1, sort_keys=True)
                   + "\n").encode(), _CLAIM_RETRIES)
    if seq is None:
        raise RegistryError(f"cannot record a rollout under {folder}: {_CLAIM_RETRIES} "
                            "numbers taken in a row")
    return seq


def rollouts(base: str) -> list[dict]:
    """Every rollout record under ``base``, oldest first ([] when there is none)."""
    folder = storage.join(base, ROLLOUT_DIR)
    if not storage.isdir(folder):
        return []
    out = []
    for name in storage.listdir(folder):
        match = _ROLLOUT_RE.fullmatch(name)
        if not match:
            continue
        try:
            record = json.loads(storage.read_text(storage.join(folder, name)))
        except (StorageError, ValueError):
            continue
        if isinstance(record, dict):
            record["seq"] = int(match.group(1))
            out.append(record)
    return sorted(out, key=lambda r: r["seq"])


def serving(base: str, records: list[dict] | None = None) -> dict[str, dict]:
    """Where each version is served now, by target, from the rollout records:
    ``{target: {"stable": v | None, "canary": v | None, "percent": p}}``."""
    state: dict[str, dict] = {}
    for r in rollouts(base) if records is None else records:
        now = state.setdefault(str(r.get("target")), {"stable": None, "canary": None,
                                                      "percent": 0})
        kind, version = r.get("state"), r.get("version")
        if kind == "canary":
            now.update(canary=version, percent=int(r.get("percent") or 0))
        elif kind == "promoted":
            now.update(stable=version, canary=None, percent=0)
        elif kind == "rolled_back":
            now.update(canary=None, percent=0)
            if r.get("previous") is not None:
                now["stable"] = r.get("previous")
        elif kind == "removed":
            now.update(stable=None, canary=None, percent=0)
    return state


def serving_copy(base: str, version: int) -> str:
    """A folder holding one numbered folder, ``<base>/kfp_ct_serving/<v>/<v>/``, with the
    model files of complete version ``v`` (not its audit files): what a KServe
    InferenceService's storageUri names, so that its storage initializer copies one
    version and its TF Serving runtime finds it as a version (components/rollout/kserve.py).

    The version is checked against its manifest (every sha256) before it is copied; a
    copy already there with every model file at its pushed size is reused. Returns the
    folder's URI.
    """
    info = next((v for v in list_versions(base) if v.version == int(version)), None)
    if info is None or info.state != COMPLETE:
        state = "missing" if info is None else f"{info.state} ({info.detail})"
        raise RegistryError(f"cannot serve version {version} of {base}: it is {state}")
    root = storage.join(base, SERVING_DIR, str(int(version)))
    target = storage.join(root, str(int(version)))
    try:
        entries = _read_manifest(info.path)
    except ValueError:
        entries = {}  # pushed before manifests: always copied
    model = {rel: size for rel, (size, _) in entries.items()
             if not rel.startswith(AUDIT_DIR + "/")}
    present = storage.list_files(target)
    if model and all(present.get(rel) == size for rel, size in model.items()):
        return root
    with storage.local_copy(info.path) as local:
        checked = _verified(info, local)
        if checked.state != COMPLETE:
            raise RegistryError(f"cannot serve version {version} of {base}: it is "
                                f"{checked.state} ({checked.detail}); {recovery(base, checked)}")
        stage = tempfile.mkdtemp(prefix="kfp-ct-serving-")
        try:
            copy = os.path.join(stage, str(int(version)))
            top = os.path.abspath(local)
            shutil.copytree(local, copy, ignore=lambda d, names: [AUDIT_DIR]
                            if os.path.abspath(d) == top and AUDIT_DIR in names else [])
            if present:
                storage.remove_tree(target)
            storage.copy_tree(copy, target)  # saved_model.pb last
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return root


def _served_where(state: dict[str, dict]) -> dict[int, list[str]]:
    where: dict[int, list[str]] = {}
    for target, now in sorted(state.items()):
        if now.get("stable") is not None:
            where.setdefault(int(now["stable"]), []).append(target)
        if now.get("canary") is not None and now.get("canary") != now.get("stable"):
            where.setdefault(int(now["canary"]), []).append(
                f"{target} (canary {now.get('percent', 0)}%)")
    return where


def check_model_base(base: str) -> None:
    """Raises RegistryError unless ``base`` is a model base: a folder holding at least one
    numeric version folder (``1/``, ``2/``...). One listing, nothing read.

    For commands that only read a base (``kfp-ct versions``): a typo in the path is then
    said as such, not shown as an empty table. A push creates the base itself."""
    if not storage.is_gcs(base):
        if not os.path.lexists(base):
            raise RegistryError(f"{base} is not a model base: no such file or folder")
        if not os.path.isdir(base):
            raise RegistryError(f"{base} is not a model base: it is a file, not a folder "
                                f"of numbered versions (1/, 2/, ...)")
    if storage.is_gcs(base) and not storage.isdir(base):
        raise RegistryError(f"{base} is not a model base: nothing is stored under it")
    names = storage.listdir(base)
    if not any(_VERSION_RE.fullmatch(n) for n in names):
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise RegistryError(f"{base} is not a model base: it holds no numbered version folder "
                            f"(1/, 2/, ...); it holds: {shown or 'nothing'}")


def describe(base: str) -> str:
    """A plain-text table of the versions under ``base`` (``*`` marks production)."""
    versions = list_versions(base)
    if not versions:
        return f"No model versions under {base}\n"
    prod = next((v for v in reversed(versions) if v.state != INCOMPLETE), None)
    served = _served_where(serving(base))
    header = ("", "VERSION", "STATE", "PUSHED_AT", "METRIC", "ROLLBACK_OF", "TRIGGER", "SERVED",
              "DETAIL")
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
            ", ".join(served.get(v.version, [])),
            v.detail,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [f"Model base: {base}"]
    for r in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if prod is not None and prod.state == CORRUPT:
        lines.append(f"Production version {prod.version} is corrupt: TF Serving cannot load "
                     f"it; {recovery(base, prod, versions)}")
    return "\n".join(lines) + "\n"
