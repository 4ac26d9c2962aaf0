"""Shared test fixtures: a real GCS emulator for gs:// tests."""

import os

# tf_keras (Keras 2) must be chosen before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402

# gcp-storage-emulator depends on pyfilesystem2 ("fs"), which still calls
# pkg_resources; setuptools >= 81 no longer ships it. When it is missing, run the
# emulator with a minimal stand-in (namespace declaration is a no-op, entry points
# come from importlib.metadata), so the tests do not depend on the setuptools version.
_LAUNCHER = r"""
import importlib.metadata, runpy, sys, types
try:
    import pkg_resources  # noqa: F401
except ImportError:
    shim = types.ModuleType("pkg_resources")
    shim.declare_namespace = lambda name: None
    def iter_entry_points(group, name=None):
        for ep in importlib.metadata.entry_points(group=group):
            if name is None or ep.name == name:
                yield ep
    shim.iter_entry_points = iter_entry_points
    sys.modules["pkg_resources"] = shim
# The emulator ignores GCS preconditions; the real service honours ifGenerationMatch on
# uploads (create-only records depend on it). Honour it here too, atomically.
import http, threading
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects
_insert, _lock = objects.insert, threading.Lock()
def insert(request, response, storage, *args, **kwargs):
    wanted = request.query.get("ifGenerationMatch")
    if not wanted:
        return _insert(request, response, storage, *args, **kwargs)
    with _lock:
        name = (request.query.get("name") or [None])[0]
        if name is None and isinstance(request.data, dict):
            name = (request.data.get("meta") or {}).get("name")
        try:
            current = str(storage.get_file_obj(request.params["bucket_name"], name)["generation"])
        except NotFound:
            current = "0"
        if current != wanted[0]:
            response.status = http.HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": "Precondition Failed",
                                     "errors": [{"reason": "conditionNotMet"}]}})
            return
        return _insert(request, response, storage, *args, **kwargs)
objects.insert = insert
# The emulator's batch endpoint knows PATCH and DELETE only; Beam's GCS I/O finalizes its
# file writes with batched copies (copyTo), which the real service accepts. Add them.
_batch = objects.batch
def batch(request, response, storage, *args, **kwargs):
    if not any(item.get("dest_object_id") for item in request.data or []):
        return _batch(request, response, storage, *args, **kwargs)
    boundary = "batch_kfpct"
    response["Content-Type"] = "multipart/mixed; boundary=" + boundary
    for item in request.data:
        response.write("--%s\r\nContent-Type: application/http\r\n\r\n" % boundary)
        try:
            if item.get("dest_object_id"):
                src = storage.get_file_obj(item["bucket_name"], item["object_id"])
                content = storage.get_file(item["bucket_name"], item["object_id"])
                dest = objects._make_object_resource(
                    request.base_url, item["dest_bucket_name"], item["dest_object_id"],
                    src["contentType"], src["size"], src)
                dest = objects._checksums(content, dest)
                storage.create_file(item["dest_bucket_name"], item["dest_object_id"],
                                    content, dest)
                response.write("HTTP/1.1 200 OK\r\nContent-Type: application/json; "
                               "charset=UTF-8\r\n\r\n" + json.dumps(dest) + "\r\n\r\n")
            elif item.get("method") == "DELETE" and objects._delete(
                    storage, item["bucket_name"], item["object_id"]):
                response.write("HTTP/1.1 204 No Content\r\n\r\n")
            else:
                raise NotFound
        except NotFound:
            response.write("HTTP/1.1 404 Not Found\r\nContent-Type: application/json; "
                           "charset=UTF-8\r\n\r\n" + json.dumps(
                               {"error": {"code": 404, "message": "Not Found"}}) + "\r\n\r\n")
    response.write("--%s--" % boundary)
objects.batch = batch
import json
from gcp_storage_emulator import server, settings
server.BATCH_HANDLERS = server.BATCH_HANDLERS + (
    r"^(?P<method>POST) .*%s/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>[^/?\s]+)"
    r"/copyTo/b/(?P<dest_bucket_name>[-.\w]+)/o/(?P<dest_object_id>[^/?\s]+)"
    r"([\?][^\s]*)?( HTTP/1\.1)?$" % settings.API_ENDPOINT,)
sys.argv = ["gcp_storage_emulator"] + sys.argv[1:]
runpy.run_module("gcp_storage_emulator", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class GcsEmulator:
    host: str  # e.g. "http://127.0.0.1:9023", the STORAGE_EMULATOR_HOST value
    project: str = "test"

    def new_bucket(self, prefix: str = "kfpct") -> str:
        """Create a bucket with a unique name; return ``gs://<bucket>``."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        req = urllib.request.Request(
            f"{self.host}/storage/v1/b?project={self.project}",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200, resp.status
        return f"gs://{name}"


