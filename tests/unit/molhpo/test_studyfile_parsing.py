"""molhpo.studyfile: study dicts and YAML files to StartStudyRequest."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from molhpo import studyfile
from molhpo.contract.errors import InvalidArgument
from molhpo.v1 import common_pb2, study_pb2

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _example_dict(name: str) -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load((EXAMPLES / name).read_text()))


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(InvalidArgument) as err:
        studyfile.from_dict(data)
    return str(err.value)


def _base() -> dict[str, Any]:
    return {
        "name": "s",
        "dataset": {"name": "freesolv"},
        "model": "gin",
        "search_space": {"num_layers": {"type": "int", "low": 2, "high": 5}},
        "budget": {"n_trials": 2, "max_epochs": 3},
    }


@pytest.mark.parametrize("name", ["freesolv_gin.yaml", "freesolv_mlp.yaml"])
def test_mapping_and_list_search_space_give_the_same_request(name: str) -> None:
    data = _example_dict(name)
    as_list = copy.deepcopy(data)
    as_list["search_space"] = [{"name": k, **v} for k, v in data["search_space"].items()]
    assert studyfile.from_dict(as_list) == studyfile.from_dict(data)


def test_load_equals_from_dict_of_the_same_yaml() -> None:
    path = EXAMPLES / "freesolv_gin.yaml"
    assert studyfile.load(path) == studyfile.from_dict(yaml.safe_load(path.read_text()))
    assert studyfile.load(str(path)) == studyfile.load(path)


def test_gin_example_fields_are_parsed() -> None:
    req = studyfile.load(EXAMPLES / "freesolv_gin.yaml")
    assert (req.name, req.model, req.dataset.name, req.dataset.split) == (
        "freesolv-gin",
        "gin",
        "freesolv",
        "random",
    )
    assert req.objective.metric == "rmse"
    assert req.objective.direction == common_pb2.DIRECTION_MINIMIZE
    assert (req.budget.n_trials, req.budget.max_epochs) == (24, 48)
    assert (req.parallelism, req.seed) == (2, 0)
    assert req.sampler.name == "tpe"
    assert req.sampler.options["n_startup_trials"] == 8
    assert req.sampler.options["multivariate"] is True
    assert req.fixed_params["batch_size"] == 32
    params = {p.name: p for p in req.search_space.params}
    assert [p.name for p in req.search_space.params] == [
        "hidden_channels",
        "num_layers",
        "dropout",
        "pooling",
        "lr",
        "weight_decay",
    ]
    hc = params["hidden_channels"]
    assert hc.WhichOneof("distribution") == "int"
    assert (hc.int.low, hc.int.high, hc.int.log) == (16, 256, True)
    lr = params["lr"]
    assert lr.WhichOneof("distribution") == "float"
    assert (lr.float.low, lr.float.high, lr.float.log) == (1e-4, 1e-2, True)
    pooling = params["pooling"]
    assert [c.string_value for c in pooling.categorical.choices] == ["add", "mean"]
    assert not hc.HasField("condition")


def test_conditions_are_parsed() -> None:
    req = studyfile.load(EXAMPLES / "freesolv_mlp.yaml")
    params = {p.name: p for p in req.search_space.params}
    cond = params["units_3"].condition
    assert cond.parent == "num_extra_layers"
    assert [v.WhichOneof("kind") for v in cond.values] == ["int_value", "int_value"]
    assert [v.int_value for v in cond.values] == [3, 4]
    assert [v.int_value for v in params["dropout_4"].condition.values] == [4]
    assert not params["units_1"].HasField("condition")


def test_condition_with_a_single_value_becomes_a_list() -> None:
    data = _base()
    data["search_space"]["dropout"] = {
        "type": "float",
        "low": 0.0,
        "high": 0.3,
        "condition": {"parent": "num_layers", "values": 3},
    }
    req = studyfile.from_dict(data)
    assert [v.int_value for v in req.search_space.params[1].condition.values] == [3]


def test_condition_without_parent_is_rejected() -> None:
    data = _base()
    data["search_space"]["num_layers"]["condition"] = {"values": [1]}
    assert _error(data).startswith("search_space.num_layers.condition: must be")


def test_categorical_choice_types_are_kept() -> None:
    data = _base()
    data["search_space"] = {
        "pooling": {"type": "categorical", "choices": ["add", 2, 0.5, True]},
    }
    choices = studyfile.from_dict(data).search_space.params[0].categorical.choices
    assert [c.WhichOneof("kind") for c in choices] == [
        "string_value",
        "int_value",
        "float_value",
        "bool_value",
    ]


def test_objective_direction_is_optional_and_parsed() -> None:
    data = _base()
    data["objective"] = {"metric": "r2"}
    req = studyfile.from_dict(data)
    assert req.objective.metric == "r2"
    assert req.objective.direction == common_pb2.DIRECTION_UNSPECIFIED
    data["objective"] = {"metric": "r2", "direction": "maximize"}
    assert studyfile.from_dict(data).objective.direction == common_pb2.DIRECTION_MAXIMIZE


def test_unknown_top_level_key_is_named() -> None:
    data = _base()
    data["trials"] = 10
    msg = _error(data)
    assert msg.startswith("unknown study fields ['trials']")
    assert "budget" in msg


def test_unknown_param_key_is_named_with_its_place() -> None:
    data = _base()
    data["search_space"]["num_layers"] = {"type": "int", "lo": 2, "high": 5}
    msg = _error(data)
    assert msg.startswith("search_space.num_layers: unknown keys ['lo']")


def test_unknown_param_type_is_named_with_its_place() -> None:
    data = _base()
    data["search_space"]["num_layers"] = {"type": "integer", "low": 2, "high": 5}
    assert _error(data).startswith("search_space.num_layers.type: 'integer' is not a parameter")


def test_missing_low_is_named_with_its_place() -> None:
    data = _base()
    data["search_space"]["num_layers"] = {"type": "int", "high": 5}
    assert _error(data) == "search_space.num_layers: 'low' is required for type int"


def test_missing_high_of_float_is_named_with_its_place() -> None:
    data = _base()
    data["search_space"]["dropout"] = {"type": "float", "low": 0.1}
    assert _error(data) == "search_space.dropout: 'high' is required for type float"


def test_non_numeric_bound_is_named_with_its_place() -> None:
    data = _base()
    data["search_space"]["num_layers"] = {"type": "int", "low": "two", "high": 5}
    assert _error(data) == "search_space.num_layers.low: must be an integer, got 'two'"


def test_fractional_int_bound_is_rejected() -> None:
    """``low: 2.7`` for an int must not be silently truncated to 2."""
    data = _base()
    data["search_space"]["num_layers"] = {"type": "int", "low": 2.7, "high": 5}
    assert _error(data).startswith("search_space.num_layers")


def test_string_false_for_log_is_not_taken_as_true() -> None:
    """``log: "false"`` (quoted) must not switch the log scale on."""
    data = _base()
    data["search_space"]["num_layers"] = {"type": "int", "low": 2, "high": 5, "log": "false"}
    try:
        req = studyfile.from_dict(data)
    except InvalidArgument as err:
        assert str(err).startswith("search_space.num_layers")
    else:
        assert req.search_space.params[0].int.log is False


def test_param_that_is_not_a_mapping_is_rejected() -> None:
    data = _base()
    data["search_space"]["num_layers"] = [2, 5]
    assert _error(data).startswith("search_space.num_layers: must be a mapping")


def test_categorical_choices_must_be_a_list() -> None:
    data = _base()
    data["search_space"]["pooling"] = {"type": "categorical", "choices": "add"}
    assert _error(data) == "search_space.pooling.choices: must be a list"


def test_unsupported_choice_value_is_named() -> None:
    data = _base()
    data["search_space"]["pooling"] = {"type": "categorical", "choices": ["add", None]}
    assert _error(data).startswith("search_space.pooling.choices: None is not a number")


def test_list_entry_without_name_is_named_by_index() -> None:
    data = _base()
    data["search_space"] = [{"name": "num_layers", "type": "int", "low": 2, "high": 5}, {}]
    assert _error(data) == "search_space[1]: must be a mapping with a name"


def test_search_space_of_wrong_shape_is_rejected() -> None:
    data = _base()
    data["search_space"] = "num_layers"
    assert _error(data).startswith("search_space: must be a mapping")


def test_bad_field_type_is_named() -> None:
    data = _base()
    data["budget"]["n_trials"] = "many"
    msg = _error(data)
    assert msg.startswith("study: ")
    assert "n_trials" in msg


def test_unknown_nested_field_is_named() -> None:
    data = _base()
    data["dataset"]["nam"] = "freesolv"
    msg = _error(data)
    assert msg.startswith("study: ")
    assert "nam" in msg


def test_bad_direction_is_named() -> None:
    data = _base()
    data["objective"] = {"metric": "rmse", "direction": "down"}
    assert _error(data).startswith("objective.direction: 'down' is not a direction")


def test_objective_that_is_not_a_mapping_is_rejected() -> None:
    data = _base()
    data["objective"] = "rmse"
    assert _error(data).startswith("objective: must be")


def test_load_of_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(InvalidArgument) as err:
        studyfile.load(path)
    assert str(path) in str(err.value)
    assert "cannot be read" in str(err.value)


def test_load_of_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\nmodel: gin\n")
    with pytest.raises(InvalidArgument) as err:
        studyfile.load(path)
    assert str(path) in str(err.value)
    assert "is not valid YAML" in str(err.value)


def test_load_of_yaml_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- name: x\n")
    with pytest.raises(InvalidArgument, match="must hold a mapping"):
        studyfile.load(path)


def test_python_object_tag_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-yaml"
    path = tmp_path / "evil.yaml"
    path.write_text(f'name: !!python/object/apply:os.mkdir ["{marker}"]\nmodel: gin\n')
    with pytest.raises(InvalidArgument, match="is not valid YAML"):
        studyfile.load(path)
    assert not marker.exists()


def test_empty_request_fields_stay_unset() -> None:
    assert studyfile.from_dict({}) == study_pb2.StartStudyRequest()
