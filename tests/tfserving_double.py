"""A TF Serving REST API double that serves real SavedModels, on 127.0.0.1.

The answers follow TF Serving 2.x (tensorflow_serving/model_servers/http_rest_api_handler.cc,
http_rest_api_util.cc, get_model_status_impl.cc and util/json_tensor.cc):

- ``GET /v1/models/<name>``: ``{"model_version_status": [...]}``, every version, newest
  first; ``/versions/<v>``: that version only. ``/labels/<label>``: TF Serving's model
  status ignores the label, so this answers every version too, and an unknown label is
  not an error there; a label is resolved by predict and ``/metadata``.
- ``GET .../metadata``: ``{"model_spec": {"name", "signature_name": "", "version"},
  "metadata": {"signature_def": {"signature_def": {...}}}}``: the version that the path
  (bare, version or label) resolves to, and its SavedModel's signatures.
- ``POST /v1/models/<name>[/versions/<v>|/labels/<label>]:predict``, row format
  (``instances``: ``{"predictions": [...]}``, a row being ``{output: value}`` with several
  outputs and the bare value with one) or columnar (``inputs``: ``{"outputs": {output:
  list}}``, or ``{"outputs": list}`` with one output). ``{"b64": ...}`` values are decoded;
  string outputs are written as the raw bytes (not JSON when they are not UTF-8, as TF
  Serving does), in base64 when the output name ends in ``_bytes``; floats as TF Serving
  prints them (``%g``, or 9 significant digits when that does not round-trip).
- Errors are ``{"error": "..."}``: unknown model or version 404 (``Could not find any
  versions of model m``, ``Could not find version 3 of model m`` for status;
  ``Servable not found for request: Latest(m)`` / ``Specific(m, 3)`` for predict and
  metadata), unknown label 400 (``Unrecognized servable version label: x``), bad JSON,
  no ``instances`` nor ``inputs``, wrong types or shapes 400.

For tests: ``fail_predict = (status, message)`` answers every predict so; ``tamper(answer)``
changes a predict answer before it is sent; ``delay_s`` delays every predict; ``states``
(version -> state, e.g. ``"LOADING"``) makes a version not available yet. Every request
is recorded in ``requests`` as ``(method, path, parsed JSON body or None)``.

TensorFlow (and numpy) are imported inside the methods only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

# http_rest_api_util.cc: the paths TF Serving's REST API answers (case-insensitive).
_PREDICT_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                         r":(classify|regress|predict)", re.IGNORECASE)
_STATUS_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                        r"(?:/(metadata))?", re.IGNORECASE)
_API_RE = re.compile(r"/v1/.*", re.IGNORECASE)

BYTES_SUFFIX = "_bytes"
DEFAULT_SIGNATURE = "serving_default"


class RestError(Exception):
    """An answer other than 200: ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _bad(message: str) -> RestError:
    return RestError(400, message)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