@pytest.fixture(scope="session")
def gcs_emulator():
    port = _free_port()
    host = f"http://127.0.0.1:{port}"
    # The server logs every request: a file, not a pipe nobody drains.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCHER, "start", "--host", "127.0.0.1",
         "--port", str(port), "--in-memory", "--quiet"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                log.seek(0)
                out = log.read().decode(errors="replace")
                pytest.fail(f"gcp-storage-emulator exited with {proc.returncode}:\n{out}")
            try:
                with urllib.request.urlopen(f"{host}/storage/v1/b?project=test", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(f"gcp-storage-emulator did not answer on {host} within 30 s")
                time.sleep(0.1)

        saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST",)}
        os.environ["STORAGE_EMULATOR_HOST"] = host  # subprocesses inherit it
        try:
            yield GcsEmulator(host=host)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def gcs_upload_order(monkeypatch):
    """Records the object names uploaded with Blob.upload_from_filename, in order."""
    from google.cloud.storage import Blob

    order: list[str] = []
    real = Blob.upload_from_filename

    def spy(self, filename, *args, **kwargs):
        order.append(self.name)
        return real(self, filename, *args, **kwargs)

    monkeypatch.setattr(Blob, "upload_from_filename", spy)
    return order


# --------------------------------------------------------------- drift baselines

from drift_base import make_stats_only_base  # noqa: E402  (tests/ is on sys.path)


PENGUINS_PROBLEM_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                     "pipelines", "penguins", "problem.json")


@pytest.fixture(scope="session")
def penguins_transformed(tmp_path_factory) -> dict:
    """The pipeline's transform of the bundled penguins, made once for the whole session:
    {"root", "graph", "examples", "raw"}. Tests read these folders and never write there
    (they write under tmp_path)."""
    from kfp_ct.components.transform.logic import run_transform

    root = tmp_path_factory.mktemp("penguins_transformed")
    paths = {k: str(root / k) for k in ("graph", "examples", "raw")}
    run_transform("bundled:penguins", PENGUINS_PROBLEM_FILE, paths["graph"],
                  paths["examples"], paths["raw"])
    return {"root": root, **paths}


@pytest.fixture(scope="session")
def penguins_model(penguins_transformed, tmp_path_factory) -> dict:
    """penguins_transformed plus "model": a 100-step model trained on it (read-only too)."""
    from kfp_ct.components.train.logic import run_train

    model = str(tmp_path_factory.mktemp("penguins_model") / "model")
    run_train(penguins_transformed["graph"], penguins_transformed["examples"],
              PENGUINS_PROBLEM_FILE, model, train_steps=100)
    return {**penguins_transformed, "model": model}


@pytest.fixture(scope="session")
def drift_base(tmp_path_factory):
    return make_stats_only_base(tmp_path_factory.mktemp("drift_base"))


# ------------------------------------------------------------------- kfp clients


@pytest.fixture
def kfp_isolated(monkeypatch, tmp_path):
    """No kfp env vars, no ~/.config/kfp context or pod-namespace files for kfp.Client."""
    import kfp.client.client as kfp_client

    for var in ("KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT",
                "KF_PIPELINES_UI_ENDPOINT", "KF_PIPELINES_IAP_OAUTH2_CLIENT_ID",
                "KF_PIPELINES_APP_OAUTH2_CLIENT_ID", "KF_PIPELINES_APP_OAUTH2_CLIENT_SECRET"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(kfp_client.Client, "_LOCAL_KFP_CONTEXT",
                        str(tmp_path / "kfp" / "context.json"))
    monkeypatch.setattr(kfp_client.Client, "_NAMESPACE_PATH", str(tmp_path / "sa-namespace"))


@pytest.fixture
def run_cli(capsys):
    """Runs the kfp-ct CLI in this process: ``code, stdout, stderr = run_cli(*argv)``."""
    from kfp_ct.pipelines.entrypoints import cli

    def run(*argv):
        code = cli.main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
