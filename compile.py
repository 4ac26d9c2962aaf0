"""Writes the KFP IR YAML of every pipeline and component into a build folder.

    python compile.py [--out build] [--settings cluster.json]

build/pipelines/<name>.yaml: upload in the Kubeflow UI, or submit with kfp.Client.
build/components/<name>.yaml: load with kfp.components.load_component_from_file.
--settings: cluster overrides (resources, timeouts, accelerators, the credentials
Secret), JSON; see pipelines/cluster.py.

Needs no TensorFlow, no credentials and no environment variables; two runs give
byte-identical files.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from kfp import compiler

from kfp_ct.components.common.artifacts import WiringError, check_wiring_file
from kfp_ct.pipelines import cluster
from kfp_ct.pipelines.entrypoints.catalog import CATALOG, components

# File stem -> pipeline function; the catalog is the one list of shipped pipelines.
PIPELINES = {item.file_stem: item.load() for item in CATALOG.values()}
COMPONENTS = components()


def compile_all(out_dir: str = "build", settings: cluster.Settings | None = None) -> list[str]:
    """Compiles everything into out_dir; returns the written paths (sorted).

    settings: cluster overrides for the pipelines (pipelines/cluster.py); None: defaults.
    """
    written = []
    pipelines = PIPELINES if settings is None else {
        item.file_stem: item.load(settings) for item in CATALOG.values()}
    for kind, items in (("pipelines", pipelines), ("components", COMPONENTS)):
        folder = os.path.join(out_dir, kind)
        os.makedirs(folder, exist_ok=True)
        for name, func in sorted(items.items()):
            path = os.path.join(folder, f"{name}.yaml")
            compiler.Compiler().compile(func, package_path=path)
            if kind == "pipelines":
                # kfp's type check cannot tell our kinds apart (they share system types):
                # refuse a pipeline that joins an output of one kind to an input of another.
                problems = check_wiring_file(path)
                if problems:
                    os.remove(path)
                    raise WiringError(f"{name}: " + "; ".join(problems))
            written.append(path)
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="build", help="output folder (default: build)")
    parser.add_argument("--settings", default="",
                        help="cluster settings, a JSON file or JSON text (pipelines/cluster.py)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        settings = cluster.load_settings(args.settings) if args.settings else None
    except cluster.SettingsError as exc:
        print(f"compile.py: {exc}", file=sys.stderr)
        return 2
    paths = compile_all(args.out, settings)
    for path in paths:
        print(path)
    print(f"compiled {len(paths)} files in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
