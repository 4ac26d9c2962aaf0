"""Fires the local endpoint's recurring runs on their schedules.

A thread looks every ``poll_s`` at each ENABLED recurring run and computes its next slot
exactly as KFP backend 2.5.0's ScheduledWorkflow controller does (``_next_slot``): from the
last slot, else the start time, else the time it was created (disable / enable keeps the
last slot, as the backend keeps ``LastTriggeredTime``). When a slot is due (now >= slot, not past the end time) and fewer of its runs
are active (PENDING or RUNNING) than ``max_concurrency``, a run is created for the slot,
with the slot as its ``scheduled_at`` and schedule time, and the pointer moves on; at the
limit nothing is created and the pointer waits. Without ``no_catchup`` every missed slot
gets a run, oldest first, never more than ``max_concurrency`` at a time; with it, one run
for the latest missed slot (a periodic schedule more than one interval behind fires at
"now", as the backend does). The pointer is in SQLite, so a restart continues the schedule.
"""

from __future__ import annotations

import datetime as dt
import sys
import threading
from typing import Callable, Optional

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


def _next_slot(recurring: m.V2beta1RecurringRun, last_slot: Optional[dt.datetime],
               anchor: dt.datetime, now: dt.datetime, catchup: bool) -> Optional[dt.datetime]:
    """The next slot, as KFP backend 2.5.0's ScheduledWorkflow controller computes it.

    A port of ``backend/src/crd/controller/scheduledworkflow/util/`` (periodic_schedule.go,
    cron_schedule.go): the schedule counts from the last slot, else the start time, else the
    time it was created (``anchor``); a start time later than that point wins. Periodic: the
    first slot is the start time itself when that is later, else the point plus the interval.
    Without catch-up, a periodic schedule more than one interval behind fires once at
    ``now`` (or at the end time when that is earlier) and counts on from there; a cron
    schedule fires once at its latest cron time not after now or the end time. None: no
    slot left (past the end time).
    """
    start, end = schedule_window(recurring)
    now = now.replace(microsecond=0)  # the backend counts in whole epoch seconds
    base = last_slot or start or anchor
    trigger = recurring.trigger
    if trigger.periodic_schedule is not None:
        step = dt.timedelta(seconds=int(trigger.periodic_schedule.interval_second) or 1)
        slot = start if start is not None and start > base else base + step
        if end is not None and end < slot:
            return None
        if not catchup and now >= slot + step:
            return end if end is not None and end < now else now
        return slot
    if start is not None and start > base:
        base = start
    times = rules.next_cron_times(trigger.cron_schedule.cron, base)
    slot = next(times)
    if end is not None and end < slot:
        return None
    if not catchup:
        for i, later in enumerate(times):
            if later > now or (end is not None and later > end) or i >= _MAX_SLOTS_PER_TICK:
                break
            slot = later
    return slot


def due_slots(recurring: m.V2beta1RecurringRun, last_slot: Optional[float], anchor: float,
              now: dt.datetime, latest_only: bool) -> list:
    """The slots due at ``now`` (at most one when ``latest_only``), oldest first.

    Each slot follows the one before as ``_next_slot`` says; the scheduler creates their
    runs in order while fewer than ``max_concurrency`` runs of the schedule are active (the
    backend submits one per reconcile under the same limit), so one tick needs at most 10.

    Args:
        recurring: The recurring run (its trigger).
        last_slot: Epoch s of the last slot that got a run, or None.
        anchor: Epoch s the schedule counts from when no slot fired and it has no start
            time (its creation).
        now: The time now (aware).
        latest_only: no_catchup: jump to the latest due slot (see ``_next_slot``).
    """
    out: list = []
    last = None if last_slot is None else _utc(last_slot)
    while len(out) < (1 if latest_only else 10):
        slot = _next_slot(recurring, last, _utc(anchor), now, catchup=not latest_only)
        if slot is None or slot > now:
            break
        out.append(slot)
        last = slot
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
