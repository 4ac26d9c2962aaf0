"""Storage I/O for local paths and ``gs://`` URIs.

Every function takes plain ``str`` paths, either local or ``gs://bucket/key``.
Failures (missing paths, permission problems, bad URIs, service errors) are raised
as :class:`kfp_ct.components.common.errors.StorageError` with a message naming the path.

``gs://`` access uses ``google-cloud-storage``. When ``STORAGE_EMULATOR_HOST`` is set
(tests, local emulators) the client uses anonymous credentials and the project
``GOOGLE_CLOUD_PROJECT`` (default ``"test"``).

No kfp, no TensorFlow here.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob as _glob
import os
import re
import shutil
import tempfile
import threading
from typing import Callable, Iterator, Sequence

from kfp_ct.components.common.errors import StorageError

GCS_SCHEME = "gs://"
_WILDCARDS = "*?["

_client_lock = threading.Lock()
_client_cache: dict = {}


# --------------------------------------------------------------------------- paths


def is_gcs(path: str) -> bool:
    """True for ``gs://`` URIs."""
    return str(path).startswith(GCS_SCHEME)


def join(base: str, *parts: str) -> str:
    """Join path parts; ``gs://`` URIs are joined with ``/``."""
    base = str(base)
    if not is_gcs(base):
        return os.path.join(base, *[str(p) for p in parts])
    out = base.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


