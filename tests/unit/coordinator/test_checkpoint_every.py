"""budget.checkpoint_every: from a study file or request to the spec, checked, kept with the
study, and handed to trainers in every TrialSpec."""

from __future__ import annotations

import copy
import threading
from pathlib import Path
from typing import Any

import optuna
import pytest
import redis
import yaml

from coordinator import convert
from coordinator.membership import TrainerPool
from coordinator.metrics import CoordinatorMetrics
from coordinator.spec import StudySpec, validate
from coordinator.study_runner import StudyRunner
from coordinator.trainer_client import TrainerClient
from coordinator.wiring import CoordinatorOptions, Shared
from molhpo import studyfile
from molhpo.contract.errors import InvalidArgument
from storage.keys import RedisKeys

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "freesolv_mlp.yaml"


def _data(**budget: Any) -> dict[str, Any]:
    data = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    data["budget"] = {"n_trials": 4, "max_epochs": 12, **budget}
    return data


def _spec(**budget: Any) -> StudySpec:
    return convert.spec_from_proto(studyfile.from_dict(_data(**budget)))


def test_a_study_file_sets_it_and_it_is_kept_with_the_study(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_data(checkpoint_every=3)))
    req = studyfile.load(path)
    assert req.budget.checkpoint_every == 3
    spec = convert.spec_from_proto(req)
    assert spec.checkpoint_every == 3
    # Stored with the study as its request, read back on resume and after a restart.
    again = convert.spec_from_proto(
        convert.request_from_json(convert.request_to_json(convert.spec_to_proto(spec)))
    )
    assert again.checkpoint_every == 3
    assert again == spec


def test_absent_means_the_trainers_default() -> None:
    spec = _spec()
    assert spec.checkpoint_every == 0  # trainers save every 5 epochs
    validate(spec)


@pytest.mark.parametrize("every", [0, 1, 5, 12])
def test_values_from_zero_to_max_epochs_are_valid(every: int) -> None:
    validate(_spec(checkpoint_every=every))


@pytest.mark.parametrize("every", [-1, 13, 1000])
def test_values_outside_zero_to_max_epochs_name_the_field_the_rule_and_the_fix(
    every: int,
) -> None:
    with pytest.raises(InvalidArgument) as err:
        validate(_spec(checkpoint_every=every))
    text = str(err.value)
    assert text.startswith(f"budget.checkpoint_every: is {every}, but must be 0..max_epochs")
    assert "(0..12)" in text
    assert "every 1..12 epochs, or give 0 for every 5" in text


def test_a_value_that_is_not_a_whole_number_is_refused_by_the_study_file() -> None:
    with pytest.raises(InvalidArgument, match="checkpoint_every"):
        studyfile.from_dict(_data(checkpoint_every="three"))


def test_every_trial_spec_carries_it() -> None:
    spec = _spec(checkpoint_every=3)
    study = optuna.create_study()
    shared = Shared(
        storage=study._storage,
        redis=redis.Redis(),  # never contacted: building a TrialSpec reads nothing
        keys=RedisKeys("unit"),
        pool=TrainerPool(10.0),
        trainers=TrainerClient(),
        metrics=CoordinatorMetrics(),
        stop=threading.Event(),
    )
    runner = StudyRunner(spec, study, shared, CoordinatorOptions(decision_timeout_s=5.0))
    trial_spec = runner._trial_spec_from(0, 1, {"hidden_channels": 64})
    assert trial_spec.checkpoint_every == 3
    assert trial_spec.max_epochs == 12
