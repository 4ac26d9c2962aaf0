"""Load and soak of the local KFP endpoint (a measurement, not a test).

    .venv/bin/python -m tests.benchmarks.soak_endpoint [--seconds 180] [--readers 6]

On 127.0.0.1 only, it starts ``kfp-ct local-server --token T`` on a free port and, for two
phases of ``--seconds``/2 each, holds a mix of clients (every call with the token):

* ``--readers`` threads of list / get calls (pipelines, runs, recurring runs), each
  waiting ``--think-ms`` between calls;
* one thread uploading a new pipeline every ``--upload-every`` seconds;
* one thread creating a run every ``--run-every`` seconds;
* two recurring runs (interval ``--interval`` s, max_concurrency 1) firing;

while the runs of a one-task pipeline (``nap``, from tests/test_local_server.py) execute.
Phase 2 kills the server with SIGKILL half-way and restarts it on the same port and state
folder. After each phase the schedules are disabled, the run queue drains (at most
``--drain-seconds``), and every run created in the phase is checked: a final state, and
the same state in its run folder's ``status.json`` (a run the kill interrupted is FAILED
"interrupted" in the API; it is counted apart).

It prints, per phase, requests per second and p50 / p99 latency per kind of call, the
errors, the server's RSS (``/proc/<pid>/status`` VmRSS) at start, end and peak, and the
run check; in phase 2 the calls that overlapped the outage (kill to healthy again) are
counted apart from the errors. Exit status 1 when an error outside the outage or a run
check fails.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

from kfp import compiler

from tests.test_local_server import tiny

KFP_CT = os.path.join(os.path.dirname(sys.executable), "kfp-ct")
API = "/apis/v2beta1"
ACTIVE = ("PENDING", "RUNNING", "RUNTIME_STATE_UNSPECIFIED")
FINAL = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Endpoint:
    """The server process (restartable on its port) and plain HTTP calls to it."""

    def __init__(self, state_dir: str, port: int, token: str, log_path: str) -> None:
        self.state_dir, self.port, self.token, self.log_path = state_dir, port, token, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.groups: list = []

    def start(self, limit_s: float = 60) -> float:
        """Starts the server and waits until healthz answers; returns when it did."""
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [KFP_CT, "local-server", "--port", str(self.port), "--state-dir",
                 self.state_dir, "--token", self.token], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.groups.append(self.proc.pid)
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}; see "
                                   f"{self.log_path}")
            try:
                with urllib.request.urlopen(self.url + API + "/healthz", timeout=2):
                    return time.monotonic()
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"the server did not answer healthz in {limit_s} s")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """SIGTERM to the last server; then whatever is left of every group it started."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for group in self.groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def call(self, method: str, path: str, body: object = None, data: bytes | None = None,
             content_type: str = "application/json", timeout: float = 30) -> dict:
        if body is not None:
            data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + API + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read()
        return json.loads(text) if text else {}

    def upload(self, name: str, yaml_bytes: bytes) -> dict:
        boundary = uuid.uuid4().hex
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; "
                f"filename=\"{name}.yaml\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + yaml_bytes + f"\r\n--{boundary}--\r\n".encode()
        return self.call("POST", f"/pipelines/upload?name={name}", data=data,
                         content_type=f"multipart/form-data; boundary={boundary}")

    def all_runs(self) -> list:
        runs, token = [], ""
        while True:
            page = self.call("GET", f"/runs?page_size=100&page_token={token}")
            runs += page.get("runs") or []
            token = page.get("next_page_token") or ""
            if not token:
                return runs