def _split(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    rest = uri[len(GCS_SCHEME):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"Bad gs:// URI {uri!r}: no bucket name (expected gs://BUCKET/PATH)")
    if any(c in bucket for c in _WILDCARDS) or bucket in (".", ".."):
        raise StorageError(f"Bad gs:// URI {uri!r}: invalid bucket name {bucket!r}")
    return bucket, key.strip("/")


def _uri(bucket: str, key: str) -> str:
    return f"{GCS_SCHEME}{bucket}/{key}" if key else f"{GCS_SCHEME}{bucket}"


# -------------------------------------------------------------------------- client


def _client():
    """The process's storage client (rebuilt after fork or an emulator change)."""
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    project = os.environ.get("GOOGLE_CLOUD_PROJECT")
    key = (os.getpid(), emulator, project)
    with _client_lock:
        client = _client_cache.get(key)
        if client is None:
            try:
                from google.cloud import storage as gcs

                if emulator:
                    from google.auth.credentials import AnonymousCredentials

                    client = gcs.Client(
                        project=project or "test", credentials=AnonymousCredentials()
                    )
                else:
                    client = gcs.Client(project=project) if project else gcs.Client()
            except Exception as exc:  # credentials missing, bad config
                raise StorageError(
                    f"Cannot create a Google Cloud Storage client: {type(exc).__name__}: {exc}"
                ) from exc
            _client_cache.clear()
            _client_cache[key] = client
        return client


@contextlib.contextmanager
def _gcs_errors(path: str, action: str, local: str = "") -> Iterator[None]:
    """Turn google-cloud / network errors into StorageError naming ``path`` (``local``:
    the local side of a download, named when it runs out of room)."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except StorageError:
        raise
    except gexc.NotFound as exc:
        raise StorageError(f"Cannot {action} {path}: not found ({_short(exc)})") from exc
    except (gexc.Forbidden, gexc.Unauthorized) as exc:
        raise StorageError(f"Cannot {action} {path}: permission denied ({_short(exc)})") from exc
    except gexc.GoogleAPIError as exc:
        raise StorageError(f"Cannot {action} {path}: {_short(exc)}") from exc
    except OSError as exc:  # local side of a download/upload
        raise (space_error(exc, local) if local else None) or \
            StorageError(f"Cannot {action} {path}: {exc}") from exc
    except Exception as exc:  # auth / transport errors (requests, google.auth)
        raise StorageError(f"Cannot {action} {path}: {type(exc).__name__}: {exc}") from exc


def _short(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    msg = msg.splitlines()[0] if msg else type(exc).__name__
    return msg[:300]


# ------------------------------------------------------------------- out of room

#: Errors of a write that ran out of room: a full file system, a full quota, a file over
#: the process's file size limit (``ulimit -f``).
OUT_OF_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _mount_point(path: str) -> str:
    path = _existing(path)
    while not os.path.ismount(path):
        path = os.path.dirname(path)
    return path


def tree_bytes(path: str) -> int:
    """The bytes of a local file, or of every file under a local folder (0: missing)."""
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def space_error(exc: BaseException, target: str, need: int | None = None
                ) -> StorageError | None:
    """One line for a local write into ``target`` that ran out of room (``exc`` with
    errno ENOSPC, EDQUOT or EFBIG): where, about how much was needed (``need`` bytes,
    when known) and how much is free; None for any other error."""
    if not isinstance(exc, OSError) or exc.errno not in OUT_OF_ROOM:
        return None
    mount = _mount_point(target)
    try:
        free = _mb(shutil.disk_usage(_existing(target)).free)
    except OSError:
        free = "an unknown number of MB"
    needed = f"need about {_mb(need)}, " if need is not None else ""
    if exc.errno == errno.EFBIG:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        cap = "no limit" if soft == resource.RLIM_INFINITY else f"at most {_mb(soft)}"
        return StorageError(
            f"file size limit reached writing {target}: a file may be {cap} for this "
            f"process (ulimit -f); {needed}{free} free on {mount}")
    what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
    return StorageError(f"{what} on {mount} (writing {target}): {needed}{free} free")


def _space_in(error: shutil.Error, target: str, need: int | None) -> StorageError | None:
    """shutil.copytree's list of per-file errors, when one of them ran out of room."""
    for entry in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        why = str(entry[-1]) if isinstance(entry, (tuple, list)) else str(entry)
        for code in OUT_OF_ROOM:
            if f"[Errno {code}]" in why:
                return space_error(OSError(code, os.strerror(code)), target, need)
    return None


def copy_local_tree(src: str, dst: str, name: str = "") -> None:
    """``shutil.copytree(src, dst, dirs_exist_ok=True)`` that stops at the first write
    that runs out of room with one StorageError saying where and how much (shutil would
    try every other file and report each failure). ``name``: the path the message names
    (default ``dst``; e.g. the model base for its hidden staging folder)."""
    need: list[int] = []
    dst_name = name or dst

    def copy(source: str, target: str, *, follow_symlinks: bool = True) -> str:
        try:
            return shutil.copy2(source, target, follow_symlinks=follow_symlinks)
        except OSError as exc:
            if not need:
                need.append(tree_bytes(src))
            err = space_error(exc, dst_name, need[0])
            if err is None:
                raise
            raise err from exc

    try:
        shutil.copytree(src, dst, copy_function=copy, dirs_exist_ok=True)
    except shutil.Error as exc:
        err = _space_in(exc, dst_name, tree_bytes(src))
        if err is None:
            raise
        raise err from exc
    except OSError as exc:  # the first folder itself could not be made
        err = space_error(exc, dst_name, tree_bytes(src))
        if err is None:
            raise
        raise err from exc


@contextlib.contextmanager
def _local_errors(path: str, action: str, need: int | None = None) -> Iterator[None]:
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise StorageError(f"Cannot {action} {path}: no such file or directory") from exc
    except PermissionError as exc:
        raise StorageError(f"Cannot {action} {path}: permission denied") from exc
    except NotADirectoryError as exc:
        raise StorageError(
            f"Cannot {action} {path}: a part of the path is not a directory ({exc.filename})"
        ) from exc
    except IsADirectoryError as exc:
        raise StorageError(f"Cannot {action} {path}: is a directory") from exc
    except shutil.Error as exc:
        err = _space_in(exc, path, need)
        raise (err or StorageError(f"Cannot {action} {path}: {exc}")) from exc
    except OSError as exc:
        err = space_error(exc, path, need)
        raise (err or StorageError(f"Cannot {action} {path}: {exc.strerror or exc}")) from exc


def _list_blobs(bucket: str, prefix: str, delimiter: str | None = None):
    """(blobs, prefixes) under ``prefix``; raises google errors."""
    it = _client().list_blobs(bucket, prefix=prefix or None, delimiter=delimiter)
    blobs = list(it)  # consumes every page, which also fills it.prefixes
    return blobs, sorted(getattr(it, "prefixes", ()) or ())


def _blob_exists(bucket: str, key: str) -> bool:
    return bool(key) and _client().bucket(bucket).blob(key).exists()


def _prefix_nonempty(bucket: str, key: str) -> bool:
    prefix = f"{key}/" if key else ""
    it = _client().list_blobs(bucket, prefix=prefix or None, max_results=1)
    return any(True for _ in it)


# ------------------------------------------------------------------------- queries


def exists(path: str) -> bool:
    """A file or a directory (gs: an object, or a prefix with objects under it)."""
    if not is_gcs(path):
        return os.path.exists(path)
    bucket, key = _split(path)
    with _gcs_errors(path, "check"):
        if not key:
            return _client().bucket(bucket).exists()
        return _blob_exists(bucket, key) or _prefix_nonempty(bucket, key)


def isdir(path: str) -> bool:
    """A directory (gs: the bucket root, or a prefix with objects under it)."""
    if not is_gcs(path):
        return os.path.isdir(path)
    bucket, key = _split(path)
    with _gcs_errors(path, "check"):
        if not key:
            return _client().bucket(bucket).exists()
        return _prefix_nonempty(bucket, key)


def listdir(path: str) -> list[str]:
    """Sorted names of the immediate children of a directory."""
    if not is_gcs(path):
        with _local_errors(path, "list"):
            return sorted(os.listdir(path))
    bucket, key = _split(path)
    prefix = f"{key}/" if key else ""
    with _gcs_errors(path, "list"):
        blobs, prefixes = _list_blobs(bucket, prefix, delimiter="/")
    # Keep only the first segment: some servers (the emulator, at the bucket root)
    # ignore the delimiter and return the whole tree.
    names = {b.name[len(prefix):].split("/", 1)[0] for b in blobs}
    names.update(p[len(prefix):].split("/", 1)[0] for p in prefixes)
    names.discard("")  # "directory placeholder" objects
    if not names:
        raise StorageError(f"Cannot list {path}: no such directory")
    return sorted(names)


def list_files(path: str) -> dict[str, int]:
    """Every file under the directory ``path``, recursively: relative path (``/``-separated)
    -> size in bytes; {} when ``path`` is missing or not a directory.

    On gs:// this is one listing (paged by the service), no object is read.
    """
    if not is_gcs(path):
        out: dict[str, int] = {}
        if not os.path.isdir(path):
            return out
        with _local_errors(path, "list"):
            for dirpath, _dirs, names in os.walk(path):
                for name in names:
                    full = os.path.join(dirpath, name)
                    try:
                        size = os.stat(full).st_size
                    except FileNotFoundError:  # removed while listing
                        continue
                    out[os.path.relpath(full, path).replace(os.sep, "/")] = size
        return out
    bucket, key = _split(path)
    prefix = f"{key}/" if key else ""
    with _gcs_errors(path, "list"):
        blobs, _ = _list_blobs(bucket, prefix)
    return {b.name[len(prefix):]: int(b.size or 0) for b in blobs
            if len(b.name) > len(prefix) and not b.name.endswith("/")}


def glob(pattern: str) -> list[str]:
    """Sorted file paths matching ``pattern`` (``**`` recursive locally)."""
    if not is_gcs(pattern):
        return sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))
    bucket, key_pattern = _split(pattern)
    cut = min((i for i, c in enumerate(key_pattern) if c in _WILDCARDS), default=None)
    if cut is None:  # no wildcard: the object itself, if there
        return [pattern] if key_pattern and exists(pattern) and not isdir(pattern) else []
    literal = key_pattern[:cut]
    with _gcs_errors(pattern, "list"):
        blobs, _ = _list_blobs(bucket, literal)
    return sorted(
        _uri(bucket, b.name)
        for b in blobs
        if not b.name.endswith("/") and fnmatch.fnmatchcase(b.name, key_pattern)
    )


