"""components/transform/beamenv.py: each memo gives Beam's own answer, and the transform's
outputs are the same with and without them."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from kfp_ct.components.transform import beamenv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module", autouse=True)
def installed():
    beamenv.install()


def test_dofn_specs_are_beams_own_and_each_caller_gets_its_own_sets():
    import apache_beam as beam
    from apache_beam.coders import VarIntCoder
    from apache_beam.transforms import userstate
    from apache_beam.transforms.timeutil import TimeDomain

    class Stateful(beam.DoFn):
        COUNT = userstate.ReadModifyWriteStateSpec("count", VarIntCoder())
        TIMER = userstate.TimerSpec("timer", TimeDomain.WATERMARK)

        def process(self, element, count=beam.DoFn.StateParam(COUNT),
                    timer=beam.DoFn.TimerParam(TIMER)):
            yield element

        @userstate.on_timer(TIMER)
        def fire(self):
            pass

    class Plain(beam.DoFn):
        def process(self, element):
            yield element

    original = userstate.get_dofn_specs.__wrapped__
    for dofn in (Stateful(), Stateful(), Plain()):
        assert userstate.get_dofn_specs(dofn) == original(dofn)
    states, timers = userstate.get_dofn_specs(Stateful())
    assert {s.name for s in states} == {"count"} and {t.name for t in timers} == {"ts-timer"}
    states.clear()  # a caller that changes its sets does not change the next caller's
    assert {s.name for s in userstate.get_dofn_specs(Stateful())[0]} == {"count"}
    assert userstate.is_stateful_dofn(Stateful()) and not userstate.is_stateful_dofn(Plain())


def test_a_dofn_holding_its_own_bound_methods_is_looked_up_as_before():
    import apache_beam as beam
    from apache_beam.coders import VarIntCoder
    from apache_beam.transforms import userstate

    class Helper:
        SPEC = userstate.ReadModifyWriteStateSpec("helper", VarIntCoder())

        def method(self, element, state=beam.DoFn.StateParam(SPEC)):
            return element

    class Plain(beam.DoFn):
        def process(self, element):
            yield element

    assert not userstate.get_dofn_specs(Plain())[0]  # memoized for the class
    dofn = Plain()
    dofn.extra = Helper().method  # dir(dofn) now has a method of its own, with state
    assert {s.name for s in userstate.get_dofn_specs(dofn)[0]} == {"helper"}


def test_views_share_the_options_and_are_not_shared_between_options():
    from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions,
                                                      StandardOptions)

    options = PipelineOptions(["--runner=DirectRunner", "--experiments=a"])
    first = options.view_as(DebugOptions)
    assert options.view_as(DebugOptions) is first  # memoized
    first.add_experiment("b")
    assert options.view_as(DebugOptions).experiments == ["a", "b"]
    options.view_as(StandardOptions).streaming = True
    assert options.get_all_options()["streaming"] is True
    other = PipelineOptions(["--runner=DirectRunner", "--experiments=a"])
    assert other.view_as(DebugOptions).experiments == ["a"]  # nothing leaks across
    assert other.view_as(StandardOptions).streaming is False
    # A view of a view reads and writes the same options.
    other.view_as(DebugOptions).view_as(StandardOptions).streaming = True
    assert other.view_as(StandardOptions).streaming is True


def test_views_do_not_keep_their_options_alive():
    import weakref

    from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions

    options = PipelineOptions(["--experiments=x"])
    options.view_as(DebugOptions)
    ref = weakref.ref(options)
    del options
    gc.collect()
    assert ref() is None


def test_cache_weights_are_positive_and_grow_with_the_value():
    from apache_beam.runners.worker import statecache

    small = statecache.get_deep_size([1.0] * 10)
    large = statecache.get_deep_size([float(i) for i in range(10_000)])
    assert 0 < small < large
    assert large >= 10_000 * sys.getsizeof(1.0)


# TFT's Beam pipeline (not the direct analyze pass of components/transform/analyze_local.py),
# with and without the memos.
_TRANSFORM_WITHOUT_MEMOS = """
import os, sys
os.environ["KFP_CT_ANALYZE_WITH_BEAM"] = "1"
sys.path.insert(0, {root!r})
from kfp_ct.components.transform import beamenv
beamenv.install = lambda: None  # Beam as it is
from kfp_ct.components.transform.logic import run_transform
out = sys.argv[3]
run_transform(sys.argv[1], sys.argv[2], out + "/graph", out + "/examples", out + "/raw")
"""


def test_transform_outputs_are_the_same_without_the_memos(tmp_path, monkeypatch):
    """The 16-feature table (bucketized numerics, top_k vocabularies, z-scores) through
    the in-process transform's Beam pipeline, with the memos (this process) and without
    (a new one)."""
    import importlib.util

    from transform_outputs import assert_same, contents

    monkeypatch.setenv("KFP_CT_ANALYZE_WITH_BEAM", "1")
    from kfp_ct.components.transform.logic import run_transform

    spec = importlib.util.spec_from_file_location(
        "wide", os.path.join(ROOT, "tests", "benchmarks", "wide.py"))
    wide = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wide)
    data = wide.write_wide(str(tmp_path / "wide.csv"), 3000, seed=3)
    problem = wide.problem_json()

    plain = tmp_path / "plain"
    proc = subprocess.Popen(
        [sys.executable, "-c", _TRANSFORM_WITHOUT_MEMOS.format(root=ROOT), data, problem,
         str(plain)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    memo = tmp_path / "memo"
    run_transform(data, problem, str(memo / "graph"), str(memo / "examples"), str(memo / "raw"))
    output = proc.communicate(timeout=600)[0].decode(errors="replace")
    assert proc.returncode == 0, output[-3000:]

    with_memos, without = contents(str(memo)), contents(str(plain))
    assert any(k.startswith("graph/transform_fn/assets/vocabulary_") for k in with_memos)
    assert sum(len(v) for k, v in with_memos.items() if k.startswith("examples/train/")) > 2000
    assert_same(with_memos, without)
