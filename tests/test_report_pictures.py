"""The pictures in the validation and evaluation reports: inline SVG checked by structure
(real TFDV statistics, parsed back) and drawn in a real headless browser."""

from __future__ import annotations

import html as html_lib
import math
import pathlib
import re
import xml.etree.ElementTree as ET

import pytest

import browser  # tests/browser.py (tests/ is on sys.path)
from kfp_ct.components.common import data
from kfp_ct.components.evaluate import logic as evaluate
from kfp_ct.components.evaluate import render as evaluate_render
from kfp_ct.components.validate import logic as validate
from kfp_ct.components.validate import render as validate_render

PENGUINS_PROBLEM = str(pathlib.Path(__file__).resolve().parents[1] / "pipelines" / "penguins"
                       / "problem.json")
SVG = "{http://www.w3.org/2000/svg}"
NUMERIC_ATTRS = ("x", "y", "width", "height", "x1", "y1", "x2", "y2", "font-size")
ODD_NAME = "a<&>\"'é"  # a column name a report must escape
ODD_VALUES = ["<b>bold</b>", "fish & chips", "l'été \"chaud\""]


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))


def svgs(html: str) -> list[ET.Element]:
    """Every inline <svg> of a report, parsed as XML (fails on bad escaping)."""
    found = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    return [ET.fromstring(s) for s in found]


def assert_clean(svg: ET.Element) -> None:
    """No NaN or inf in any attribute; every coordinate a finite number."""
    for el in svg.iter():
        for key, value in el.attrib.items():
            assert "nan" not in value.lower() and "inf" not in value.lower(), (key, value)
            if key in NUMERIC_ATTRS:
                assert math.isfinite(float(value)), (key, value)


def bars(svg: ET.Element, css: str = "bar") -> list[ET.Element]:
    return [r for r in svg.iter(f"{SVG}rect") if r.get("class") == css]


def title(el: ET.Element) -> str:
    return el.find(f"{SVG}title").text


def texts(svg: ET.Element) -> list[str]:
    return [t.text for t in svg.iter(f"{SVG}text")]


def feature_pictures(html: str) -> dict[str, ET.Element]:
    """Features table: feature name (unescaped) -> the row's picture."""
    out = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html, flags=re.S):
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
        if cells and "<svg" in cells[-1]:
            out[html_lib.unescape(cells[0])] = ET.fromstring(cells[-1])
    return out


# ---------------------------------------------------------------- validation report


@pytest.fixture(scope="module")
def frame_stats():
    """Real TFDV statistics of a small table: numeric, categorical, all-missing, one
    value only, infinite values, and a name and values full of markup."""
    import numpy as np
    import pandas as pd
    import tensorflow_data_validation as tfdv

    rng = np.random.default_rng(7)
    n = 300
    frame = pd.DataFrame({
        "bill": rng.normal(44.0, 5.0, n).round(1),
        "island": rng.choice(["Biscoe", "Dream", "Torgersen"], n, p=[0.5, 0.35, 0.15]),
        "empty": np.full(n, np.nan),
        "constant": np.full(n, 5.0),
        "huge": np.where(np.arange(n) % 50 == 0, np.inf, rng.random(n)),
        ODD_NAME: rng.choice(ODD_VALUES, n),
    })
    frame.loc[::10, "bill"] = np.nan  # 10% missing
    options = tfdv.StatsOptions(num_top_values=20, num_rank_histogram_buckets=20)
    return tfdv.generate_statistics_from_dataframe(frame, options), n


def _feature(stats, name):
    return next(f for f in stats.datasets[0].features if validate_render._name(f) == name)


def test_each_numeric_feature_has_a_histogram_with_a_bar_per_standard_bucket(frame_stats):
    stats, n = frame_stats
    html = validate.render_report(stats, [], n, "inferred from this data")
    pictures = feature_pictures(html)
    assert set(pictures) == {"bill", "island", "empty", "constant", "huge", ODD_NAME}

    histogram = validate_render.standard_histogram(_feature(stats, "bill").num_stats)
    counts = [b.sample_count for b in histogram.buckets]
    drawn = bars(pictures["bill"])
    assert len(drawn) == len(counts) == 10
    tallest = max(float(r.get("height")) for r in drawn)
    for rect, c in zip(drawn, counts):
        assert float(rect.get("height")) == pytest.approx(tallest * c / max(counts), abs=0.06)
        assert validate_render._count(c) in title(rect)  # the count shows on hover
    # bars left to right; the axis is labelled with min and max
    xs = [float(r.get("x")) for r in drawn]
    assert xs == sorted(xs)
    labels = texts(pictures["bill"])
    assert validate_render._g(histogram.buckets[0].low_value) in labels
    assert validate_render._g(histogram.buckets[-1].high_value) in labels
    # missing share as before, in its own column
    assert "10.0%" in html


