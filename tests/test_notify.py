"""Notices to a webhook (components/common/notify.py) and the failed-run notice
(components/notify), against a receiver on 127.0.0.1 that can fail on purpose.

The failed-run notice is checked end to end: a tiny pipeline whose body raises runs
through kfp-ct's local runner (run-local's path) and through the local endpoint; the
runner runs the pipeline's exit task after the failed body, and the receiver gets the
failing task and its log's last lines.
"""

import http.server
import json
import os
import threading
import time
import urllib.parse
import warnings

import pytest
from kfp import compiler, dsl

from kfp_ct.components.common import notify
from kfp_ct.components.common.errors import KfpCtError
from kfp_ct.components.notify import logic
from kfp_ct.components.notify.component import announce_failure

SECRET = "T0KEN-in-the-path-9f8e7d"
BEARER = "bearer-s3cret-5a4b3c"


# ------------------------------------------------------------------------ receiver


class Receiver:
    """A webhook on 127.0.0.1: records every request; answers from ``plan`` (one
    status per request: an int, or "hang" to answer nothing for ``hang_s``), then
    ``then`` for every later request."""

    def __init__(self, plan=(), then=200, hang_s=3.0):
        self.plan, self.then, self.hang_s = list(plan), then, hang_s
        self.requests = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with owner._lock:
                    owner.requests.append({"path": self.path, "headers": dict(self.headers),
                                           "body": json.loads(body or b"null")})
                    answer = owner.plan.pop(0) if owner.plan else owner.then
                if answer == "hang":
                    time.sleep(owner.hang_s)
                    return
                self.send_response(answer)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if answer == 200 else b"no")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    """Retries wait 10 ms, not seconds; no proxy stands between us and 127.0.0.1."""
    monkeypatch.setattr(notify, "BACKOFF_S", 0.01)
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _cfg(**kw):
    return notify.parse_config(kw)


# --------------------------------------------------------------------------- send


def test_a_notice_is_delivered_after_the_receiver_fails_twice():
    with Receiver(plan=[500, 503]) as rx:
        record = notify.send(_cfg(url=rx.url + "/hook", retries=3), "drift",
                             "drift found", {"model_base": "/m", "drifted": ["island"]})
    assert record == {"event": "drift", "target": rx.url + "/hook", "delivered": True,
                      "attempts": 3, "status": 200, "error": ""}
    assert len(rx.requests) == 3
    body = rx.requests[-1]["body"]
    assert list(body) == ["text", "event", "record"]  # Slack reads "text"
    assert body == {"text": "drift found", "event": "drift",
                    "record": {"model_base": "/m", "drifted": ["island"]}}
    assert rx.requests[-1]["headers"]["Content-Type"].startswith("application/json")


def test_a_receiver_that_always_fails_gives_a_record_and_never_raises():
    with Receiver(then=500) as rx:
        record = notify.send(_cfg(url=rx.url, retries=2), "launch_failed", "x", {})
    assert record["delivered"] is False and record["attempts"] == 3
    assert record["status"] == 500 and "HTTP 500" in record["error"]
    assert "after 3 attempts" in record["error"] and len(rx.requests) == 3


def test_a_refusal_other_than_429_is_not_retried():
    with Receiver(plan=[404]) as rx:
        record = notify.send(_cfg(url=rx.url, retries=3), "launched", "x", {})
    assert (record["delivered"], record["attempts"], record["status"]) == (False, 1, 404)
    with Receiver(plan=[429]) as rx:
        record = notify.send(_cfg(url=rx.url, retries=3), "launched", "x", {})
    assert (record["delivered"], record["attempts"], record["status"]) == (True, 2, 200)


def test_a_receiver_that_hangs_is_cut_at_the_timeout_each_try():
    with Receiver(plan=["hang", "hang"], hang_s=3.0) as rx:
        started = time.monotonic()
        record = notify.send(_cfg(url=rx.url, retries=1, timeout_s=0.3), "drift", "x", {})
        took = time.monotonic() - started
    assert record["delivered"] is False and record["attempts"] == 2
    assert record["status"] is None and "timeout" in record["error"]
    assert took < 2.0, took


