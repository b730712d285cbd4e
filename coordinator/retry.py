"""Retry policy: which failures a trial is dispatched again for, and how often.

A trainer that dies, is cut off or drains hands its trial back: the trial is dispatched again
with the same parameters (the trainer resumes it from its last checkpoint). A trial that fails
for a reason of its own (a diverging loss, an invalid configuration, running out of memory, a
bug) would fail again the same way, so it is recorded as FAIL and not retried.
"""

from __future__ import annotations

RETRYABLE = frozenset({"trainer_lost", "lease_expired", "drained"})
"""Failure classes that say nothing about the trial itself."""

DEFAULT_MAX_ATTEMPTS = 4


def should_retry(failure_class: str, attempt: int, max_attempts: int) -> bool:
    """Whether attempt number ``attempt`` that failed with ``failure_class`` gets another."""
    return failure_class in RETRYABLE and attempt < max_attempts
