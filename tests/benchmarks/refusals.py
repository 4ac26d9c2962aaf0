"""Every early refusal as a user meets it: a fresh `kfp-ct` process each (a measurement
and a check, not a test).

    python -m tests.benchmarks.refusals [--no-in-run] [--show]

Each case runs the installed `kfp-ct` console script once, as typed at a shell, and is
timed from the process start to its exit. A refusal made before any heavy work must:
exit 2 (components/common/exitcodes.py USAGE), print exactly one line on stderr (the
cause, in the user's words, no traceback), and take under 3 s. The script prints a table
(case, exit code, stderr lines, seconds) and exits 1 when any of those cases misses one
of the three.

A second table shows what is refused inside a run rather than before it (a user module's
preprocessing_fn that outputs no label: only TF Transform's trace of it can tell, in the
transform task); those rows are not held to the rule above (a task that fails ends
`run-local` with exit 1). ``--no-in-run`` leaves them out (they take about 15 s).

The full disk is a real limit, not a patch: the process runs under RLIMIT_FSIZE (1 MB,
SIGXFSZ ignored, so a larger write fails with EFBIG), which needs no root; a small tmpfs
would.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

KFP_CT = os.path.join(os.path.dirname(sys.executable), "kfp-ct")
LIMIT_S = 3.0
USAGE = 2


@dataclasses.dataclass
class Case:
    name: str
    argv: list
    env: dict = dataclasses.field(default_factory=dict)
    preexec: Optional[Callable[[], None]] = None
    early: bool = True  # refused before any heavy work: held to exit 2, one line, < 3 s


@dataclasses.dataclass
class Outcome:
    case: Case
    code: int
    stderr: list
    stdout: list
    seconds: float

    @property
    def ok(self) -> bool:
        return (self.code == USAGE and len(self.stderr) == 1
                and self.seconds < LIMIT_S)


def _run(case: Case, cwd: str) -> Outcome:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KF_PIPELINES")}
    env.update(case.env)
    started = time.perf_counter()
    proc = subprocess.run([KFP_CT, *map(str, case.argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, preexec_fn=case.preexec, timeout=600)
    seconds = time.perf_counter() - started
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    return Outcome(case, proc.returncode, lines,
                   [x for x in proc.stdout.splitlines() if x.strip()], seconds)


def _file_size_limit() -> None:
    """In the child: a file may be at most 1 MB; a write past it fails with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE,
                       (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _fake_model(root: str, tag: str, data_bytes: int = 5) -> str:
    """A folder shaped like a SavedModel (no TensorFlow needed to publish it)."""
    path = os.path.join(root, f"model-{tag}")
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "saved_model.pb"), "wb") as fh:
        fh.write(f"pb-{tag}".encode())
    with open(os.path.join(path, "variables", "variables.index"), "wb") as fh:
        fh.write(b"index")
    with open(os.path.join(path, "variables", "variables.data-00000-of-00001"), "wb") as fh:
        fh.write(b"\0" * data_bytes)
    return path


def _penguins() -> tuple[list, list]:
    from kfp_ct.components.common.data import bundled_penguins_path

    with open(bundled_penguins_path(), newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def _write_csv(path: str, header: list, rows: list) -> str:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header] + rows)
    return path


def _endpoint_case(tmp: str, stack: list) -> Case:
    """The local endpoint with the one-task pipeline uploaded; a run whose parameters
    make a 5 MiB JSON body (over the endpoint's 4 MiB): refused with 413."""
    from kfp import compiler

    from kfp_ct.pipelines.entrypoints.client import Client
    from kfp_ct.pipelines.entrypoints.local_server import LocalServer
    from tests.test_client_cli import tiny_pipeline

    package = os.path.join(tmp, "tiny.yaml")
    compiler.Compiler().compile(tiny_pipeline, package_path=package)
    server = LocalServer(os.path.join(tmp, "endpoint")).start()
    stack.append(server)
    client = Client(server.url)
    with contextlib.redirect_stderr(io.StringIO()):  # kfp's "Pipeline details: <link>"
        client.upload(package=package, version="v1")
    client._experiment_id("kfp-ct")  # a user's second run: the experiment is there
    params = os.path.join(tmp, "params.json")
    with open(params, "w") as fh:
        json.dump({"tag": "x" * (5 << 20)}, fh)
    return Case("run with a 5 MiB body on the local endpoint (413)",
                ["--endpoint", server.url, "run", "kfp-ct-tiny", "-f", params])


