"""Schedules a team runs for months on the local endpoint: catch-up after downtime as KFP
backend 2.5.0's ScheduledWorkflow controller does it, the slot's time reaching each run, and
changing a schedule in place.

Clocks are fixed: schedules start in 2030 (the scheduler thread's real-time ticks find
nothing due) and the test ticks the scheduler with an explicit ``now``.
"""

import datetime as dt
import json
import time
import warnings

import pytest
from kfp import compiler, dsl
from kfp_server_api import models as m

from kfp_ct.pipelines.entrypoints import rules
from kfp_ct.pipelines.entrypoints.client import Client, ClientError
from kfp_ct.pipelines.entrypoints.local_server import LocalServer
from kfp_ct.pipelines.entrypoints.local_server import scheduler as sched
from kfp_ct.pipelines.entrypoints.local_server import server as server_mod

TOKEN = "schedule-token"
UTC = dt.timezone.utc
ACTIVE = ("PENDING", "RUNNING")
START = "2030-01-01T00:00:00Z"
DAY1 = dt.datetime(2030, 1, 1, 3, tzinfo=UTC)  # the first 03:00 slot after START


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def stamp(seconds: float, window: str, when: str) -> str:
    """Sleeps, then checks that the window is the partition of the slot it was given."""
    import time

    time.sleep(seconds)
    if window != f"data/date={when[:10]}/":
        raise ValueError(f"window {window!r} is not the partition of slot {when!r}")
    return when


@dsl.pipeline(name="stamp")
def stamp_pipeline(window: str, seconds: float = 0.0):
    stamp(seconds=seconds, window=window,
          when=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER).set_caching_options(False)


@pytest.fixture(autouse=True)
def isolated_kfp(kfp_isolated):
    warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("pkg") / "stamp.yaml"
    compiler.Compiler().compile(stamp_pipeline, str(path))
    return str(path)