class Recorder:
    """Every call: (kind, start, end, error or None)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list = []

    def timed(self, kind: str, fn, *args, **kwargs):
        start = time.monotonic()
        error, value = None, None
        try:
            value = fn(*args, **kwargs)
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
        except (OSError, ValueError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.calls.append((kind, start, time.monotonic(), error))
        return value


def _pct(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_phase(name: str, tag: str, ep: Endpoint, args: argparse.Namespace, yaml_bytes: bytes,
              seed: dict, kill: bool) -> dict:
    """One phase: clients for args.seconds/2, an optional kill -9 + restart half-way."""
    seconds = args.seconds / 2
    rec = Recorder()
    stop = threading.Event()
    known = {"pipelines": [seed["pipeline_id"]], "runs": []}
    before = {r["run_id"] for r in ep.all_runs()}
    rss: list = []
    outage: list = []  # [kill time, healthy again]
    served_by = [ep.proc.pid]

    def sample() -> None:  # the server that answers healthz (not one still starting)
        while not stop.is_set():
            value = _rss_kb(served_by[-1])
            if value:
                rss.append((served_by[-1], value))
            stop.wait(1.0)

    def reader(index: int) -> None:
        rnd = random.Random(index)
        ops = [("list pipelines", lambda: ep.call("GET", "/pipelines?page_size=20")),
               ("get pipeline", lambda: ep.call(
                   "GET", f"/pipelines/{rnd.choice(known['pipelines'])}")),
               ("list runs", lambda: ep.call("GET", "/runs?page_size=20")),
               ("get run", lambda: ep.call("GET", f"/runs/{rnd.choice(known['runs'])}")
                if known["runs"] else ep.call("GET", "/runs?page_size=1")),
               ("list recurring runs", lambda: ep.call("GET", "/recurringruns?page_size=20"))]
        while not stop.is_set():
            kind, fn = rnd.choice(ops)
            rec.timed(kind, fn)
            stop.wait(args.think_ms / 1000)

    def uploader() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            made = rec.timed("upload", ep.upload, f"soak-{tag}-{count}-{uuid.uuid4().hex[:6]}",
                             yaml_bytes)
            if made:
                known["pipelines"].append(made["pipeline_id"])
            stop.wait(args.upload_every)

    def creator() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            made = rec.timed("create run", ep.call, "POST", "/runs", {
                "display_name": f"soak-{tag}-{count}", "experiment_id": seed["experiment_id"],
                "pipeline_version_reference": seed["ref"],
                "runtime_config": {"parameters": {"word": f"w{count}", "seconds": 0.1}}})
            if made:
                known["runs"].append(made["run_id"])
            stop.wait(args.run_every)

    schedules = []
    for index in range(2):
        made = rec.timed("create / disable schedule", ep.call, "POST", "/recurringruns", {
            "display_name": f"soak-{tag}-every-{args.interval}s-{index}",
            "experiment_id": seed["experiment_id"], "pipeline_version_reference": seed["ref"],
            "runtime_config": {"parameters": {"word": f"s{index}"}}, "mode": "ENABLE",
            "max_concurrency": 1, "no_catchup": True,
            "trigger": {"periodic_schedule": {"interval_second": args.interval}}})
        if made:
            schedules.append(made["recurring_run_id"])
    threads = [threading.Thread(target=sample, daemon=True)]
    threads += [threading.Thread(target=reader, args=(i,), daemon=True)
                for i in range(args.readers)]
    threads += [threading.Thread(target=uploader, daemon=True),
                threading.Thread(target=creator, daemon=True)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    if kill:
        time.sleep(seconds / 2)
        killed_at = time.monotonic()
        ep.kill9()
        healthy = ep.start()
        outage[:] = [killed_at, healthy]
        served_by.append(ep.proc.pid)
        time.sleep(max(0.0, started + seconds - time.monotonic()))
    else:
        time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    ended = time.monotonic()
    for rid in schedules:
        rec.timed("create / disable schedule", ep.call, "POST", f"/recurringruns/{rid}:disable", data=b"")

    # Drain, then check every run of this phase against its run folder.
    deadline = time.monotonic() + args.drain_seconds
    while True:
        runs = [r for r in ep.all_runs() if r["run_id"] not in before]
        active = [r for r in runs if r.get("state") in ACTIVE]
        if not active or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    final_rss = _rss_kb(ep.proc.pid)
    check = collections.Counter()
    problems = []
    for run in runs:
        state = run.get("state")
        check[f"API {state}"] += 1
        path = os.path.join(ep.state_dir, "runs", run["run_id"], "status.json")
        try:
            with open(path) as handle:
                folder = json.load(handle).get("state")
        except (OSError, ValueError):
            folder = None
        message = ((run.get("error") or {}).get("message") or "")
        if state not in FINAL:
            problems.append(f"{run['run_id']}: not final ({state})")
        elif folder == state:
            check["matches status.json"] += 1
        elif state == "FAILED" and "restarted" in message:
            check["interrupted by the kill (API FAILED, folder "
                  f"{folder or 'none'})"] += 1
        else:
            problems.append(f"{run['run_id']}: API {state} ({message[:80]}), status.json "
                            f"{folder}")
    return {"name": name, "seconds": ended - started, "calls": rec.calls, "outage": outage,
            "rss": rss, "final_rss": final_rss, "served_by": served_by,
            "runs": len(runs), "by_schedule": sum(1 for r in runs if r.get("recurring_run_id")),
            "check": check, "problems": problems}


def report(phase: dict) -> bool:
    calls, outage = phase["calls"], phase["outage"]

    def in_outage(call: tuple) -> bool:
        return bool(outage) and call[1] <= outage[1] and call[2] >= outage[0]

    steady = [c for c in calls if not in_outage(c)]
    across = [c for c in calls if in_outage(c)]
    errors = [c for c in steady if c[3]]
    print(f"\n## phase {phase['name']}: {phase['seconds']:.0f} s, "
          f"{len(steady) / phase['seconds']:.1f} requests/s outside the outage")
    print("\n| call | requests | per s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|---|")
    kinds = sorted({c[0] for c in steady})
    for kind in kinds:
        mine = [c for c in steady if c[0] == kind]
        lat = [(c[2] - c[1]) * 1000 for c in mine if not c[3]] or [0.0]
        print(f"| {kind} | {len(mine)} | {len(mine) / phase['seconds']:.1f} | "
              f"{statistics.median(lat):.1f} | {_pct(lat, 0.99):.1f} | "
              f"{sum(1 for c in mine if c[3])} |")
    lat = [(c[2] - c[1]) * 1000 for c in steady if not c[3]] or [0.0]
    print(f"| all | {len(steady)} | {len(steady) / phase['seconds']:.1f} | "
          f"{statistics.median(lat):.1f} | {_pct(lat, 0.99):.1f} | {len(errors)} |")
    for call in errors[:5]:
        print(f"  error: {call[0]}: {call[3]}")
    if outage:
        failed = [c for c in across if c[3]]
        print(f"\nkill -9 -> healthy again: {outage[1] - outage[0]:.2f} s; calls overlapping "
              f"it: {len(across)}, of which failed (lost): {len(failed)} "
              f"({dict(collections.Counter(c[0] for c in failed))})")
    for pid in phase["served_by"]:
        values = [v for p, v in phase["rss"] if p == pid]
        if values:
            end = (phase["final_rss"] if pid == phase["served_by"][-1] else 0) or values[-1]
            print(f"server pid {pid} RSS: start {values[0] / 1024:.1f} MiB, end "
                  f"{end / 1024:.1f} MiB, peak {max(values + [end]) / 1024:.1f} MiB")
    print(f"runs created in the phase: {phase['runs']} ({phase['by_schedule']} by the "
          f"schedules); {dict(phase['check'])}")
    for problem in phase["problems"]:
        print(f"  run problem: {problem}")
    return not errors and not phase["problems"]


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="both phases together")
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--think-ms", type=float, default=20)
    parser.add_argument("--upload-every", type=float, default=1.0)
    parser.add_argument("--run-every", type=float, default=6.0)
    parser.add_argument("--interval", type=int, default=5, help="the schedules' interval")
    parser.add_argument("--drain-seconds", type=float, default=180)
    parser.add_argument("--keep", action="store_true", help="keep the state folder")
    args = parser.parse_args(argv)
    if args.seconds > 1800 or args.readers > 32:
        parser.error("bounded: --seconds <= 1800, --readers <= 32")

    work = tempfile.mkdtemp(prefix="kfp-ct-soak-")
    package = os.path.join(work, "tiny.yaml")
    compiler.Compiler().compile(tiny, package)
    with open(package, "rb") as handle:
        yaml_bytes = handle.read()
    ep = Endpoint(os.path.join(work, "state"), _free_port(), uuid.uuid4().hex,
                  os.path.join(work, "server.log"))
    ok = True
    try:
        ep.start()
        made = ep.upload("soak-tiny", yaml_bytes)
        versions = ep.call("GET", f"/pipelines/{made['pipeline_id']}/versions")
        seed = {"pipeline_id": made["pipeline_id"],
                "experiment_id": ep.call("POST", "/experiments",
                                         {"display_name": "soak"})["experiment_id"],
                "ref": {"pipeline_id": made["pipeline_id"], "pipeline_version_id":
                        versions["pipeline_versions"][0]["pipeline_version_id"]}}
        print(f"state: {ep.state_dir}; {args.readers} reader threads, one uploader, one run "
              f"creator, two schedules every {args.interval} s; {os.cpu_count()} CPUs")
        for name, tag, kill in (("1 (steady)", "p1", False),
                                ("2 (kill -9 half-way)", "p2", True)):
            ok = report(run_phase(name, tag, ep, args, yaml_bytes, seed, kill)) and ok
    finally:
        ep.stop()
        print(f"\nserver log: {ep.log_path}")
        if not args.keep:
            import shutil

            shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
