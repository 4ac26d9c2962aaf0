"""What each task of the training pipeline uses: peak memory, CPU time, disk. A measurement,
not a test; pipelines/cluster.py sizes the cluster requests and limits from it.

    python -m tests.benchmarks.task_usage [--workdir DIR] [-- run-local args...]

Runs ``kfp-ct run-local`` on the bundled penguins data, each task in a new interpreter
as in a pod (``KFP_CT_WARM=0``) (run it twice: the second run has a production
baseline, so evaluate loads two models), and samples /proc every 0.1 s.
A task is the process running ``kfp.dsl.executor_main --function_to_execute <name>``
plus every process below it (push's canary, Beam workers). Per task:

- peak RSS: the largest sum of VmRSS over the task's process tree at one sample (and
  the largest VmHWM of a single process, which the sampling cannot miss);
- CPU s: user + system time of the tree, at its last sample;
- wall s: first to last sample;
- disk: the task's output artifacts (bytes under the run folder) plus the peak of the
  run's tmp/ folder while the task ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _procs() -> dict[int, tuple[int, str, int, int, int]]:
    """pid -> (ppid, cmdline, rss bytes, hwm bytes, cpu ticks)."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            hwm = 0
            with open(f"/proc/{name}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        hwm = int(line.split()[1]) * 1024
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        ppid, utime, stime, rss = int(fields[1]), int(fields[11]), int(fields[12]), int(fields[21])
        out[int(name)] = (ppid, cmd, rss * PAGE, hwm, utime + stime)
    return out


def _task_of(cmd: str) -> str | None:
    if "executor_main" not in cmd or "--function_to_execute" not in cmd:
        return None
    return cmd.split("--function_to_execute", 1)[1].split()[0]


def _du(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def sample(stop: threading.Event, workdir: str, usage: dict, run_pid: list) -> None:
    last_du = 0.0
    while not stop.is_set():
        procs = _procs()
        children: dict[int, list[int]] = {}
        for pid, (ppid, *_rest) in procs.items():
            children.setdefault(ppid, []).append(pid)
        now = time.perf_counter()
        tmp_bytes = None
        if now - last_du > 1.0:
            tmp_bytes = sum(_du(os.path.join(d, "tmp")) for d in
                            (os.path.join(workdir, x) for x in os.listdir(workdir))
                            if os.path.isdir(d)) if os.path.isdir(workdir) else 0
            last_du = now
        mine, todo = set(), list(run_pid)
        while todo:  # this run's processes only (another run may share the machine)
            p = todo.pop()
            mine.add(p)
            todo.extend(children.get(p, []))
        for pid, (_ppid, cmd, _rss, _hwm, _cpu) in procs.items():
            task = _task_of(cmd)
            if not task or pid not in mine:
                continue
            tree, todo = [], [pid]
            while todo:
                p = todo.pop()
                tree.append(p)
                todo.extend(children.get(p, []))
            rec = usage.setdefault(task, {"peak_rss": 0, "peak_hwm": 0, "cpu_ticks": 0,
                                          "first": now, "last": now, "peak_tmp": 0,
                                          "procs": 0})
            rec["peak_rss"] = max(rec["peak_rss"], sum(procs[p][2] for p in tree if p in procs))
            rec["peak_hwm"] = max([rec["peak_hwm"]] + [procs[p][3] for p in tree if p in procs])
            rec["cpu_ticks"] = max(rec["cpu_ticks"], sum(procs[p][4] for p in tree if p in procs))
            rec["procs"] = max(rec["procs"], len(tree))
            rec["last"] = now
            if tmp_bytes is not None:
                rec["peak_tmp"] = max(rec["peak_tmp"], tmp_bytes)
        stop.wait(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench_out/task_usage")
    parser.add_argument("rest", nargs="*", help="more run-local arguments")
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    usage: dict = {}
    stop = threading.Event()
    run_pid: list = []
    thread = threading.Thread(target=sample, args=(stop, workdir, usage, run_pid), daemon=True)
    started = time.perf_counter()
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "kfp-ct"),
                             "run-local", "--destination", os.path.join(workdir, "serving"),
                             "--workdir", os.path.join(workdir, "runs"), *args.rest], cwd=ROOT,
                            env={**os.environ, "KFP_CT_WARM": "0"})
    run_pid.append(proc.pid)
    thread.start()
    proc.wait()
    done = proc
    wall = time.perf_counter() - started
    stop.set()
    thread.join()
    runs = os.path.join(workdir, "runs")
    newest = max((os.path.join(runs, d) for d in os.listdir(runs)), key=os.path.getmtime)
    rows = {}
    for task, rec in usage.items():
        outputs = sum(_du(os.path.join(dirpath, d)) for dirpath, dirs, _ in os.walk(newest)
                      for d in dirs if d == task.replace("_", "-"))
        rows[task] = {"peak_rss_mib": round(rec["peak_rss"] / 2**20),
                      "peak_single_hwm_mib": round(rec["peak_hwm"] / 2**20),
                      "cpu_s": round(rec["cpu_ticks"] / CLK, 1),
                      "wall_s": round(rec["last"] - rec["first"], 1),
                      "processes": rec["procs"],
                      "outputs_mib": round(outputs / 2**20, 1),
                      "peak_tmp_mib": round(rec["peak_tmp"] / 2**20, 1)}
    print(json.dumps({"exit": done.returncode, "wall_s": round(wall, 1),
                      "run_folder_mib": round(_du(newest) / 2**20, 1), "tasks": rows}, indent=1))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