def _until(check, timeout=60.0, what="the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _runs(client, schedule_id):
    runs = client._kfp().list_runs(page_size=100).runs or []
    return sorted((r for r in runs if r.recurring_run_id == schedule_id),
                  key=lambda r: r.scheduled_at)


def test_due_slots_follow_the_backend_controller():
    """KFP 2.5.0 util/periodic_schedule.go and cron_schedule.go (old code: all three differ)."""
    t0 = dt.datetime(2030, 1, 1, tzinfo=UTC)
    created = t0 + dt.timedelta(days=2)
    daily = m.V2beta1RecurringRun(trigger=m.V2beta1Trigger(cron_schedule=m.V2beta1CronSchedule(
        cron="0 0 3 * * *", start_time=t0)))
    now = t0 + dt.timedelta(days=2, hours=12)
    # A start time before the creation: the backend counts from the start time.
    assert sched.due_slots(daily, None, created.timestamp(), now, latest_only=False) == [
        t0.replace(day=d, hour=3) for d in (1, 2, 3)]
    # Periodic, more than one interval behind, no catch-up: one run at "now" (whole
    # seconds), and the next slot counts on from it.
    hourly = m.V2beta1RecurringRun(trigger=m.V2beta1Trigger(
        periodic_schedule=m.V2beta1PeriodicSchedule(interval_second="3600")))
    later = t0 + dt.timedelta(hours=5, minutes=30, microseconds=5)
    assert sched.due_slots(hourly, None, t0.timestamp(), later, latest_only=True) == [
        later.replace(microsecond=0)]
    # ... at the end time when that came first.
    ending = m.V2beta1RecurringRun(trigger=m.V2beta1Trigger(
        periodic_schedule=m.V2beta1PeriodicSchedule(
            interval_second="3600", end_time=t0 + dt.timedelta(hours=3, minutes=10))))
    assert sched.due_slots(ending, None, t0.timestamp(), later, latest_only=True) == [
        t0 + dt.timedelta(hours=3, minutes=10)]
    # Less than one interval behind: the slot itself.
    assert sched.due_slots(hourly, None, t0.timestamp(), t0 + dt.timedelta(minutes=90),
                           latest_only=True) == [t0 + dt.timedelta(hours=1)]


def test_schedule_templates_become_the_slot_partition():
    """Old code: no rules.schedule_templates / fill_schedule_macros."""
    value = rules.schedule_templates("gs://b/data/date={schedule_date}/at={schedule_time}")
    slot = dt.datetime(2030, 1, 2, 3, tzinfo=UTC)
    now = slot + dt.timedelta(days=3)
    assert rules.fill_schedule_macros(value, slot, now) == (
        "gs://b/data/date=2030-01-02/at=2030-01-02T03:00:00Z")
    assert rules.fill_schedule_macros("[[ScheduledTime]]-[[CurrentTime]]", slot, now) == (
        "20300102030000-20300105030000")
    assert rules.fill_schedule_macros(0.5, slot, now) == 0.5


def test_downtime_catch_up_slot_times_and_update_in_place(tmp_path, package):
    """Three daily slots missed while the server was down. With catch-up: a run per slot,
    oldest first, never more than max_concurrency active; without: one run, for the
    latest slot. Each run gets its own slot time and reads its own partition, and the
    schedule changes in place while its runs go on.

    Old code: the runs' parameters kept '{{$.scheduledTime...}}' and the spec kept the
    placeholder (the stamp task fails), and PATCH answered 405."""
    state = tmp_path / "state"
    first = LocalServer(str(state), token=TOKEN).start()
    try:
        client = Client(first.url, token=TOKEN)
        client.upload(package=package, version="v1")
        params = {"window": "data/date={schedule_date}/", "seconds": 60.0}
        catchup = client.schedule("stamp", "daily", cron="0 0 3 * * *", params=params,
                                  max_concurrency=2, no_catchup=False, start_time=START)
        latest = client.schedule("stamp", "daily-latest", cron="0 0 3 * * *", params=params,
                                 max_concurrency=2, no_catchup=True, start_time=START)
    finally:
        first.stop()

    server = LocalServer(str(state), token=TOKEN).start()  # back after three slots
    try:
        client = Client(server.url, token=TOKEN)
        now = dt.datetime(2030, 1, 3, 12, tzinfo=UTC)
        assert server.scheduler.tick(now=now) == 3  # 2 (max_concurrency) + 1 (latest)
        assert server.scheduler.tick(now=now) == 0
        runs = _runs(client, catchup.recurring_run_id)
        assert [r.scheduled_at for r in runs] == [DAY1, DAY1 + dt.timedelta(days=1)]
        [only] = _runs(client, latest.recurring_run_id)
        assert only.scheduled_at == DAY1 + dt.timedelta(days=2)
        for run in runs + [only]:
            day = run.scheduled_at.strftime("%Y-%m-%d")
            assert run.runtime_config.parameters["window"] == f"data/date={day}/"
            spec = json.dumps(server._store.run_spec(run.run_id))
            assert rules.SCHEDULE_TIME_PLACEHOLDER not in spec
            assert run.scheduled_at.strftime("%Y-%m-%dT%H:%M:%SZ") in spec

        # Changed in place: same id, its two runs still going.
        changed = client.update_schedule("daily", params={"seconds": 0.0}, max_concurrency=3)
        assert changed.recurring_run_id == catchup.recurring_run_id
        assert changed.max_concurrency == 3
        states = {r.run_id: client.get_run(r.run_id).state for r in runs}
        assert all(s in ACTIVE for s in states.values()), states
        # The third missed slot runs with the new parameters, beside the two.
        assert server.scheduler.tick(now=now) == 1
        third = _runs(client, catchup.recurring_run_id)[-1]
        assert third.scheduled_at == DAY1 + dt.timedelta(days=2)
        assert third.runtime_config.parameters == {"window": "data/date=2030-01-03/",
                                                   "seconds": 0.0}
        for run in runs + [only]:  # the endpoint runs one run at a time: end the sleepers
            client._kfp().terminate_run(run.run_id)
        done = client.wait(third.run_id, timeout_s=120, poll_s=0.3)
        assert done.state == "SUCCEEDED", done  # the task saw its slot and its partition
    finally:
        server.stop()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, package):
    srv = LocalServer(str(tmp_path_factory.mktemp("endpoint")), token=TOKEN).start()
    client = Client(srv.url, token=TOKEN)
    client.upload(package=package, version="v1")
    client.upload(package=package, version="v2")
    yield srv, client
    srv.stop()


