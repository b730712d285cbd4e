"""Retry policy: which failures a trial is dispatched again for, and how often.

A trainer that dies, is cut off or drains hands its trial back: the trial is dispatched again
with the same parameters (the trainer resumes it from its last checkpoint). So is a trial that
ran out of memory: on a GPU shared by several slots (or processes) the memory may have gone to
its neighbours, so it is a resource failure, and another attempt, elsewhere or beside fewer
trials, may well fit; the bound on attempts stops a trial that is simply too big. A trial that
fails for a reason of its own (a diverging loss, an invalid configuration, a bug) would fail
again the same way, so it is recorded as FAIL and not retried.
"""

from __future__ import annotations

from molhpo.contract.enums import FailureClass

RETRYABLE: frozenset[FailureClass] = frozenset(
    {
        FailureClass.TRAINER_LOST,
        FailureClass.LEASE_EXPIRED,
        FailureClass.DRAINED,
        FailureClass.OUT_OF_MEMORY,
    }
)
"""Failure classes that say nothing certain about the trial itself."""

DEFAULT_MAX_ATTEMPTS = 4


def should_retry(failure_class: str, attempt: int, max_attempts: int) -> bool:
    """Whether attempt number ``attempt`` that failed with ``failure_class`` gets another.

    ``failure_class`` is a :class:`FailureClass` or the plain string a trainer sent (a class
    this coordinator does not know is not retried).
    """
    return failure_class in RETRYABLE and attempt < max_attempts
