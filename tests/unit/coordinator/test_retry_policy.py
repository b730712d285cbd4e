"""Retry policy: which failure classes a trial is dispatched again for, and how often."""

from __future__ import annotations

import pytest

from coordinator.retry import DEFAULT_MAX_ATTEMPTS, RETRYABLE, should_retry
from coordinator.settings import CoordinatorSettings
from coordinator.wiring import CoordinatorOptions
from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import DivergedError, InvalidConfigError, TrainingError

# Failures that say nothing about the trial: its trainer died, was cut off or drained (as plain
# strings, the way a trainer's result carries them).
LOST: list[str] = ["trainer_lost", "lease_expired", "drained"]
# Running out of memory: on a shared GPU the memory may have gone to the trials beside it.
RESOURCE: list[str] = [FailureClass.OUT_OF_MEMORY]
# Failures of the trial itself (trainer results: diverged, invalid_config, error, cancelled)
# or of the study around it (the coordinator's dispatch, stop and restart paths).
OWN = [
    DivergedError("loss is nan").failure_class,
    InvalidConfigError("units must be > 0").failure_class,
    TrainingError("a bug").failure_class,
    "cancelled",
    "dispatch",
    "stopped",
    "orphaned",
    "",
    "TRAINER_LOST",  # classes are exact names, not case-folded
]


def test_the_retryable_classes_are_exactly_the_lost_trainer_and_resource_ones() -> None:
    assert set(RETRYABLE) == set(LOST) | set(RESOURCE)
    assert all(isinstance(c, FailureClass) for c in RETRYABLE)
    assert OWN[:3] == ["diverged", "invalid_config", "error"]


@pytest.mark.parametrize("failure_class", LOST + RESOURCE)
def test_a_lost_trial_is_retried_until_its_fourth_attempt(failure_class: str) -> None:
    assert DEFAULT_MAX_ATTEMPTS == 4
    for attempt in (1, 2, 3):
        assert should_retry(failure_class, attempt, DEFAULT_MAX_ATTEMPTS), attempt
    for attempt in (4, 5, 100):
        assert not should_retry(failure_class, attempt, DEFAULT_MAX_ATTEMPTS), attempt


@pytest.mark.parametrize("failure_class", OWN)
def test_a_trial_that_failed_by_itself_is_never_retried(failure_class: str) -> None:
    for attempt in (1, 2, 3):
        assert not should_retry(failure_class, attempt, DEFAULT_MAX_ATTEMPTS), attempt


@pytest.mark.parametrize("max_attempts", [1, 2, 4, 7])
def test_a_trial_lost_every_time_is_dispatched_exactly_max_attempts_times(
    max_attempts: int,
) -> None:
    # As the study runner does: attempt k lost -> attempt k + 1, while the policy allows it.
    attempt, dispatches = 1, 1
    while should_retry("trainer_lost", attempt, max_attempts):
        attempt += 1
        dispatches += 1
        assert dispatches <= max_attempts + 1  # a broken bound must not loop for ever
    assert dispatches == max_attempts


def test_the_coordinator_and_its_settings_use_the_same_default_bound() -> None:
    assert CoordinatorSettings.model_fields["max_attempts"].default == DEFAULT_MAX_ATTEMPTS
    # A runner's bound comes from the coordinator's options.
    assert CoordinatorOptions().max_attempts == DEFAULT_MAX_ATTEMPTS