def test_categorical_features_have_a_bar_per_top_value(frame_stats):
    stats, n = frame_stats
    pictures = feature_pictures(validate.render_report(stats, [], n, "inferred"))
    string_stats = _feature(stats, "island").string_stats
    top = [(v.value, v.frequency) for v in string_stats.top_values]
    drawn = bars(pictures["island"])
    assert [title(r).split(":")[0] for r in drawn] == [v for v, _ in top]
    widest = float(drawn[0].get("width"))
    for rect, (value, count) in zip(drawn, top):
        assert float(rect.get("width")) == pytest.approx(widest * count / top[0][1], abs=0.06)
        assert f"{value}: {int(count)}" in title(rect)
        assert value in texts(pictures["island"]) and str(int(count)) in texts(pictures["island"])


def test_all_missing_and_one_value_features_draw_without_nan(frame_stats):
    stats, n = frame_stats
    html = validate.render_report(stats, [], n, "inferred")
    pictures = feature_pictures(html)
    assert bars(pictures["empty"]) == [] and "no values" in texts(pictures["empty"])
    one = bars(pictures["constant"])
    assert len(one) == 1 and float(one[0].get("height")) > 0 and float(one[0].get("width")) > 200
    # infinite values: TFDV's statistics hold inf; the picture still only has numbers
    assert bars(pictures["huge"])
    for svg in svgs(html):
        assert_clean(svg)


def test_names_and_values_from_data_are_escaped(frame_stats):
    stats, n = frame_stats
    html = validate.render_report(stats, [], n, "inferred")
    assert ODD_NAME not in html and "<b>bold</b>" not in html
    assert "a&lt;&amp;&gt;&quot;&#x27;é" in html
    picture = feature_pictures(html)[ODD_NAME]  # parses: the escaping is valid XML
    assert sorted(title(r).split(":")[0] for r in bars(picture)) == sorted(ODD_VALUES)
    assert picture.get("aria-label") == f"top values of {ODD_NAME}"


def test_nan_and_inf_in_the_statistics_do_not_reach_the_svg(frame_stats):
    stats, n = frame_stats
    broken = type(stats)()
    broken.CopyFrom(stats)
    ns = _feature(broken, "bill").num_stats
    ns.mean, ns.std_dev = float("nan"), float("inf")
    histogram = validate_render.standard_histogram(ns)
    histogram.buckets[0].low_value = float("-inf")
    histogram.buckets[3].sample_count = float("nan")
    histogram.buckets[-1].high_value = float("nan")
    svg = validate_render.histogram_svg(histogram, "bill")
    parsed = ET.fromstring(svg)
    assert_clean(parsed)
    assert len(bars(parsed)) == len(histogram.buckets)
    assert "-inf" in texts(parsed)  # the axis says what the statistics say
    for svg in svgs(validate.render_report(broken, [], n, "inferred")):
        assert_clean(svg)


@pytest.fixture(scope="module")
def penguins_report(tmp_path_factory):
    """The real validate step on the bundled penguins: its report file."""
    root = tmp_path_factory.mktemp("validate_pictures")
    report = root / "report" / "report.html"
    validate.run_validate(data.BUNDLED_PENGUINS, PENGUINS_PROBLEM,
                          statistics_dir=str(root / "stats"), schema_dir=str(root / "schema"),
                          anomalies_dir=str(root / "anomalies"), report_path=str(report))
    assert report.is_file()
    return str(report)


def test_penguins_validation_report_draws_in_a_real_browser(penguins_report, tmp_path):
    with open(penguins_report) as fh:
        html = fh.read()
    pictures = feature_pictures(html)
    numeric = [k for k, v in pictures.items() if v.get("aria-label").startswith("histogram")]
    categorical = [k for k, v in pictures.items() if v.get("aria-label").startswith("top")]
    assert {"bill_length_mm", "body_mass_g"} <= set(numeric) and "island" in categorical

    png = str(tmp_path / "validation.png")
    browser.screenshot(penguins_report, png, tmp_path, size=(1400, 1600))
    image = browser.pixels(png)
    # Histogram bars (blue) for every numeric feature, top-value bars (green) for each
    # categorical: thousands of pixels each, and in the table's last column (right side).
    for color, features in ((validate_render.NUMERIC_COLOR, numeric),
                            (validate_render.CATEGORICAL_COLOR, categorical)):
        mask = browser.near(image, _rgb(color))
        assert mask.sum() > 800 * len(features), (color, int(mask.sum()))
        columns = mask.nonzero()[1]
        assert columns.min() > 300, columns.min()


# ---------------------------------------------------------------- evaluation report

