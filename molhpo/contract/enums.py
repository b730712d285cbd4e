"""Enumerations both services use: why a trial failed, which way an objective goes.

They are ``str`` enums, so a member compares equal to the plain string kept in the store and
sent in ``TrialResult.failure_class``. A direction crosses the wire as the proto enum
``molhpo.v1.Direction``; :func:`direction_to_proto` and :func:`direction_from_proto` are the
one place the two meet (Optuna's ``StudyDirection`` is the coordinator's business, in
``coordinator/convert.py``).
"""

from __future__ import annotations

import enum

from molhpo.v1 import common_pb2


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


_TO_PROTO: dict[Direction, common_pb2.Direction.ValueType] = {
    Direction.MINIMIZE: common_pb2.DIRECTION_MINIMIZE,
    Direction.MAXIMIZE: common_pb2.DIRECTION_MAXIMIZE,
}
_FROM_PROTO = {v: k for k, v in _TO_PROTO.items()}


def direction_to_proto(direction: str) -> common_pb2.Direction.ValueType:
    """``"minimize"``/``"maximize"`` (or a :class:`Direction`) as the wire enum.

    Raises ValueError for any other string: directions are validated before they are sent.
    """
    return _TO_PROTO[Direction(direction)]


def direction_from_proto(value: common_pb2.Direction.ValueType) -> Direction | None:
    """The direction a wire enum names; None for ``DIRECTION_UNSPECIFIED`` (the caller picks
    the default: the metric's natural direction)."""
    return _FROM_PROTO.get(value)
