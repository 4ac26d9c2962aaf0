"""Each component folder's README: its interface generated from the component, the rest by hand.

    python -m kfp_ct.pipelines.entrypoints.component_docs          # rewrite the generated parts
    python -m kfp_ct.pipelines.entrypoints.component_docs --check  # exit 1 when one is stale

A README is the generated part (title, summary, the Inputs and Outputs tables: names,
types, defaults, kinds and descriptions, read from the compiled component and its
docstring), then :data:`MARKER`, then the hand-written part (what it writes, what it
refuses, an example), which this tool keeps as it is. tests/test_component_docs.py fails
when a generated part no longer matches its component.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from kfp_ct.components.common import artifacts

#: Everything above this line is generated; everything below is kept.
MARKER = ("<!-- Hand-written below. Above: generated from the component by "
          "`python -m kfp_ct.pipelines.entrypoints.component_docs`; do not edit. -->")

COMPONENTS_DIR = pathlib.Path(__file__).resolve().parents[2] / "components"

#: Component folder -> the components it holds (the first names the folder's README).
FOLDERS: dict[str, tuple[str, ...]] = {
    "validate": ("validate",),
    "transform": ("transform",),
    "train": artifacts.TRAIN_COMPONENTS,
    "evaluate": ("evaluate",),
    "gate": ("gate",),
    "push": ("push",),
    "drift": ("drift_check",),
    "retrain": ("retrain_trigger",),
    "rollout": ("rollout",),
    "notify": ("announce_failure",),
}

_PARAMETER_TYPES = {"String": "str", "Integer": "int", "Float": "float", "Boolean": "bool",
                    "List": "list", "Struct": "dict"}


def _type(spec_type: str) -> str:
    if spec_type in _PARAMETER_TYPES:
        return _PARAMETER_TYPES[spec_type]
    return f"`{spec_type.split('@')[0]}`"


def _cell(text: str | None) -> str:
    return " ".join((text or "").split()).replace("|", "\\|").replace("<", "&lt;")


def _default(spec) -> str:
    if not spec.optional:
        return "required"
    value = spec.default
    if value == "" or value is None:
        return '`""`' if value == "" else "`None`"
    return f"`{value!r}`" if not isinstance(value, str) else f'`"{value}"`'


def _kind(component: str, name: str, table: dict) -> str:
    if (component, name) not in table:
        return ""
    kind = table[(component, name)]
    return f"`{kind}`" if kind else "raw data"


def interface(component, name: str) -> str:
    """The Inputs and Outputs tables of one component (a kfp BaseComponent) shipped as
    ``name`` (its Python name: kfp's own spec name has hyphens)."""
    spec = component.component_spec
    lines = ["| input | type | default | kind | description |", "|---|---|---|---|---|"]
    for key, item in spec.inputs.items():
        lines.append(f"| `{key}` | {_type(item.type)} | {_default(item)} | "
                     f"{_kind(name, key, artifacts.INPUT_KINDS)} | {_cell(item.description)} |")
    out = ["| output | type | kind | description |", "|---|---|---|---|"]
    for key, item in (spec.outputs or {}).items():
        out.append(f"| `{key}` | {_type(item.type)} | "
                   f"{_kind(name, key, artifacts.OUTPUT_KINDS)} | {_cell(item.description)} |")
    return "\n".join(["#### Inputs", "", *lines, "", "#### Outputs", "", *out])


def _components() -> dict:
    from kfp_ct.pipelines.entrypoints.catalog import components

    return components()


def generated_part(folder: str) -> str:
    """The generated head of ``components/<folder>/README.md``."""
    comps = _components()
    names = FOLDERS[folder]
    first = comps[names[0]]
    summary = (first.component_spec.description or "").strip().split("\n\n")[0]
    out = [f"# {folder}", "", _cell(summary), "",
           "Load it in your own pipeline from the compiled YAML (`python compile.py` writes "
           f"`build/components/{names[0]}.yaml`) or import it: "
           f"`from kfp_ct.components.{folder}.component import {', '.join(names)}`.", ""]
    for name in names:
        out += [f"### `{name}`", ""]
        if name != names[0]:
            out += [_cell((comps[name].component_spec.description or "").split("\n\n")[0]), ""]
        out += [interface(comps[name], name), ""]
    return "\n".join(out) + "\n"


def render(folder: str, current: str | None) -> str:
    """The README with a fresh generated part and the hand-written part of ``current``."""
    kept = ""
    if current and MARKER in current:
        kept = current.split(MARKER, 1)[1]
    return generated_part(folder) + MARKER + (kept or "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="only report READMEs whose generated part is stale (exit 1)")
    args = parser.parse_args(argv)
    stale = []
    for folder in FOLDERS:
        path = COMPONENTS_DIR / folder / "README.md"
        current = path.read_text() if path.exists() else None
        fresh = render(folder, current)
        if fresh != current:
            stale.append(str(path))
            if not args.check:
                path.write_text(fresh)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + path)
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