def glob_entries(pattern: str) -> list[str]:
    """Sorted files *and folders* matching ``pattern`` (e.g. partitions ``.../date=*``)."""
    if not is_gcs(pattern):
        return sorted(p.rstrip("/") for p in _glob.glob(pattern.rstrip("/")))
    bucket, key_pattern = _split(pattern)
    key_pattern = key_pattern.rstrip("/")
    cut = min((i for i, c in enumerate(key_pattern) if c in _WILDCARDS), default=None)
    if cut is None:
        return [pattern.rstrip("/")] if exists(pattern) else []
    with _gcs_errors(pattern, "list"):
        blobs, _ = _list_blobs(bucket, key_pattern[:cut])
    found = set()
    for b in blobs:
        parts = b.name.rstrip("/").split("/")
        for i in range(1, len(parts) + 1):
            candidate = "/".join(parts[:i])
            if fnmatch.fnmatchcase(candidate, key_pattern):
                found.add(_uri(bucket, candidate))
    return sorted(found)


# ---------------------------------------------------------------------- read/write


def read_bytes(path: str) -> bytes:
    if not is_gcs(path):
        with _local_errors(path, "read"):
            with open(path, "rb") as f:
                return f.read()
    bucket, key = _split(path)
    if not key:
        raise StorageError(f"Cannot read {path}: it is a bucket, not an object")
    with _gcs_errors(path, "read"):
        return _client().bucket(bucket).blob(key).download_as_bytes()