def test_a_closed_port_is_a_recorded_failure():
    with Receiver() as rx:
        url = rx.url
    record = notify.send(_cfg(url=url, retries=1), "drift", "x", {})
    assert record["delivered"] is False and record["attempts"] == 2
    assert "refused" in record["error"] or "connect" in record["error"]


def test_secrets_from_env_and_file_are_sent_but_never_recorded(tmp_path, monkeypatch):
    with Receiver(plan=[200, 200, 500, 500]) as rx:
        secret_url = f"{rx.url}/hook/{SECRET}?sig={SECRET}"
        monkeypatch.setenv("KFPCT_TEST_WEBHOOK", secret_url)
        monkeypatch.setenv("KFPCT_TEST_TOKEN", BEARER)
        from_env = notify.parse_config({"url_env": "KFPCT_TEST_WEBHOOK",
                                        "token_env": "KFPCT_TEST_TOKEN", "retries": 0})
        secret_file = tmp_path / "webhook"
        secret_file.write_text(secret_url + "\n")
        token_file = tmp_path / "token"
        token_file.write_text(BEARER)
        from_file = notify.parse_config({"url_file": str(secret_file),
                                         "token_file": str(token_file), "retries": 0})
        records = [notify.send(from_env, "not_blessed", "t", {"a": 1}),
                   notify.send(from_file, "not_blessed", "t", {"a": 1}),
                   notify.send(from_env, "not_blessed", "t", {"a": 1}),  # 500: an error
                   notify.announce_failed_run(from_file, "p", "r", "n", "train", ["x"])]
    assert [r["delivered"] for r in records] == [True, True, False, False]
    assert records[0]["target"] == "env KFPCT_TEST_WEBHOOK"
    assert records[1]["target"] == f"file {secret_file}"
    for request in rx.requests:
        assert request["path"] == f"/hook/{SECRET}?sig={SECRET}"
        assert request["headers"]["Authorization"] == f"Bearer {BEARER}"
    written = json.dumps(records) + repr(from_env) + repr(from_file) + json.dumps(
        [from_env.to_json(), from_file.to_json()])
    assert SECRET not in written and BEARER not in written


def test_an_inline_url_is_described_without_its_secret_parts():
    cfg = _cfg(url=f"https://user:pw@hooks.example.com/services/{SECRET}?token={SECRET}")
    assert cfg.describe() == "https://hooks.example.com/services/***?***"
    assert SECRET not in json.dumps(cfg.to_json()) and "pw" not in cfg.describe()


def test_a_missing_secret_is_a_recorded_failure_naming_only_its_source(tmp_path, monkeypatch):
    monkeypatch.delenv("KFPCT_NOT_SET", raising=False)
    record = notify.send({"url_env": "KFPCT_NOT_SET"}, "drift", "x", {})
    assert record["delivered"] is False and record["attempts"] == 0
    assert "KFPCT_NOT_SET is not set" in record["error"]
    record = notify.send({"url_file": str(tmp_path / "nope")}, "drift", "x", {})
    assert record["delivered"] is False and "cannot read" in record["error"]
    (tmp_path / "bad").write_text("ftp://example.com/x")
    record = notify.send({"url_file": str(tmp_path / "bad")}, "drift", "x", {})
    assert "not an http(s) URL" in record["error"] and "ftp" not in record["error"]


def test_an_event_the_target_does_not_take_is_skipped_without_a_request():
    with Receiver() as rx:
        cfg = _cfg(url=rx.url, events=["drift", "run_failed"])
        skipped = notify.send(cfg, "launched", "x", {})
        sent = notify.send(cfg, "drift", "x", {})
        none = notify.send(None, "drift", "x", {})
    assert skipped["delivered"] is False and "skipped" in skipped and not skipped["error"]
    assert sent["delivered"] and len(rx.requests) == 1
    assert none["skipped"] == "no notification target is configured"
    assert notify.send({"url": rx.url}, "no_such_event", "x", {})["error"].startswith(
        "unknown event")


