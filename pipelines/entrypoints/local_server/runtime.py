"""Where a running local endpoint keeps its token, and how clients on this machine find it.

Jupyter's model: ``kfp-ct local-server`` requires a bearer token unless ``--no-token``;
with none given it makes one (:func:`new_token`). The token goes to ``<state>/token``
(mode 0600) and, while the server runs, a runtime file
``<runtime dir>/server-<pid>.json`` (mode 0600) holds ``{url, host, port, pid, token,
state_dir}``; it is removed when the server stops. A client given a loopback endpoint
and no token reads the runtime file whose port matches and whose process is alive
(:func:`find_token`).

The runtime dir is ``$KFP_CT_RUNTIME_DIR`` if set, else ``$XDG_RUNTIME_DIR/kfp-ct``
when ``$XDG_RUNTIME_DIR`` exists, else ``~/.local/share/kfp-ct/runtime`` (mode 0700).
Standard library only: the client imports this.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.parse
from typing import Optional, Tuple

from kfp_ct.components.common.processes import pid_alive

RUNTIME_DIR_ENV = "KFP_CT_RUNTIME_DIR"
TOKEN_FILE = "token"
_LOOPBACK = ("127.0.0.1", "localhost")


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def write_private(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` readable by the owner only (0600 from the first byte).

    The file is created under a temporary name with ``O_CREAT | O_EXCL`` and mode 0600,
    then renamed over ``path``, so no reader ever sees a world-readable or half-written
    token.

    Returns:
        ``path``.
    """
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)  # whatever the umask did
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def token_path(state_dir: str) -> str:
    """``<state_dir>/token``."""
    return os.path.join(state_dir, TOKEN_FILE)


def runtime_dir() -> str:
    """The per-user folder of runtime files (not created here)."""
    explicit = os.environ.get(RUNTIME_DIR_ENV, "")
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isdir(xdg):
        return os.path.join(xdg, "kfp-ct")
    return os.path.join(os.path.expanduser("~"), ".local", "share", "kfp-ct", "runtime")


def write_runtime_file(url: str, port: int, token: Optional[str], state_dir: str) -> str:
    """Writes this process's runtime file (0600, in a 0700 folder); returns its path."""
    folder = runtime_dir()
    os.makedirs(folder, mode=0o700, exist_ok=True)
    _remove_stale(folder)
    path = os.path.join(folder, f"server-{os.getpid()}.json")
    info = {"url": url, "host": urllib.parse.urlsplit(url).hostname, "port": int(port),
            "pid": os.getpid(), "token": token, "state_dir": state_dir}
    return write_private(path, json.dumps(info, indent=1) + "\n")


def remove_runtime_file(path: str) -> None:
    """Removes a runtime file (gone already: fine)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _remove_stale(folder: str) -> None:
    """Removes the runtime files of servers that ended without removing theirs (killed)."""
    for name in os.listdir(folder):
        if not (name.startswith("server-") and name.endswith(".json")):
            continue
        try:
            pid = int(name[len("server-"):-len(".json")])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            remove_runtime_file(os.path.join(folder, name))


def find_token(host: str) -> Optional[Tuple[str, str]]:
    """The token of the running local endpoint at ``host``, from its runtime file.

    Args:
        host: An endpoint URL, e.g. ``http://127.0.0.1:8888``. Only 127.0.0.1 and
            localhost are looked up.

    Returns:
        ``(token, where)``: the token and the file it came from (its token file in the
        state folder when it exists, else the runtime file); None when no live server of
        this user on that port wrote one, or it runs with ``--no-token``.
    """
    try:
        parts = urllib.parse.urlsplit(host)
        port = parts.port
    except ValueError:
        return None
    if parts.hostname not in _LOOPBACK or port is None:
        return None
    folder = runtime_dir()
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    uid = os.getuid() if hasattr(os, "getuid") else None
    for name in names:
        if not (name.startswith("server-") and name.endswith(".json")):
            continue
        path = os.path.join(folder, name)
        try:
            if uid is not None and os.stat(path).st_uid != uid:
                continue
            with open(path) as fh:
                info = json.load(fh)
            if int(info.get("port", -1)) != port or not pid_alive(int(info.get("pid", -1))):
                continue
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        token = info.get("token")
        if not token:
            return None
        state_dir = info.get("state_dir") or ""
        kept = token_path(state_dir) if state_dir else ""
        return str(token), kept if kept and os.path.isfile(kept) else path
    return None