def read_head(path: str, n: int) -> bytes:
    """The first ``n`` bytes of a file (one ranged request on gs://)."""
    if not is_gcs(path):
        with _local_errors(path, "read"):
            with open(path, "rb") as f:
                return f.read(n)
    bucket, key = _split(path)
    with _gcs_errors(path, "read"):
        return _client().bucket(bucket).blob(key).download_as_bytes(start=0, end=n - 1)


def read_text(path: str, encoding: str = "utf-8") -> str:
    data = read_bytes(path)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise StorageError(f"Cannot read {path} as {encoding} text: {exc}") from exc


def write_bytes(path: str, data: bytes) -> None:
    """Write atomically (locally: temp file in the same directory, then rename)."""
    if not is_gcs(path):
        with _local_errors(path, "write", need=len(data)):
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=parent, prefix=".tmp-", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return
    bucket, key = _split(path)
    if not key:
        raise StorageError(f"Cannot write {path}: it is a bucket, not an object")
    with _gcs_errors(path, "write"):
        _client().bucket(bucket).blob(key).upload_from_string(bytes(data))


def version_tag(path: str) -> dict:
    """What identifies this content of a file: size and mtime (local), size and
    generation (gs://); {} when it cannot be read."""
    if not is_gcs(path):
        try:
            st = os.stat(path)
        except OSError:
            return {}
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    bucket, key = _split(path)
    with _gcs_errors(path, "stat"):
        blob = _client().bucket(bucket).get_blob(key)
    return {} if blob is None else {"size": blob.size, "generation": blob.generation}


def create_only(path: str, data: bytes) -> bool:
    """Writes ``path`` only if it does not exist yet; True if this call created it.

    Safe under races: locally the content is written to a private file and hard-linked
    into place (``link`` fails if the name exists, and readers never see a partial file);
    on gs:// the upload carries the precondition ``ifGenerationMatch=0`` (only if absent).
    """
    if is_gcs(path):
        from google.api_core import exceptions as gexc

        bucket, key = _split(path)
        blob = _client().bucket(bucket).blob(key)
        with _gcs_errors(path, "create"):
            try:
                blob.upload_from_string(data, if_generation_match=0)
            except gexc.PreconditionFailed:
                return False
        return True
    with _local_errors(path, "create"):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".create-", dir=os.path.dirname(path) or ".")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)


def numbered(folder: str, pattern: re.Pattern) -> list[int]:
    """The numbers of the files directly in ``folder`` whose whole name matches
    ``pattern`` (its first group is the number), sorted; [] when there is no folder.
    One listing: no file is read."""
    found = (pattern.fullmatch(name) for name in list_files(folder))
    return sorted(int(m.group(1)) for m in found if m)


def create_numbered(folder: str, pattern: re.Pattern, name: Callable[[int], str],
                    body: Callable[[int], bytes], tries: int) -> int | None:
    """Appends one numbered record to ``folder``: ``name(n)`` with ``body(n)``, n one past
    the highest number ``pattern`` finds there, written create-only, so two writers at once
    never overwrite each other. A number taken in the meantime is not retried: the folder
    is listed again and the next try goes past every number in it. Returns n, or None
    when ``tries`` numbers were all taken."""
    n = max(numbered(folder, pattern), default=0) + 1
    for _ in range(tries):
        if create_only(join(folder, name(n)), body(n)):
            return n
        n = max(n, max(numbered(folder, pattern), default=0)) + 1
    return None


def write_text(path: str, text: str, encoding: str = "utf-8") -> None:
    write_bytes(path, text.encode(encoding))


# --------------------------------------------------------------------------- trees


def _local_files(root: str) -> list[str]:
    """Relative paths (with ``/``) of every file under ``root``, sorted."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            out.append(rel.replace(os.sep, "/"))
    return sorted(out)


def _order_last(rels: Sequence[str], last: Sequence[str]) -> list[str]:
    """Put the top-level files named in ``last`` at the end, in ``last``'s order."""
    last = tuple(last or ())
    head = [r for r in rels if r not in last]
    tail = [name for name in last if name in rels]
    return head + tail


