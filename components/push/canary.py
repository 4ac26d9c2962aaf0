"""Serving check and TF Serving warmup requests for a SavedModel about to be pushed.

Run as ``python -m kfp_ct.components.push.canary MODEL_DIR EXAMPLES_TFRECORD N``: in a fresh
process (nothing cached from training), load the SavedModel with
``tf.saved_model.load``, take ``serving_default`` and send it the first N serialized
raw tf.Examples, once as one batch and one by one for a few of them. Every output must
be shaped ``[batch, ...]`` and, when numeric, finite. The last stdout line is one JSON
object::

    {"ok": true, "requests": n, "latency_ms_p50": 1.2, "outputs": ["classes", "scores"]}
    {"ok": false, "error": "..."}                      (exit status 1)

``write_warmup_requests`` writes ``assets.extra/tf_serving_warmup_requests``: a TFRecord
file of serialized ``tensorflow.serving.PredictionLog`` messages, which TF Serving
replays when it loads the version (the messages: ``kfp_ct.components.common.prediction_log``).

With ``--serving-check PATH``, the process also writes ``serving_check.json`` there: the N
request rows (base64 of the serialized tf.Examples) and what ``serving_default`` answered
to them as one batch, in TF Serving's REST encoding (see :func:`serving_check_record`).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time

from kfp_ct.components.common import tfenv  # noqa: F401  (before TensorFlow loads)
from kfp_ct.components.common.prediction_log import (  # noqa: F401  (re-exported for callers)
    INPUT_KEY,
    SIGNATURE,
    parse_prediction_log,
    prediction_log_bytes,
)

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
SINGLE_REQUESTS = 3  # one-by-one requests after the batch
PROFILE_ROWS = 10_000  # eval rows scored for the prediction-drift baseline
SERVING_CHECK_FORMAT = 1  # the version of serving_check.json's layout
BYTES_SUFFIX = "_bytes"  # TF Serving's REST API answers string outputs named so in base64


class CanaryError(Exception):
    """The model cannot be loaded or does not answer as a serving model must."""


# ------------------------------------------------------------------------- canary


def read_records(path: str, limit: int) -> list[bytes]:
    """The first ``limit`` records of a TFRecord file (local or gs://)."""
    import tensorflow as tf

    if limit < 1:
        raise CanaryError(f"canary needs at least 1 request row, got N={limit}")
    if not tf.io.gfile.exists(path):
        raise CanaryError(f"no canary rows: {path} does not exist")
    records = [r.numpy() for r in tf.data.TFRecordDataset(path).take(limit)]
    if not records:
        raise CanaryError(f"no canary rows: {path} holds no records")
    return records


def _check_outputs(outputs, batch: int, where: str) -> list[str]:
    import numpy as np

    if not isinstance(outputs, dict) or not outputs:
        raise CanaryError(f"{where}: {SIGNATURE} returned {type(outputs).__name__}, "
                          "expected a dict of named tensors")
    for name, tensor in outputs.items():
        value = tensor.numpy()
        if value.ndim < 1 or value.shape[0] != batch:
            raise CanaryError(f"{where}: output {name!r} has shape {list(value.shape)}, "
                              f"expected [{batch}, ...]")
        if np.issubdtype(value.dtype, np.number) and not np.all(np.isfinite(value)):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise CanaryError(f"{where}: output {name!r} has {bad} non-finite value(s)")
    return sorted(outputs)


def strip_columns(records: list[bytes], columns) -> list[bytes]:
    """The serialized tf.Examples without ``columns`` (the label, sensitive columns):
    what serving receives, and what may be kept beside a version."""
    from tensorflow.core.example import example_pb2

    columns = set(columns or ())
    if not columns:
        return list(records)
    out = []
    for record in records:
        example = example_pb2.Example.FromString(record)
        for name in columns & set(example.features.feature):
            del example.features.feature[name]
        out.append(example.SerializeToString())
    return out


def run_canary(model_dir: str, examples_path: str, n: int, profile_path: str = "",
               profile_rows: int = PROFILE_ROWS, drop: tuple[str, ...] = (),
               serving_check_path: str = "", label: str = "",
               calibration_path: str = "") -> dict:
    """Loads the model and sends it canary requests; returns the result record.

    With ``profile_path``, also scores up to ``profile_rows`` eval rows and writes the
    model's prediction profile there (the baseline of prediction drift). ``drop``: the
    columns taken out of every request first (the label: serving never gets one). With
    ``serving_check_path``, writes there the request rows and the model's answer to them
    as one batch (:func:`serving_check_record`): what a canary must answer to them.
    With ``calibration_path`` and ``label`` (classification), also writes the calibration
    of the model's top score against being right on the profile rows
    (:func:`kfp_ct.components.common.performance.fit_calibration`).

    Raises:
        CanaryError: the model does not load or does not answer properly.
    """
    import tensorflow as tf

    records = strip_columns(read_records(examples_path, n), drop)
    try:
        loaded = tf.saved_model.load(model_dir)
    except Exception as exc:  # anything TF raises on a bad SavedModel
        raise CanaryError(f"cannot load SavedModel {model_dir}: "
                          f"{type(exc).__name__}: {_first_line(exc)}") from exc
    signatures = getattr(loaded, "signatures", {}) or {}
    if SIGNATURE not in signatures:
        raise CanaryError(f"SavedModel {model_dir} has no {SIGNATURE!r} signature "
                          f"(has {sorted(signatures)})")
    fn = signatures[SIGNATURE]

    def call(batch: list[bytes], where: str):
        try:
            return fn(**{INPUT_KEY: tf.constant(batch, dtype=tf.string)})
        except Exception as exc:
            raise CanaryError(f"{where}: {SIGNATURE} failed on {len(batch)} serialized "
                              f"tf.Example(s): {type(exc).__name__}: {_first_line(exc)}") from exc

    latencies = []
    started = time.perf_counter()
    answer = call(records, "batch request")
    names = _check_outputs(answer, len(records), "batch request")
    latencies.append(time.perf_counter() - started)
    for i, record in enumerate(records[:SINGLE_REQUESTS]):
        where = f"single request {i}"
        started = time.perf_counter()
        _check_outputs(call([record], where), 1, where)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    result = {"ok": True, "requests": len(latencies), "rows": len(records),
              "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 3),
              "outputs": names}
    if serving_check_path:
        with open(serving_check_path, "w") as fh:
            json.dump(serving_check_record(records, answer), fh)
    if profile_path:
        labelled = read_records(examples_path, profile_rows)
        labels = label_values(labelled, label) if label and calibration_path else None
        profile = prediction_profile(call, strip_columns(labelled, drop), labels)
        calibration = profile.pop("calibration", None)
        with open(profile_path, "w") as fh:
            json.dump(profile, fh, indent=1)
        result["profile_rows"] = profile["rows"]
        if calibration is not None:
            with open(calibration_path, "w") as fh:
                json.dump(calibration, fh)
            result["calibration_rows"] = calibration["rows"]
    return result


def label_values(records: list[bytes], label: str) -> list[str] | None:
    """Each record's label as text, or None when a record has no single label value."""
    from tensorflow.core.example import example_pb2

    out = []
    for record in records:
        feature = example_pb2.Example.FromString(record).features.feature.get(label)
        kind = feature.WhichOneof("kind") if feature is not None else None
        values = list(getattr(feature, kind).value) if kind else []
        if len(values) != 1:
            return None
        v = values[0]
        out.append(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
    return out


def prediction_profile(call, records: list[bytes], labels: list[str] | None = None,
                       batch: int = 1024) -> dict:
    """What the model predicts on ``records``, as a drift reference (JSON-ready). With
    ``labels`` (classification), also ``"calibration"``: its top score against being
    right (:func:`kfp_ct.components.common.performance.fit_calibration`)."""
    from kfp_ct.components.common import drift, performance

    classes = []

    def outputs():
        for start in range(0, len(records), batch):
            chunk = records[start:start + batch]
            answer = call(chunk, f"profile rows {start}..{start + len(chunk) - 1}")
            out = {k: v.numpy() for k, v in answer.items()}
            if not classes and "classes" in out:
                classes.extend(c.decode() if isinstance(c, bytes) else str(c)
                               for c in out["classes"][0])
            yield out

    kind, values, scores = drift.collect_predictions(outputs())
    ref = drift.prediction_reference(kind, values)
    profile = {"rows": len(records), "source": "eval rows scored at push",
               "reference": ref.to_json()}
    if scores is not None:
        profile["confidence"] = drift.confidence_reference(scores).to_json()
        if labels is not None and len(labels) == len(values):
            correct = [str(v) == t for v, t in zip(values, labels)]
            profile["calibration"] = performance.fit_calibration(scores, correct, classes,
                                                                  predicted=values)
    return profile


def serving_check_record(records: list[bytes], answer) -> dict:
    """``serving_check.json``: the request rows and the model's answer to them (JSON-ready).

    ``records``: the serialized tf.Examples sent (label and sensitive columns already
    left out), in order; ``answer``: what ``serving_default`` returned for all of them as
    one batch (output name -> tensor shaped ``[rows, ...]``). Shape::

        {"format": 1, "signature": "serving_default", "input": "examples", "rows": n,
         "requests_b64": ["<base64 of a serialized tf.Example>", ...],
         "outputs": {name: nested list, first axis = row},
         "dtypes": {name: "float32" | "int64" | "string" | ...}}

    Values as TF Serving's REST API writes them (:func:`output_json`).
    """
    return {
        "format": SERVING_CHECK_FORMAT,
        "signature": SIGNATURE,
        "input": INPUT_KEY,
        "rows": len(records),
        "requests_b64": [base64.b64encode(r).decode("ascii") for r in records],
        "outputs": {name: output_json(name, answer[name].numpy()) for name in sorted(answer)},
        "dtypes": {name: answer[name].dtype.name for name in sorted(answer)},
    }


def output_json(name: str, value):
    """One output tensor as nested lists of JSON values, as TF Serving's REST API answers
    it: floats as numbers, integers as ints, booleans as booleans; strings as UTF-8 text,
    except for an output whose name ends in ``_bytes`` (always ``{"b64": "..."}``), and a
    value that is not valid UTF-8 (``{"b64": "..."}`` too: TF Serving would send those
    bytes raw, which is not JSON)."""
    import numpy as np

    value = np.asarray(value)
    kind = value.dtype.kind
    if kind in "OSU":
        as_bytes = name.endswith(BYTES_SUFFIX)

        def leaf(v):
            data = v.encode("utf-8") if isinstance(v, str) else bytes(v)
            if not as_bytes:
                try:
                    return data.decode("utf-8")
                except UnicodeDecodeError:
                    pass
            return {"b64": base64.b64encode(data).decode("ascii")}
    elif kind == "f":
        leaf = float
    elif kind in "iu":
        leaf = int
    elif kind == "b":
        leaf = bool
    else:
        raise CanaryError(f"output {name!r}: values of type {value.dtype} have no JSON form")

    def walk(v):
        return [walk(x) for x in v] if isinstance(v, list) else leaf(v)

    return walk(value.tolist())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    drop: tuple[str, ...] = ()
    check_path = ""
    label = calibration_path = ""
    while len(argv) >= 2 and argv[-2] in ("--drop", "--serving-check", "--label",
                                          "--calibration"):
        if argv[-2] == "--drop":  # columns left out of every request
            drop += tuple(c for c in argv[-1].split(",") if c)
        elif argv[-2] == "--label":  # the label column of the profile rows
            label = argv[-1]
        elif argv[-2] == "--calibration":  # where calibration.json goes
            calibration_path = argv[-1]
        else:  # where serving_check.json goes
            check_path = argv[-1]
        argv = argv[:-2]
    if len(argv) not in (3, 4):
        print(json.dumps({"ok": False, "error": "usage: python -m kfp_ct.components.push.canary "
                                                "MODEL_DIR EXAMPLES_TFRECORD N [PROFILE_OUT] "
                                                "[--drop COL,COL] [--serving-check OUT] "
                                                "[--label COL --calibration OUT]"}))
        return 2
    model_dir, examples, n = argv[:3]
    try:
        result = run_canary(model_dir, examples, int(n),
                            profile_path=argv[3] if len(argv) == 4 else "", drop=drop,
                            serving_check_path=check_path, label=label,
                            calibration_path=calibration_path)
    except (CanaryError, ValueError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        return 1
    except Exception as exc:  # a serving check reports, it does not crash
        print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {_first_line(exc)}"}),
              flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------- warmup requests

def write_warmup_requests(model_dir: str, records: list[bytes], model_name: str = "",
                          batch_sizes: tuple[int, ...] = (0, 1)) -> str:
    """Writes ``<model_dir>/assets.extra/tf_serving_warmup_requests``; returns its path.

    One PredictionLog per entry of ``batch_sizes`` (0 means all ``records`` in one
    request), so TF Serving warms up both the batch and the single-row path.
    """
    import tensorflow as tf

    if not records:
        raise CanaryError("no records to build warmup requests from")
    out_dir = os.path.join(model_dir, WARMUP_DIR)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for size in batch_sizes:
            batch = records if size <= 0 else records[:size]
            writer.write(prediction_log_bytes(batch, model_name))
    return path


if __name__ == "__main__":
    sys.exit(main())
