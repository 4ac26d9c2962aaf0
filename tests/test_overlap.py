"""kfp_ct.components.common.overlap.prefetched: order, bounded look-ahead, errors, early stops."""

import threading
import time

import pytest

from kfp_ct.components.common.errors import InputDataError
from kfp_ct.components.common.overlap import prefetched


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "kfp-ct-prefetch" and t.is_alive()]


class _Source:
    """A generator that records how far it got and whether it was closed."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at = n, fail_at
        self.produced, self.closed, self.threads = 0, False, set()

    def __iter__(self):
        try:
            for i in range(self.n):
                self.threads.add(threading.get_ident())
                if i == self.fail_at:
                    raise InputDataError(f"data.csv: line {i + 2}: bad value 'heavy'")
                self.produced += 1
                yield i
        finally:
            self.closed = True


def test_yields_every_item_in_order_from_another_thread():
    source = _Source(1000)
    assert list(prefetched(iter(source))) == list(range(1000))
    assert source.closed
    assert source.threads and threading.get_ident() not in source.threads
    assert _prefetch_threads() == []


def test_runs_at_most_depth_items_ahead_of_the_consumer():
    source = _Source(50)
    seen = []
    for item in prefetched(iter(source), depth=3):
        time.sleep(0.01)  # a slow consumer: the producer must wait for it
        # queued (3) + the one being handed over (1) + the one consumed
        assert source.produced - len(seen) <= 5, (source.produced, len(seen))
        seen.append(item)
    assert seen == list(range(50))


def test_an_error_while_producing_arrives_where_its_item_would_have():
    source = _Source(10, fail_at=4)
    got = []
    with pytest.raises(InputDataError, match=r"data.csv: line 6: bad value 'heavy'"):
        for item in prefetched(iter(source)):
            got.append(item)
    assert got == [0, 1, 2, 3]
    assert source.closed
    assert _prefetch_threads() == []


def test_a_consumer_that_stops_early_stops_and_closes_the_producer():
    source = _Source(10_000)
    for item in prefetched(iter(source), depth=2):
        if item == 5:
            break
    # break closes the generator: the producer thread is stopped and joined by then
    assert _prefetch_threads() == []
    assert source.closed
    assert source.produced < 20


def test_a_consumer_error_stops_the_producer():
    source = _Source(10_000)
    with pytest.raises(RuntimeError, match="consumer failed"):
        for item in prefetched(iter(source)):
            if item == 3:
                raise RuntimeError("consumer failed")
    assert _prefetch_threads() == []
    assert source.closed and source.produced < 20


def test_a_producer_blocked_on_a_full_queue_is_released_when_the_consumer_leaves():
    source = _Source(10_000)
    stream = prefetched(iter(source), depth=1)
    assert next(stream) == 0
    time.sleep(0.3)  # the producer fills the queue and waits on it
    stream.close()
    assert _prefetch_threads() == []
    assert source.closed


def test_depth_below_one_is_refused():
    with pytest.raises(ValueError, match="depth must be at least 1, not 0"):
        next(prefetched(iter([1]), depth=0))
