"""The monitoring history at a model base (components/common/history.py): create-only
records that concurrent runs never lose, the trend section of the drift report drawn in a
real headless browser, and `kfp-ct monitor history`."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import threading
import xml.etree.ElementTree as ET

import pytest

import browser  # tests/browser.py (tests/ is on sys.path)
from kfp_ct.components.common import history, registry
from kfp_ct.components.drift import render

SVG = "{http://www.w3.org/2000/svg}"


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


# ------------------------------------------------------------------ records to draw

FEATURES = [("body_mass_g", "numeric", 0.02), ("bill_length_mm", "numeric", 0.02),
            ("island", "categorical", 0.05), ("sex", "categorical", 0.05)]


def decision_record(i: int, version: int, drift_in: str = "", realized=None,
                    estimated=None, rows: int = 3000, labels: int = 0) -> dict:
    """A decision record (drift.json) as the drift check writes it, the new performance
    keys included when ``realized``/``estimated`` are given: window i of a series."""
    features = []
    for name, kind, threshold in FEATURES:
        distance = 0.004 + 0.001 * ((i * 7 + len(name)) % 5)
        level = 0.006 if kind == "numeric" else 0.03
        verdict = "no drift"
        if name == drift_in:
            distance, verdict = 0.06, "drift"
        features.append({"feature": name, "role": "feature", "source": "window",
                         "kind": kind, "measure": "JSD" if kind == "numeric" else "L-inf",
                         "distance": distance, "threshold": threshold,
                         "no_drift_level": level * (1 + 0.1 * (i % 3)), "p_value": 0.5,
                         "rows": rows, "verdict": verdict,
                         "cells": [{"label": "a", "train": 10.0, "window": 12.0}]})
    decision = "DRIFT" if drift_in else "NO_DRIFT"
    findings = ["DRIFT"] if drift_in else []
    record = {
        "decision": decision, "reasons": [f"window {i}"], "drifted": [drift_in] if drift_in
        else [], "blocking": [], "anomalies": [], "features": features, "tests": 4,
        "alpha_per_test": 0.0025,
        "window": {"path": f"/data/date=2026-11-{10 + i:02d}", "request_log": "",
                   "key": f"key-{i}", "rows": {"window": rows},
                   "files": {"window": []}},
        "baseline": {"model_base": "/models/penguins", "version": version,
                     "path": f"/models/penguins/{version}", "rows": 5000,
                     "prediction_rows": 0},
        "settings": {"false_alarm_rate": 0.01}, "notes": [],
        "monitor_run": {"run_id": f"run-{i}", "run_name": f"monitoring {i}"},
        "checked_at": f"2026-11-{10 + i:02d}T03:00:0{i % 10}+00:00",
    }
    if realized is not None or estimated is not None:
        record["findings"] = findings
        record["window"]["labels"] = "/labels" if realized else ""
        record["window"]["rows"]["labels"] = labels
        record["performance"] = {"realized": realized, "estimated": estimated}
        if realized and realized["decision"] == "PERFORMANCE_DROP":
            record["findings"] = findings + ["PERFORMANCE_DROP"]
    return record


def perf(value, low, high, baseline, decision="NO_DROP", rows=150):
    return {"decision": decision, "metric": "accuracy", "value": value, "low": low,
            "high": high, "baseline": baseline, "rows": rows, "reason": "",
            "companions": {"macro_recall": value}}


def launch_record(seq, version):
    return {"launched": True, "reason": "", "seq": seq, "run_id": f"local-launch-{seq}",
            "mode": "local", "result": {"state": "SUCCEEDED", "version": version,
                                        "pushed": True, "blessed": True}}


def series() -> tuple[list[dict], dict]:
    """Eight recorded windows, seq 1 to 8, as ``history.read`` gives them (version 1, a
    drift and a drop at window 4 that launched version 2, serving from window 5 on), and
    the current window 9 (a drift)."""
    out = []
    for i in range(1, 9):
        version = 1 if i <= 4 else 2
        base = 0.93 if version == 1 else 0.95
        drop = i == 4
        value = 0.80 if drop else base - 0.01 * (i % 2)
        realized = perf(value, value - 0.05, value + 0.04, base,
                        "PERFORMANCE_DROP" if drop else "NO_DROP")
        estimated = perf(value + 0.01, value - 0.03, value + 0.05, base,
                         "ESTIMATED_DROP" if drop else "NO_DROP", rows=3000)
        if i <= 2:  # older records: before the performance checks
            record = decision_record(i, version, drift_in="body_mass_g" if i == 2 else "")
        else:
            record = decision_record(i, version, drift_in="island" if drop else "",
                                     realized=realized, estimated=estimated, labels=150)
        launch = launch_record(i // 2, 2) if drop else {"launched": False,
                                                         "reason": "decision is NO_DRIFT"}
        out.append({**history.summary(record, launch, notifications=[]), "seq": i})
    current = decision_record(9, 2, drift_in="bill_length_mm",
                              realized=perf(0.94, 0.9, 0.97, 0.95),
                              estimated=perf(0.93, 0.9, 0.96, 0.95, rows=3000), labels=140)
    return out, current


# ----------------------------------------------------------------- append and read


def test_summary_keeps_what_a_trend_needs_and_no_cells():
    records, current = series()
    s = history.summary(current, launch_record(7, 3), ["slack: drift in bill_length_mm"])
    assert s["format"] == history.FORMAT and s["production_version"] == 2
    assert s["decision"] == "DRIFT" and s["findings"] == ["DRIFT"]
    assert s["window"] == {"path": "/data/date=2026-11-19", "request_log": "",
                           "labels": "/labels", "key": "key-9",
                           "rows": {"window": 3000, "labels": 140}}
    assert s["monitor_run"] == {"run_id": "run-9", "run_name": "monitoring 9"}
    feature = s["features"][1]
    assert set(feature) == {"feature", "source", "role", "measure", "distance",
                            "no_drift_level", "threshold", "verdict"}
    assert feature["feature"] == "bill_length_mm" and feature["verdict"] == "drift"
    assert s["performance"]["realized"] == {"decision": "NO_DROP", "metric": "accuracy",
                                            "value": 0.94, "low": 0.9, "high": 0.97,
                                            "baseline": 0.95, "rows": 150}
    assert s["launch"] == {"launched": True, "seq": 7, "run_id": "local-launch-7",
                           "reason": "", "state": "SUCCEEDED", "version": 3, "pushed": True,
                           "blessed": True}
    assert s["notifications"] == ["slack: drift in bill_length_mm"]
    assert "cells" not in json.dumps(s)
    # an old record: no findings, performance, labels; NaN never reaches the file
    old = records[1]
    assert old["findings"] == ["DRIFT"] and old["performance"] == {"realized": None,
                                                                   "estimated": None}
    assert old["window"]["labels"] == ""
    odd = decision_record(1, 1)
    odd["features"][0]["distance"] = float("nan")
    assert history.summary(odd)["features"][0]["distance"] is None
    assert history.summary(odd)["launch"] is None


def test_append_then_read_round_trip(tmp_path):
    base = str(tmp_path / "models" / "penguins")
    assert history.read(base) == [] and history.read(base).skipped == []
    records, _ = series()
    seqs = [history.append(base, dict(r)) for r in records]
    assert seqs == list(range(1, 9))
    names = sorted(os.listdir(os.path.join(base, registry.MONITOR_DIR)))
    assert names == sorted(f"record-{n}.json" for n in range(1, 9))  # no temp file left
    back = history.read(base)
    assert [r["seq"] for r in back] == seqs
    assert back == records
    assert [r["seq"] for r in history.read(base, last=3)] == [6, 7, 8]
    assert [r["seq"] for r in history.read(base, last=50)] == seqs
    mine = dict(records[0])
    assert history.append(base, mine) == 9 and mine["seq"] == 9  # told to the caller too
    on_disk = json.loads((tmp_path / "models" / "penguins" / registry.MONITOR_DIR
                          / "record-9.json").read_text())
    assert on_disk["seq"] == 9


def test_a_record_that_does_not_parse_is_skipped_and_named(tmp_path, caplog):
    base = str(tmp_path / "base")
    records, _ = series()
    for r in records[:4]:
        history.append(base, dict(r))
    folder = os.path.join(base, registry.MONITOR_DIR)
    with open(os.path.join(folder, "record-2.json"), "w") as fh:
        fh.write('{"decision": "DRI')  # cut short
    with open(os.path.join(folder, "record-3.json"), "w") as fh:
        fh.write("[1, 2]")  # JSON, not a record
    with open(os.path.join(folder, "notes.txt"), "w") as fh:
        fh.write("not a record at all")
    back = history.read(base)
    assert [r["seq"] for r in back] == [1, 4]
    assert len(back.skipped) == 2
    assert "record-2.json: skipped, unreadable" in back.skipped[0]
    assert "record-3.json" in back.skipped[1] and "not an object" in back.skipped[1]
    assert "record-2.json" in caplog.text
    # the last N are the last N readable ones
    assert [r["seq"] for r in history.read(base, last=2)] == [1, 4]
    # the next append goes past the corrupt ones, never over them
    assert history.append(base, dict(records[4])) == 5
    # a report drawn from it still draws, and says what was left out
    page = render.html(series()[1], history=history.read(base))
    assert "record-2.json: skipped" in page and "<svg" in page


def _append_many(base: str, who: str, n: int, barrier) -> list[int]:
    barrier.wait(timeout=60)
    return [history.append(base, {"who": who, "i": i}) for i in range(n)]


def _worker(base, who, n, barrier, results):
    results.put((who, _append_many(base, who, n, barrier)))


def test_two_processes_appending_at_once_keep_every_record(tmp_path):
    base = str(tmp_path / "base")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(base, who, 20, barrier, results))
             for who in ("a", "b")]
    for p in procs:
        p.start()
    got = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    seqs = got["a"] + got["b"]
    assert sorted(seqs) == list(range(1, 41))  # unique, no gap
    back = history.read(base)
    assert [r["seq"] for r in back] == list(range(1, 41))
    for who in ("a", "b"):
        mine = [r for r in back if r["who"] == who]
        assert [r["i"] for r in mine] == list(range(20))  # each in its own order
        assert [r["seq"] for r in mine] == got[who]


def test_a_lost_number_is_retried_and_exhausted_tries_say_so(tmp_path, monkeypatch):
    base = str(tmp_path / "base")
    history.append(base, {"i": 0})
    real = history.storage.create_only
    taken = []

    def racing(path, data):  # another run takes each number first, twice
        if len(taken) < 2:
            taken.append(path)
            assert real(path, b'{"who": "other"}')
            return False
        return real(path, data)

    monkeypatch.setattr(history.storage, "create_only", racing)
    assert history.append(base, {"i": 1}) == 4
    assert [r.get("who") or r.get("i") for r in history.read(base)] == [0, "other", "other",
                                                                         1]
    monkeypatch.setattr(history.storage, "create_only", lambda path, data: False)
    monkeypatch.setattr(history, "MAX_TRIES", 5)
    with pytest.raises(history.HistoryError, match="after 5 tries"):
        history.append(base, {"i": 2})


def test_appends_on_gcs_are_create_only_too(gcs_emulator):
    base = f"{gcs_emulator.new_bucket()}/models/penguins"
    records, _ = series()
    assert history.read(base) == []
    assert history.append(base, dict(records[0])) == 1
    assert history.append(base, dict(records[1])) == 2
    # two appenders at once: each keeps its records
    barrier, got = threading.Barrier(2), {}

    def run(who):
        got[who] = _append_many(base, who, 4, barrier)

    threads = [threading.Thread(target=run, args=(w,)) for w in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(got["a"] + got["b"]) == list(range(3, 11))
    back = history.read(base)
    assert [r["seq"] for r in back] == list(range(1, 11))
    assert back[0]["checked_at"] == records[0]["checked_at"]
    assert [r["seq"] for r in history.read(base, last=2)] == [9, 10]


# ------------------------------------------------------------------------ the trend


def svgs(page: str) -> list[ET.Element]:
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", page, flags=re.S)]


def _titles(svg: ET.Element, css: str) -> list[str]:
    return [el.find(f"{SVG}title").text for el in svg.iter()
            if el.get("class") == css]


def test_the_trend_section_draws_each_window_with_a_title_per_mark():
    records, current = series()
    page = render.html(current, history=records)
    pictures = svgs(page)  # parses: valid XML
    trends = {s.get("aria-label"): s for s in pictures
              if s.get("aria-label").startswith("trend of ")}
    # the tested features, the drifted one first
    assert list(trends) == ["trend of bill_length_mm", "trend of body_mass_g",
                            "trend of island", "trend of sex"]
    for svg in pictures:
        for el in svg.iter():
            tag = el.tag.replace(SVG, "")
            if tag in ("rect", "circle", "line", "polyline"):
                if el.get("class") is None and tag in ("rect", "line") and \
                        el.find(f"{SVG}title") is None:
                    continue  # axes
                assert el.find(f"{SVG}title") is not None, (svg.get("aria-label"), tag)
            for key, value in el.attrib.items():
                assert "nan" not in value.lower() and "inf" not in value.lower(), (key, value)
    body = trends["trend of body_mass_g"]
    dots = _titles(body, "distance") + _titles(body, "alarm")
    assert len(dots) == 9  # every window, this one last
    assert any(t.startswith("#2 (2026-11-12 03:00): JSD 0.0600") and t.endswith(": drift")
               for t in _titles(body, "alarm"))
    assert len(_titles(body, "level")) == 9
    assert _titles(trends["trend of bill_length_mm"], "alarm")[-1].startswith("this window")
    versions = [el.find(f"{SVG}title").text for el in body.iter(f"{SVG}line")
                if el.find(f"{SVG}title") is not None and "production version" in
                el.find(f"{SVG}title").text]
    assert versions == ["production version 1 -> 2 from window #5 (2026-11-15 03:00)"]

    (perf_svg,) = [s for s in pictures if s.get("aria-label").startswith("accuracy per window")]
    assert "v2" in [t.text for t in perf_svg.iter(f"{SVG}text")]
    realized = _titles(perf_svg, "realized")
    assert len(realized) == 7  # windows 3..8 and this one; 1 and 2 had no labels
    assert realized[1].startswith("#4 (2026-11-14 03:00): realized accuracy 0.8 [0.75, 0.84]")
    assert realized[1].endswith("PERFORMANCE_DROP")
    assert len(_titles(perf_svg, "estimated")) == 7
    assert len(_titles(perf_svg, "baseline")) == 7
    strip = _titles(perf_svg, "decision")
    assert len(strip) == 9
    assert strip[3].startswith("#4 (2026-11-14 03:00): DRIFT (DRIFT, PERFORMANCE_DROP)")
    assert "launch 2 (SUCCEEDED, pushed v2)" in strip[3]
    assert "<details><summary>Windows</summary>" in page


def test_without_history_the_report_is_as_before_and_an_empty_one_says_so():
    records, current = series()
    assert render.html(current) == render.html(current, history=None)
    assert "Trend" not in render.html(current) and "Trend" not in render.markdown(current)
    empty = render.html(current, history=[])
    assert "<h3>Trend</h3>" in empty and "the trend starts with this window" in empty
    assert not [s for s in svgs(empty) if s.get("aria-label").startswith("trend of ")]
    assert "the trend starts with this window" in render.markdown(current, history=[])
    # this window already recorded (e.g. drawn again): once, not twice
    again = render.html(current, history=records + [history.summary(current)])
    body = [s for s in svgs(again) if s.get("aria-label") == "trend of body_mass_g"][0]
    assert len(_titles(body, "distance") + _titles(body, "alarm")) == 9
    # old records only (no performance anywhere): a sentence, no performance picture
    old = render.html(decision_record(9, 1), history=[history.summary(decision_record(1, 1))])
    assert "No realized or estimated performance" in old
    assert not [s for s in svgs(old) if "per window" in s.get("aria-label")]


def test_odd_values_in_a_record_draw_as_missing_never_fail():
    records, current = series()
    odd = json.loads(json.dumps(records[4]))
    odd["features"][0]["distance"] = "0.5"
    odd["features"][1] = "not a feature"
    odd["performance"]["realized"]["value"] = "high"
    odd["performance"]["estimated"] = ["nope"]
    odd["launch"] = "yes"
    odd["findings"] = None
    page = render.html(current, history=records[:4] + [odd, {"format": 1}] + records[5:])
    for svg in svgs(page):
        for el in svg.iter():
            for key, value in el.attrib.items():
                assert "nan" not in value.lower() and "inf" not in value.lower(), (key, value)
    assert "| #5 (2026-11-15 03:00) | 2 | NO_DRIFT | - (no drop) | - | - |" in render.markdown(
        current, history=[odd])


def test_the_markdown_twin_has_a_row_per_window():
    records, current = series()
    text = render.markdown(current, history=records)
    table = text.split("## Trend")[1]
    rows = [line for line in table.splitlines() if line.startswith("| #") or
            line.startswith("| this window")]
    assert len(rows) == 9
    assert rows[0].startswith("| #1 (2026-11-11 03:00) | 1 | NO_DRIFT | - | - | no |")
    assert rows[3] == ("| #4 (2026-11-14 03:00) | 1 | DRIFT (PERFORMANCE_DROP) | "
                       "0.8 [0.75, 0.84] drop | 0.81 [0.77, 0.85] drop | "
                       "launch 2 (SUCCEEDED, pushed v2) |")
    assert rows[-1].startswith("| this window (2026-11-19 03:00) | 2 | DRIFT |")


def test_the_trend_draws_in_a_real_browser(tmp_path):
    import numpy as np

    records, current = series()
    for f in current["features"]:  # no cell bars: the orange and blue are the trend's
        f["cells"] = []
    shots = {}
    for name, hist in (("without", None), ("with", records)):
        path = tmp_path / f"{name}.html"
        path.write_text(render.html(current, history=hist))
        png = str(tmp_path / f"{name}.png")
        browser.screenshot(str(path), png, tmp_path, size=(1400, 2000))
        shots[name] = browser.pixels(png)
    with_trend, without = shots["with"], shots["without"]

    def more(color, tolerance=12):
        return (browser.count(with_trend, _rgb(color), tolerance)
                - browser.count(without, _rgb(color), tolerance))

    # distance lines and dots (orange), no-drift levels and baselines (blue), the
    # estimated metric (purple), drift dots and drift/drop strip cells (red), and the
    # strip's no-drift cells (green): hundreds of pixels each, only with the history.
    assert more(render.DISTANCE_COLOR) > 1500, more(render.DISTANCE_COLOR)
    assert more(render.LEVEL_COLOR) > 900, more(render.LEVEL_COLOR)
    assert more(render.ESTIMATED_COLOR) > 600, more(render.ESTIMATED_COLOR)
    assert more(render.ALARM_COLOR, 30) > 1000, more(render.ALARM_COLOR, 30)
    assert more(render.OK_COLOR) > 2000, more(render.OK_COLOR)
    # the performance picture sits below the feature pictures: its purple is lower
    purple = np.argwhere(browser.near(with_trend, _rgb(render.ESTIMATED_COLOR)))
    orange = np.argwhere(browser.near(with_trend, _rgb(render.DISTANCE_COLOR)))
    assert purple[:, 0].min() > orange[:, 0].min()


def test_a_real_drift_check_record_goes_into_the_history_and_its_trend(drift_base, tmp_path):
    from kfp_ct.components.drift import logic
    from kfp_ct.pipelines.entrypoints import synth

    checked = []
    for seed, shift in ((31, "none"), (32, "numeric_mean")):
        path = tmp_path / f"w{seed}.csv"
        synth.write_penguins_like(path, 1500, seed=seed, shift=shift)
        checked.append(logic.run_drift_check(drift_base.base, window_path=str(path)))
    base = str(tmp_path / "history-base")
    first = history.summary(checked[0], {"launched": False, "reason": "decision is NO_DRIFT"})
    assert history.append(base, first) == 1
    assert first["production_version"] == checked[0]["baseline"]["version"]
    tested = {(f["feature"], f["source"]) for f in checked[0]["features"]}
    assert {(f["feature"], f["source"]) for f in first["features"]} == tested
    page = render.html(checked[1], history=history.read(base, last=history.TREND_WINDOWS))
    trends = [s for s in svgs(page) if s.get("aria-label").startswith("trend of ")]
    assert trends[0].get("aria-label") == "trend of body_mass_g"  # the drifted one first
    assert len(trends) == min(len(tested), render.TREND_FEATURES)
    assert "this window" in page and "No realized or estimated performance" in page
    assert "| #1 (" in render.markdown(checked[1], history=history.read(base))


# ---------------------------------------------------------------------- the command


@pytest.fixture
def base_with_history(tmp_path):
    from test_cli import fake_model

    base = str(tmp_path / "serving" / "penguins")
    registry.publish(base, fake_model(tmp_path, "a"), {"metrics": {"accuracy": 0.93}})
    records, current = series()
    for r in records:
        history.append(base, dict(r))
    return base, records


def test_monitor_history_prints_a_table(run_cli, base_with_history):
    base, records = base_with_history
    from kfp_ct.pipelines.entrypoints import cli

    assert set(cli.cli.commands["monitor"].commands) == {"history"}
    code, out, err = run_cli("monitor", "history", base)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["#", "CHECKED", "VERSION", "DECISION", "FINDINGS", "ROWS",
                                "REALIZED", "ESTIMATED", "LAUNCHED"]
    assert len(lines) == 1 + 8
    assert lines[1].split() == ["1", "2026-11-11", "03:00", "1", "NO_DRIFT", "-", "3000",
                                "-", "-", "no"]
    four = lines[4]
    for words in ("2026-11-14 03:00", "DRIFT,PERFORMANCE_DROP", "window=3000,labels=150",
                  "0.8 [0.75, 0.84] drop", "0.81 [0.77, 0.85] drop",
                  "launch 2 (SUCCEEDED, pushed v2)"):
        assert words in four, (words, four)
    code, out, _ = run_cli("monitor", "history", base, "--last", "2")
    assert code == 0 and [line.split()[0] for line in out.splitlines()[1:]] == ["7", "8"]


def test_monitor_history_as_json(run_cli, base_with_history):
    base, records = base_with_history
    code, out, err = run_cli("monitor", "history", base, "--last", "3", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert [r["seq"] for r in doc] == [6, 7, 8]
    assert doc == records[5:]
    code, out, _ = run_cli("--output", "json", "monitor", "history", base, "--last", "1")
    assert code == 0 and [r["seq"] for r in json.loads(out)] == [8]  # the global flag


def test_monitor_history_errors_in_one_line(run_cli, tmp_path, base_with_history):
    from test_cli import fake_model

    code, out, err = run_cli("monitor", "history", tmp_path / "nowhere")
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert "is not a model base: no such file or folder" in err
    fresh = str(tmp_path / "fresh")
    registry.publish(fresh, fake_model(tmp_path, "f"), {})
    code, out, err = run_cli("monitor", "history", fresh)
    assert code == 2 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: {fresh} has no monitoring history")
    base, _ = base_with_history
    folder = os.path.join(base, registry.MONITOR_DIR)
    with open(os.path.join(folder, "record-5.json"), "w") as fh:
        fh.write("{")
    code, out, err = run_cli("monitor", "history", base)
    assert code == 0 and len(out.splitlines()) == 1 + 7
    assert "record-5.json: skipped, unreadable" in err
    code, out, err = run_cli("monitor", "history", base, "--last", "0")
    assert code == 2
