"""The Redis key layout, in one place.

Every key lives under a configurable prefix so several molhpo deployments can share one Redis.

| key | type | written by | read by |
|---|---|---|---|
| ``{p}:reports`` | stream of TrialReport | trainers | coordinator (consumer group) |
| ``{p}:decision:{trial}:{step}`` | list, one item | coordinator | trainer waiting on the step |
| ``{p}:decisions:{trial}`` | hash step -> decision | coordinator | coordinator (repeats) |
| ``{p}:pruned:{trial}`` | string flag | coordinator | trainer, before each epoch |
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from molhpo.contract.errors import InvalidArgument

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class RedisKeys:
    """Names of molhpo's Redis keys under one prefix."""

    prefix: str = "molhpo"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.fullmatch(self.prefix):
            raise InvalidArgument(
                f"key prefix {self.prefix!r} is not allowed; "
                "use 1-64 letters, digits, '_', '.', '-'"
            )

    @property
    def reports(self) -> str:
        """The stream every trainer appends its reports to."""
        return f"{self.prefix}:reports"

    @property
    def report_group(self) -> str:
        """The consumer group the coordinator reads the report stream through."""
        return "coordinator"

    def decision(self, trial_id: int, step: int) -> str:
        """The list a trainer blocks on for the decision about one step of one trial."""
        return f"{self.prefix}:decision:{trial_id}:{step}"

    def decisions(self, trial_id: int) -> str:
        """Every decision already made for a trial, so a repeated report gets the same answer."""
        return f"{self.prefix}:decisions:{trial_id}"

    def pruned(self, trial_id: int) -> str:
        """Set once a trial is pruned; a trainer that missed a decision still sees it."""
        return f"{self.prefix}:pruned:{trial_id}"
