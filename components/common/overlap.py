"""Running a stage of a local data pass one step ahead, on a second core.

The local passes over the data (validate's two, transform's analyze and write passes)
chain stages whose heavy parts release the GIL: Arrow's CSV parser, TensorFlow's ops,
tfx_bsl's example encoder. ``prefetched`` runs one stage in a background thread, a
bounded number of items ahead of its consumer, so that the two cores of a laptop-sized
machine work at once. The items arrive in their order, so what a pass writes does not
change.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_ITEM, _ERROR, _END = range(3)
_POLL_S = 0.1


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yields what ``items`` yields, in order, produced by a background thread at most
    ``depth`` items ahead (so memory stays bounded by ``depth`` items).

    An exception raised while producing is raised here, where the item that failed would
    have arrived, with its own type and message. When the consumer stops early (a
    ``break``, an exception of its own, ``close()``), the producer stops before its next
    item, ``items`` is closed in the producer's thread (its files and context managers
    are released there), and the thread is joined before control returns.
    """
    if depth < 1:
        raise ValueError(f"prefetched: depth must be at least 1, not {depth}")
    hand_off: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(message) -> bool:
        while not stop.is_set():
            try:
                hand_off.put(message, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put((_ITEM, item)):
                    return
            put((_END, None))
        except BaseException as exc:  # handed to the consumer, raised there
            put((_ERROR, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="kfp-ct-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = hand_off.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join()
