"""Where a pruning decision is made.

The study's Optuna pruner decides over the trial's reported values, exactly as
``BasePruner.prune(study, trial)`` does in an in-process study: the value is recorded as the
trial's intermediate value at that step, then the pruner reads the study store. Its state (e.g.
Hyperband's rung values) lives in the store, so decisions survive coordinator restarts.
"""

from __future__ import annotations

import optuna


def record_and_decide(study: optuna.Study, trial_id: int, step: int, value: float) -> bool:
    """Record ``value`` at ``step`` for the trial and return True when it should be pruned."""
    storage = study._storage
    storage.set_trial_intermediate_value(trial_id, step, value)
    frozen = storage.get_trial(trial_id)
    # NaN is left to the pruner too, so decisions are exactly Optuna's own.
    return bool(study.pruner.prune(study, frozen))
