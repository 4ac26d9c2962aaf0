"""A task stand-in for tests/test_warm.py: reports what its process looks like."""

import json
import os
import random
import signal
import sys

import numpy as np


def main() -> int:
    what = sys.argv[1]
    if what == "report":
        leaked = getattr(json, "KFP_CT_LEAK", None)
        json.KFP_CT_LEAK = "set by an earlier task"  # must not reach the next one
        print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(),
                          "env": os.environ.get("PROBE_VALUE"), "leaked": leaked,
                          "numpy": float(np.random.random()), "random": random.random(),
                          "main": __name__, "preloaded": "numpy" in sys.modules}))
        return 0
    if what == "exit":
        return int(sys.argv[2])
    if what == "raise":
        raise ValueError("the task's own error")
    if what == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    if what == "sleep":
        import time

        print("sleeping", flush=True)
        time.sleep(60)
    return 9


if __name__ == "__main__":
    sys.exit(main())