def cases(tmp: str, stack: list, in_run: bool) -> list[Case]:
    from kfp_ct.components.common import registry

    header, rows = _penguins()
    runs = os.path.join(tmp, "runs")

    def run_local(destination: str, *extra) -> list:
        return ["run-local", "--destination", destination, "--workdir", runs, *extra]

    fresh = os.path.join(tmp, "serving-new")
    # A model base whose production (version 2) lost its variables: corrupt.
    corrupt = os.path.join(tmp, "serving-corrupt")
    registry.publish(corrupt, _fake_model(tmp, "a"), {"metrics": {"accuracy": 0.9}})
    registry.publish(corrupt, _fake_model(tmp, "b"), {"metrics": {"accuracy": 0.9}})
    shutil.rmtree(os.path.join(corrupt, "2", "variables"))
    # A model base whose version 1 holds 3 MB of variables: a rollback copies them.
    big = os.path.join(tmp, "serving-big")
    registry.publish(big, _fake_model(tmp, "big", 3 << 20), {"metrics": {}})
    registry.publish(big, _fake_model(tmp, "c"), {"metrics": {}})

    a_file = os.path.join(tmp, "model.pb")
    with open(a_file, "wb") as fh:
        fh.write(b"x")
    too_high = os.path.join(tmp, "models")
    os.makedirs(os.path.join(too_high, "penguins"))
    small = _write_csv(os.path.join(tmp, "small.csv"), header, rows[::3])  # 115 rows
    at = header.index("island")
    doubled = _write_csv(os.path.join(tmp, "doubled_column.csv"), header + ["island"],
                         [r + [r[at]] for r in rows])
    two_roles = json.dumps({"label": "species", "task": "classification",
                            "numeric": ["bill_length_mm"],
                            "categorical": ["island", "bill_length_mm"]})
    out = [
        Case("versions: a path that does not exist", ["versions", os.path.join(tmp, "none")]),
        Case("versions: a file", ["versions", a_file]),
        Case("versions: a folder with no versions", ["versions", too_high]),
        Case("--endpoint ftp://x", ["--endpoint", "ftp://x", "runs", "list"]),
        Case("--endpoint file:///x", ["--endpoint", "file:///x", "runs", "list"]),
        Case("--endpoint localhost:8888 (no scheme)",
             ["--endpoint", "localhost:8888", "runs", "list"]),
        Case("--endpoint http//x", ["--endpoint", "http//x", "runs", "list"]),
        Case("$KF_PIPELINES_ENDPOINT=ftp://x", ["runs", "list"],
             env={"KF_PIPELINES_ENDPOINT": "ftp://x"}),
        Case("eval split under min_examples (115 rows)", run_local(fresh, "--data", small)),
        Case("corrupt production version", run_local(corrupt)),
        Case("full disk: rollback under a 1 MB file size limit", ["rollback", big, "1"],
             preexec=_file_size_limit),
        _endpoint_case(tmp, stack),
        Case("thresholds: accuracy min 1.5",
             run_local(fresh, "--thresholds", '{"value":{"accuracy":{"min":1.5}}}')),
        Case("CSV with a duplicated header column", run_local(fresh, "--data", doubled)),
        Case("problem spec naming a column in two roles",
             run_local(fresh, "--problem", two_roles)),
    ]
    if in_run:
        module = os.path.join(tmp, "no_label.py")
        with open(module, "w") as fh:
            fh.write("import tensorflow as tf\n\n\ndef preprocessing_fn(inputs):\n"
                     "    x = inputs['bill_length_mm']\n"
                     "    return {'bill_length_mm': tf.sparse.to_dense(x)[:, 0]}\n")
        problem = {"label": "species", "task": "classification",
                   "numeric": ["bill_length_mm"], "categorical": ["island"],
                   "module_file": module}
        out.append(Case("preprocessing_fn without the label (at transform)",
                        run_local(fresh, "--problem", json.dumps(problem)), early=False))
    return out


def _table(rows: list[Outcome], with_ok: bool) -> str:
    head = ["case", "exit", "stderr lines", "seconds"] + (["ok"] if with_ok else [])
    cells = [head] + [[o.case.name, str(o.code), str(len(o.stderr)), f"{o.seconds:.2f}"]
                      + (["yes" if o.ok else "NO"] if with_ok else []) for o in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-in-run", action="store_true",
                        help="leave out the refusals made inside a run (about 15 s)")
    parser.add_argument("--show", action="store_true", help="print each case's stderr")
    args = parser.parse_args(argv)
    stack: list = []
    tmp = tempfile.mkdtemp(prefix="kfp-ct-refusals-")
    try:
        outcomes = [_run(case, tmp) for case in cases(tmp, stack, not args.no_in_run)]
    finally:
        for server in stack:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    early = [o for o in outcomes if o.case.early]
    late = [o for o in outcomes if not o.case.early]
    print(f"Refused before any heavy work (each must exit {USAGE}, print one stderr line, "
          f"take < {LIMIT_S:g} s):\n")
    print(_table(early, with_ok=True))
    if late:
        print("\nRefused inside a run (not held to that rule):\n")
        print(_table(late, with_ok=False))
    if args.show:
        for o in outcomes:
            said = o.stderr or [line for line in o.stdout if "error" in line.lower()][-1:]
            print(f"\n{o.case.name}:\n  " + "\n  ".join(said))
    failed = [o.case.name for o in early if not o.ok]
    if failed:
        print(f"\n{len(failed)} case(s) miss the rule: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
