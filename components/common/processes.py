"""Whether a process is still there, for records that name one by pid (a retraining
launch, a running local endpoint). Pure Python; Linux and macOS."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (one of another user counts: it cannot
    be signalled, but it is there). A pid below 1 names no one process (0 and -1 would
    ask about a whole group, or every process): False."""
    if pid < 1:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):  # a pid beyond the system's range
        return False
    return True
