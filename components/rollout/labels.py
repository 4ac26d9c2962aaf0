"""Canary / stable rollout for plain TF Serving, through its version labels.

TF Serving reads one model server config file (``--model_config_file``, a text-format
``tensorflow.serving.ModelServerConfig``). This module writes and reads that file for ONE
model: a ``specific`` version policy listing the versions to keep loaded, and the labels
``canary`` and ``stable`` on two of them, so clients ask for ``/v1/models/<name>/labels/
stable`` (or ``canary``) and never name a version. The moves (:func:`set_canary`,
:func:`promote`, :func:`rollback`, :func:`move_stable`, :func:`stage`) each read the
file, change it and write it back whole (atomically); the server picks the change up at
its next poll.

What a server does with one new file (tensorflow/serving,
``model_servers/server_core.cc``, ``ServerCore::ReloadConfig``): it checks the new labels
against the versions loaded *now* (``UpdateModelVersionLabelMap``), and only then loads
and unloads versions for the new policy; if a label is refused nothing of the file is
applied, the server keeps serving as before, logs ``Request to assign label to version
N ... not currently available`` and refuses the same file again at every poll. With
``--allow_version_labels_for_unavailable_models`` a label that is *new* (or unchanged)
may point at a version still loading, which the first file needs (at startup nothing is
loaded); a label that *moves* must land on a loaded version even with the flag. So
:func:`promote`, :func:`rollback` and :func:`move_stable` to a labelled version work in
one write (the version they drop is unloaded after the labels moved), but before
:func:`set_canary` (or :func:`move_stable`) to a version the server has not loaded, call
:func:`stage` with that version, wait until ``GET /v1/models/<name>`` shows it
``AVAILABLE``, then move the label. Run the server with ``--model_config_file=<path>
--model_config_file_poll_wait_seconds=30 --allow_version_labels_for_unavailable_models``.

Standard library only (plus kfp_ct's storage for local and ``gs://`` paths); no
TensorFlow, no kfp.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
from typing import Iterator

from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import KfpCtError, StorageError

CONFIG_FILE = "models.config"
CANARY = "canary"
STABLE = "stable"
PLATFORM = "tensorflow"

_MAX_INT64 = 2**63 - 1


class LabelsError(KfpCtError):
    """A TF Serving model config file kfp-ct cannot read or write, or a move that does
    not apply to it; the message names the file and the line or field."""


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """One model's TF Serving config: the versions to load and its two labels.

    ``staged``: versions loaded without a label (see :func:`stage`); the version policy
    lists ``stable``, ``canary`` and these, distinct and sorted.
    """

    name: str
    base_path: str
    stable: int | None
    canary: int | None
    staged: tuple[int, ...] = ()

    @property
    def versions(self) -> tuple[int, ...]:
        """The versions of the ``specific`` policy: distinct, sorted."""
        labelled = {v for v in (self.stable, self.canary) if v is not None}
        return tuple(sorted(labelled | set(self.staged)))

    @property
    def labels(self) -> dict[str, int]:
        """Label -> version, sorted by label; unset labels left out."""
        out = {CANARY: self.canary, STABLE: self.stable}
        return {k: v for k, v in sorted(out.items()) if v is not None}


def default_path(base: str) -> str:
    """``<base>/models.config`` (local or gs://)."""
    return storage.join(base, CONFIG_FILE)


# ------------------------------------------------------------------------- render


def _quote(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _check_version(value, what: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LabelsError(f"{where}: {what} must be an integer version, not {value!r}")
    if value < 0 or value > _MAX_INT64:
        raise LabelsError(
            f"{where}: {what} {value} is not a version (a non-negative 64-bit integer)")
    return value


def _check(cfg: LabelConfig, where: str = "model config") -> None:
    for field in ("name", "base_path"):
        value = getattr(cfg, field)
        if not isinstance(value, str) or not value.strip():
            raise LabelsError(f"{where}: {field} must be a non-empty string, not {value!r}")
    for label in (STABLE, CANARY):
        value = getattr(cfg, label)
        if value is not None:
            _check_version(value, f"the {label} label", where)
    for value in cfg.staged:
        _check_version(value, "a staged version", where)
    if not cfg.versions:
        raise LabelsError(
            f"{where}: model {cfg.name!r} has no version to load (no stable, canary or "
            "staged version); TF Serving would serve nothing")


def render(cfg: LabelConfig) -> str:
    """The text-format ``ModelServerConfig`` for ``cfg`` (one model)."""
    _check(cfg)
    lines = [
        "model_config_list {",
        "  config {",
        f"    name: {_quote(cfg.name)}",
        f"    base_path: {_quote(cfg.base_path)}",
        f"    model_platform: {_quote(PLATFORM)}",
        "    model_version_policy {",
        "      specific {",
    ]
    lines += [f"        versions: {v}" for v in cfg.versions]
    lines += ["      }", "    }"]
    for key, value in cfg.labels.items():
        lines += ["    version_labels {", f"      key: {_quote(key)}",
                  f"      value: {value}", "    }"]
    lines += ["  }", "}"]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------- parse


@dataclasses.dataclass
class _Token:
    kind: str  # "name", "string", "number", "punct"
    text: str
    line: int
    value: object = None  # the decoded str of a string token


@dataclasses.dataclass
class _Field:
    name: str
    line: int
    value: object  # a _Token (scalar) or a list of _Field (message)

    @property
    def is_message(self) -> bool:
        return isinstance(self.value, list)


_TOKEN = re.compile(r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:[0-9]|\.[0-9])[\w.+-]*|-[A-Za-z_]\w*)
  | (?P<name>[A-Za-z_][\w]*)
  | (?P<punct>[{}<>:,;\[\]])
""", re.VERBOSE)

_INT = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")

_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11,
                   "\\": 92, "'": 39, '"': 34, "?": 63}


class _Parser:
    def __init__(self, text: str, path: str):
        self.path = path
        self.tokens = self._tokenize(text)
        self.pos = 0

    def fail(self, line: int | None, message: str) -> LabelsError:
        where = f"{self.path}: line {line}" if line else self.path
        return LabelsError(f"{where}: {message}")

    # --- tokens

    def _tokenize(self, text: str) -> list[_Token]:
        tokens, line, pos = [], 1, 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                snippet = text[pos:pos + 20].split("\n", 1)[0]
                if text[pos] in "\"'":
                    raise self.fail(line, f"unterminated string {snippet!r}")
                raise self.fail(line, f"unexpected text {snippet!r}")
            kind = m.lastgroup
            if kind == "newline":
                line += 1
            elif kind == "string":
                tokens.append(_Token(kind, m.group(), line, self._unquote(m.group(), line)))
            elif kind in ("number", "name", "punct"):
                tokens.append(_Token(kind, m.group(), line))
            pos = m.end()
        return tokens

    def _unquote(self, quoted: str, line: int) -> str:
        body, out, i = quoted[1:-1], bytearray(), 0
        while i < len(body):
            ch = body[i]
            if ch != "\\":
                out += ch.encode("utf-8")
                i += 1
                continue
            esc = body[i + 1]
            if esc in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[esc])
                i += 2
            elif esc in "01234567":
                digits = re.match(r"[0-7]{1,3}", body[i + 1:]).group()
                out.append(int(digits, 8) & 0xFF)
                i += 1 + len(digits)
            elif esc == "x" and re.match(r"[0-9a-fA-F]", body[i + 2:i + 3]):
                digits = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2:]).group()
                out.append(int(digits, 16))
                i += 2 + len(digits)
            elif esc in "uU" and re.match(r"[0-9a-fA-F]{%d}" % (4 if esc == "u" else 8),
                                           body[i + 2:]):
                n = 4 if esc == "u" else 8
                try:
                    out += chr(int(body[i + 2:i + 2 + n], 16)).encode("utf-8")
                except (ValueError, UnicodeEncodeError):
                    raise self.fail(line, f"bad escape \\{body[i + 1:i + 2 + n]} in "
                                          f"{quoted}") from None
                i += 2 + n
            else:
                raise self.fail(line, f"bad escape \\{esc} in {quoted}")
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(line, f"string {quoted} is not UTF-8 text") from None

    def peek(self) -> _Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> _Token:
        tok = self.peek()
        if tok is None:
            last = self.tokens[-1].line if self.tokens else None
            raise self.fail(last, "the file ends where a value is expected")
        self.pos += 1
        return tok

    def accept(self, text: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text == text:
            self.pos += 1
            return True
        return False

    # --- grammar: the text format's fields, messages, lists

    def message(self, close: str | None, opened: _Token | None = None) -> list[_Field]:
        fields: list[_Field] = []
        while True:
            tok = self.peek()
            if tok is None:
                if close is None:
                    return fields
                raise self.fail(opened.line, f"the {opened.text!r} of this "
                                             f"{opened.value} is never closed (a "
                                             f"{close!r} is missing)")
            if tok.kind == "punct" and tok.text == close:
                self.pos += 1
                return fields
            if tok.kind != "name":
                raise self.fail(tok.line, f"expected a field name, found {tok.text!r}")
            self.pos += 1
            fields.extend(self.field(tok))
            if not self.accept(","):
                self.accept(";")

    def field(self, name: _Token) -> list[_Field]:
        colon = self.accept(":")
        tok = self.peek()
        if tok is not None and tok.kind == "punct" and tok.text in "{<":
            self.pos += 1
            opened = _Token("punct", tok.text, tok.line, name.text)
            return [_Field(name.text, name.line,
                           self.message("}" if tok.text == "{" else ">", opened))]
        if tok is not None and tok.kind == "punct" and tok.text == "[" and colon:
            self.pos += 1
            out: list[_Field] = []
            if self.accept("]"):
                return out
            while True:
                item = self.peek()
                if item is not None and item.kind == "punct" and item.text in "{<":
                    self.pos += 1
                    opened = _Token("punct", item.text, item.line, name.text)
                    out.append(_Field(name.text, item.line, self.message(
                        "}" if item.text == "{" else ">", opened)))
                else:
                    out.append(_Field(name.text, name.line, self.scalar(name)))
                if self.accept("]"):
                    return out
                if not self.accept(","):
                    bad = self.take()
                    raise self.fail(bad.line, f"expected ',' or ']' in the list of "
                                              f"{name.text}, found {bad.text!r}")
        if not colon:
            found = tok.text if tok is not None else "the end of the file"
            raise self.fail(name.line, f"expected ':' or '{{' after {name.text}, "
                                       f"found {found!r}")
        return [_Field(name.text, name.line, self.scalar(name))]

    def scalar(self, name: _Token) -> _Token:
        tok = self.take()
        if tok.kind == "punct":
            raise self.fail(tok.line, f"expected a value for {name.text}, found {tok.text!r}")
        if tok.kind == "string":  # adjacent strings concatenate
            parts = [tok.value]
            while (nxt := self.peek()) is not None and nxt.kind == "string":
                parts.append(nxt.value)
                self.pos += 1
            tok = _Token("string", tok.text, tok.line, "".join(parts))
        return tok


def _unknown(p: _Parser, f: _Field, where: str) -> LabelsError:
    return p.fail(f.line, f"field {f.name!r} in {where} is not one kfp-ct's TF Serving "
                          "labels manage (it would be lost when the file is rewritten); "
                          "remove it or manage this file by hand")


def _single(p: _Parser, fields: list[_Field], where: str, message: bool) -> dict:
    """name -> _Field for fields that may appear once; refuses repeats and wrong kinds."""
    seen: dict[str, _Field] = {}
    for f in fields:
        if f.name in seen:
            raise p.fail(f.line, f"{f.name} appears twice in {where} (first on line "
                                 f"{seen[f.name].line})")
        if f.is_message != message:
            kind = "a message { ... }" if message else "a value (name: value)"
            raise p.fail(f.line, f"{f.name} in {where} must be {kind}")
        seen[f.name] = f
    return seen


def _string(p: _Parser, f: _Field) -> str:
    if f.is_message or f.value.kind != "string":
        shown = "a message" if f.is_message else f.value.text
        raise p.fail(f.line, f"{f.name} must be a quoted string, not {shown}")
    return f.value.value


def _integer(p: _Parser, f: _Field, what: str) -> int:
    tok = f.value
    if f.is_message or tok.kind != "number" or not _INT.match(tok.text):
        shown = "a message" if f.is_message else tok.text
        raise p.fail(f.line, f"{what} must be an integer version, not {shown}")
    text = tok.text
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("-")
    if digits[:2].lower() == "0x":
        value = int(digits, 16)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(digits, 8)
    else:
        value = int(digits)
    value *= sign
    if value < 0 or value > _MAX_INT64:
        raise p.fail(f.line, f"{what} {text} is not a version (a non-negative 64-bit "
                             "integer)")
    return value


def parse(text: str, path: str = "<model config>") -> LabelConfig:
    """Read a TF Serving model config file holding one model (what :func:`render`
    writes, or the same fields written by hand: any order, ``#`` comments, either quote
    style). ``path``: the name error messages give the file. Raises :class:`LabelsError`.
    """
    p = _Parser(text, path)
    top = p.message(None)
    for f in top:
        if f.name != "model_config_list":
            raise _unknown(p, f, "the file")
    lists = _single(p, top, "the file", message=True)
    if "model_config_list" not in lists:
        raise p.fail(None, "no model_config_list { config { ... } }: the file names no model")
    configs = []
    for f in lists["model_config_list"].value:
        if f.name != "config":
            raise _unknown(p, f, "model_config_list")
        if not f.is_message:
            raise p.fail(f.line, "config in model_config_list must be a message { ... }")
        configs.append(f)
    if not configs:
        raise p.fail(lists["model_config_list"].line,
                     "model_config_list holds no config: the file names no model")
    if len(configs) > 1:
        raise p.fail(configs[1].line, f"a second model config (the first is on line "
                                      f"{configs[0].line}): kfp-ct's labels file holds "
                                      "exactly one model")
    config = configs[0]

    scalars = [f for f in config.value if f.name in ("name", "base_path", "model_platform")]
    policies = [f for f in config.value if f.name == "model_version_policy"]
    label_fields = [f for f in config.value if f.name == "version_labels"]
    for f in config.value:
        if f.name not in ("name", "base_path", "model_platform", "model_version_policy",
                          "version_labels"):
            raise _unknown(p, f, "the model config")
    one = _single(p, scalars, "the model config", message=False)
    one.update(_single(p, policies, "the model config", message=True))
    values = {k: _string(p, one[k]) for k in ("name", "base_path", "model_platform")
              if k in one}
    for field in ("name", "base_path"):
        if not values.get(field, "").strip():
            line = one[field].line if field in one else config.line
            raise p.fail(line, f"the model config has no {field}" if field not in one
                         else f"{field} is empty")
    platform = values.get("model_platform", PLATFORM)
    if platform != PLATFORM:
        raise p.fail(one["model_platform"].line,
                     f"model_platform is {platform!r}; kfp-ct serves {PLATFORM!r} models")

    versions: list[int] = []
    policy = one.get("model_version_policy")
    if policy is not None:
        for f in policy.value:
            if f.name != "specific":
                raise p.fail(f.line, f"model_version_policy {f.name} is not one kfp-ct "
                                     "manages: canary and stable labels need a "
                                     "'specific' policy listing the versions to load")
        specific = _single(p, policy.value, "model_version_policy", message=True)
        if "specific" not in specific:
            raise p.fail(policy.line, "model_version_policy has no specific { versions: N }")
        for f in specific["specific"].value:
            if f.name != "versions":
                raise _unknown(p, f, "model_version_policy.specific")
            versions.append(_integer(p, f, "versions"))

    labels: dict[str, tuple[int, int]] = {}  # label -> (version, line)
    for f in label_fields:
        if not f.is_message:
            raise p.fail(f.line, "version_labels must be a message { key: ... value: ... }")
        for g in f.value:
            if g.name not in ("key", "value"):
                raise _unknown(p, g, "version_labels")
        entry = _single(p, f.value, "version_labels", message=False)
        if "key" not in entry or "value" not in entry:
            missing = "key" if "key" not in entry else "value"
            raise p.fail(f.line, f"version_labels has no {missing}")
        key = _string(p, entry["key"])
        if key not in (CANARY, STABLE):
            raise p.fail(entry["key"].line, f"version label {key!r} is not one kfp-ct "
                                            f"manages (only {CANARY!r} and {STABLE!r})")
        if key in labels:
            raise p.fail(entry["key"].line, f"version label {key!r} appears twice (first "
                                            f"on line {labels[key][1]})")
        labels[key] = (_integer(p, entry["value"], f"version label {key!r}"),
                       entry["key"].line)

    for key, (version, line) in labels.items():
        if version not in versions:
            listed = ", ".join(str(v) for v in sorted(set(versions))) or "none"
            raise p.fail(line, f"version label {key!r} points at version {version}, which "
                               "the specific version policy does not load (it lists "
                               f"{listed}); TF Serving refuses a label on a version it "
                               "does not load")
    if not versions:
        raise p.fail(config.line, "the model config has no model_version_policy "
                                  "{ specific { versions: N } }: kfp-ct manages the "
                                  "loaded versions through a specific policy")
    stable = labels.get(STABLE, (None, 0))[0]
    canary = labels.get(CANARY, (None, 0))[0]
    staged = tuple(sorted(set(versions) - {stable, canary}))
    return LabelConfig(values["name"], values["base_path"], stable, canary, staged)


# ---------------------------------------------------------------------------- I/O


def read(path: str) -> LabelConfig | None:
    """The config in the file at ``path`` (local or gs://); None when there is none."""
    if not storage.exists(path):
        return None
    return parse(storage.read_text(path), path)


@contextlib.contextmanager
def _local_write_errors(path: str, size: int) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        err = storage.space_error(exc, path, size)
        raise (err or StorageError(f"Cannot write {path}: {exc.strerror or exc}")) from exc


def write(path: str, cfg: LabelConfig) -> None:
    """Write ``cfg`` to ``path`` so a server never reads a partial file: locally a
    temporary file in the same folder, flushed, then renamed over ``path`` (the file
    keeps its permissions; a new one gets 0666 less the umask, so a server running as
    another user can read it); on gs:// one object upload, which is atomic."""
    data = render(cfg).encode("utf-8")
    if storage.is_gcs(path):
        storage.write_bytes(path, data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    with _local_write_errors(path, len(data)):
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


# -------------------------------------------------------------------------- moves


def _existing(path: str, move: str) -> LabelConfig:
    cfg = read(path)
    if cfg is None:
        raise LabelsError(f"{path}: no TF Serving model config file here, so nothing to "
                          f"{move}; set_canary writes the first one")
    return cfg


def _save(path: str, old: LabelConfig | None, new: LabelConfig) -> LabelConfig:
    if new != old:
        write(path, new)
    return new


def _unstage(staged: tuple[int, ...], *versions: int | None) -> tuple[int, ...]:
    return tuple(v for v in staged if v not in versions)


def set_canary(path: str, name: str, base_path: str, version: int,
               stable_if_new: int | None = None) -> LabelConfig:
    """Point the ``canary`` label at ``version``; ``stable`` unchanged. With no file yet
    (or no stable label in it), stable is ``stable_if_new`` when given, else ``version``.
    On a running server, :func:`stage` a version it has not loaded first (see the module
    docstring)."""
    _check_version(version, "the canary version", path)
    if stable_if_new is not None:
        _check_version(stable_if_new, "stable_if_new", path)
    old = read(path)
    if old is None:
        stable = version if stable_if_new is None else stable_if_new
        return _save(path, None, LabelConfig(name, base_path, stable, version))
    if old.name != name:
        raise LabelsError(f"{path}: the file serves model {old.name!r}, not {name!r}; "
                          "one labels file holds one model (TF Serving would unload "
                          f"{old.name!r})")
    if old.base_path.rstrip("/") != str(base_path).rstrip("/"):
        raise LabelsError(f"{path}: model {name!r} is served from {old.base_path}, not "
                          f"{base_path}; change base_path in the file by hand if it moved")
    stable = old.stable
    if stable is None:
        stable = version if stable_if_new is None else stable_if_new
    new = dataclasses.replace(old, stable=stable, canary=version,
                              staged=_unstage(old.staged, stable, version))
    return _save(path, old, new)


def promote(path: str) -> LabelConfig:
    """Point ``stable`` at the canary's version (the canary label stays on it); the
    previous stable version is no longer loaded."""
    old = _existing(path, "promote")
    if old.canary is None:
        raise LabelsError(f"{path}: model {old.name!r} has no canary label to promote")
    return _save(path, old, dataclasses.replace(old, stable=old.canary))


def rollback(path: str) -> LabelConfig:
    """Point ``canary`` back at the stable version, so the rejected canary version is no
    longer loaded."""
    old = _existing(path, "roll back")
    if old.stable is None:
        raise LabelsError(f"{path}: model {old.name!r} has no stable label to roll back to")
    return _save(path, old, dataclasses.replace(old, canary=old.stable))


def move_stable(path: str, version: int) -> LabelConfig:
    """Point both labels at ``version`` (what ``kfp-ct rollback`` does); every other
    labelled version is no longer loaded. On a running server, :func:`stage` a version it
    has not loaded first."""
    _check_version(version, "the stable version", path)
    old = _existing(path, "move")
    new = dataclasses.replace(old, stable=version, canary=version,
                              staged=_unstage(old.staged, version))
    return _save(path, old, new)


def stage(path: str, version: int) -> LabelConfig:
    """Add ``version`` to the versions loaded, labels unchanged: the first of the two
    writes that move a label onto a version the server has not loaded yet."""
    _check_version(version, "the staged version", path)
    old = _existing(path, "stage a version for")
    if version in old.versions:
        return old
    return _save(path, old, dataclasses.replace(
        old, staged=tuple(sorted(set(old.staged) | {version}))))


def unstage(path: str, version: int) -> LabelConfig:
    """Drop ``version`` from the versions loaded without a label (a staged version the
    server did not load in time); labels unchanged."""
    old = _existing(path, "unstage a version from")
    return _save(path, old, dataclasses.replace(old, staged=_unstage(old.staged, version)))