@pytest.mark.parametrize("config, words", [
    ({"url": "https://a", "url_env": "X"}, "exactly one of"),
    ({"retries": 2}, "exactly one of"),
    ({"url": "ftp://example.com/x"}, "'url' must be an http"),
    ({"url": "https://a", "colour": "red"}, "unknown key(s) ['colour']"),
    ({"url_env": "not a name"}, "'url_env' must name an environment variable"),
    ({"url": "https://a", "events": ["drift", "lunch"]}, "unknown event(s) ['lunch']"),
    ({"url": "https://a", "retries": -1}, "'retries' must be an integer"),
    ({"url": "https://a", "retries": True}, "'retries' must be an integer"),
    ({"url": "https://a", "timeout_s": 0}, "'timeout_s' must be a number"),
    ({"url": "https://a", "token_env": "A", "token_file": "/b"}, "at most one of"),
    ("[1, 2]", "expected a JSON object"),
    ("{not json", "not valid JSON"),
])
def test_bad_configs_are_refused_naming_the_key(config, words):
    with pytest.raises(KfpCtError) as err:
        notify.parse_config(config)
    assert words in str(err.value) and str(err.value).startswith("notify: ")


@pytest.mark.parametrize("option, target, words", [
    ("--notify", '{"url_env": "SLACK_WEBHOOK_URL", "chanel": "#ml"}',
     "--notify: unknown key(s) ['chanel']"),
    ("--notify", '{"url": "ftp://hooks.example.com/x"}',
     "--notify: 'url' must be an http:// or https:// URL"),
    ("--notify", '{"url_env": "SLACK_WEBHOOK_URL", "retries": 99}',
     "--notify: 'retries' must be an integer"),
    ("--params", '{"notify": {"url_env": "SLACK WEBHOOK"}}',
     "--params: notify: 'url_env' must name an environment variable"),
])
def test_run_local_refuses_a_bad_notify_target_before_any_task_runs(tmp_path, option,
                                                                    target, words):
    """``kfp-ct run-local --notify`` (the training pipeline's ``notify``): a bad target
    ends the command with exit 2 and one line naming the key, and nothing runs."""
    from click.testing import CliRunner

    from kfp_ct.pipelines.entrypoints import cli

    runner = CliRunner()
    with runner.isolation() as (out, err, _):  # main(): the exit status kfp-ct returns
        code = cli.main(["run-local", "--cold", "--destination", str(tmp_path / "models"),
                         "--workdir", str(tmp_path / "runs"), option, target])
    lines = err.getvalue().decode().splitlines()
    assert code == 2, (out.getvalue(), lines)
    assert len(lines) == 1 and lines[0].startswith(f"error: {words}"), lines
    assert out.getvalue() == b""
    assert not (tmp_path / "runs").exists() and not (tmp_path / "models").exists()


def test_run_local_passes_a_good_notify_target_as_the_pipelines_notify(tmp_path,
                                                                       monkeypatch):
    from kfp_ct.pipelines.entrypoints import cli, local

    given = {}

    class Started(Exception):
        pass

    def fake_run_local(pipeline_func, arguments, **kw):
        given.update(arguments)
        raise Started

    monkeypatch.setattr(local, "run_local", fake_run_local)
    target = '{"url_env": "SLACK_WEBHOOK_URL", "events": ["run_failed"]}'
    with pytest.raises(Started):
        cli.main(["run-local", "--cold", "--destination", str(tmp_path / "models"),
                  "--workdir", str(tmp_path / "runs"), "--notify", target])
    assert given["notify"] == target
    given.clear()
    with pytest.raises(Started):  # none given: the pipeline's default (no target)
        cli.main(["run-local", "--cold", "--destination", str(tmp_path / "models"),
                  "--workdir", str(tmp_path / "runs")])
    assert "notify" not in given


