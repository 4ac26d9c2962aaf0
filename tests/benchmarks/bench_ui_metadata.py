"""What recording runs in ML Metadata costs the local endpoint (issue target: < 1 s and
< 50 MB for a penguins run).

Each measurement is a fresh interpreter that starts a LocalServer (metadata on or off),
uploads the training pipeline, runs it on the bundled penguins data and waits for it.
It reports: the run's wall time (created to finished), the seconds the server spent in
``Metadata.record`` (every call, the final one included), the server process's peak RSS
(VmHWM) and its RSS before the run, and the store's size on disk. Modes alternate, so
slow drift of the machine falls on both.

    .venv/bin/python -m tests.benchmarks.bench_ui_metadata [--runs 2] [--train-steps 300]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r'''
import json, os, sys, time, urllib.request
from kfp_ct.pipelines.entrypoints import catalog
from kfp_ct.pipelines.entrypoints.local_server import LocalServer
from kfp_ct.pipelines.entrypoints.local_server import metadata as md

def rss(field):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
state, steps, on = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "on"
spent = [0.0, 0]
real = md.Metadata.record
def timed(self, *a, **k):
    t = time.perf_counter()
    try:
        return real(self, *a, **k)
    finally:
        spent[0] += time.perf_counter() - t
        spent[1] += 1
md.Metadata.record = timed
package = os.path.join(state, "training.yaml")
catalog.compile_to("training", package)
server = LocalServer(os.path.join(state, "s"), metadata=on, poll_s=0.1).start()
def call(method, path, body=None, raw=None, ctype="application/json"):
    data = raw if raw is not None else (json.dumps(body).encode() if body else None)
    req = urllib.request.Request(server.url + path, data=data, method=method,
                                 headers={"Content-Type": ctype})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")
with open(package, "rb") as fh:
    content = fh.read()
b = "b0undary"
raw = (f"--{b}\r\nContent-Disposition: form-data; name=\"uploadfile\"; filename=\"t.yaml\""
       f"\r\n\r\n").encode() + content + f"\r\n--{b}--\r\n".encode()
pid = call("POST", "/apis/v2beta1/pipelines/upload?name=t", raw=raw,
           ctype=f"multipart/form-data; boundary={b}")["pipeline_id"]
vid = call("GET", f"/apis/v2beta1/pipelines/{pid}/versions")["pipeline_versions"][0][
    "pipeline_version_id"]
before = rss("VmRSS:")
run = call("POST", "/apis/v2beta1/runs", {"display_name": "bench",
           "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id": vid},
           "runtime_config": {"parameters": {"push_destination": os.path.join(state, "serve"),
                                             "train_steps": steps}}})
while True:
    got = call("GET", f"/apis/v2beta1/runs/{run['run_id']}")
    if got["state"] in ("SUCCEEDED", "FAILED", "CANCELED"):
        break
    time.sleep(0.1)
time.sleep(0.5)  # the executor records the finished run right after it saves the state
import datetime as dt
wall = (dt.datetime.fromisoformat(got["finished_at"].replace("Z", "+00:00")) -
        dt.datetime.fromisoformat(got["created_at"].replace("Z", "+00:00"))).total_seconds()
store = os.path.join(server.state_dir, "mlmd.sqlite")
out = {"state": got["state"], "wall_s": wall, "record_s": spent[0], "record_calls": spent[1],
       "rss_before_mb": before, "peak_rss_mb": rss("VmHWM:"),
       "store_kb": os.path.getsize(store) / 1024 if os.path.exists(store) else 0}
server.stop()
print("RESULT " + json.dumps(out))
'''


def one(mode: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as state:
        proc = subprocess.run([sys.executable, "-c", CHILD, state, str(steps), mode],
                              capture_output=True, text=True, timeout=900)
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise SystemExit(f"{mode}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    result = json.loads(line[-1][len("RESULT "):])
    if result["state"] != "SUCCEEDED":
        raise SystemExit(f"{mode}: the run ended {result['state']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=300)
    args = parser.parse_args()
    results: dict = {"off": [], "on": []}
    for _ in range(args.runs):
        for mode in ("off", "on"):
            results[mode].append(one(mode, args.train_steps))
            print(mode, json.dumps(results[mode][-1]), flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "state"}
           for m, rs in results.items()}
    print("\n| measure (median of %d) | metadata off | metadata on | added |" % args.runs)
    print("|---|---|---|---|")
    for key, label in (("wall_s", "run wall, s"), ("record_s", "time in Metadata.record, s"),
                       ("record_calls", "record calls"),
                       ("rss_before_mb", "server RSS before the run, MB"),
                       ("peak_rss_mb", "server peak RSS, MB"), ("store_kb", "store, KB")):
        off, on = med["off"][key], med["on"][key]
        print(f"| {label} | {off:.2f} | {on:.2f} | {on - off:+.2f} |")


if __name__ == "__main__":
    os.environ.setdefault("KFP_CT_WARM", "1")
    main()
