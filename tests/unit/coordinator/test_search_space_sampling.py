"""Sampling a study's search space on in-memory Optuna studies, and the sampler and pruner
registries that build Optuna objects by name."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from coordinator.convert import spec_from_proto, study_direction
from coordinator.optimizer.pruners import build_pruner
from coordinator.optimizer.samplers import build_sampler
from coordinator.optimizer.search_space import suggest
from coordinator.spec import CategoricalDist, FloatDist, IntDist, ParamSpec, StudySpec, Value
from molhpo import studyfile
from molhpo.contract.errors import InvalidArgument

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def _example(name: str) -> StudySpec:
    return spec_from_proto(studyfile.load(EXAMPLES / name))


def _sample(
    spec: StudySpec, sampler: optuna.samplers.BaseSampler, n: int
) -> list[tuple[dict[str, Value], dict[str, object]]]:
    """(suggest's answer, the trial's params) for n trials, each told a made-up value."""
    study = optuna.create_study(sampler=sampler, direction=study_direction(spec.direction))
    out = []
    for i in range(n):
        trial = study.ask()
        values = suggest(trial, spec.params)
        out.append((values, dict(trial.params)))
        study.tell(trial, float(i % 7))
    return out


def _inside(value: Value, p: ParamSpec) -> bool:
    d = p.distribution
    if isinstance(d, IntDist):
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and d.low <= value <= d.high
            and (value - d.low) % d.step == 0
        )
    if isinstance(d, FloatDist):
        if not (isinstance(value, float) and d.low <= value <= d.high):
            return False
        if d.step is None:
            return True
        k = (value - d.low) / d.step
        return math.isclose(k, round(k), abs_tol=1e-6)
    assert isinstance(d, CategoricalDist)
    return value in d.choices


@pytest.fixture(autouse=True)
def _quiet_optuna() -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(before)


def test_mlp_units_3_appears_only_when_num_extra_layers_is_3_or_4() -> None:
    spec = _example("freesolv_mlp.yaml")
    samples = _sample(spec, optuna.samplers.RandomSampler(seed=0), 50)
    with_3 = without_3 = 0
    for values, _ in samples:
        if values["num_extra_layers"] in (3, 4):
            assert "units_3" in values
            with_3 += 1
        else:
            assert "units_3" not in values
            without_3 += 1
    assert with_3 > 0
    assert without_3 > 0


def test_every_conditional_param_is_active_exactly_when_its_parent_matches() -> None:
    spec = _example("freesolv_mlp.yaml")
    for values, _ in _sample(spec, optuna.samplers.RandomSampler(seed=1), 50):
        for p in spec.params:
            if p.condition is None:
                assert p.name in values
            else:
                active = values.get(p.condition.parent) in p.condition.values
                assert (p.name in values) == active, (p.name, values)


def test_suggest_returns_exactly_what_the_trial_sampled() -> None:
    spec = _example("freesolv_mlp.yaml")
    for values, trial_params in _sample(spec, optuna.samplers.RandomSampler(seed=2), 20):
        assert values == trial_params


@pytest.mark.parametrize("name", ["freesolv_mlp.yaml", "freesolv_gin.yaml"])
def test_random_sampler_values_stay_inside_their_distributions(name: str) -> None:
    spec = _example(name)
    by_name = {p.name: p for p in spec.params}
    for values, _ in _sample(spec, optuna.samplers.RandomSampler(seed=3), 50):
        for k, v in values.items():
            assert _inside(v, by_name[k]), (k, v)


def test_mlp_lr_is_one_of_its_three_choices() -> None:
    spec = _example("freesolv_mlp.yaml")
    seen = {v["lr"] for v, _ in _sample(spec, optuna.samplers.RandomSampler(seed=4), 50)}
    assert seen <= {1e-2, 1e-3, 1e-4}
    assert len(seen) == 3


def test_example_tpe_sampler_values_stay_inside_their_distributions() -> None:
    spec = _example("freesolv_gin.yaml")
    sampler = build_sampler(spec.sampler.name, spec.sampler.options, spec.seed)
    by_name = {p.name: p for p in spec.params}
    samples = _sample(spec, sampler, 12)  # 8 startup trials, then TPE proper
    for values, _ in samples:
        assert set(values) == set(by_name)
        for k, v in values.items():
            assert _inside(v, by_name[k]), (k, v)


def test_conditional_space_under_multivariate_tpe_keeps_conditions() -> None:
    spec = _example("freesolv_mlp.yaml")
    sampler = build_sampler("tpe", {"n_startup_trials": 4}, 0)
    for values, _ in _sample(spec, sampler, 10):
        assert ("units_4" in values) == (values["num_extra_layers"] == 4)


def test_same_seed_gives_same_suggestions() -> None:
    spec = _example("freesolv_gin.yaml")
    a = _sample(spec, build_sampler("random", {}, 11), 5)
    b = _sample(spec, build_sampler("random", {}, 11), 5)
    c = _sample(spec, build_sampler("random", {}, 12), 5)
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("random", optuna.samplers.RandomSampler),
        ("tpe", optuna.samplers.TPESampler),
        ("gp", optuna.samplers.GPSampler),
    ],
)
def test_build_sampler_returns_the_optuna_class(name: str, cls: type) -> None:
    assert isinstance(build_sampler(name, {}, 0), cls)


def test_build_tpe_applies_options() -> None:
    sampler = build_sampler("tpe", {"n_startup_trials": 3, "n_ei_candidates": 7}, 0)
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 3
    assert sampler._n_ei_candidates == 7


def test_build_tpe_multivariate_also_groups_for_conditional_spaces() -> None:
    on = build_sampler("tpe", {"multivariate": True}, 0)
    off = build_sampler("tpe", {"multivariate": False}, 0)
    assert isinstance(on, optuna.samplers.TPESampler)
    assert isinstance(off, optuna.samplers.TPESampler)
    assert (on._multivariate, on._group) == (True, True)
    assert (off._multivariate, off._group) == (False, False)


def test_build_tpe_raises_no_experimental_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_sampler("tpe", {"multivariate": True, "constant_liar": True}, 0)


def test_build_sampler_rejects_unknown_name_and_bad_option() -> None:
    with pytest.raises(InvalidArgument, match=r"^sampler\.name: unknown sampler 'annealing'"):
        build_sampler("annealing", {}, 0)
    with pytest.raises(InvalidArgument, match=r"^sampler\.options\.n_startup_trials: "):
        build_sampler("tpe", {"n_startup_trials": -1}, 0)


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("hyperband", optuna.pruners.HyperbandPruner),
        ("asha", optuna.pruners.SuccessiveHalvingPruner),
        ("median", optuna.pruners.MedianPruner),
        ("percentile", optuna.pruners.PercentilePruner),
        ("none", optuna.pruners.NopPruner),
    ],
)
def test_build_pruner_returns_the_optuna_class(name: str, cls: type) -> None:
    assert isinstance(build_pruner(name, {}, 10), cls)


def test_hyperband_max_resource_is_max_epochs() -> None:
    pruner = build_pruner("hyperband", {"min_resource": 2, "reduction_factor": 4}, 48)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._max_resource == 48
    assert pruner._min_resource == 2
    assert pruner._reduction_factor == 4


def test_example_hyperband_uses_the_example_budget() -> None:
    spec = _example("freesolv_gin.yaml")
    pruner = build_pruner(spec.pruner.name, spec.pruner.options, spec.max_epochs)
    assert isinstance(pruner, optuna.pruners.HyperbandPruner)
    assert pruner._max_resource == spec.max_epochs == 48
    assert pruner._reduction_factor == 3


def test_build_asha_and_percentile_apply_options() -> None:
    asha = build_pruner("asha", {"min_resource": 3, "min_early_stopping_rate": 1}, 20)
    assert isinstance(asha, optuna.pruners.SuccessiveHalvingPruner)
    assert (asha._min_resource, asha._reduction_factor) == (3, 4)
    assert asha._min_early_stopping_rate == 1
    pct = build_pruner("percentile", {"percentile": 40, "n_warmup_steps": 2}, 20)
    assert isinstance(pct, optuna.pruners.PercentilePruner)
    assert pct._percentile == 40.0
    assert pct._n_warmup_steps == 2


def test_build_pruner_rejects_unknown_name_and_bad_option() -> None:
    with pytest.raises(InvalidArgument, match=r"^pruner\.name: unknown pruner 'wilcoxon'"):
        build_pruner("wilcoxon", {}, 10)
    with pytest.raises(InvalidArgument, match=r"^pruner\.options\.reduction_factor: "):
        build_pruner("hyperband", {"reduction_factor": 1}, 10)