def test_empty_configs_mean_no_target_and_defaults_apply():
    assert notify.parse_config(None) is None
    assert notify.parse_config("") is None and notify.parse_config({}) is None
    cfg = notify.parse_config('{"url_env": "SLACK_WEBHOOK_URL"}')
    assert (cfg.events, cfg.retries, cfg.timeout_s) == (notify.EVENTS, 3, 5.0)


def test_texts_are_short_slack_lines():
    text = notify.event_text("drift", {"model_base": "gs://b/models", "run_name": "mon-7",
                                       "drifted": [{"feature": "island"}, "bill"],
                                       "reasons": ["island moved: L-inf 0.4 > 0.1"]})
    assert text.splitlines()[0] == "*kfp-ct: drift found* at `gs://b/models`"
    assert "moved: island, bill" in text and "run `mon-7`" in text
    drop = notify.event_text("performance_drop", {"metric": "accuracy", "value": 0.71234,
                                                  "baseline": 0.93, "tolerance": 0.05})
    assert "accuracy 0.7123 (baseline 0.93, tolerance 0.05)" in drop
    lines = [f"line {i}" for i in range(40)] + ["ValueError: boom ```"]
    failed = notify.run_failed_text("kfp-ct-training", "run-1", "train", lines)
    head, *rest = failed.splitlines()
    assert head == ("*kfp-ct: run failed*: pipeline `kfp-ct-training`, run `run-1`, "
                    "failed task `train`")
    assert rest[0] == "```" and rest[-1] == "```" and len(rest) == notify.LOG_TAIL_LINES + 2
    assert rest[-2] == "ValueError: boom '''" and "line 20" not in failed


# ------------------------------------------------------------- the exit component


def test_the_notice_reads_its_target_from_the_monitoring_settings(tmp_path):
    with Receiver() as rx:
        settings = json.dumps({"numeric": 0.1, "notify": {"url": rx.url}})
        outcome = json.dumps({"state": "FAILED", "failed_task": "drift-check",
                              "error": "boom", "log_tail": ["a", "b"], "where": "local"})
        record = logic.announce(settings_json=settings, pipeline="kfp-ct-monitoring",
                                run_id="1", run_name="mon-1", local_final_status=outcome,
                                notice_dir=str(tmp_path))
    assert record["announced"] and record["failed_task"] == "drift-check"
    sent = rx.requests[0]["body"]
    assert sent["event"] == "run_failed"
    assert sent["record"] == {"pipeline": "kfp-ct-monitoring", "run_id": "1",
                              "run_name": "mon-1", "failed_task": "drift-check",
                              "error": "boom", "log_tail": ["a", "b"], "where": "local"}
    assert json.loads((tmp_path / "notice.json").read_text()) == record


def test_a_bad_target_in_the_exit_task_is_recorded_not_raised(tmp_path):
    record = logic.announce(notify_json='{"url": "ftp://x"}', local_final_status=json.dumps(
        {"state": "FAILED", "failed_task": "t"}), notice_dir=str(tmp_path))
    assert record["announced"] is False and "bad notification target" in record["note"]
    assert logic.announce(local_final_status="{}")["note"] == "no notification target configured"


RUN_UUID = "0b6d9c3e-1f2a-4b5c-8d7e-9f0a1b2c3d4e"


def _tasks(*rows):
    from kfp_server_api import models as m

    return m.V2beta1RunDetails(task_details=[
        m.V2beta1PipelineTaskDetail(display_name=name, state=state, child_tasks=[
            m.PipelineTaskDetailChildTask(pod_name=f"{name}-pod")]) for name, state in rows])


