"""Constraints on the real stack: the sampler gets them, and an infeasible trial is never best.

Real parts: redis-server, a coordinator process, a trainer process, the SQLite study store.

The study minimises validation RMSE under two constraints: ``n_parameters <= CAP`` and
``r2 <= 0.5``. RMSE and R2 on the same validation split move together (R2 = 1 - RMSE^2 / the
targets' variance), so the cap on R2 makes exactly the trials that learned most infeasible: each
of them has a better RMSE than every feasible trial, and none of them may be called best.
"""

from __future__ import annotations

import json
import math
import urllib.request
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2

pytestmark = pytest.mark.integration

NAME = "constrained"
CAP = 30_000
R2_CAP = 0.5
STUDY: dict[str, Any] = {
    "name": NAME,
    "dataset": {"name": "freesolv", "max_molecules": 160},
    "model": "mlp",
    "search_space": {
        "units": {"type": "int", "low": 32, "high": 512, "step": 32},
        "lr": {"type": "categorical", "choices": [1e-2, 1e-3, 1e-4]},
    },
    "fixed_params": {"batch_size": 32, "num_extra_layers": 1, "units_1": 32},
    "objective": {"metric": "rmse"},
    "constraints": [{"metric": "n_parameters", "max": CAP}, {"metric": "r2", "max": R2_CAP}],
    "sampler": {"name": "tpe", "options": {"n_startup_trials": 2}},
    "pruner": {"name": "none"},
    "budget": {"n_trials": 6, "max_epochs": 8},
    "parallelism": 2,
    "skip_default_trial": True,
    # Slow learners (feasible: R2 well under the cap) and fast ones, one of them too large.
    "enqueued_trials": [
        {"units": 32, "lr": 1e-4},
        {"units": 64, "lr": 1e-4},
        {"units": 64, "lr": 1e-2},
        {"units": 512, "lr": 1e-2},
    ],
}


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with LocalStack(
        state_dir=tmp_path_factory.mktemp("constraints"),
        n_trainers=1,
        slots=2,
        coordinator_listen="127.0.0.1:0",
        redis_url=redis_server.url,
        key_prefix="constraints",
    ) as st:
        yield st


def _violations(t: optuna.trial.FrozenTrial) -> list[float]:
    return [t.user_attrs["n_parameters"] - CAP, t.user_attrs["valid_metrics"]["r2"] - R2_CAP]


def test_constraints_reach_the_sampler_and_no_infeasible_trial_is_best(
    stack: LocalStack,
) -> None:
    with MolhpoClient(stack.coordinator_address, timeout_s=60) as client:
        client.start_study(studyfile.from_dict(STUDY))
        info = client.wait(NAME, timeout_s=600)
        listed = {t.number: t for t in client.list_trials(NAME)}
        report = client.get_report(NAME)
        predicted = client.predict(NAME, ["CCO"])
        with urllib.request.urlopen(stack.coordinator_metrics, timeout=10) as resp:
            gauges = {
                s.labels.get("study"): s.value
                for fam in text_string_to_metric_families(resp.read().decode())
                for s in fam.samples
                if s.name == "molhpo_coordinator_best_value"
            }
    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert info.n_complete == STUDY["budget"]["n_trials"], [
        t.failure_reason for t in listed.values()
    ]

    store = f"sqlite:///{stack.state_dir / 'studies.db'}"
    trials = optuna.load_study(study_name=NAME, storage=store).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    # The sampler called the study's constraints after every trial: Optuna keeps what they
    # returned in the trial system attr it reads for feasibility (and best_trial).
    for t in complete:
        assert "constraints" in t.system_attrs, (t.number, t.system_attrs)
        assert list(t.system_attrs["constraints"]) == pytest.approx(_violations(t)), t.number
        ok = all(v <= 0 for v in _violations(t))
        assert t.user_attrs["feasible"] is ok, t.number
        assert listed[t.number].feasible is ok, t.number
    feasible = [t for t in complete if t.user_attrs["feasible"]]
    infeasible = [t for t in complete if not t.user_attrs["feasible"]]
    too_large = [t for t in complete if t.user_attrs["n_parameters"] > CAP]
    assert feasible and infeasible and too_large, [(t.number, _violations(t)) for t in complete]
    best_feasible = min(feasible, key=lambda t: float(t.value or math.inf))
    best_overall = min(complete, key=lambda t: float(t.value or math.inf))
    # The set-up worked: an infeasible trial has the better objective value.
    assert not best_overall.user_attrs["feasible"]
    assert float(best_overall.value or 0) < float(best_feasible.value or 0)

    # Best everywhere it is named: GetStudy, the report, predictions, the metric, Optuna.
    assert info.best_trial.number == best_feasible.number
    assert info.best_trial.feasible
    summary = json.loads(report.json)
    assert summary["best"]["number"] == best_feasible.number
    ranked = [r["number"] for r in summary["ranking"]]
    assert set(ranked[: len(feasible)]) == {t.number for t in feasible}, ranked
    assert ranked[0] == best_feasible.number
    assert f"Best trial: **{best_feasible.number}**," in report.markdown
    assert list(predicted.trial_numbers) == [best_feasible.number]
    assert gauges[NAME] == pytest.approx(float(best_feasible.value or 0))
    with_constraints = optuna.load_study(study_name=NAME, storage=store)
    assert with_constraints.best_trial.number == best_feasible.number
