"""Study validation: coordinator.spec.validate on specs built from StartStudyRequests, plus the
sampler and pruner option checks the coordinator runs alongside it (Coordinator.validate)."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordinator.convert import spec_from_proto
from coordinator.optimizer.pruners import validate_pruner
from coordinator.optimizer.samplers import validate_sampler
from coordinator.spec import StudySpec, validate
from molhpo import studyfile
from molhpo.contract import catalogue
from molhpo.contract.errors import InvalidArgument
from molhpo.v1 import study_pb2

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _validate_all(spec: StudySpec) -> None:
    """What Coordinator.validate runs: the spec rules, then the sampler and pruner options."""
    validate(spec)
    validate_sampler(spec.sampler.name, spec.sampler.options)
    validate_pruner(spec.pruner.name, spec.pruner.options)


def _gin() -> dict[str, Any]:
    """The GIN example as a fresh, mutable dict."""
    data = yaml.safe_load((EXAMPLES / "freesolv_gin.yaml").read_text())
    return copy.deepcopy(data)


def _spec(data: dict[str, Any]) -> StudySpec:
    return spec_from_proto(studyfile.from_dict(data))


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(InvalidArgument) as err:
        _validate_all(_spec(data))
    return str(err.value)


@pytest.mark.parametrize("name", ["freesolv_gin.yaml", "freesolv_mlp.yaml"])
def test_both_examples_validate(name: str) -> None:
    _validate_all(spec_from_proto(studyfile.load(EXAMPLES / name)))


def test_empty_request_names_the_name_field() -> None:
    with pytest.raises(InvalidArgument, match=r"^name: is empty"):
        validate(spec_from_proto(study_pb2.StartStudyRequest()))


def test_name_with_disallowed_characters_is_rejected() -> None:
    data = _gin()
    data["name"] = "my study"
    msg = _error(data)
    assert msg.startswith("name: 'my study' is not allowed")
    assert "1-128 letters" in msg


def test_name_with_trailing_newline_is_rejected() -> None:
    spec = dataclasses.replace(_spec(_gin()), name="freesolv-gin\n")
    with pytest.raises(InvalidArgument, match=r"^name: "):
        validate(spec)


def test_unknown_model_names_field_and_lists_models() -> None:
    data = _gin()
    data["model"] = "gin2"
    msg = _error(data)
    assert msg.startswith("model: unknown model 'gin2'")
    assert f"choose one of: {', '.join(sorted(catalogue.MODELS))}" in msg


def test_empty_model_names_field_and_lists_models() -> None:
    data = _gin()
    data["model"] = ""
    assert _error(data).startswith(
        f"model: is empty; choose one of: {', '.join(sorted(catalogue.MODELS))}"
    )


def test_unknown_dataset_names_field_and_lists_datasets() -> None:
    data = _gin()
    data["dataset"]["name"] = "tox21"
    msg = _error(data)
    assert msg.startswith("dataset.name: unknown dataset 'tox21'")
    assert "freesolv" in msg


def test_unknown_split_names_field() -> None:
    data = _gin()
    data["dataset"]["split"] = "scafold"
    assert _error(data).startswith("dataset.split: unknown split 'scafold'")


def test_valid_fraction_of_half_is_rejected() -> None:
    data = _gin()
    data["dataset"]["valid_fraction"] = 0.5
    assert _error(data).startswith("dataset.valid_fraction: is 0.5, but must be in (0, 0.5)")


def test_empty_search_space_names_field_and_lists_hyperparameters() -> None:
    data = _gin()
    data["search_space"] = {}
    msg = _error(data)
    assert msg.startswith("search_space: is empty")
    assert "hidden_channels" in msg
    assert "pooling" in msg


def test_int_low_above_high_names_param_and_rule() -> None:
    data = _gin()
    data["search_space"]["num_layers"] = {"type": "int", "low": 5, "high": 2}
    msg = _error(data)
    assert "search_space.params[1] (num_layers)" in msg
    assert "low (5) > high (2)" in msg


def test_float_low_above_high_names_param_and_rule() -> None:
    data = _gin()
    data["search_space"]["dropout"] = {"type": "float", "low": 0.3, "high": 0.1}
    msg = _error(data)
    assert "search_space.params[2] (dropout)" in msg
    assert "low (0.3) > high (0.1)" in msg


def test_float_log_scale_with_zero_low_is_rejected() -> None:
    data = _gin()
    data["search_space"]["weight_decay"] = {"type": "float", "low": 0.0, "high": 1e-3, "log": True}
    msg = _error(data)
    assert "(weight_decay)" in msg
    assert "log scale needs low > 0" in msg


def test_float_log_scale_with_negative_low_is_rejected() -> None:
    data = _gin()
    data["search_space"]["lr"] = {"type": "float", "low": -1e-3, "high": 1e-2, "log": True}
    msg = _error(data)
    assert "(lr)" in msg
    assert "log scale needs low > 0" in msg


def test_int_log_scale_with_low_below_one_is_rejected() -> None:
    data = _gin()
    data["search_space"]["hidden_channels"] = {"type": "int", "low": 0, "high": 64, "log": True}
    msg = _error(data)
    assert "(hidden_channels)" in msg
    assert "log scale needs low >= 1 (got 0)" in msg


def test_int_log_scale_with_low_of_one_is_accepted_by_the_log_rule() -> None:
    data = _gin()
    data["search_space"]["num_layers"] = {"type": "int", "low": 1, "high": 5, "log": True}
    _validate_all(_spec(data))


def test_int_range_below_catalogue_minimum_is_rejected() -> None:
    data = _gin()
    data["search_space"]["hidden_channels"] = {"type": "int", "low": 2, "high": 64}
    msg = _error(data)
    assert "(hidden_channels)" in msg
    assert "below the valid minimum 8" in msg


def test_float_range_above_catalogue_maximum_is_rejected() -> None:
    data = _gin()
    data["search_space"]["dropout"] = {"type": "float", "low": 0.0, "high": 0.95}
    msg = _error(data)
    assert "(dropout)" in msg
    assert "above the valid maximum 0.9" in msg


def test_int_range_for_float_hyperparameter_is_rejected() -> None:
    data = _gin()
    data["search_space"]["dropout"] = {"type": "int", "low": 0, "high": 1}
    assert "(dropout): is an int range, but the hyperparameter is float" in _error(data)


@pytest.mark.parametrize("n_trials", [0, -3])
def test_non_positive_n_trials_is_rejected(n_trials: int) -> None:
    data = _gin()
    data["budget"]["n_trials"] = n_trials
    assert _error(data).startswith(f"budget.n_trials: is {n_trials}, but must be 1..")


@pytest.mark.parametrize("max_epochs", [0, -1])
def test_non_positive_max_epochs_is_rejected(max_epochs: int) -> None:
    data = _gin()
    data["budget"]["max_epochs"] = max_epochs
    assert _error(data).startswith(f"budget.max_epochs: is {max_epochs}, but must be 1..")


def test_negative_timeout_is_rejected() -> None:
    data = _gin()
    data["budget"]["timeout_seconds"] = -1
    msg = _error(data)
    assert msg.startswith("budget.timeout_seconds: is -1.0")
    assert "must be >= 0" in msg


def test_infinite_timeout_is_rejected() -> None:
    spec = dataclasses.replace(_spec(_gin()), timeout_seconds=math.inf)
    with pytest.raises(InvalidArgument, match=r"^budget\.timeout_seconds: is inf"):
        validate(spec)


def test_zero_timeout_means_no_limit_and_is_accepted() -> None:
    data = _gin()
    data["budget"]["timeout_seconds"] = 0
    _validate_all(_spec(data))


def test_parallelism_above_maximum_is_rejected() -> None:
    data = _gin()
    data["parallelism"] = 1025
    assert _error(data).startswith("parallelism: is 1025, but must be 1..1024")


def test_negative_parallelism_is_rejected() -> None:
    data = _gin()
    data["parallelism"] = -2
    assert _error(data).startswith("parallelism: is -2")


def test_unknown_metric_names_field_and_lists_metrics() -> None:
    data = _gin()
    data["objective"] = {"metric": "auc", "direction": "maximize"}
    msg = _error(data)
    assert msg.startswith("objective.metric: unknown metric 'auc'")
    assert f"choose one of: {', '.join(sorted(catalogue.METRICS))}" in msg


def test_bad_direction_on_spec_is_rejected() -> None:
    spec = dataclasses.replace(_spec(_gin()), direction="down")
    with pytest.raises(InvalidArgument, match=r"^objective\.direction: 'down'"):
        validate(spec)


def test_hyperparameter_of_another_model_is_rejected() -> None:
    data = _gin()
    data["search_space"]["units"] = {"type": "int", "low": 32, "high": 64}
    msg = _error(data)
    assert msg.startswith("search_space.params[6].name: unknown hyperparameter 'units'")
    assert "for model 'gin'" in msg
    assert "hidden_channels" in msg


def test_duplicate_parameter_is_rejected() -> None:
    data = _gin()
    data["search_space"] = [
        {"name": "dropout", "type": "float", "low": 0.0, "high": 0.3},
        {"name": "dropout", "type": "float", "low": 0.1, "high": 0.2},
    ]
    assert _error(data).startswith("search_space.params[1].name: 'dropout' appears twice")


def test_condition_on_parameter_listed_later_is_rejected() -> None:
    data = _gin()
    data["search_space"] = [
        {
            "name": "dropout",
            "type": "float",
            "low": 0.0,
            "high": 0.3,
            "condition": {"parent": "num_layers", "values": [3]},
        },
        {"name": "num_layers", "type": "int", "low": 2, "high": 5},
    ]
    msg = _error(data)
    assert msg.startswith("search_space.params[0].condition.parent: 'num_layers'")
    assert "list the parent first" in msg


def test_condition_on_unknown_parent_is_rejected() -> None:
    data = _gin()
    data["search_space"]["dropout"]["condition"] = {"parent": "depth", "values": [3]}
    assert _error(data).startswith("search_space.params[2].condition.parent: 'depth'")


def test_condition_without_values_is_rejected() -> None:
    data = _gin()
    data["search_space"]["dropout"]["condition"] = {"parent": "num_layers", "values": []}
    assert _error(data).startswith("search_space.params[2].condition.values: is empty")


def test_condition_on_earlier_parameter_is_accepted() -> None:
    data = _gin()
    data["search_space"]["dropout"]["condition"] = {"parent": "num_layers", "values": [3, 4]}
    _validate_all(_spec(data))


def test_parameter_both_fixed_and_tuned_is_rejected() -> None:
    data = _gin()
    data["fixed_params"] = {"batch_size": 32, "dropout": 0.1}
    assert _error(data).startswith("fixed_params.dropout: is also in search_space")


def test_unknown_fixed_parameter_is_rejected() -> None:
    data = _gin()
    data["fixed_params"] = {"batch_sizes": 32}
    msg = _error(data)
    assert msg.startswith("fixed_params: unknown hyperparameter 'batch_sizes'")


def test_fixed_parameter_out_of_range_is_rejected() -> None:
    data = _gin()
    data["fixed_params"] = {"batch_size": 0}
    msg = _error(data)
    assert msg.startswith("fixed_params: ")
    assert "'batch_size'" in msg
    assert "outside its valid range" in msg


def test_invalid_categorical_choice_names_param_and_lists_valid_ones() -> None:
    data = _gin()
    data["search_space"]["pooling"] = {"type": "categorical", "choices": ["add", "sum2"]}
    msg = _error(data)
    assert "search_space.params[3] (pooling): choice 'sum2' is not valid" in msg
    assert "add, mean, max" in msg


def test_repeated_categorical_choice_is_rejected() -> None:
    data = _gin()
    data["search_space"]["pooling"] = {"type": "categorical", "choices": ["add", "add"]}
    assert "(pooling): categorical choices repeat a value" in _error(data)


def test_empty_categorical_choices_are_rejected() -> None:
    data = _gin()
    data["search_space"]["pooling"] = {"type": "categorical", "choices": []}
    assert "(pooling): categorical choices are empty" in _error(data)


def test_categorical_choices_for_numeric_hyperparameter_are_checked_against_its_range() -> None:
    data = _gin()
    data["search_space"]["lr"] = {"type": "categorical", "choices": [1e-3, 5.0]}
    msg = _error(data)
    assert "(lr): choice 5.0 is not valid" in msg
    assert "outside its valid range" in msg


def test_float_step_with_log_is_rejected() -> None:
    data = _gin()
    data["search_space"]["lr"] = {
        "type": "float",
        "low": 1e-4,
        "high": 1e-2,
        "log": True,
        "step": 1e-4,
    }
    assert "(lr): step cannot be used with log scale" in _error(data)


def test_int_step_with_log_is_rejected() -> None:
    data = _gin()
    data["search_space"]["hidden_channels"] = {
        "type": "int",
        "low": 16,
        "high": 256,
        "log": True,
        "step": 2,
    }
    assert "(hidden_channels): step cannot be used with log scale" in _error(data)


def test_negative_int_step_is_rejected() -> None:
    data = _gin()
    data["search_space"]["num_layers"] = {"type": "int", "low": 2, "high": 5, "step": -1}
    assert "(num_layers): step is -1, but must be >= 1" in _error(data)


def test_negative_float_step_is_rejected() -> None:
    data = _gin()
    data["search_space"]["dropout"] = {"type": "float", "low": 0.0, "high": 0.3, "step": -0.1}
    assert "(dropout): step is -0.1, but must be a number > 0" in _error(data)


# ---- sampler and pruner ------------------------------------------------------------------------


def test_unknown_sampler_lists_valid_samplers() -> None:
    data = _gin()
    data["sampler"] = {"name": "annealing"}
    assert (
        _error(data) == "sampler.name: unknown sampler 'annealing'; "
        "choose one of: cmaes, gp, grid, nsga2, qmc, random, tpe"
    )


def test_unknown_pruner_lists_valid_pruners() -> None:
    data = _gin()
    data["pruner"] = {"name": "wilcoxon"}
    assert _error(data) == (
        "pruner.name: unknown pruner 'wilcoxon'; "
        "choose one of: asha, hyperband, median, none, patient, percentile"
    )


def test_unknown_sampler_option_names_it_and_lists_valid_ones() -> None:
    data = _gin()
    data["sampler"] = {"name": "tpe", "options": {"n_startup": 5}}
    msg = _error(data)
    assert msg.startswith("sampler.options.n_startup: unknown option for sampler 'tpe'")
    assert "valid options: n_startup_trials" in msg
    assert "multivariate" in msg


def test_option_for_sampler_without_options_says_none_are_valid() -> None:
    with pytest.raises(InvalidArgument) as err:
        validate_sampler("random", {"seed": 1})
    assert str(err.value) == (
        "sampler.options.seed: unknown option for sampler 'random'; valid options: (none)"
    )


def test_unknown_pruner_option_names_it_and_lists_valid_ones() -> None:
    data = _gin()
    data["pruner"] = {"name": "hyperband", "options": {"max_resource": 10}}
    msg = _error(data)
    assert msg.startswith("pruner.options.max_resource: unknown option for pruner 'hyperband'")
    assert "valid options: min_resource, reduction_factor, bootstrap_count" in msg


def test_hyperband_reduction_factor_of_one_names_the_option() -> None:
    data = _gin()
    data["pruner"] = {"name": "hyperband", "options": {"reduction_factor": 1}}
    msg = _error(data)
    assert msg.startswith("pruner.options.reduction_factor: ")
    assert "greater than or equal to 2" in msg
    assert "(got 1)" in msg


def test_percentile_above_hundred_names_the_option() -> None:
    with pytest.raises(InvalidArgument, match=r"^pruner\.options\.percentile: "):
        validate_pruner("percentile", {"percentile": 101.0})


def test_non_boolean_sampler_option_names_the_option() -> None:
    with pytest.raises(InvalidArgument, match=r"^sampler\.options\.multivariate: "):
        validate_sampler("tpe", {"multivariate": "maybe"})


def test_whole_float_for_int_option_is_accepted() -> None:
    validate_sampler("tpe", {"n_startup_trials": 8.0})
    validate_pruner("hyperband", {"min_resource": 1.0, "reduction_factor": 3.0})


def test_fractional_float_for_int_option_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"^sampler\.options\.n_startup_trials: "):
        validate_sampler("tpe", {"n_startup_trials": 8.5})


def test_int_options_survive_the_struct_of_a_request() -> None:
    """Struct holds only doubles: n_startup_trials 8 arrives as 8.0 and must still validate."""
    data = _gin()
    data["sampler"] = {"name": "tpe", "options": {"n_startup_trials": 8, "n_ei_candidates": 12}}
    spec = _spec(data)
    assert spec.sampler.options == {"n_startup_trials": 8, "n_ei_candidates": 12}
    _validate_all(spec)


def test_request_without_sampler_and_pruner_gets_valid_defaults() -> None:
    data = _gin()
    del data["sampler"]
    del data["pruner"]
    spec = _spec(data)
    assert (spec.sampler.name, spec.pruner.name) == ("tpe", "hyperband")
    _validate_all(spec)