def test_on_a_cluster_the_exit_task_reads_the_run_from_the_kfp_api(kfp_isolated):
    from kfp_server_api import models as m

    from kfp_api_double import kfp_api_double

    with kfp_api_double() as api:
        api._runs[RUN_UUID] = m.V2beta1Run(
            run_id=RUN_UUID, display_name="nightly", state="RUNNING",
            run_details=_tasks(("root", "RUNNING"), ("root-driver", "SUCCEEDED"),
                               ("exit-handler-1", "FAILED"), ("validate", "SUCCEEDED"),
                               ("train-driver", "SUCCEEDED"), ("train", "FAILED"),
                               ("announce-failure", "RUNNING")))
        asked = []
        outcome = logic.cluster_outcome(
            RUN_UUID, kfp_host=api.url,
            failed_pod_log=lambda run, task: asked.append((run, task)) or (
                "train-pod", ["Traceback", "ValueError: nan loss"]))
    assert outcome["state"] == "FAILED" and outcome["failed_task"] == "train"
    assert outcome["log_tail"] == ["Traceback", "ValueError: nan loss"]
    assert asked == [(RUN_UUID, "train")]
    assert api.requests_to("GET", f"/apis/v2beta1/runs/{RUN_UUID}")


def test_on_a_cluster_the_exit_task_waits_for_the_api_to_see_the_body_end(monkeypatch,
                                                                           tmp_path):
    states = [_tasks(("exit-handler-1", "RUNNING"), ("train", "RUNNING")),
              _tasks(("exit-handler-1", "SUCCEEDED"), ("train", "SUCCEEDED"))]
    slept = []

    def get_run(run_id):
        from kfp_server_api import models as m

        return m.V2beta1Run(run_id=run_id, run_details=states.pop(0))

    outcome = logic.cluster_outcome(RUN_UUID, get_run=get_run, sleep=slept.append,
                                    poll_s=2.0, wait_s=30.0)
    assert outcome["state"] == "SUCCEEDED" and slept == [2.0]
    # In a KFP pod the exit task asks the cluster; under kfp.local it does not.
    monkeypatch.setenv("KFP_POD_NAME", "wf-announce-failure-123")
    seen = []
    with Receiver() as rx:
        record = logic.announce(
            notify_json=json.dumps({"url": rx.url}), pipeline="p", run_id=RUN_UUID,
            run_name="nightly", outcome_of_cluster=lambda run_id, **kw: seen.append(run_id)
            or {"state": "FAILED", "failed_task": "train", "log_tail": ["x"],
                "where": "cluster"})
        assert record["announced"] and seen == [RUN_UUID]
        local = logic.announce(notify_json=json.dumps({"url": rx.url}), run_id="42733204",
                               outcome_of_cluster=lambda *a, **k: pytest.fail("asked"))
        assert local["state"] == "SUCCEEDED" and len(rx.requests) == 1


# -------------------------------------------------- a failed run, end to end


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def shaky(word: str, fail: bool) -> str:
    """Prints some lines, then returns the word or raises when asked to."""
    for i in range(30):
        print(f"shaky says line {i}")
    if fail:
        raise ValueError(f"asked to fail on {word!r}")
    return word.upper()


@dsl.pipeline(name="tiny-notified")
def tiny_notified(word: str = "hi", fail: bool = False, notify: str = ""):
    notice = announce_failure(notify=notify, pipeline="tiny-notified",
                              run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                              run_name=dsl.PIPELINE_JOB_NAME_PLACEHOLDER)
    with dsl.ExitHandler(notice):
        shaky(word=word, fail=fail)


def _check_failed_run_notice(request, run_name):
    body = request["body"]
    assert body["event"] == "run_failed"
    record = body["record"]
    assert record["pipeline"] == "tiny-notified" and record["failed_task"] == "shaky"
    assert record["run_name"] == run_name
    assert record["error"] == "ValueError: asked to fail on 'bad'"
    tail = record["log_tail"]
    assert len(tail) == notify.LOG_TAIL_LINES
    assert tail[-1] == "ValueError: asked to fail on 'bad'"
    assert any(line.startswith("shaky says line 29") for line in tail)
    # The traceback's paths as the task printed them (kfp.local rewrites each "python3"
    # in a task's parameters; the runner escapes it: pipelines/entrypoints/local.py).
    frames = [line.split('"')[1] for line in tail if line.lstrip().startswith('File "')]
    assert any(os.path.isfile(path) for path in frames), frames
    assert "failed task `shaky`" in body["text"]


