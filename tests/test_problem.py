"""kfp_ct.components.common.problem: spec parsing and user module loading."""

import json
import os

import pytest

from kfp_ct.components.common import problem
from kfp_ct.components.common.errors import ProblemSpecError

HERE = os.path.dirname(os.path.abspath(__file__))
PENGUINS_SPEC_PATH = os.path.join(os.path.dirname(HERE), "pipelines", "penguins", "problem.json")


def _penguins_dict():
    with open(PENGUINS_SPEC_PATH) as fh:
        return json.load(fh)


def _spec_with(**changes):
    d = _penguins_dict()
    for key, value in changes.items():
        if value is _DROP:
            d.pop(key, None)
        else:
            d[key] = value
    return json.dumps(d)


_DROP = object()


def _assert_penguins(spec):
    assert spec.label == "species"
    assert spec.task == "classification"
    assert spec.numeric == ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
    assert spec.categorical == ("island", "sex")
    assert spec.features == spec.numeric + spec.categorical
    assert spec.required_columns == ("species",) + spec.features
    assert spec.eval_percent == 20
    assert spec.key is None
    assert spec.module_file is None
    assert spec.model["hidden_units"] == [32, 16]


def test_penguins_spec_parses_from_inline_json():
    with open(PENGUINS_SPEC_PATH) as fh:
        text = fh.read()
    _assert_penguins(problem.load_problem(text))


def test_penguins_spec_parses_from_a_path():
    _assert_penguins(problem.load_problem(PENGUINS_SPEC_PATH))


def test_spec_round_trips_through_to_json():
    spec = problem.load_problem(PENGUINS_SPEC_PATH)
    again = problem.parse_problem(json.loads(spec.to_json()))
    assert again == spec


def test_spec_with_a_key_adds_it_to_required_columns():
    spec = problem.load_problem(_spec_with(key="year"))
    assert spec.required_columns[-1] == "year"


@pytest.mark.parametrize(
    "changes, expected",
    [
        pytest.param({"label": _DROP}, ["'label'"], id="missing-label"),
        pytest.param({"label": ""}, ["'label'"], id="empty-label"),
        pytest.param({"task": "clustering"}, ["'task'", "clustering"], id="bad-task"),
        pytest.param({"label": "island"}, ["label", "'island'", "also declared as a feature"],
                     id="label-declared-as-feature"),
        pytest.param({"options": {"island": {"log": True}}}, ["'island'", "'log'", "unknown option"],
                     id="unknown-categorical-option"),
        pytest.param({"options": {"body_mass_g": {"top_k": 3}}}, ["'body_mass_g'", "'top_k'"],
                     id="unknown-numeric-option"),
        pytest.param({"options": {"wingspan": {"log": True}}}, ["'wingspan'", "not a declared feature"],
                     id="option-for-undeclared-feature"),
        pytest.param({"model": {"epochs_count": 3}}, ["'model'", "epochs_count"],
                     id="unknown-model-option"),
        pytest.param({"lable": "species"}, ["unknown field", "lable"], id="unknown-field"),
        pytest.param({"numeric": "bill_length_mm"}, ["'numeric'"], id="numeric-not-a-list"),
        pytest.param({"numeric": [], "categorical": []}, ["at least one feature"], id="no-features"),
        pytest.param({"categorical": ["island", "island"]}, ["island", "more than once"],
                     id="duplicate-feature"),
        pytest.param({"numeric": ["bill_length_mm", "island"]},
                     ["'island'", "more than once"], id="column-numeric-and-categorical"),
        pytest.param({"key": "species"}, ["label 'species'", "also the split 'key'"],
                     id="label-is-the-key"),
        pytest.param({"categorical": ["island", "Island "]},
                     ["'island' (categorical)", "'Island ' (categorical)", "case or blanks"],
                     id="two-features-named-alike"),
        pytest.param({"label": "Island"}, ["'Island' (label)", "'island' (categorical)",
                                           "case or blanks"], id="label-named-like-a-feature"),
        pytest.param({"key": "SEX"}, ["'sex' (categorical)", "'SEX' (key)", "case or blanks"],
                     id="key-named-like-a-feature"),
        pytest.param({"eval_percent": 0}, ["'eval_percent'"], id="eval-percent-zero"),
        pytest.param({"eval_percent": 100}, ["'eval_percent'"], id="eval-percent-hundred"),
        pytest.param({"key": 5}, ["'key'"], id="key-not-a-string"),
        pytest.param({"module_file": ""}, ["'module_file'"], id="empty-module-file"),
    ],
)
def test_malformed_spec_is_rejected_naming_the_field(changes, expected):
    with pytest.raises(ProblemSpecError) as info:
        problem.load_problem(_spec_with(**changes))
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_non_json_text_is_rejected_as_not_json():
    with pytest.raises(ProblemSpecError, match="not valid JSON"):
        problem.load_problem('{"label": "species", numeric: [}')


