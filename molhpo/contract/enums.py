"""Enumerations both services use: why a trial failed, which way an objective goes.

They are ``str`` enums, so a member compares equal to the plain string kept in the store and
sent in ``TrialResult.failure_class``.
"""

from __future__ import annotations

import enum


class FailureClass(enum.StrEnum):
    """Why a trial attempt ended without a result (``TrialResult.failure_class``)."""

    TRAINER_LOST = "trainer_lost"
    """Its trainer stopped sending heartbeats."""
    LEASE_EXPIRED = "lease_expired"
    """Its trainer stopped listing it in heartbeats."""
    DRAINED = "drained"
    """Its trainer shut down and handed it back after saving it."""
    OUT_OF_MEMORY = "out_of_memory"
    """The device or host ran out of memory (maybe taken by a neighbour)."""
    DIVERGED = "diverged"
    """The loss became NaN or infinite."""
    INVALID_CONFIG = "invalid_config"
    """The hyperparameters cannot build or train the model."""
    ERROR = "error"
    """Anything else raised while training."""
    CANCELLED = "cancelled"
    """Cancelled on request (the study was stopped with cancel)."""
    DISPATCH = "dispatch"
    """No trainer accepted the trial."""
    STOPPED = "stopped"
    """The study stopped before the trial's retry."""
    ORPHANED = "orphaned"
    """Left running by a coordinator that is gone, and claimed by no trainer."""
    STORE = "store"
    """The study store refused a write of the trial for good."""


class Direction(enum.StrEnum):
    """Which way an objective is optimised."""

    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"
