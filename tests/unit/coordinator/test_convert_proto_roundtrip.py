"""coordinator.convert: request <-> spec, JSON, parameter values and Structs."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from coordinator.convert import (
    direction_of,
    request_from_json,
    request_to_json,
    spec_from_proto,
    spec_to_proto,
    struct_to_dict,
    study_direction,
    value_from_proto,
    value_to_proto,
)
from coordinator.spec import (
    CategoricalDist,
    ComponentSpec,
    Condition,
    DatasetSpec,
    FloatDist,
    IntDist,
    ParamSpec,
    StudySpec,
)
from molhpo import studyfile
from molhpo.contract.enums import Direction
from molhpo.contract.errors import InvalidArgument
from molhpo.v1 import common_pb2, study_pb2

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
EXAMPLE_FILES = ["freesolv_gin.yaml", "freesolv_mlp.yaml"]


def _full_spec() -> StudySpec:
    """A spec where every field differs from its default."""
    return StudySpec(
        name="every-field.1",
        dataset=DatasetSpec(
            name="freesolv", split="random", split_seed=7, valid_fraction=0.2, test_fraction=0.15
        ),
        model="mlp",
        params=(
            ParamSpec("num_extra_layers", IntDist(low=1, high=4)),
            ParamSpec("units", IntDist(low=32, high=512, step=32)),
            ParamSpec("lr", FloatDist(low=1e-4, high=1e-2, log=True)),
            ParamSpec("dropout", FloatDist(low=0.05, high=0.5, step=0.05)),
            ParamSpec("units_1", IntDist(low=16, high=256, log=True)),
            ParamSpec(
                "units_2",
                IntDist(low=8, high=64),
                condition=Condition(parent="num_extra_layers", values=(2, 3, 4)),
            ),
            ParamSpec("weight_decay", CategoricalDist(choices=(0.0, 1e-5, 1e-4))),
            ParamSpec("batch_size", CategoricalDist(choices=(16, 32, 64))),
        ),
        fixed_params={"negative_slope": 0.2, "dropout_1": 0.1},
        metric="r2",
        direction="maximize",
        sampler=ComponentSpec(
            "tpe", {"n_startup_trials": 5, "multivariate": False, "constant_liar": True}
        ),
        pruner=ComponentSpec("percentile", {"percentile": 37.5, "n_warmup_steps": 2}),
        n_trials=17,
        max_epochs=33,
        timeout_seconds=3600.5,
        parallelism=3,
        seed=42,
        description="every field set",
    )


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_spec_proto_round_trip_keeps_example_specs(name: str) -> None:
    spec = spec_from_proto(studyfile.load(EXAMPLES / name))
    assert spec_from_proto(spec_to_proto(spec)) == spec


def test_spec_proto_round_trip_keeps_every_field() -> None:
    spec = _full_spec()
    back = spec_from_proto(spec_to_proto(spec))
    for f in StudySpec.__dataclass_fields__:
        assert getattr(back, f) == getattr(spec, f), f
    assert back == spec


def test_round_trip_keeps_value_types_of_choices_and_conditions() -> None:
    back = spec_from_proto(spec_to_proto(_full_spec()))
    by_name = {p.name: p for p in back.params}
    wd = by_name["weight_decay"].distribution
    assert isinstance(wd, CategoricalDist)
    assert [type(c) for c in wd.choices] == [float, float, float]
    bs = by_name["batch_size"].distribution
    assert isinstance(bs, CategoricalDist)
    assert [type(c) for c in bs.choices] == [int, int, int]
    cond = by_name["units_2"].condition
    assert cond is not None
    assert [type(v) for v in cond.values] == [int, int, int]


def test_continuous_float_keeps_step_none_through_round_trip() -> None:
    back = spec_from_proto(spec_to_proto(_full_spec()))
    lr = next(p for p in back.params if p.name == "lr").distribution
    assert isinstance(lr, FloatDist)
    assert lr.step is None
    assert lr.log is True


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_request_json_round_trip_keeps_request(name: str) -> None:
    req = studyfile.load(EXAMPLES / name)
    assert request_from_json(request_to_json(req)) == req


def test_request_json_round_trip_keeps_full_request() -> None:
    req = spec_to_proto(_full_spec())
    text = request_to_json(req)
    assert "\n" not in text
    assert request_from_json(text) == req


def test_request_json_uses_proto_field_names() -> None:
    text = request_to_json(spec_to_proto(_full_spec()))
    assert '"fixed_params"' in text
    assert '"max_epochs"' in text
    assert "fixedParams" not in text


def test_defaults_are_filled_for_an_almost_empty_request() -> None:
    spec = spec_from_proto(study_pb2.StartStudyRequest(name="x", model="gin"))
    assert spec.dataset == DatasetSpec(name="", split="random", split_seed=0)
    assert spec.dataset.valid_fraction == 0.1
    assert spec.dataset.test_fraction == 0.1
    assert spec.metric == "rmse"
    assert spec.direction == "minimize"
    assert spec.sampler == ComponentSpec("tpe", {})
    assert spec.pruner == ComponentSpec("hyperband", {})
    assert spec.parallelism == 1


def test_unspecified_direction_follows_the_metric() -> None:
    req = study_pb2.StartStudyRequest(objective=common_pb2.Objective(metric="r2"))
    assert spec_from_proto(req).direction == "maximize"
    req = study_pb2.StartStudyRequest(objective=common_pb2.Objective(metric="mae"))
    assert spec_from_proto(req).direction == "minimize"


def test_explicit_direction_overrides_the_metric() -> None:
    req = study_pb2.StartStudyRequest(
        objective=common_pb2.Objective(metric="rmse", direction=common_pb2.DIRECTION_MAXIMIZE)
    )
    assert spec_from_proto(req).direction == "maximize"


def test_int_step_zero_means_one_and_float_step_zero_means_continuous() -> None:
    req = study_pb2.StartStudyRequest()
    req.search_space.params.add(name="a").int.CopyFrom(common_pb2.IntDistribution(low=1, high=9))
    req.search_space.params.add(name="b").float.CopyFrom(
        common_pb2.FloatDistribution(low=0.0, high=1.0)
    )
    a, b = spec_from_proto(req).params
    assert a.distribution == IntDist(low=1, high=9, step=1, log=False)
    assert b.distribution == FloatDist(low=0.0, high=1.0, step=None, log=False)


def test_param_without_distribution_names_the_param() -> None:
    req = study_pb2.StartStudyRequest()
    req.search_space.params.add(name="dropout")
    with pytest.raises(InvalidArgument, match=r"^search_space\.params\[0\]: no distribution"):
        spec_from_proto(req)


def test_unset_categorical_choice_names_its_place() -> None:
    req = study_pb2.StartStudyRequest()
    p = req.search_space.params.add(name="pooling")
    p.categorical.choices.add(string_value="add")
    p.categorical.choices.add()
    with pytest.raises(
        InvalidArgument, match=r"^search_space\.params\[0\]\.categorical\.choices\[1\]: no value"
    ):
        spec_from_proto(req)


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "bool_value"),
        (False, "bool_value"),
        (3, "int_value"),
        (-7, "int_value"),
        (2.5, "float_value"),
        (3.0, "float_value"),
        ("add", "string_value"),
        ("", "string_value"),
    ],
)
def test_value_proto_round_trip_keeps_value_and_type(value: object, kind: str) -> None:
    proto = value_to_proto(value)
    assert proto.WhichOneof("kind") == kind
    back = value_from_proto(proto)
    assert back == value
    assert type(back) is type(value)


def test_bool_does_not_become_int() -> None:
    proto = value_to_proto(True)
    assert proto.WhichOneof("kind") == "bool_value"
    assert value_from_proto(proto) is True


def test_empty_value_proto_names_its_place() -> None:
    with pytest.raises(InvalidArgument, match=r"^fixed\.x: no value is set"):
        value_from_proto(common_pb2.ParamValue(), "fixed.x")


def test_struct_to_dict_turns_whole_floats_into_ints() -> None:
    s = struct_pb2.Struct()
    s.update({"n": 3, "whole": 3.0, "frac": 2.5, "flag": True, "name": "x", "neg": -4.0})
    d = struct_to_dict(s)
    assert d == {"n": 3, "whole": 3, "frac": 2.5, "flag": True, "name": "x", "neg": -4}
    assert type(d["n"]) is int
    assert type(d["whole"]) is int
    assert type(d["neg"]) is int
    assert type(d["frac"]) is float
    assert d["flag"] is True


def test_struct_to_dict_of_empty_struct_is_empty() -> None:
    assert struct_to_dict(struct_pb2.Struct()) == {}


@pytest.mark.parametrize("direction", list(Direction))
def test_a_direction_goes_to_optuna_and_back(direction: Direction) -> None:
    study_dir = study_direction(direction)
    assert study_dir.name == direction.name
    assert direction_of(study_dir) is direction