def download(src: str, local_dst: str) -> str:
    """Copy a file or a whole tree at ``src`` to the local path ``local_dst``."""
    if not is_gcs(src):
        with _local_errors(src, "copy", need=tree_bytes(src)):
            if os.path.isdir(src):
                copy_local_tree(src, local_dst)
            else:
                os.makedirs(os.path.dirname(os.path.abspath(local_dst)), exist_ok=True)
                try:
                    shutil.copy2(src, local_dst)
                except OSError as exc:
                    raise space_error(exc, local_dst, tree_bytes(src)) or exc
        return local_dst
    bucket, key = _split(src)
    with _gcs_errors(src, "download", local=local_dst):
        if _blob_exists(bucket, key):
            os.makedirs(os.path.dirname(os.path.abspath(local_dst)), exist_ok=True)
            _client().bucket(bucket).blob(key).download_to_filename(local_dst)
            return local_dst
        prefix = f"{key}/" if key else ""
        blobs, _ = _list_blobs(bucket, prefix)
        blobs = [b for b in blobs if not b.name.endswith("/")]
        if not blobs:
            raise StorageError(f"Cannot download {src}: not found")
        os.makedirs(local_dst, exist_ok=True)
        for blob in blobs:
            target = os.path.join(local_dst, *blob.name[len(prefix):].split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            blob.download_to_filename(target)
    return local_dst


def upload_tree(local_src_dir: str, dst: str, last: Sequence[str] = ("saved_model.pb",)) -> str:
    """Copy every file under ``local_src_dir`` to ``dst`` (local or gs://).

    Top-level files named in ``last`` are written at the very end, so a reader that
    waits for them never sees a half-written tree.
    """
    if not os.path.isdir(local_src_dir):
        raise StorageError(f"Cannot upload {local_src_dir}: not a local directory")
    rels = _order_last(_local_files(local_src_dir), last)
    if not is_gcs(dst):
        with _local_errors(dst, "write", need=tree_bytes(local_src_dir)):
            os.makedirs(dst, exist_ok=True)
            for rel in rels:
                target = os.path.join(dst, *rel.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copy2(os.path.join(local_src_dir, *rel.split("/")), target)
        return dst
    bucket, key = _split(dst)
    with _gcs_errors(dst, "upload to"):
        b = _client().bucket(bucket)
        for rel in rels:
            name = f"{key}/{rel}" if key else rel
            b.blob(name).upload_from_filename(os.path.join(local_src_dir, *rel.split("/")))
    return dst


def copy_tree(src: str, dst: str, last: Sequence[str] = ("saved_model.pb",)) -> str:
    """Copy the tree at ``src`` to ``dst``, any mix of local and gs://."""
    if not is_gcs(src) and not is_gcs(dst):
        if not os.path.isdir(src):
            raise StorageError(f"Cannot copy {src}: not a directory")
        with _local_errors(dst, "copy to"):
            copy_local_tree(src, dst)
        return dst
    if not is_gcs(src):
        return upload_tree(src, dst, last=last)
    if not is_gcs(dst):
        if not isdir(src):
            raise StorageError(f"Cannot copy {src}: no such directory")
        return download(src, dst)
    with local_copy(src) as local:
        if not os.path.isdir(local):
            raise StorageError(f"Cannot copy {src}: not a directory")
        return upload_tree(local, dst, last=last)


def remove_tree(path: str) -> None:
    """Remove a file or a tree; a missing path is not an error."""
    if not is_gcs(path):
        with _local_errors(path, "remove"):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        return
    bucket, key = _split(path)
    if not key:
        raise StorageError(f"Refusing to remove a whole bucket: {path}")
    with _gcs_errors(path, "remove"):
        blobs, _ = _list_blobs(bucket, f"{key}/")
        for blob in blobs:
            blob.delete()
        blob = _client().bucket(bucket).blob(key)
        if blob.exists():
            blob.delete()


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """Yield a local path holding ``path``'s content (gs://: a temporary download)."""
    if not is_gcs(path):
        yield path
        return
    bucket, key = _split(path)
    name = key.rsplit("/", 1)[-1] if key else bucket
    tmp = tempfile.mkdtemp(prefix="kfp-ct-")
    try:
        yield download(path, os.path.join(tmp, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
