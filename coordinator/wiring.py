"""What the coordinator's parts share, and the options they are built with.

:class:`coordinator.core.Coordinator` builds one :class:`Shared` and hands it to the study
lifecycle, every study's runner, the report consumer and the reaper; none of them builds a
connection of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
import redis

from coordinator.membership import TrainerPool
from coordinator.metrics import CoordinatorMetrics
from coordinator.retry import DEFAULT_MAX_ATTEMPTS
from coordinator.trainer_client import TrainerClient
from storage.keys import RedisKeys


@dataclass(frozen=True)
class CoordinatorOptions:
    """How the coordinator runs studies (from :class:`coordinator.settings.CoordinatorSettings`).

    Args:
        decision_timeout_s: how long a trainer waits for a pruning decision (in its TrialSpec).
        dataset_roots: folders user data files must lie in.
        artifact_root: the artifact store's root; a deleted study's checkpoints go with it.
        max_attempts: dispatches of a trial at most (retries + 1).
    """

    decision_timeout_s: float = 30.0
    dataset_roots: Sequence[Path] = ()
    artifact_root: Path | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


@dataclass(frozen=True)
class Shared:
    """The connections and objects every part of the coordinator uses.

    ``stop`` is set once, when the coordinator closes: every loop and watcher thread ends on it.
    """

    storage: optuna.storages.BaseStorage
    redis: redis.Redis
    keys: RedisKeys
    pool: TrainerPool
    trainers: TrainerClient
    metrics: CoordinatorMetrics
    stop: threading.Event
