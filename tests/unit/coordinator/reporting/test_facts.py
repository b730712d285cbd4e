"""Facts of a study: its setup from the stored request, its trials, their effort and ranking."""

from __future__ import annotations

import dataclasses
from typing import Any

from optuna.trial import create_trial
from reporting_studies import MAX_EPOCHS, molhpo_study, request_json

from coordinator.reporting.facts import (
    best_trial,
    default_trial,
    epoch_budget,
    rank_single,
    search_space,
    study_effort,
    study_setup,
    trial_facts,
)
from molhpo.contract import attrs


def test_setup_comes_from_the_stored_request() -> None:
    setup = study_setup({attrs.STUDY_REQUEST: request_json()}, {}, ["minimize"])
    assert setup["model"] == "gin" and setup["dataset"] == "esol"
    assert setup["split"] == "scaffold" and setup["sampler"] == "tpe"
    assert setup["pruner"] == "median" and setup["max_epochs"] == MAX_EPOCHS
    assert setup["objectives"] == [{"metric": "rmse", "direction": "minimize"}]
    assert setup["request_error"] is None


def test_setup_without_a_readable_request_falls_back_to_the_study() -> None:
    user_attrs = {"model": "mlp", "dataset": "freesolv", "metric": "mae"}
    setup = study_setup({attrs.STUDY_REQUEST: "{not json"}, user_attrs, ["maximize"])
    assert setup["request_error"].startswith(f"{attrs.STUDY_REQUEST} is not valid JSON")
    assert setup["model"] == "mlp" and setup["dataset"] == "freesolv"
    assert setup["objectives"] == [{"metric": "mae", "direction": "maximize"}]
    assert setup["sampler"] is None and setup["split"] is None
    two = study_setup({}, {}, ["minimize", "maximize"])
    assert [o["metric"] for o in two["objectives"]] == ["objective 0", "objective 1"]
    assert two["pruner"] == "none (multi-objective)"


def test_effort_counts_states_epochs_and_seconds() -> None:
    trials = [trial_facts(t) for t in molhpo_study().trials]
    effort = study_effort(trials)
    assert effort.counts == {
        "complete": 11,
        "pruned": 1,
        "failed": 2,
        "running": 0,
        "waiting": 0,
        "total": 14,
    }
    assert effort.trainer_seconds == 11 * 60.0 + 8.0
    assert effort.wall_seconds is not None and effort.wall_seconds >= 0
    assert epoch_budget(None, trials) == MAX_EPOCHS and epoch_budget(7, trials) == 7
    assert search_space(trials) == {
        "hidden": "int 32 .. 256",
        "lr": "float 0.0001 .. 0.1 (log)",
        "pool": "one of mean, sum, max",
    }
    default = default_trial(trials)
    assert default is not None and default.number == 0


def test_trial_facts_fall_back_to_intermediate_values() -> None:
    t = trial_facts(create_trial(value=0.5, intermediate_values={1: 0.9, 2: 0.4, 3: 0.5}))
    assert t.epochs_trained == 3 and t.best_step == 2
    assert t.seconds is None and t.train_seconds is not None
    up = trial_facts(create_trial(value=0.5, intermediate_values={1: 0.9, 2: 0.4}), "maximize")
    assert up.best_step == 1


def test_infeasible_trials_rank_after_feasible_ones_and_are_never_best() -> None:
    def facts(number: int, value: float, feasible: bool) -> Any:
        t = create_trial(value=value, user_attrs={attrs.TRIAL_FEASIBLE: feasible})
        return dataclasses.replace(trial_facts(t), number=number)

    trials = [facts(0, 0.9, True), facts(1, 0.5, False), facts(2, 0.7, True)]
    ranking = rank_single(trials, "minimize")
    assert [t.number for t in ranking] == [2, 0, 1]
    best = best_trial(ranking)
    assert best is not None and best.number == 2
