"""Processes: whether one is still there, for records that name one by pid (a retraining
launch, a running local endpoint), and SIGTERM as an exception for tasks that must undo
what they started before a pod stops (the TFJob launcher, the rollout). Pure Python;
Linux and macOS."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


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


@contextlib.contextmanager
def sigterm_raises(exc_type: type[BaseException]) -> Iterator[None]:
    """Within the block, SIGTERM (a pod's deadline, a cancelled run) raises ``exc_type``
    in the main thread, so the caller's ``finally`` can undo what it started; elsewhere
    than the main thread nothing changes.

    ``exc_type`` must derive from BaseException and not from Exception, as
    KeyboardInterrupt does: the signal lands wherever the main thread is, often inside a
    storage or HTTP call whose ``except Exception`` would turn it into that call's error."""
    if issubclass(exc_type, Exception):
        raise TypeError(f"{exc_type.__name__} derives from Exception: a handler on the way "
                        "would take SIGTERM for its own error; derive it from BaseException")
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise exc_type()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
