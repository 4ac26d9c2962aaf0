"""Serving check and TF Serving warmup requests for a SavedModel about to be pushed.

Run as ``python -m components.push.canary MODEL_DIR EXAMPLES_TFRECORD N``: in a fresh
process (nothing cached from training), load the SavedModel with
``tf.saved_model.load``, take ``serving_default`` and send it the first N serialized
raw tf.Examples, once as one batch and one by one for a few of them. Every output must
be shaped ``[batch, ...]`` and, when numeric, finite. The last stdout line is one JSON
object::

    {"ok": true, "requests": n, "latency_ms_p50": 1.2, "outputs": ["classes", "scores"]}
    {"ok": false, "error": "..."}                      (exit status 1)

``write_warmup_requests`` writes ``assets.extra/tf_serving_warmup_requests``: a TFRecord
file of serialized ``tensorflow.serving.PredictionLog`` messages, which TF Serving
replays when it loads the version. tensorflow-serving-api is not a dependency: the few
messages needed are declared here with the same field numbers (see ``_wire_messages``).
"""

from __future__ import annotations

import json
import os
import sys
import time

from components.common import tfenv  # noqa: F401  (before TensorFlow loads)

SIGNATURE = "serving_default"
INPUT_KEY = "examples"
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
SINGLE_REQUESTS = 3  # one-by-one requests after the batch


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


def run_canary(model_dir: str, examples_path: str, n: int) -> dict:
    """Loads the model and sends it canary requests; returns the result record.

    Raises:
        CanaryError: the model does not load or does not answer properly.
    """
    import tensorflow as tf

    records = read_records(examples_path, n)
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
    names = _check_outputs(call(records, "batch request"), len(records), "batch request")
    latencies.append(time.perf_counter() - started)
    for i, record in enumerate(records[:SINGLE_REQUESTS]):
        where = f"single request {i}"
        started = time.perf_counter()
        _check_outputs(call([record], where), 1, where)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {"ok": True, "requests": len(latencies), "rows": len(records),
            "latency_ms_p50": round(1000 * latencies[len(latencies) // 2], 3),
            "outputs": names}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:500]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(json.dumps({"ok": False, "error": "usage: python -m components.push.canary "
                                                "MODEL_DIR EXAMPLES_TFRECORD N"}))
        return 2
    model_dir, examples, n = argv
    try:
        result = run_canary(model_dir, examples, int(n))
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

_WIRE_FILE = "kfp_ct/tf_serving_warmup.proto"
_WIRE_PACKAGE = "kfp_ct.tf_serving_wire"
_wire_cache: dict = {}


def _wire_messages() -> dict:
    """Message classes wire-compatible with TF Serving's warmup records.

    Field numbers copied from tensorflow_serving/apis/prediction_log.proto
    (PredictionLog.predict_log = 6; PredictLog.request = 1), tensorflow_serving/apis/
    predict.proto (PredictRequest.model_spec = 1, inputs = 2 as
    map<string, tensorflow.TensorProto>) and tensorflow_serving/apis/model.proto
    (ModelSpec.name = 1, signature_name = 3). Only the fields we write are declared;
    the package name differs on purpose (no clash if tensorflow-serving-api is ever
    imported) and does not appear on the wire. TensorProto is TensorFlow's own.
    """
    if _wire_cache:
        return _wire_cache
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from tensorflow.core.framework import tensor_pb2

    f = descriptor_pb2.FieldDescriptorProto
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_WIRE_FILE)
    except KeyError:
        fd = descriptor_pb2.FileDescriptorProto(
            name=_WIRE_FILE, package=_WIRE_PACKAGE, syntax="proto3",
            dependency=[tensor_pb2.DESCRIPTOR.name])

        def message(name, fields, nested=()):
            m = fd.message_type.add(name=name)
            for fname, number, ftype, type_name, label in fields:
                field = m.field.add(name=fname, number=number, type=ftype, label=label)
                if type_name:
                    field.type_name = type_name
            for n in nested:
                m.nested_type.add().CopyFrom(n)
            return m

        opt, rep = f.LABEL_OPTIONAL, f.LABEL_REPEATED
        message("ModelSpec", [("name", 1, f.TYPE_STRING, "", opt),
                              ("signature_name", 3, f.TYPE_STRING, "", opt)])
        entry = descriptor_pb2.DescriptorProto(name="InputsEntry")
        entry.field.add(name="key", number=1, type=f.TYPE_STRING, label=opt)
        entry.field.add(name="value", number=2, type=f.TYPE_MESSAGE, label=opt,
                        type_name=".tensorflow.TensorProto")
        entry.options.map_entry = True
        message("PredictRequest", [
            ("model_spec", 1, f.TYPE_MESSAGE, f".{_WIRE_PACKAGE}.ModelSpec", opt),
            ("inputs", 2, f.TYPE_MESSAGE, f".{_WIRE_PACKAGE}.PredictRequest.InputsEntry", rep),
        ], nested=[entry])
        message("PredictLog", [
            ("request", 1, f.TYPE_MESSAGE, f".{_WIRE_PACKAGE}.PredictRequest", opt)])
        message("PredictionLog", [
            ("predict_log", 6, f.TYPE_MESSAGE, f".{_WIRE_PACKAGE}.PredictLog", opt)])
        pool.AddSerializedFile(fd.SerializeToString())
    for name in ("ModelSpec", "PredictRequest", "PredictLog", "PredictionLog"):
        desc = pool.FindMessageTypeByName(f"{_WIRE_PACKAGE}.{name}")
        _wire_cache[name] = message_factory.GetMessageClass(desc)
    return _wire_cache


def prediction_log_bytes(records: list[bytes], model_name: str = "") -> bytes:
    """One serialized PredictionLog asking ``serving_default`` about ``records``."""
    import tensorflow as tf

    msgs = _wire_messages()
    log = msgs["PredictionLog"]()
    request = log.predict_log.request
    request.model_spec.name = model_name
    request.model_spec.signature_name = SIGNATURE
    request.inputs[INPUT_KEY].CopyFrom(
        tf.make_tensor_proto(list(records), dtype=tf.string, shape=[len(records)]))
    return log.SerializeToString()


def parse_prediction_log(data: bytes):
    """Parses bytes written by ``prediction_log_bytes`` (tests, inspection)."""
    msg = _wire_messages()["PredictionLog"]()
    msg.ParseFromString(data)
    return msg


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
