"""The owned-study cache answers exactly what the database holds, written now or by its
writer thread, and keeps readers' trial objects unchanged."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from storage.owned_cache import OwnedStudyStorage
from storage.study_store import create_storage


def _run_some_trials(study: optuna.Study, n: int) -> None:
    for i in range(n):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        for step in range(1, 4):
            trial.report(float(i + step), step)
        trial.set_user_attr("i", i)
        study.tell(trial, float(i))
    running = study.ask()
    running.suggest_float("x", 0.0, 1.0)
    running.report(7.0, 1)


def _snapshot(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[object, ...]]:
    return [
        (
            t.number,
            t.state,
            t.values,
            t.params,
            t.intermediate_values,
            t.user_attrs,
            t.system_attrs,
        )
        for t in trials
    ]


@pytest.fixture
def owned(tmp_path: Path) -> tuple[OwnedStudyStorage, optuna.Study, str]:
    url = f"sqlite:///{tmp_path / 's.db'}"
    storage = OwnedStudyStorage(create_storage(url, sync=False))
    study = optuna.create_study(storage=storage, study_name="s")
    storage.own(study._study_id)
    return storage, study, url


def test_owned_trials_match_the_database(
    owned: tuple[OwnedStudyStorage, optuna.Study, str],
) -> None:
    storage, study, url = owned
    _run_some_trials(study, 5)
    fresh = optuna.load_study(study_name="s", storage=url)
    assert _snapshot(study.get_trials()) == _snapshot(fresh.get_trials())
    assert storage.get_study_id_from_name("s") == study._study_id


def test_deferred_writes_reach_the_database_in_order(
    owned: tuple[OwnedStudyStorage, optuna.Study, str],
) -> None:
    storage, study, url = owned
    trial = study.ask()
    acked: list[str] = []
    with storage.deferring():
        for step in range(1, 6):
            trial.report(float(step), step)
        trial.set_user_attr("done", True)
        study.tell(trial, 1.0)
        storage.after_writes(lambda: acked.append("ack"))
    # The cache knows at once; the database once the writer caught up.
    assert study.get_trials()[0].state == optuna.trial.TrialState.COMPLETE
    assert storage.drain(10)
    assert acked == ["ack"]
    stored = optuna.load_study(study_name="s", storage=url).get_trials()[0]
    assert stored.state == optuna.trial.TrialState.COMPLETE
    assert stored.intermediate_values == {s: float(s) for s in range(1, 6)}
    assert stored.user_attrs == {"done": True}


def test_readers_never_see_a_trial_change_under_them(
    owned: tuple[OwnedStudyStorage, optuna.Study, str],
) -> None:
    _storage, study, _url = owned
    trial = study.ask()
    before = study.get_trials(deepcopy=False)[0]
    trial.report(1.0, 1)
    assert before.intermediate_values == {}
    assert study.get_trials(deepcopy=False)[0].intermediate_values == {1: 1.0}


def test_a_finished_trial_refuses_deferred_updates(
    owned: tuple[OwnedStudyStorage, optuna.Study, str],
) -> None:
    storage, study, _url = owned
    trial = study.ask()
    study.tell(trial, 1.0)
    with storage.deferring(), pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
