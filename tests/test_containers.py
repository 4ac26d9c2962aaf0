"""The CPU image, for real: what is inside it, and the whole training pipeline run inside it.

Marked ``container``: neither ``make test`` nor ``make test-long`` runs these;
``make test-containers`` builds the image (``make image``) and runs them. They need
podman (Debian's, rootful) and the image built; without either they fail and say so.

The pipeline run is the cluster's way of running a task: kfp.local's DockerRunner starts
one container per task from the image the compiled YAML names, talking the Docker API
to ``podman system service`` on a local unix socket (DOCKER_HOST). Only the pipeline root
is shared with the host (kfp.local mounts it at the same path), so the push destination
lives under it and the host loads the pushed model from there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from kfp_ct.components.common import images

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[1]
IMAGE = images.CPU_IMAGE


def _podman() -> str:
    found = shutil.which("podman")
    if not found:
        pytest.fail("podman is not installed: `make test-containers` installs it")
    return found


@pytest.fixture(scope="module")
def image() -> str:
    done = subprocess.run([_podman(), "image", "exists", IMAGE])
    if done.returncode != 0:
        pytest.fail(f"no image {IMAGE}: build it with `make image`")
    return IMAGE


def _in_image(image: str, code: str, *podman_args: str, timeout: int = 300) -> str:
    done = subprocess.run([_podman(), "run", "--rm", "--network=none", *podman_args, image,
                           "python3", "-c", code], capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_image_runs_as_a_non_root_user(image):
    out = json.loads(_in_image(image, "import json, os, pwd; print(json.dumps("
                                      "[os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name,"
                                      " os.access('/opt/venv/bin', os.W_OK)]))"))
    assert out == [1000, 1000, "kfp", False]  # and the venv is read-only to it


def test_image_holds_exactly_the_locks_packages_and_no_dev_tools(image):
    installed = json.loads(_in_image(image, (
        "import json, importlib.metadata as m, re; print(json.dumps({re.sub(r'[-_.]+', '-', "
        "d.metadata['Name']).lower(): d.version for d in m.distributions()}))")))
    import kfp_ct.components

    # A name may be locked at two versions, one per Python range (soupsieve: 2.10 below
    # 3.11.5, which Debian's python3.11 is, 4.1.2 from 3.11.5): either is the lock's.
    locked: dict[str, set] = {}
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        locked.setdefault(package["name"], set()).add(package.get("version"))
    locked["kfp-ct"] = {kfp_ct.components.__version__}  # the project itself: its version is dynamic
    differing = {name: (version, sorted(map(str, locked.get(name, ()))))
                 for name, version in installed.items() if version not in locked.get(name, ())}
    assert not differing, f"installed (image, uv.lock) differ: {differing}"
    for name in ("tensorflow", "tensorflow-transform", "tensorflow-data-validation",
                 "tensorflow-model-analysis", "kfp", "kfp-kubernetes", "kfp-ct"):
        assert name in installed, name
    assert installed["kfp-ct"] == kfp_ct.components.__version__
    assert "pytest" not in installed and "docker" not in installed  # the dev group stays out


def test_image_imports_tensorflow_and_trains_on_cpu_without_an_accelerator(image):
    out = json.loads(_in_image(image, (
        "import json; from kfp_ct.components.train.strategy import make_strategy;"
        "import tensorflow as tf; s, plan = make_strategy('auto');"
        "print(json.dumps([tf.__version__, plan.kind, plan.precision, plan.replicas]))")))
    assert out == ["2.16.2", "default", "float32", 1]


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """`podman system service` answering the Docker API on a unix socket of its own."""
    folder = tmp_path_factory.mktemp("podman")
    sock = folder / "podman.sock"
    log = open(folder / "service.log", "w")
    proc = subprocess.Popen([_podman(), "system", "service", "--time=0", f"unix://{sock}"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        import docker

        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"podman system service exited: {(folder / 'service.log').read_text()}")
            if sock.exists():
                try:
                    docker.DockerClient(base_url=f"unix://{sock}").ping()
                    break
                except Exception:  # not answering yet
                    pass
            if time.monotonic() > deadline:
                pytest.fail("podman system service did not answer within 30 s")
            time.sleep(0.2)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


_RUN = r"""
import json, os, sys, time
from kfp import local
from kfp_ct.pipelines.training import training_pipeline
root = sys.argv[1]
local.init(runner=local.DockerRunner(), pipeline_root=root, raise_on_error=True)
started = time.perf_counter()
training_pipeline(push_destination=os.path.join(root, "serving", "penguins"))
print("WALL_S", round(time.perf_counter() - started, 1), flush=True)
"""


def test_training_pipeline_runs_with_every_task_in_the_image(image, docker_host, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    os.chmod(root, 0o777)  # the tasks run as uid 1000 and write their outputs here
    env = {**os.environ, "DOCKER_HOST": docker_host}
    done = subprocess.run([sys.executable, "-c", _RUN, str(root)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    log = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # kfp.local's colours
    (tmp_path / "run.log").write_text(log)
    assert done.returncode == 0, log[-6000:]
    # every task ran in a container of the image, not in this interpreter
    for task in ("validate", "transform", "train", "evaluate", "gate", "push"):
        assert f"Executing task '{task}'" in log, task
    assert log.count(f"Found image {image!r}") == 6, log[-3000:]
    wall = float(log.split("WALL_S")[1].split()[0])
    print(f"\n[containers] training pipeline, every task in {image}: {wall:.1f} s")
    (tmp_path / "wall_s").write_text(str(wall))

    # The host loads the pushed model and asks it a question in the serving format.
    version = root / "serving" / "penguins" / "1"
    assert (version / "saved_model.pb").exists()
    import tensorflow as tf

    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    example = tf.train.Example()
    features = example.features.feature
    for name, value in {"bill_length_mm": 39.1, "bill_depth_mm": 18.7,
                        "flipper_length_mm": 181.0, "body_mass_g": 3750.0}.items():
        features[name].float_list.value.append(value)
    features["island"].bytes_list.value.append(b"Torgersen")
    features["sex"].bytes_list.value.append(b"male")
    out = serve(examples=tf.constant([example.SerializeToString()]))
    scores, classes = out["scores"].numpy()[0], out["classes"].numpy()[0]
    assert abs(scores.sum() - 1) < 1e-3
    assert classes[scores.argmax()] == b"Adelie"  # the first penguin of the data set
