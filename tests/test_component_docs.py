"""Every component folder's README: its interface tables match the compiled component,
its hand-written part has the sections a user looks for, and its examples compile."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from kfp_ct.pipelines.entrypoints import component_docs

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS = ("## What it does", "## What it writes", "## What it refuses", "## Example")


def test_every_component_folder_is_documented():
    folders = {p.parent.name for p in (ROOT / "components").glob("*/component.py")}
    assert folders == set(component_docs.FOLDERS)
    from kfp_ct.pipelines.entrypoints.catalog import components

    documented = {c for names in component_docs.FOLDERS.values() for c in names}
    assert documented == set(components())


@pytest.mark.parametrize("folder", sorted(component_docs.FOLDERS))
def test_readme_interface_matches_the_component(folder):
    path = ROOT / "components" / folder / "README.md"
    text = path.read_text()
    assert component_docs.MARKER in text, f"{path}: no marker line"
    assert text.split(component_docs.MARKER)[0] == component_docs.generated_part(folder), (
        f"{path} is stale: run `python -m kfp_ct.pipelines.entrypoints.component_docs`")
    # Every input and output of every component of the folder has its row.
    comps = component_docs._components()
    for name in component_docs.FOLDERS[folder]:
        spec = comps[name].component_spec
        for key in list(spec.inputs) + list(spec.outputs or {}):
            assert f"| `{key}` |" in text, f"{path}: {name}.{key} missing"


@pytest.mark.parametrize("folder", sorted(component_docs.FOLDERS))
def test_readme_hand_written_part_has_the_sections(folder):
    text = (ROOT / "components" / folder / "README.md").read_text()
    hand = text.split(component_docs.MARKER, 1)[1]
    for section in SECTIONS:
        assert section in hand, f"components/{folder}/README.md: no {section!r}"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("docs-examples")
    done = subprocess.run([sys.executable, str(ROOT / "compile.py"), "--out",
                           str(out / "build")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("folder", sorted(component_docs.FOLDERS))
def test_readme_examples_compile(folder, built, tmp_path):
    """Each ```python block of the hand-written part runs (it compiles a pipeline) in a
    folder where ``python compile.py`` wrote build/."""
    hand = (ROOT / "components" / folder / "README.md").read_text().split(
        component_docs.MARKER, 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", hand, re.S)
    assert blocks, f"components/{folder}/README.md: no python example"
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(built / "build", work / "build")
    for i, code in enumerate(blocks):
        script = work / f"example_{i}.py"
        script.write_text(code)
        done = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (f"components/{folder}/README.md example {i}:\n"
                                      f"{done.stderr[-2000:]}")
    assert list(work.glob("*.yaml")), f"components/{folder}/README.md: nothing compiled"
