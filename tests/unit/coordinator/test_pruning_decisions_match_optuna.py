"""Pruning decisions equal Optuna's own pruners on the same reports.

The coordinator's decision path (a pruner from the registry, the study in the coordinator's
store as a running study keeps it, ``pruning.record_and_decide`` under the report consumer's
deferred writes, ``study.tell`` at the end of a trial) is fed the same learning curves, in the
same asynchronous order, as a plain in-memory Optuna study with the pruner built directly from
Optuna. Every PRUNE/CONTINUE must be the same, at every step of every trial.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import optuna
import pytest

from coordinator import pruning
from coordinator.optimizer.pruners import build_pruner
from molhpo.contract import attrs
from storage.owned_cache import OwnedStudyStorage

STUDY = "prune-replay"
MAX_EPOCHS = 12
N_TRIALS = 28
PARALLELISM = 4

Direction = Literal["minimize", "maximize"]


def _median(**kw: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(**kw)


def _patient_median() -> optuna.pruners.BasePruner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(
            optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
            patience=2,
            min_delta=0.02,
        )


def _patient_alone() -> optuna.pruners.BasePruner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.pruners.PatientPruner(None, patience=3, min_delta=0.01)


# (id, molhpo pruner name, molhpo options, Optuna's pruner with the same settings, direction)
CASES: list[
    tuple[str, str, dict[str, object], Callable[[], optuna.pruners.BasePruner], Direction]
] = [
    (
        "hyperband",
        "hyperband",
        {"min_resource": 1, "reduction_factor": 3},
        lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=3
        ),
        "minimize",
    ),
    (
        "asha",
        "asha",
        {"min_resource": 2, "reduction_factor": 2, "min_early_stopping_rate": 1},
        lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=2, reduction_factor=2, min_early_stopping_rate=1
        ),
        "minimize",
    ),
    (
        "asha-bootstrap-max",
        "asha",
        {"min_resource": 1, "reduction_factor": 3, "bootstrap_count": 1},
        lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=3, bootstrap_count=1
        ),
        "maximize",
    ),
    (
        "median",
        "median",
        {"n_startup_trials": 3, "n_warmup_steps": 2, "interval_steps": 2, "n_min_trials": 2},
        lambda: _median(n_startup_trials=3, n_warmup_steps=2, interval_steps=2, n_min_trials=2),
        "minimize",
    ),
    (
        "median-max",
        "median",
        {"n_startup_trials": 2, "n_warmup_steps": 1},
        lambda: _median(n_startup_trials=2, n_warmup_steps=1),
        "maximize",
    ),
    (
        "percentile",
        "percentile",
        {"percentile": 40.0, "n_startup_trials": 3, "n_warmup_steps": 1, "n_min_trials": 2},
        lambda: optuna.pruners.PercentilePruner(
            40.0, n_startup_trials=3, n_warmup_steps=1, n_min_trials=2
        ),
        "minimize",
    ),
    (
        "percentile-max",
        "percentile",
        {"percentile": 70.0, "n_startup_trials": 2, "interval_steps": 3},
        lambda: optuna.pruners.PercentilePruner(70.0, n_startup_trials=2, interval_steps=3),
        "maximize",
    ),
    (
        "patient-median",
        "patient",
        {
            "patience": 2,
            "min_delta": 0.02,
            "wrapped": "median",
            "wrapped_options": {"n_startup_trials": 3, "n_warmup_steps": 1},
        },
        _patient_median,
        "minimize",
    ),
    ("patient-alone", "patient", {"patience": 3, "min_delta": 0.01}, _patient_alone, "minimize"),
]


@dataclass
class Curve:
    """One trial's validation metric per epoch (an RMSE-like decaying curve with noise and a
    plateau), and the value it would finish with."""

    values: dict[int, float]
    final: float


def _curves(seed: int, direction: Direction) -> list[Curve]:
    rng = random.Random(seed)
    sign = 1.0 if direction == "minimize" else -1.0
    curves = []
    for number in range(N_TRIALS):
        floor = rng.uniform(0.5, 2.0)
        start = floor + rng.uniform(0.5, 3.0)
        rate = rng.uniform(0.2, 1.2)
        plateau = rng.randint(3, MAX_EPOCHS)  # no progress after this epoch
        values = {}
        for step in range(1, MAX_EPOCHS + 1):
            s = min(step, plateau)
            v = floor + (start - floor) * math.exp(-rate * s) + rng.gauss(0.0, 0.03)
            values[step] = sign * v
        if number == 5:
            values[3] = math.nan  # a diverging epoch: left to the pruner on both sides
        curves.append(Curve(values, values[MAX_EPOCHS]))
    return curves


@dataclass
class MolhpoSide:
    """The study as the coordinator runs it: its own store (SQLite behind the owned cache),
    the pruner from the registry, decisions recorded under deferred writes."""

    study: optuna.Study
    storage: OwnedStudyStorage
    url: str
    sequence: int = 0
    trial_ids: dict[int, int] = field(default_factory=dict)

    def start(self) -> int:
        trial = self.study.ask()
        self.trial_ids[trial.number] = trial._trial_id
        return trial.number

    def decide(self, number: int, step: int, value: float) -> bool:
        tid = self.trial_ids[number]
        # As the report consumer: writes go through the store's writer thread.
        with self.storage.deferring():
            prune = pruning.record_and_decide(self.study, tid, step, value)
            self.sequence += 1
            self.storage.set_trial_system_attr(
                tid, f"{attrs.TRIAL_DECISION_PREFIX}{step}", {"seq": self.sequence, "prune": prune}
            )
        return prune

    def finish(self, number: int, state: optuna.trial.TrialState, value: float | None) -> None:
        self.study.tell(number, value, state=state)


@pytest.fixture
def molhpo_side(tmp_path: Path) -> Iterator[Callable[..., MolhpoSide]]:
    stores: list[OwnedStudyStorage] = []

    def make(name: str, options: dict[str, object], direction: Direction) -> MolhpoSide:
        url = f"sqlite:///{tmp_path / 'studies.db'}"
        storage = OwnedStudyStorage(optuna.storages.RDBStorage(url))
        stores.append(storage)
        study = optuna.create_study(
            storage=storage,
            study_name=STUDY,
            direction=direction,
            sampler=optuna.samplers.RandomSampler(seed=0),
            pruner=build_pruner(name, options, MAX_EPOCHS),
        )
        storage.own(study._study_id)
        return MolhpoSide(study, storage, url)

    yield make
    for s in stores:
        s.close()


@pytest.mark.parametrize(
    ("name", "options", "reference", "direction"),
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_decisions_equal_optunas_pruner_on_the_same_reports(
    molhpo_side: Callable[..., MolhpoSide],
    name: str,
    options: dict[str, object],
    reference: Callable[[], optuna.pruners.BasePruner],
    direction: Direction,
) -> None:
    ours = molhpo_side(name, options, direction)
    # A plain in-process study with the same name (Hyperband brackets hash it) and pruner.
    ref = optuna.create_study(study_name=STUDY, direction=direction, pruner=reference())
    seed = sum(map(ord, name + direction))
    curves = _curves(seed, direction)
    schedule = random.Random(seed + 1)

    ref_trials: dict[int, optuna.Trial] = {}
    running: dict[int, int] = {}  # trial number -> last reported step
    next_number = 0
    decisions: list[tuple[int, int, bool]] = []
    mismatches: list[tuple[int, int, bool, bool]] = []
    while next_number < N_TRIALS or running:
        while len(running) < PARALLELISM and next_number < N_TRIALS:
            number = ours.start()
            assert number == next_number
            ref_trials[number] = ref.ask()
            running[number] = 0
            next_number += 1
        # Trials advance at different speeds, so reports of several trials interleave.
        number = schedule.choice(sorted(running))
        step = running[number] + 1
        value = curves[number].values[step]
        prune = ours.decide(number, step, value)
        ref_trials[number].report(value, step)
        expected = ref_trials[number].should_prune()
        decisions.append((number, step, prune))
        if prune != expected:
            mismatches.append((number, step, prune, expected))
        # Both studies go on from the coordinator's decision, so they stay the same study.
        if prune:
            ours.finish(number, optuna.trial.TrialState.PRUNED, None)
            ref.tell(ref_trials[number], state=optuna.trial.TrialState.PRUNED)
            del running[number]
        elif step == MAX_EPOCHS:
            ours.finish(number, optuna.trial.TrialState.COMPLETE, curves[number].final)
            ref.tell(ref_trials[number], curves[number].final)
            del running[number]
        else:
            running[number] = step

    assert mismatches == [], f"(trial, step, molhpo, optuna): {mismatches}"
    assert len(decisions) >= N_TRIALS
    pruned = [d for d in decisions if d[2]]
    # The comparison means something only when the pruner pruned and let others go on.
    assert len(pruned) >= 3, decisions
    assert len(decisions) - len(pruned) >= 10, decisions
    # And the database behind the coordinator's cache holds every decision it made.
    assert ours.storage.drain()
    stored = {t.number: t for t in optuna.load_study(study_name=STUDY, storage=ours.url).trials}
    for number, step, prune in decisions:
        assert step in stored[number].intermediate_values
        assert stored[number].system_attrs[f"{attrs.TRIAL_DECISION_PREFIX}{step}"]["prune"] is prune
    assert sum(t.state == optuna.trial.TrialState.PRUNED for t in stored.values()) == len(pruned)