# Hand-made, with the values of a real penguins evaluation (69 eval rows, 3 classes,
# sliced by island): the tests/conftest.py fixtures train no model, and a TFMA run here
# would take minutes. run_evaluate keeps production's overall metrics only; its
# per-slice metrics and confusion matrix (the optional "slices"/"confusion_matrix" of
# the baseline record) are drawn when present, so one result here has them.
LABELS = ["Adelie", "Chinstrap", "Gentoo"]
CANDIDATE_CM = [[28, 2, 0], [3, 11, 0], [0, 0, 25]]
PRODUCTION_CM = [[25, 5, 0], [6, 8, 0], [0, 1, 24]]
SLICES = {
    "island=Biscoe": {"example_count": 34, "accuracy": 0.9706},
    "island=Dream": {"example_count": 25, "accuracy": 0.8400},
    "island=Torgersen": {"example_count": 10, "accuracy": 1.0},
}
PRODUCTION_SLICES = {
    "island=Biscoe": {"example_count": 34, "accuracy": 0.9412},
    "island=Dream": {"example_count": 25, "accuracy": 0.6800},
    "island=Torgersen": {"example_count": 10, "accuracy": 0.9000},
}


def classification_result(with_production_details: bool = True) -> evaluate.EvaluateResult:
    baseline = {"state": "ok", "version": 3, "path": "/models/penguins/3",
                "detail": "production version 3 at /models/penguins/3",
                "overall": {"example_count": 69, "accuracy": 0.8261,
                            "macro_precision": 0.8050, "macro_recall": 0.7968}}
    if with_production_details:
        baseline.update(slices=PRODUCTION_SLICES,
                        confusion_matrix={"labels": LABELS, "matrix": PRODUCTION_CM})
    return evaluate.EvaluateResult(
        task="classification", label="species",
        candidate={"overall": {"example_count": 69, "accuracy": 0.9275,
                               "macro_precision": 0.9106, "macro_recall": 0.9063},
                   "slices": SLICES},
        baseline=baseline, confusion_matrix={"labels": LABELS, "matrix": CANDIDATE_CM})


def regression_result() -> evaluate.EvaluateResult:
    return evaluate.EvaluateResult(
        task="regression", label="body_mass_g",
        candidate={"overall": {"example_count": 69, "mse": 98234.5, "mae": 251.2,
                               "rmse": 313.4},
                   "slices": {"sex=FEMALE": {"example_count": 33, "rmse": 290.1},
                              "sex=MALE": {"example_count": 34, "rmse": 335.0}}},
        baseline={"state": "none", "version": None, "path": None,
                  "detail": "no production model at /models: first push", "overall": None},
        confusion_matrix=None)


def test_confusion_heatmaps_have_a_cell_per_class_pair_coloured_by_row_share():
    html = evaluate.render_report(classification_result(), "/work/candidate")
    heatmaps = [s for s in svgs(html) if s.get("aria-label").startswith("confusion")]
    assert [s.get("aria-label") for s in heatmaps] == ["confusion matrix candidate",
                                                       "confusion matrix production"]
    for svg, matrix in zip(heatmaps, (CANDIDATE_CM, PRODUCTION_CM)):
        assert_clean(svg)
        cells = bars(svg, "cell")
        assert len(cells) == len(LABELS) ** 2
        written = texts(svg)
        for k, cell in enumerate(cells):
            i, j = divmod(k, len(LABELS))  # row-major: row = true class
            share = matrix[i][j] / sum(matrix[i])
            assert cell.get("fill") == evaluate_render.heat_color(share)
            assert title(cell).endswith(
                f"true {LABELS[i]}, predicted {LABELS[j]}: {matrix[i][j]} "
                f"({100 * share:.1f}% of true {LABELS[i]})")
        assert sorted(int(t) for t in written if t.isdigit()) == sorted(sum(matrix, []))
        assert {"true", "predicted", *LABELS} <= set(written)
    assert "Confusion matrix" in html


def test_slice_bars_put_the_candidate_beside_production_with_a_legend():
    html = evaluate.render_report(classification_result(), "/work/candidate")
    (svg,) = [s for s in svgs(html) if s.get("aria-label") == "accuracy per slice"]
    assert_clean(svg)
    legend = [title(r) for r in bars(svg, "legend")]
    assert legend == ["candidate", "production"]
    drawn = {title(r).split(" accuracy ")[0]: float(r.get("width")) for r in bars(svg)}
    expected = {"overall: candidate": 0.9275, "overall: production": 0.8261}
    for name in SLICES:
        expected[f"{name}: candidate"] = SLICES[name]["accuracy"]
        expected[f"{name}: production"] = PRODUCTION_SLICES[name]["accuracy"]
    assert set(drawn) == set(expected)
    scale = drawn["island=Torgersen: candidate"]  # accuracy 1.0: the full axis
    for key, value in expected.items():
        assert drawn[key] == pytest.approx(scale * value, abs=0.06), key
    assert "0.8400" in texts(svg) and "higher is better" in html


