"""TF Serving ``PredictionLog`` records: the warmup file push writes, and the request log
TF Serving writes when request logging is on (what the drift check reads).

tensorflow-serving-api is not a dependency: the few messages needed are declared here
with the same field numbers (see ``_wire_messages``). TensorFlow is imported inside the
functions only.
"""

from __future__ import annotations

SIGNATURE = "serving_default"
INPUT_KEY = "examples"

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




def serialized_examples(log) -> list[bytes]:
    """The serialized tf.Examples a PredictionLog's predict request carried ([] if none)."""
    import tensorflow as tf

    if not log.HasField("predict_log"):
        return []
    inputs = log.predict_log.request.inputs
    if INPUT_KEY not in inputs:
        return []
    return [bytes(v) for v in tf.make_ndarray(inputs[INPUT_KEY]).reshape(-1).tolist()]
