"""Fires the local endpoint's recurring runs on their schedules.

A thread looks every ``poll_s`` at each ENABLED recurring run. Its next slot is:

* periodic: the last slot (or, before the first, the start time or else the time it was
  created / enabled) plus the interval;
* cron: the first cron time after that same point (``rules.next_cron_times``).

When a slot is due (now >= slot, within start / end), and fewer of its runs are active
(PENDING or RUNNING) than ``max_concurrency``, a run is created for the slot and the
pointer moves on; at the limit nothing is created and the pointer waits. With
``no_catchup`` only the latest due slot gets a run; without, each missed slot gets one in
turn. The pointer is in SQLite, so a restart continues the schedule.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from typing import Callable, Iterator, Optional

from kfp_server_api import models as m

from kfp_ct.pipelines.entrypoints import rules
from kfp_ct.pipelines.entrypoints.local_server.store import Store

# Cron slots looked at in one go when catching up (no_catchup jumps over the rest).
_MAX_SLOTS_PER_TICK = 100_000


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def schedule_window(recurring: m.V2beta1RecurringRun) -> tuple:
    """``(start_time, end_time)`` of a recurring run's trigger (aware or None)."""
    trigger = recurring.trigger or m.V2beta1Trigger()
    schedule = trigger.cron_schedule or trigger.periodic_schedule
    if schedule is None:
        return None, None
    return (rules.parse_time(schedule.start_time, "start time"),
            rules.parse_time(schedule.end_time, "end time"))


def slots_after(recurring: m.V2beta1RecurringRun, after: dt.datetime) -> Iterator[dt.datetime]:
    """The recurring run's slots strictly after ``after``, in order."""
    trigger = recurring.trigger
    if trigger.periodic_schedule is not None:
        step = dt.timedelta(seconds=int(trigger.periodic_schedule.interval_second))
        when = after
        while True:
            when = when + step
            yield when
    else:
        yield from rules.next_cron_times(trigger.cron_schedule.cron, after)


def due_slots(recurring: m.V2beta1RecurringRun, last_slot: Optional[float], anchor: float,
              now: dt.datetime, latest_only: bool) -> list:
    """The slots due at ``now`` (at most one when ``latest_only``), oldest first.

    Args:
        recurring: The recurring run (its trigger).
        last_slot: Epoch s of the last slot that got a run, or None.
        anchor: Epoch s the schedule counts from when no slot fired yet (created or
            re-enabled).
        now: The time now (aware).
        latest_only: Return only the latest due slot (no_catchup).
    """
    start, end = schedule_window(recurring)
    if last_slot is not None:
        base = _utc(last_slot)
    else:
        base = _utc(anchor)
        if start is not None and start > base:
            base = start
    trigger = recurring.trigger
    if latest_only and trigger.periodic_schedule is not None:  # no need to walk the slots
        step = int(trigger.periodic_schedule.interval_second)
        behind = int((now - base).total_seconds() // step)
        if behind < 1:
            return []
        slot = base + dt.timedelta(seconds=behind * step)
        if end is not None and slot > end:
            behind = int((end - base).total_seconds() // step)
            if behind < 1:
                return []
            slot = base + dt.timedelta(seconds=behind * step)
        return [slot]
    out: list = []
    for i, slot in enumerate(slots_after(recurring, base)):
        if slot > now or (end is not None and slot > end) or i >= _MAX_SLOTS_PER_TICK:
            break
        if start is not None and slot < start:
            continue
        if latest_only:
            out[:] = [slot]
        else:
            out.append(slot)
            if len(out) >= 10:  # max_concurrency caps what one tick can start anyway
                break
    return out


class Scheduler:
    """The recurring-run thread (see the module docstring).

    Args:
        store: The endpoint's state.
        create_run: ``create_run(recurring_run, slot)`` makes the run for one slot.
        poll_s: How often to look.
    """

    def __init__(self, store: Store,
                 create_run: Callable[[m.V2beta1RecurringRun, dt.datetime], None],
                 poll_s: float = 0.25) -> None:
        self.store = store
        self.create_run = create_run
        self.poll_s = poll_s
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._reported: dict = {}

    def start(self) -> None:
        """Starts the scheduler thread."""
        self._thread = threading.Thread(target=self._loop, name="kfp-ct-scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stops the thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.tick()
            except Exception as exc:  # never let the schedule die silently
                print(f"[kfp-ct] scheduler: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._stopping.wait(self.poll_s)

    def tick(self, now: Optional[dt.datetime] = None) -> int:
        """Creates the runs due now; returns how many."""
        created = 0
        for recurring in self.store.list("recurring_run"):
            if recurring.status != "ENABLED" or self._stopping.is_set():
                continue
            created += self._fire(recurring, now)
        return created

    def _fire(self, recurring: m.V2beta1RecurringRun, now: Optional[dt.datetime]) -> int:
        created = 0
        with self.store.lock:
            # Read again under the lock: disable / delete may have happened meanwhile.
            recurring = self.store.get("recurring_run", recurring.recurring_run_id)
            if recurring is None or recurring.status != "ENABLED":
                return 0
            rid = recurring.recurring_run_id
            when = now or dt.datetime.now(dt.timezone.utc)
            last_slot, anchor = self.store.schedule_of(rid)
            slots = due_slots(recurring, last_slot, anchor, when,
                              latest_only=bool(recurring.no_catchup))
            limit = int(recurring.max_concurrency or 1)
            for slot in slots:
                if self.store.active_runs_of(rid) >= limit:
                    break  # wait: the pointer stays on this slot
                try:
                    self.create_run(recurring, slot)
                except Exception as exc:  # e.g. the experiment is gone: say it once
                    message = f"{type(exc).__name__}: {exc}"
                    if self._reported.get(rid) != message:
                        self._reported[rid] = message
                        recurring.error = m.GooglerpcStatus(code=9, message=message,
                                                            details=[])
                        self.store.save_recurring_run(recurring)
                    break
                self.store.set_schedule(rid, slot.timestamp())
                created += 1
        return created