def test_production_without_details_still_gets_its_overall_bar():
    # What run_evaluate records today: production's overall metrics only.
    html = evaluate.render_report(classification_result(False), "/work/candidate")
    (svg,) = [s for s in svgs(html) if s.get("aria-label") == "accuracy per slice"]
    productions = [title(r) for r in bars(svg) if "production" in title(r)]
    assert productions == ["overall: production accuracy 0.8261"]
    assert len(bars(svg)) == 1 + len(SLICES) + 1
    heatmaps = [s for s in svgs(html) if s.get("aria-label").startswith("confusion")]
    assert [s.get("aria-label") for s in heatmaps] == ["confusion matrix candidate"]


def test_regression_has_rmse_bars_and_no_confusion_matrix():
    html = evaluate.render_report(regression_result(), "/work/candidate")
    pictures = svgs(html)
    assert [s.get("aria-label") for s in pictures] == ["rmse per slice"]
    assert "Confusion" not in html and "lower is better" in html
    drawn = {title(r): float(r.get("width")) for r in bars(pictures[0])}
    assert set(drawn) == {"overall: candidate rmse 313.4000",
                          "sex=FEMALE: candidate rmse 290.1000",
                          "sex=MALE: candidate rmse 335.0000"}
    assert [title(r) for r in bars(pictures[0], "legend")] == ["candidate"]  # no production
    assert drawn["sex=MALE: candidate rmse 335.0000"] == max(drawn.values())


def test_odd_class_and_slice_names_are_escaped_and_nan_metrics_draw_no_bar():
    labels = ["<script>", "a & b", "é\"'"]
    result = evaluate.EvaluateResult(
        task="classification", label="kind",
        candidate={"overall": {"example_count": 6, "accuracy": float("nan")},
                   "slices": {"x=<&>": {"accuracy": 0.5}, "x=ok": {"accuracy": float("inf")}}},
        baseline={"state": "none", "version": None, "path": None, "detail": "-",
                  "overall": None},
        confusion_matrix={"labels": labels, "matrix": [[2, 0, 0], [0, 0, 0], [1, 1, 2]]})
    html = evaluate.render_report(result)
    assert "<script>" not in html and "x=<&>" not in html
    pictures = svgs(html)  # parses: valid XML
    for svg in pictures:
        assert_clean(svg)
    (slices,) = [s for s in pictures if s.get("aria-label") == "accuracy per slice"]
    assert [title(r) for r in bars(slices)] == ["x=<&>: candidate accuracy 0.5000"]
    (heatmap,) = [s for s in pictures if s.get("aria-label") == "confusion matrix candidate"]
    assert set(labels) <= set(texts(heatmap))
    empty_row = bars(heatmap, "cell")[3:6]  # a class with no rows: lightest colour, no NaN
    assert {c.get("fill") for c in empty_row} == {evaluate_render.heat_color(0.0)}


def test_evaluation_report_draws_in_a_real_browser(tmp_path):
    path = tmp_path / "evaluation.html"
    html = evaluate.render_report(classification_result(), "/work/candidate")
    path.write_text(html)
    (cell, *_) = bars([s for s in svgs(html) if s.get("aria-label").startswith("confusion")][0],
                      "cell")
    side = float(cell.get("width"))
    png = str(tmp_path / "evaluation.png")
    browser.screenshot(str(path), png, tmp_path)
    image = browser.pixels(png)
    # Slice bars in both colours: 4 groups x 2 bars, hundreds of pixels each.
    assert browser.count(image, _rgb(evaluate_render.CANDIDATE_COLOR)) > 2000
    assert browser.count(image, _rgb(evaluate_render.PRODUCTION_COLOR)) > 2000
    # Two heatmaps: every cell fills its square (less its count) in the colour of its
    # row share; cells of equal share (the zeros) add up.
    from collections import Counter

    wanted = Counter(evaluate_render.heat_color(c / sum(row))
                     for matrix in (CANDIDATE_CM, PRODUCTION_CM) for row in matrix for c in row)
    for color, cells in wanted.items():
        drawn = browser.count(image, _rgb(color), 3)
        assert drawn > cells * 0.8 * side ** 2, (color, cells, drawn)
    # side by side: the darkest cells (diagonals) on both halves of the drawing
    columns = browser.near(image, evaluate_render.HEAT_HIGH, 60).nonzero()[1]
    assert columns.max() - columns.min() > 300
