"""The problem definition a user gives: a declarative spec, optionally with a user module.

A spec is JSON (inline text or a path, local or ``gs://``)::

    {
      "label": "species",
      "task": "classification",            # or "regression"
      "numeric": ["bill_length_mm", ...],
      "categorical": ["island", "sex"],
      "key": null,                         # column hashed for the train/eval split; null: the whole row
      "eval_percent": 20,
      "options": {"body_mass_g": {"log": true}, "island": {"top_k": 20, "oov_buckets": 1}},
      "model": {"hidden_units": [32, 16], "learning_rate": 0.01, "batch_size": 32},
      "module_file": null                  # optional: a Python file with preprocessing_fn / build_model
    }

The spec always names the label and the columns, because validation needs the required
columns and evaluation needs the label even when a user module does the preprocessing.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import types
import unicodedata
import uuid
from typing import Any

from kfp_ct.components.common import storage
from kfp_ct.components.common.errors import ProblemSpecError, StorageError

TASKS = ("classification", "regression")
_NUMERIC_OPTIONS = {"log", "clip_min", "clip_max", "buckets"}
_CATEGORICAL_OPTIONS = {"top_k", "oov_buckets"}
_MODEL_OPTIONS = {"hidden_units", "learning_rate", "batch_size", "dropout"}


@dataclasses.dataclass(frozen=True)
class ProblemSpec:
    label: str
    task: str
    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    key: str | None = None
    eval_percent: int = 20
    options: dict = dataclasses.field(default_factory=dict)
    model: dict = dataclasses.field(default_factory=dict)
    module_file: str | None = None
    # Evaluation slices when the pipeline's `slices` parameter is empty.
    slices: tuple[str, ...] = ()
    # Columns that never leave the training data: dropped (with the label) from the
    # warmup requests kept beside each pushed version.
    sensitive: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric + self.categorical

    @property
    def required_columns(self) -> tuple[str, ...]:
        cols = (self.label,) + self.features
        return cols + ((self.key,) if self.key and self.key not in cols else ())

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


def _fail(msg: str) -> None:
    raise ProblemSpecError(f"problem spec: {msg}")


def parse_problem(data: dict[str, Any], source: str = "<inline>") -> ProblemSpec:
    """Checks a spec dict field by field and returns a ProblemSpec."""
    if not isinstance(data, dict):
        _fail(f"{source}: expected a JSON object, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(ProblemSpec)}
    unknown = sorted(set(data) - known)
    if unknown:
        _fail(f"{source}: unknown field(s) {unknown}; known fields: {sorted(known)}")
    label = data.get("label")
    if not isinstance(label, str) or not label:
        _fail(f"{source}: 'label' must be a non-empty column name, got {label!r}")
    task = data.get("task", "classification")
    if task not in TASKS:
        _fail(f"{source}: 'task' must be one of {TASKS}, got {task!r}")
    lists = {}
    for name in ("numeric", "categorical"):
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            _fail(f"{source}: '{name}' must be a list of column names, got {value!r}")
        lists[name] = tuple(value)
    features = lists["numeric"] + lists["categorical"]
    if not features:
        _fail(f"{source}: declare at least one feature in 'numeric' or 'categorical'")
    dupes = sorted({f for f in features if features.count(f) > 1})
    if dupes:
        _fail(f"{source}: column(s) {dupes} declared more than once")
    if label in features:
        _fail(f"{source}: the label {label!r} is also declared as a feature")
    key = data.get("key")
    if key is not None and (not isinstance(key, str) or not key):
        _fail(f"{source}: 'key' must be a column name or null, got {key!r}")
    eval_percent = data.get("eval_percent", 20)
    if not isinstance(eval_percent, int) or not 1 <= eval_percent <= 99:
        _fail(f"{source}: 'eval_percent' must be an integer in 1..99, got {eval_percent!r}")
    options = data.get("options", {}) or {}
    if not isinstance(options, dict):
        _fail(f"{source}: 'options' must be an object keyed by feature name")
    for feature, opts in options.items():
        if feature not in features:
            _fail(f"{source}: options given for {feature!r}, which is not a declared feature")
        allowed = _NUMERIC_OPTIONS if feature in lists["numeric"] else _CATEGORICAL_OPTIONS
        bad = sorted(set(opts) - allowed) if isinstance(opts, dict) else ["<not an object>"]
        if bad:
            _fail(f"{source}: feature {feature!r} has unknown option(s) {bad}; allowed: {sorted(allowed)}")
    model = data.get("model", {}) or {}
    bad = sorted(set(model) - _MODEL_OPTIONS) if isinstance(model, dict) else ["<not an object>"]
    if bad:
        _fail(f"{source}: 'model' has unknown option(s) {bad}; allowed: {sorted(_MODEL_OPTIONS)}")
    module_file = data.get("module_file")
    if module_file is not None and (not isinstance(module_file, str) or not module_file):
        _fail(f"{source}: 'module_file' must be a path or null, got {module_file!r}")
    if key is not None and key == label:
        _fail(f"{source}: the label {label!r} is also the split 'key': hashing the label "
              f"puts whole classes or value ranges into the eval split; name a row id as "
              f"the key, or null to hash the whole row")
    columns = (label,) + features + ((key,) if key and key not in features else ())
    _check_distinct_names(columns, label, lists, source)
    for name in ("slices", "sensitive"):
        value = data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            _fail(f"{source}: '{name}' must be a list of column names, got {value!r}")
        unknown = [v for v in value if v not in columns]
        if unknown:
            _fail(f"{source}: '{name}' names {unknown}, not column(s) of the spec; its "
                  f"columns: {list(columns)}")
        lists[name] = tuple(dict.fromkeys(value))
    return ProblemSpec(label=label, task=task, numeric=lists["numeric"],
                       categorical=lists["categorical"], key=key, eval_percent=eval_percent,
                       options=dict(options), model=dict(model), module_file=module_file,
                       slices=lists["slices"], sensitive=lists["sensitive"])


def fold_name(name: str) -> str:
    """A column name as a person reads it: Unicode-normalized, case and surrounding or
    repeated blanks (and a byte-order mark) ignored. Two names that fold alike are one
    name to a reader, so kfp-ct never picks between them."""
    return " ".join(unicodedata.normalize("NFKC", name).replace("\ufeff", "")
                    .casefold().split())


def _check_distinct_names(columns, label, lists, source) -> None:
    """Two spec columns whose names read the same (case, blanks) name one column in two
    roles as far as a person or a file header can tell: refused."""
    first: dict[str, str] = {}
    for name in columns:
        other = first.setdefault(fold_name(name), name)
        if other != name:
            roles = []
            for column in (other, name):
                role = ("label" if column == label else
                        "numeric" if column in lists["numeric"] else
                        "categorical" if column in lists["categorical"] else "key")
                roles.append(f"{column!r} ({role})")
            _fail(f"{source}: {roles[0]} and {roles[1]} differ only in case or blanks: one "
                  f"column cannot hold two roles, and two columns so named are ambiguous; "
                  f"rename one")


def load_problem(text_or_path: str) -> ProblemSpec:
    """Reads a spec given inline as JSON text or as a path (local or gs://) to a JSON file."""
    text = (text_or_path or "").strip()
    if not text:
        _fail("empty: give inline JSON or a path to a JSON file")
    source = "<inline>"
    if not text.startswith("{"):
        source = text
        try:
            text = storage.read_text(text)
        except StorageError as exc:
            raise ProblemSpecError(
                f"problem spec {source}: not inline JSON (which starts with '{{') and not a "
                f"readable file: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProblemSpecError(f"problem spec {source}: not valid JSON: {exc}") from None
    return parse_problem(data, source)


USER_MODULE_PREFIX = "kfp_ct_user_module_"


def load_user_module(path: str) -> types.ModuleType:
    """Imports a user module file (local or gs://) under a private name."""
    with storage.local_copy(path) as local:
        name = f"{USER_MODULE_PREFIX}{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(name, local)
        if spec is None or spec.loader is None:
            raise ProblemSpecError(f"user module {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's code: report it, with its type
            sys.modules.pop(name, None)
            raise ProblemSpecError(
                f"user module {path} raised on import: {type(exc).__name__}: {exc}") from exc
    return module


def user_function(spec: ProblemSpec, name: str, required: bool):
    """The function `name` from the spec's user module, or None when there is no module."""
    if not spec.module_file:
        return None
    module = load_user_module(spec.module_file)
    fn = getattr(module, name, None)
    if fn is None:
        if required:
            raise ProblemSpecError(
                f"user module {spec.module_file} has no function {name!r}; "
                f"it must define {name}(...) (see README, 'Problem definition')")
        return None
    if not callable(fn):
        raise ProblemSpecError(f"user module {spec.module_file}: {name!r} is not callable")
    return fn
