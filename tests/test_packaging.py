"""kfp-ct installs and imports as kfp_ct only, and works beside a user's own
``components/`` and ``pipelines/`` packages (the usual KFP project layout)."""

import os
import pathlib
import subprocess
import sys
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _package_folders() -> set[str]:
    found = set()
    for top in ("components", "pipelines"):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            found.add("kfp_ct." + ".".join(rel.parts))
    return found


def test_the_package_list_names_every_folder_with_an_init_under_kfp_ct():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(config["packages"]) == _package_folders()
    assert config["package-dir"] == {"kfp_ct.components": "components",
                                     "kfp_ct.pipelines": "pipelines"}
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"kfp-ct": "kfp_ct.pipelines.entrypoints.cli:main"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel setuptools builds from this checkout (PEP 517, no network: the venv's
    setuptools, as `uv build --no-build-isolation` would)."""
    out = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("wheel-build")
    code = ("import os, sys, setuptools.build_meta as b; os.chdir(sys.argv[1]); "
            "print(b.build_wheel(sys.argv[2]))")
    # Build from a copy of the tracked files, so the checkout gets no build/ or egg-info.
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, files):
        src = ROOT / rel.decode()
        if src.is_file():
            dst = work / rel.decode()
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(src.read_bytes())
    done = subprocess.run([sys.executable, "-c", code, str(work), str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def test_the_wheel_holds_only_kfp_ct(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"kfp_ct", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                    + ".dist-info"}, tops
    # The data files the code reads at run time travel with it.
    for needed in ("kfp_ct/pipelines/penguins/problem.json",
                   "kfp_ct/pipelines/notebooks/quickstart.ipynb",
                   "kfp_ct/components/common/artifacts.py",
                   "kfp_ct/pipelines/entrypoints/local_server/server.py"):
        assert needed in names, needed
    assert not any(n.startswith("kfp_ct/__init__") for n in names)  # a namespace package


def test_pip_install_of_the_wheel_into_a_fresh_venv_adds_only_kfp_ct(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    before = set(os.listdir(site))
    # uv (the one `make setup` installs) puts the wheel in; no dependencies: only what the
    # wheel itself adds counts.
    done = subprocess.run([str(ROOT / ".tools" / "bin" / "uv"), "pip", "install", "--no-deps",
                           "--offline", "--python", str(venv / "bin" / "python"), str(wheel)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    added = set(os.listdir(site)) - before
    assert {a for a in added if not a.endswith(".dist-info")} == {"kfp_ct"}, added
    assert not {"components", "pipelines"} & set(os.listdir(site))
    got = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import kfp_ct, kfp_ct.components as c; print(c.__version__)"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    from kfp_ct.components import __version__

    assert got.stdout.strip() == __version__


def _user_project(root: pathlib.Path) -> pathlib.Path:
    """A KFP project of the usual layout: its own components/ and pipelines/ packages."""
    for pkg in ("components", "pipelines"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text(f'"""The user\'s own {pkg}."""\nMINE = True\n')
    return root


def test_imports_compile_and_run_from_a_folder_with_its_own_components_and_pipelines(tmp_path):
    project = _user_project(tmp_path / "project")
    script = f"""
import os, sys
sys.path.insert(0, os.getcwd())   # what a notebook or `python script.py` in the project has
import components, pipelines      # the user's own packages
assert components.MINE and pipelines.MINE
import kfp_ct
from kfp import compiler, local
from kfp_ct.components.validate.component import validate
from kfp_ct.pipelines.training import training_pipeline
compiler.Compiler().compile(training_pipeline, package_path="training.yaml")
local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=os.path.abspath("runs"))
training_pipeline(push_destination={str(tmp_path / "serving")!r}, train_steps=100)
print("OK", components.__file__)
"""
    env = {**os.environ, "KFP_CT_WARM": "0"}
    done = subprocess.run([sys.executable, "-c", script], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert f"OK {project / 'components' / '__init__.py'}" in done.stdout
    assert "kfp_ct.components" in (project / "training.yaml").read_text()
    assert (tmp_path / "serving" / "1" / "saved_model.pb").exists()