def test_non_json_file_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "problem.json"
    path.write_text("label = species\n")
    with pytest.raises(ProblemSpecError) as info:
        problem.load_problem(str(path))
    assert str(path) in str(info.value)
    assert "not valid JSON" in str(info.value)


def test_json_array_is_rejected_as_not_an_object(tmp_path):
    path = tmp_path / "problem.json"
    path.write_text('["species"]')
    with pytest.raises(ProblemSpecError, match="expected a JSON object"):
        problem.load_problem(str(path))


def test_empty_spec_is_rejected():
    with pytest.raises(ProblemSpecError, match="empty"):
        problem.load_problem("   ")


def test_missing_spec_file_is_a_problem_spec_error_naming_the_path(tmp_path):
    path = str(tmp_path / "nowhere" / "problem.json")
    with pytest.raises(ProblemSpecError) as info:
        problem.load_problem(path)
    assert path in str(info.value)


def test_spec_without_module_has_no_user_function():
    spec = problem.load_problem(PENGUINS_SPEC_PATH)
    assert problem.user_function(spec, "preprocessing_fn", required=True) is None


def test_user_module_function_is_found(tmp_path):
    module = tmp_path / "user_mod.py"
    module.write_text("def preprocessing_fn(inputs):\n    return {'answer': 42}\n")
    spec = problem.load_problem(_spec_with(module_file=str(module)))
    fn = problem.user_function(spec, "preprocessing_fn", required=True)
    assert fn({}) == {"answer": 42}
    # an optional function that is absent is None, not an error
    assert problem.user_function(spec, "build_model", required=False) is None


def test_user_module_without_preprocessing_fn_names_module_and_function(tmp_path):
    module = tmp_path / "no_fn_module.py"
    module.write_text("def build_model(spec):\n    return None\n")
    spec = problem.load_problem(_spec_with(module_file=str(module)))
    with pytest.raises(ProblemSpecError) as info:
        problem.user_function(spec, "preprocessing_fn", required=True)
    message = str(info.value)
    assert str(module) in message
    assert "preprocessing_fn" in message


def test_user_module_with_non_callable_preprocessing_fn_is_rejected(tmp_path):
    module = tmp_path / "not_callable.py"
    module.write_text("preprocessing_fn = 3\n")
    spec = problem.load_problem(_spec_with(module_file=str(module)))
    with pytest.raises(ProblemSpecError, match="not callable"):
        problem.user_function(spec, "preprocessing_fn", required=True)


def test_user_module_raising_on_import_reports_the_exception(tmp_path):
    module = tmp_path / "broken_module.py"
    module.write_text("raise RuntimeError('the penguin database is offline')\n")
    spec = problem.load_problem(_spec_with(module_file=str(module)))
    with pytest.raises(ProblemSpecError) as info:
        problem.user_function(spec, "preprocessing_fn", required=True)
    message = str(info.value)
    assert "the penguin database is offline" in message
    assert "RuntimeError" in message
    assert str(module) in message


def test_user_module_with_syntax_error_is_a_problem_spec_error(tmp_path):
    module = tmp_path / "syntax_module.py"
    module.write_text("def preprocessing_fn(inputs)\n    return inputs\n")
    spec = problem.load_problem(_spec_with(module_file=str(module)))
    with pytest.raises(ProblemSpecError) as info:
        problem.user_function(spec, "preprocessing_fn", required=True)
    assert "SyntaxError" in str(info.value)


def test_missing_user_module_file_is_reported_naming_the_path(tmp_path):
    module = str(tmp_path / "absent_module.py")
    spec = problem.load_problem(_spec_with(module_file=module))
    with pytest.raises(Exception) as info:
        problem.user_function(spec, "preprocessing_fn", required=True)
    assert module in str(info.value)