def test_a_failed_local_run_is_announced_with_its_task_and_log(tmp_path):
    from kfp_ct.pipelines.entrypoints.local import run_local, training_report

    with Receiver(plan=[500]) as rx:
        target = json.dumps({"url": rx.url + "/hook", "retries": 2})
        run = run_local(tiny_notified, {"word": "bad", "fail": True, "notify": target},
                        workdir=str(tmp_path / "w"), verbose=False, warm=False)
        assert not run.ok and run.failed_task == "shaky"
        assert run.error == "task 'shaky' failed: ValueError: asked to fail on 'bad'"
        assert run.exit_tasks == ["announce-failure"]
        assert [(t.name, t.status) for t in run.tasks] == [("shaky", "FAILURE"),
                                                           ("announce-failure", "SUCCESS")]
        assert len(rx.requests) == 2  # one 500, then delivered
        _check_failed_run_notice(rx.requests[-1], run.run_dir.rsplit("/", 1)[-1])
        notice = run.notice()
        assert notice["announced"] and notice["delivery"]["attempts"] == 2
        assert "failed-run notice: sent to " + rx.url + "/hook" in training_report(run)

        ok = run_local(tiny_notified, {"word": "fine", "notify": target},
                       workdir=str(tmp_path / "w2"), verbose=False, warm=False)
        assert ok.ok and ok.exit_tasks == [] and len(rx.requests) == 2
        assert ok.notice()["state"] == "SUCCEEDED" and ok.notice()["delivery"] is None


def test_a_failed_local_run_whose_notice_cannot_be_delivered_still_reports_its_failure(
        tmp_path):
    from kfp_ct.pipelines.entrypoints.local import run_local

    with Receiver(then=500) as rx:
        target = json.dumps({"url": rx.url, "retries": 1})
        run = run_local(tiny_notified, {"word": "bad", "fail": True, "notify": target},
                        workdir=str(tmp_path / "w"), verbose=False, warm=False)
    assert run.failed_task == "shaky" and "asked to fail" in run.error
    delivery = run.notice()["delivery"]
    assert delivery["delivered"] is False and delivery["attempts"] == 2
    assert delivery["status"] == 500


def test_a_failed_run_of_the_local_endpoint_is_announced(tmp_path, kfp_isolated):
    import kfp

    from kfp_ct.pipelines.entrypoints.local_server import LocalServer

    warnings.filterwarnings("ignore", category=FutureWarning)
    package = tmp_path / "tiny_notified.yaml"
    compiler.Compiler().compile(tiny_notified, str(package))
    server = LocalServer(str(tmp_path / "state")).start()
    try:
        with Receiver() as rx:
            client = kfp.Client(host=server.url)
            experiment = client.create_experiment("exp")
            run = client.run_pipeline(experiment.experiment_id, "boom",
                                      pipeline_package_path=str(package),
                                      params={"word": "bad", "fail": True,
                                              "notify": json.dumps({"url": rx.url})})
            done = client.wait_for_run_completion(run.run_id, timeout=60, sleep_duration=0.2)
            assert done.state == "FAILED"
            assert done.error.message == "task 'shaky' failed: ValueError: asked to fail on 'bad'"
            assert [(t.display_name, t.state) for t in done.run_details.task_details] == [
                ("shaky", "FAILED"), ("announce-failure", "SUCCEEDED")]
            [request] = rx.requests
            status = json.loads((tmp_path / "state" / "runs" / run.run_id /
                                 "status.json").read_text())
            _check_failed_run_notice(request, status["run_dir"].rsplit("/", 1)[-1])
            assert request["body"]["record"]["where"] == "local endpoint"
            assert status["notice"]["announced"] is True
    finally:
        server.stop()