class ModelServerDouble:
    """TF Serving's REST API for one model name, serving ``versions`` (number ->
    SavedModel directory). ``start()`` / ``stop()``, or use it as a context manager."""

    def __init__(self, name: str, versions: dict[int, str]):
        self.name = name
        self.versions: dict[int, str] = {int(v): str(p) for v, p in versions.items()}
        self.labels: dict[str, int] = {}
        self.states: dict[int, str] = {}  # version -> state; absent: "AVAILABLE"
        self.fail_predict: tuple[int, str] | None = None
        self.tamper: Callable[[dict], dict] | None = None
        self.delay_s: float = 0.0
        self.requests: list[tuple[str, str, Any]] = []
        self._loaded: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the model server double is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "ModelServerDouble":
        if self._server is not None:
            return self
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                double._handle(self, "GET")

            def do_POST(self):
                double._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name=f"tfserving-double-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> "ModelServerDouble":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --------------------------------------------------------------- requests

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append((method, handler.path, body))
        path = urllib.parse.urlsplit(handler.path).path
        try:
            status, answer = 200, self._dispatch(method, path, raw)
        except RestError as exc:
            status, answer = exc.status, {"error": exc.message}
        except Exception as exc:  # the double's own failure (a model that does not load)
            status, answer = 500, {"error": f"{type(exc).__name__}: {exc}"}
        if answer is None:  # not an API path: what TF Serving's HTTP server answers
            status, data, ctype = 404, b"Not Found", "text/plain"
        else:
            # ensure_ascii=False and surrogateescape: non-UTF-8 string outputs go out as
            # their raw bytes, as TF Serving writes them.
            data = json.dumps(answer, ensure_ascii=False).encode("utf-8", "surrogateescape")
            ctype = "application/json"
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _dispatch(self, method: str, path: str, raw: bytes) -> dict | None:
        if not _API_RE.fullmatch(path):
            return None  # TF Serving's HTTP server has no handler for it
        malformed = _bad(f"Malformed request: {method} {path}")
        if method == "POST":
            m = _PREDICT_RE.fullmatch(path)
            if not m:
                raise malformed
            name, version, label, verb = m.groups()
            name, version, label = self._spec(name, version, label)
            if verb.lower() != "predict":
                raise RestError(501, f"{verb} is not answered by this double (predict only)")
            return self._predict(name, version, label, raw)
        m = _STATUS_RE.fullmatch(path)
        if method != "GET" or not m:
            raise malformed
        name, version, label, sub = m.groups()
        name, version, label = self._spec(name or "", version, label)
        if not name:
            raise _bad("Missing model name in request.")
        if sub:
            return self._metadata(name, version, label)
        return self._status(name, version)

    @staticmethod
    def _spec(name: str, version: str | None, label: str | None):
        return (urllib.parse.unquote(name), int(version) if version else None,
                urllib.parse.unquote(label) if label else None)

    # ------------------------------------------------------------ model status

    def _state(self, version: int) -> str:
        return self.states.get(version, "AVAILABLE")

    def _version_status(self, version: int) -> dict:
        return {"version": str(version), "state": self._state(version),
                "status": {"error_code": "OK", "error_message": ""}}

    def _status(self, name: str, version: int | None) -> dict:
        known = sorted(self.versions, reverse=True) if name == self.name else []
        if version is not None:  # a label is not looked at (get_model_status_impl.cc)
            if version not in known:
                raise RestError(404, f"Could not find version {version} of model {name}")
            return {"model_version_status": [self._version_status(version)]}
        if not known:
            raise RestError(404, f"Could not find any versions of model {name}")
        return {"model_version_status": [self._version_status(v) for v in known]}

    def _resolve(self, name: str, version: int | None, label: str | None) -> int:
        """The version a request names (ServerCore::GetServableHandle)."""
        if label is not None:
            if name != self.name or label not in self.labels:
                raise _bad(f"Unrecognized servable version label: {label}")
            version = self.labels[label]
        available = [v for v in self.versions if self._state(v) == "AVAILABLE"] \
            if name == self.name else []
        if version is None:
            if not available:
                raise RestError(404, f"Servable not found for request: Latest({name})")
            return max(available)
        if version not in available:
            raise RestError(404, f"Servable not found for request: Specific({name}, {version})")
        return version

    def _metadata(self, name: str, version: int | None, label: str | None) -> dict:
        from google.protobuf import json_format
        from tensorflow.core.protobuf import saved_model_pb2

        resolved = self._resolve(name, version, label)
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(self.versions[resolved], "saved_model.pb"), "rb") as fh:
            saved.ParseFromString(fh.read())
        meta_graph = next((g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags),
                          saved.meta_graphs[0])
        signatures = {key: json_format.MessageToDict(
            sig, preserving_proto_field_name=True, including_default_value_fields=True)
            for key, sig in meta_graph.signature_def.items()
            if not key.startswith("__")}  # TF's internal __saved_model_init_op
        return {"model_spec": {"name": name, "signature_name": "", "version": str(resolved)},
                "metadata": {"signature_def": {"signature_def": signatures}}}

    # ----------------------------------------------------------------- predict

    def _model(self, version: int):
        with self._load_lock:
            if version not in self._loaded:
                import tensorflow as tf

                self._loaded[version] = tf.saved_model.load(self.versions[version])
            return self._loaded[version]

    def _predict(self, name: str, version: int | None, label: str | None, raw: bytes) -> dict:
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_predict is not None:
            status, message = self.fail_predict
            raise RestError(int(status), str(message))
        # json_tensor.cc FillPredictRequestFromJson, in its order.
        if not raw:
            raise _bad("JSON Parse error: The document is empty")
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise _bad(f"JSON Parse error: {getattr(exc, 'msg', exc)} "
                       f"at offset: {getattr(exc, 'pos', 0)}") from None
        if not isinstance(doc, dict):
            raise _bad(f"JSON Value: {_json_text(doc)} Is not object")
        signature = doc.get("signature_name", "")
        if not isinstance(signature, str):
            raise _bad(f"JSON Value: {_json_text(doc)} not formatted correctly. "
                       "'signature_name' key must be a string value.")
        resolved = self._resolve(name, version, label)
        model = self._model(resolved)
        signame = signature or DEFAULT_SIGNATURE
        if signame not in model.signatures:
            raise _bad(f'Serving signature name: "{signame}" not found in signature def')
        fn = model.signatures[signame]
        specs = dict(fn.structured_input_signature[1])
        if "instances" in doc and "inputs" in doc:
            raise _bad(f"JSON Value: {_json_text(doc)} Not formatted correctly expecting only "
                       "one of 'inputs' or 'instances' keys to exist ")
        if "instances" in doc:
            row_format = True
            inputs = self._from_instances(doc, specs)
        elif "inputs" in doc:
            row_format = False
            inputs = self._from_inputs(doc["inputs"], specs)
        else:
            raise _bad("Missing 'inputs' or 'instances' key")
        answer = self._run(fn, inputs, specs)
        out = self._row_answer(answer) if row_format else self._columnar_answer(answer)
        if self.tamper is not None:
            out = self.tamper(out)
        return out

    def _from_instances(self, doc: dict, specs: dict) -> dict:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise _bad(f"JSON Value: {_json_text(doc)} Excepting 'instances' to be an "
                       "list/array")
        if not instances:
            raise _bad(f"JSON Value: {_json_text(doc)} No values in 'instances' array")

        def is_object(v):
            return isinstance(v, dict) and not _is_b64(v)

        if not isinstance(instances[0], dict) and len(specs) > 1:
            raise _bad("instances is a plain list, but expecting list of objects as multiple "
                       "input tensors required as per tensorinfo_map")
        objects = is_object(instances[0])
        items: dict[str, list] = {n: [] for n in specs}
        shapes: dict[str, list[int]] = {}
        for i, elem in enumerate(instances):
            if objects:
                if not is_object(elem):
                    raise _bad(f"Expecting object but got list at item {i} of input list")
                for key, value in elem.items():
                    if key not in specs:
                        raise _bad(f"Failed to process element: {i} key: {key} of 'instances' "
                                   "list. Error: INVALID_ARGUMENT: JSON object: does not have "
                                   f"named input: {key}")
                    self._add_item(items, shapes, key, value, specs[key], i, key)
                if set(elem) != set(specs):
                    raise _bad(f"Failed to process element: {i} of 'instances' list. JSON "
                               f"object: {_json_text(elem)} must only have keys: "
                               f"{','.join(sorted(specs))}")
            else:
                if is_object(elem):
                    raise _bad(f"Expecting value/list but got object at item {i} of input "
                               "list")
                key = sorted(specs)[0]
                self._add_item(items, shapes, key, elem, specs[key], i, None)
        return {n: self._stack(v, shapes[n]) for n, v in items.items()}

    def _add_item(self, items, shapes, name, value, spec, index, key):
        try:
            array, shape = self._tensor(value, spec)
        except RestError as exc:
            where = f" key: {key}" if key is not None else ""
            raise _bad(f"Failed to process element: {index}{where} of 'instances' list. "
                       f"Error: INVALID_ARGUMENT: {exc.message}") from None
        if name in shapes and shapes[name] != shape:
            raise _bad(f"Expecting shape [{','.join(map(str, shapes[name]))}] but got: "
                       f"[{','.join(map(str, shape))}]")
        shapes[name] = shape
        items[name].append(array)

    @staticmethod
    def _stack(arrays: list, shape: list[int]):
        import numpy as np

        return np.stack(arrays) if arrays else np.zeros([0] + shape)

    def _from_inputs(self, value: Any, specs: dict) -> dict:
        if not isinstance(value, dict) or _is_b64(value):
            if len(specs) > 1:
                raise _bad("inputs is a plain value/list, but expecting an object as multiple "
                           "input tensors required as per tensorinfo_map")
            name = sorted(specs)[0]
            return {name: self._tensor(value, specs[name])[0]}
        out = {}
        for name in sorted(specs):
            if name not in value:
                raise _bad(f"Missing named input: {name} in 'inputs' object.")
            out[name] = self._tensor(value[name], specs[name])[0]
        return out

    def _tensor(self, value: Any, spec):
        """A JSON value as a numpy array of the spec's dtype (json_tensor.cc
        FillTensorProto: the shape from the first elements; every list of that size)."""
        import numpy as np

        dtype = spec.dtype
        shape: list[int] = []
        probe = value
        while isinstance(probe, list):
            shape.append(len(probe))
            probe = probe[0] if probe else None
        rank = len(shape)
        flat: list = []

        def fill(v, level):
            if not isinstance(v, list):
                if level != rank:
                    raise _bad(f"JSON Value: {_json_text(v)} found at incorrect level: "
                               f"{level + 1} in the JSON DOM. Expected at level: {rank}")
                flat.append(self._leaf(v, dtype))
                return
            if level >= rank:
                raise _bad(f"Encountered list at unexpected level: {level} expected < {rank}")
            if len(v) != shape[level]:
                raise _bad(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                           f"expected size: {shape[level]}")
            for x in v:
                fill(x, level + 1)

        fill(value, 0)
        np_dtype = object if dtype.name == "string" else dtype.as_numpy_dtype
        array = np.array(flat, dtype=np_dtype).reshape(shape)
        return array, shape

    @staticmethod
    def _leaf(v: Any, dtype):
        def type_error():
            return _bad(f"JSON Value: {_json_text(v)} Type: {_json_type(v)} is not of expected "
                        f"type: {dtype.name}")

        if dtype.name == "string":
            if isinstance(v, dict):
                if not _is_b64(v):
                    raise _bad(f"JSON Value: {_json_text(v)} not formatted correctly for "
                               "base64 data")
                try:
                    return base64.b64decode(v["b64"], validate=True)
                except (binascii.Error, ValueError):
                    raise _bad("Unable to base64 decode") from None
            if isinstance(v, str):
                return v.encode("utf-8", "surrogatepass")
            raise type_error()
        if isinstance(v, dict):
            raise type_error()
        if dtype.is_bool:
            if not isinstance(v, bool):
                raise type_error()
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise type_error()
        if dtype.is_floating:
            return float(v)
        if not isinstance(v, int):
            raise type_error()
        return v

    @staticmethod
    def _run(fn, inputs: dict, specs: dict) -> dict:
        import tensorflow as tf

        try:
            tensors = {n: tf.constant(a, dtype=specs[n].dtype) for n, a in inputs.items()}
            answer = fn(**tensors)
        except tf.errors.OpError as exc:
            status = {tf.errors.InvalidArgumentError: 400, tf.errors.NotFoundError: 404,
                      tf.errors.FailedPreconditionError: 400,
                      tf.errors.OutOfRangeError: 400,
                      tf.errors.ResourceExhaustedError: 429,
                      tf.errors.UnimplementedError: 501,
                      tf.errors.UnavailableError: 503,
                      tf.errors.DeadlineExceededError: 504}.get(type(exc), 500)
            raise RestError(status, exc.message) from None
        except (TypeError, ValueError) as exc:  # the signature refuses the tensors
            raise _bad(str(exc).strip().splitlines()[0] if str(exc).strip() else
                       type(exc).__name__) from None
        if not isinstance(answer, dict):
            answer = {"output_0": answer}
        return {name: t.numpy() for name, t in answer.items()}

    # ----------------------------------------------------------------- answers

    @staticmethod
    def _value(name: str, array, v):
        """One value as TF Serving's REST API writes it (json_tensor.cc)."""
        import numpy as np

        kind = array.dtype.kind
        if kind in "OSU":
            data = v.encode("utf-8") if isinstance(v, str) else bytes(v)
            if name.endswith(BYTES_SUFFIX):
                return {"b64": base64.b64encode(data).decode("ascii")}
            return data.decode("utf-8", "surrogateescape")  # raw bytes on the wire
        if kind == "f":
            x = float(v)
            if x != x or x in (float("inf"), float("-inf")):
                return x  # NaN, Infinity, -Infinity
            wide = array.dtype.itemsize > 4
            text = "%g" % x
            same = float(text) == x if wide else np.float32(float(text)) == np.float32(x)
            if not same:
                text = ("%.17g" if wide else "%.9g") % x
            return float(text)
        if kind in "iu":
            return int(v)
        if kind == "b":
            return bool(v)
        raise _bad(f"Failed to write JSON value for tensor type: {array.dtype}")

    def _values(self, name: str, array, value):
        if isinstance(value, list):
            return [self._values(name, array, x) for x in value]
        return self._value(name, array, value)

    def _row_answer(self, answer: dict) -> dict:
        batch = 0
        for name in sorted(answer):
            array = answer[name]
            if array.ndim == 0:
                raise _bad(f"Tensor name: {name} has no shape information ")
            if array.shape[0] < 1:
                raise _bad(f"Tensor name: {name} has invalid batch size: {array.shape[0]}")
            if batch and array.shape[0] != batch:
                raise _bad(f"Tensor name: {name} has inconsistent batch size: "
                           f"{array.shape[0]} expecting: {batch}")
            batch = array.shape[0]
        names = sorted(answer)
        rows = []
        for i in range(batch):
            row = {n: self._values(n, answer[n], answer[n][i:i + 1].tolist()[0])
                   for n in names}
            rows.append(row if len(names) > 1 else row[names[0]])
        return {"predictions": rows}

    def _columnar_answer(self, answer: dict) -> dict:
        outputs = {n: self._values(n, answer[n], answer[n].tolist()) for n in sorted(answer)}
        return {"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))}

