"""A user's own pipeline built with kfp-ct's components: the worked example of the README.

Three parts, as in a real project:

(a) the user's own ingest step, a lightweight component that writes a CSV ``Dataset``;
(b) kfp-ct's validate -> transform -> train -> evaluate -> gate -> push, loaded from the
    compiled component YAML (``python compile.py --out build`` writes
    ``build/components/*.yaml``; keep the files of the version you pin in your repository);
(c) the user's own step after push, which reads the pushed ``Model``: the version to serve
    is ``metadata["uri"]``, and ``metadata["pushed"]`` says whether anything was pushed.

Compile it for a cluster, or run it on this machine under kfp.local:

    python pipelines/examples/user_pipeline.py --components build/components --out user.yaml
    python pipelines/examples/user_pipeline.py --components build/components \\
        --run-local --source penguins.csv --destination /tmp/serving/penguins

tests/test_user_pipeline.py runs it end to end under kfp.local.
"""

# No `from __future__ import annotations`: kfp reads the component signatures at runtime.

import argparse
import os
import sys

from kfp import compiler, components, dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from kfp_ct.components.common.artifacts import check_wiring_file
from kfp_ct.components.common.images import CPU_IMAGE
from kfp_ct.pipelines.training import PENGUINS_PROBLEM

# install_kfp_package=False: the image (and, locally, the virtual environment) has kfp.


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest(source: str, rows: Output[Dataset], drop_missing: bool = True):
    """The user's own ingest: reads a CSV, drops rows with missing values, writes a CSV.

    Writes the rows straight to ``rows.path`` (a file with no extension): kfp-ct reads a
    file without an extension as CSV unless it is Parquet.
    """
    import pandas as pd

    frame = pd.read_csv(source)
    if drop_missing:
        frame = frame.dropna()
    frame.to_csv(rows.path, index=False)
    rows.metadata.update({"source": source, "rows": len(frame)})


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def announce(pushed: Input[Model], note: Output[Markdown]) -> str:
    """The user's own step after push: reads the pushed Model and says what to serve."""
    if pushed.metadata.get("pushed"):
        text = (f"Serve version {int(pushed.metadata['version'])} from "
                f"{pushed.metadata['uri']} ({pushed.metadata['key_metric']} "
                f"{pushed.metadata['key_metric_value']:.4f})")
    else:
        text = f"Nothing to serve: {pushed.metadata.get('reason', 'not pushed')}"
    with open(note.path, "w") as fh:
        fh.write(text + "\n")
    return text


def build_pipeline(components_dir: str):
    """The pipeline function, with kfp-ct's components loaded from ``components_dir``."""
    def load(name):
        return components.load_component_from_file(os.path.join(components_dir, f"{name}.yaml"))

    validate, transform, train = load("validate"), load("transform"), load("train")
    evaluate, gate, push = load("evaluate"), load("gate"), load("push")

    @dsl.pipeline(name="my-penguins-training",
                  description="My ingest, then kfp-ct's training loop, then my announcement.")
    def my_pipeline(source: str, push_destination: str, problem: str = PENGUINS_PROBLEM,
                    train_steps: int = 200) -> str:
        rows = ingest(source=source)
        validated = validate(data=rows.outputs["rows"], problem=problem,
                             push_destination=push_destination)
        transformed = transform(data=rows.outputs["rows"], problem=problem,
                                schema=validated.outputs["schema"])
        trained = train(problem=problem, transform_graph=transformed.outputs["transform_graph"],
                        transformed_examples=transformed.outputs["transformed_examples"],
                        train_steps=train_steps)
        evaluated = evaluate(problem=problem, push_destination=push_destination,
                             model=trained.outputs["model"],
                             raw_eval=transformed.outputs["raw_eval"])
        gated = gate(evaluation=evaluated.outputs["evaluation"], thresholds="")  # "": defaults
        pushed = push(problem=problem, push_destination=push_destination,
                      model=trained.outputs["model"], blessing=gated.outputs["blessing"],
                      raw_eval=transformed.outputs["raw_eval"],
                      statistics=validated.outputs["statistics"],
                      schema=validated.outputs["schema"],
                      evaluation=evaluated.outputs["evaluation"])
        return announce(pushed=pushed.outputs["pushed"]).outputs["Output"]

    return my_pipeline


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", default="build/components",
                        help="folder of kfp-ct's compiled component YAML")
    parser.add_argument("--out", default="", help="compile the pipeline into this YAML file")
    parser.add_argument("--run-local", action="store_true", help="run it under kfp.local")
    parser.add_argument("--source", default="", help="the CSV to ingest (--run-local)")
    parser.add_argument("--destination", default="", help="the model base (--run-local)")
    parser.add_argument("--pipeline-root", default="local_outputs",
                        help="kfp.local's pipeline root (--run-local)")
    args = parser.parse_args(argv)
    pipeline = build_pipeline(args.components)
    if args.out:
        compiler.Compiler().compile(pipeline, package_path=args.out)
        problems = check_wiring_file(args.out)  # kinds that kfp's type check cannot see
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
        print(args.out)
    if args.run_local:
        from kfp import local

        local.init(runner=local.SubprocessRunner(use_venv=False),
                   pipeline_root=os.path.abspath(args.pipeline_root))
        print(pipeline(source=args.source, push_destination=args.destination).output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