def test_the_exit_handler_graph_compiles_with_the_notice_as_exit_task(tmp_path):
    from kfp_ct.pipelines.entrypoints.local import exit_task_names

    assert exit_task_names(tiny_notified.pipeline_spec) == ["announce-failure"]
    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(tiny_notified, str(path))
    text = path.read_text()
    # no PipelineTaskFinalStatus: a KFP 2.5 backend refuses one ("task final status not
    # supported yet")
    assert "taskFinalStatus" not in text and "ALL_UPSTREAM_TASKS_COMPLETED" in text
    assert urllib.parse.quote("local_final_status") in text


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def final_status_exit(status: dsl.PipelineTaskFinalStatus) -> str:
    return status.state


@dsl.pipeline(name="tiny-final-status")
def tiny_final_status(word: str = "bad"):
    with dsl.ExitHandler(final_status_exit()):
        shaky(word=word, fail=True)


def test_an_exit_task_that_takes_the_final_status_is_left_out_not_crashed_on(tmp_path):
    from kfp_ct.pipelines.entrypoints.local import run_local

    run = run_local(tiny_final_status, {}, workdir=str(tmp_path), verbose=False, warm=False)
    assert not run.ok and run.failed_task == "shaky" and run.exit_tasks == []
    assert "asked to fail" in run.error and run.notice() is None
    assert "exit task 'final-status-exit' not run here" in open(run.log_path).read()


def test_the_retraining_launcher_sees_cached_tasks_inside_an_exit_handler():
    from kfp_ct.components.retrain.kfp_launcher import _cached_tasks
    from kfp_ct.pipelines.notice import failure_notice

    @dsl.pipeline(name="cached-inside")
    def cached_inside(notify: str = ""):
        with failure_notice("cached-inside", notify=notify):
            shaky(word="w", fail=False)  # cached: the default

    from google.protobuf import json_format

    spec = json_format.MessageToDict(cached_inside.pipeline_spec)
    assert _cached_tasks(spec) == ["shaky"]


@dsl.component(base_image="python:3.11", install_kfp_package=False)
def broken_exit(word: str):
    raise RuntimeError(f"the exit task breaks on {word!r}")


@dsl.pipeline(name="tiny-broken-exit")
def tiny_broken_exit(word: str = "ok"):
    with dsl.ExitHandler(broken_exit(word=word)):
        shaky(word=word, fail=False)


def test_an_exit_task_that_fails_after_a_good_body_is_not_run_twice(tmp_path):
    from kfp_ct.pipelines.entrypoints.local import run_local

    run = run_local(tiny_broken_exit, {}, workdir=str(tmp_path), verbose=False, warm=False)
    assert not run.ok and run.failed_task == "broken-exit" and run.exit_tasks == []
    assert [t.name for t in run.tasks] == ["shaky", "broken-exit"]


def test_a_notify_secret_is_mounted_on_the_notice_and_never_written_as_a_value(tmp_path):
    import yaml

    from kfp_ct.pipelines import cluster
    from kfp_ct.pipelines.notice import failure_notice

    settings = cluster.load_settings({"notify_secret": "slack-webhook"})

    @dsl.pipeline(name="with-secret")
    def with_secret(notify: str = '{"url_file": "/var/secrets/kfp-ct-notify/url"}'):
        with failure_notice("with-secret", settings, notify=notify):
            shaky(word="w", fail=False)

    path = tmp_path / "p.yaml"
    compiler.Compiler().compile(with_secret, str(path))
    _, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-announce-failure"]["secretAsVolume"] == [
        {"secretName": "slack-webhook", "mountPath": cluster.NOTIFY_SECRET_MOUNT,
         "optional": False, "secretNameParameter": {"runtimeValue": {
             "constant": "slack-webhook"}}}]
    assert "secretAsVolume" not in executors.get("exec-shaky", {})
    with pytest.raises(cluster.SettingsError, match="notify_secret 'Not A Name'"):
        cluster.load_settings({"notify_secret": "Not A Name"})
