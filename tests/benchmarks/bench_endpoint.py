"""Figures for the CLI against the local KFP endpoint (a measurement, not a test).

    python -m tests.benchmarks.bench_endpoint [--runs 3]

Each figure is the wall time of a fresh `kfp-ct` process, as a user runs it:

* submit -> first task started: from starting `kfp-ct run training` to the moment the
  endpoint reports the run's first task (validate) RUNNING;
* the same for a one-task pipeline (the endpoint's own overhead);
* a refused token (401) and an unreachable host (closed port; a port that accepts and
  never answers, with the default 1.5 s timeout) until the error is printed.

``--no-runs`` measures only the last three (seconds instead of minutes).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from kfp import compiler

from kfp_ct.pipelines.entrypoints.client import Client
from kfp_ct.pipelines.entrypoints.local_server import LocalServer
from tests.test_client_cli import tiny_pipeline

KFP_CT = os.path.join(os.path.dirname(sys.executable), "kfp-ct")


def _first_task_started(client: Client, run_id: str, limit_s: float = 300) -> float:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        info = client.get_run(run_id)
        if any(t.start_time for t in info.tasks) or info.done:
            return time.monotonic()
        time.sleep(0.05)
    raise TimeoutError(run_id)


def _submit(url: str, *argv: str) -> tuple[float, str]:
    started = time.monotonic()
    proc = subprocess.run([KFP_CT, "--endpoint", url, "--output", "json", "run", *argv],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    import json

    return started, json.loads(proc.stdout)["run_id"]


def _timed(*argv: str) -> tuple[float, int, str]:
    started = time.monotonic()
    proc = subprocess.run([KFP_CT, *argv], capture_output=True, text=True, timeout=60)
    return time.monotonic() - started, proc.returncode, proc.stderr.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-runs", action="store_true", help="skip the submit figures")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kfp-ct-bench-") as tmp:
        tiny = os.path.join(tmp, "tiny.yaml")
        compiler.Compiler().compile(tiny_pipeline, package_path=tiny)
        with LocalServer(os.path.join(tmp, "state"), token=None) as server:
            client = Client(server.url)
            client.upload("training")
            client.upload(package=tiny, version="bench")
            for label, argv in () if args.no_runs else (
                    ("training: submit -> first task started", [
                        "training", "-p", f"push_destination={tmp}/serving",
                        "-p", "train_steps=20"]),
                    ("one-task pipeline: submit -> task started", ["kfp-ct-tiny"])):
                times = []
                for _ in range(args.runs):
                    started, run_id = _submit(server.url, *argv)
                    times.append(_first_task_started(client, run_id) - started)
                    client.wait(run_id, timeout_s=600, poll_s=0.5)
                rows.append((label, times))
        with LocalServer(os.path.join(tmp, "secured"), token="right") as secured:
            rows.append(("refused token (401) reported", [
                _timed("--endpoint", secured.url, "--existing-token", "wrong", "runs",
                       "list")[0] for _ in range(args.runs)]))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        rows.append(("unreachable host (closed port) reported", [
            _timed("--endpoint", f"http://127.0.0.1:{closed}", "runs", "list")[0]
            for _ in range(args.runs)]))
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        rows.append(("host that never answers reported (timeout 1.5 s)", [
            _timed("--endpoint", f"http://127.0.0.1:{silent.getsockname()[1]}", "runs",
                   "list")[0] for _ in range(args.runs)]))
        silent.close()
    print(f"{'figure':<48} {'min':>6} {'median':>7} {'max':>6}  (s, {args.runs} runs)")
    for label, times in rows:
        print(f"{label:<48} {min(times):6.2f} {statistics.median(times):7.2f} "
              f"{max(times):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