def test_cli_updates_trigger_version_and_catchup(endpoint, run_cli):
    """Old code: no `schedule update` command."""
    srv, client = endpoint
    made = client.schedule("stamp", "cli-sched", cron="0 0 3 * * *", version="v1",
                           params={"window": "w"}, start_time=START)
    assert made.no_catchup  # the client's default: no catch-up storm after downtime
    code, out, err = run_cli("--endpoint", srv.url, "--existing-token", TOKEN, "--output",
                             "json", "schedule", "update", "cli-sched", "--interval", "7200",
                             "--version", "v2", "--catchup", "-p", "seconds=1.5")
    assert code == 0, err
    assert json.loads(out)["recurring_run_id"] == made.recurring_run_id
    raw = client._kfp().get_recurring_run(made.recurring_run_id)
    assert raw.trigger.periodic_schedule.interval_second == "7200"
    assert raw.trigger.cron_schedule is None
    assert raw.trigger.periodic_schedule.start_time == dt.datetime(2030, 1, 1, tzinfo=UTC)
    assert raw.no_catchup is not True
    assert raw.runtime_config.parameters == {"window": "w", "seconds": 1.5}
    v2 = client._version_objects(raw.pipeline_version_reference.pipeline_id, "v2")[0]
    assert raw.pipeline_version_reference.pipeline_version_id == v2.pipeline_version_id
    code, _, err = run_cli("--endpoint", srv.url, "--existing-token", TOKEN, "schedule",
                           "update", "cli-sched", "--max-concurrency", "11")
    assert code != 0 and "max_concurrency" in err.lower().replace(" ", "_")


def test_update_on_an_endpoint_without_it_refuses_and_says_what_to_do(endpoint,
                                                                      monkeypatch):
    """The KFP API has no update call: the client refuses, naming the replacement steps
    and what they lose (old code: no update_schedule)."""
    srv, client = endpoint
    made = client.schedule("stamp", "kfp-like", cron="0 0 3 * * *", params={"window": "w"},
                           start_time=START)
    routes = [(p, {k: v for k, v in methods.items() if k != "PATCH"})
              for p, methods in server_mod.ROUTES]
    monkeypatch.setattr(server_mod, "ROUTES", routes)
    with pytest.raises(ClientError) as err:
        client.update_schedule("kfp-like", max_concurrency=2)
    text = str(err.value)
    assert "HTTP 405" in text and "Nothing was changed" in text
    assert "schedule disable" in text and "new id" in text
    assert client.get_schedule("kfp-like").max_concurrency == made.max_concurrency


def test_enable_after_a_missed_slot_runs_it_as_the_backend_does(tmp_path, package,
                                                                 monkeypatch):
    """The backend keeps LastTriggeredTime across disable / enable, so with no_catchup the
    slot missed while disabled runs at enable (old code counted from the enable: none)."""
    clock = [dt.datetime(2030, 1, 1, tzinfo=UTC)]
    monkeypatch.setattr(server_mod, "utcnow", lambda: clock[0])
    server = LocalServer(str(tmp_path / "state"), token=TOKEN).start()
    try:
        client = Client(server.url, token=TOKEN)
        client.upload(package=package, version="v1")
        made = client.schedule("stamp", "paused", cron="0 0 3 * * *",
                               params={"window": "data/date={schedule_date}/"})
        client.disable_schedule("paused")
        clock[0] = dt.datetime(2030, 1, 1, 12, tzinfo=UTC)
        assert server.scheduler.tick(now=clock[0]) == 0
        client.enable_schedule("paused")
        assert server.scheduler.tick(now=clock[0]) == 1
        [run] = _runs(client, made.recurring_run_id)
        assert run.scheduled_at == DAY1
        assert run.runtime_config.parameters["window"] == "data/date=2030-01-01/"
    finally:
        server.stop()
