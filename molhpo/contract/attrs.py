"""Keys of what molhpo keeps in the Optuna study store, in one place.

Study and trial *system* attributes (``molhpo:`` prefix) are molhpo's bookkeeping; trial *user*
attributes are what a user reading the store with ``optuna`` or ``optuna-dashboard`` sees
(metrics, timing, failure class and reason).
"""

from __future__ import annotations

# ---- study system attributes -------------------------------------------------------------------
STUDY_REQUEST = "molhpo:request"
"""The StartStudyRequest, as JSON."""
STUDY_STATE = "molhpo:state"
"""The study's state name (RUNNING, COMPLETE, STOPPED, FAILED)."""
STUDY_START = "molhpo:start_time"
"""Unix seconds the study started."""
STUDY_END = "molhpo:end_time"
"""Unix seconds the study ended."""
STUDY_MESSAGE = "molhpo:message"
"""Why the study stopped or failed."""
STUDY_DATASET = "molhpo:dataset"
"""What the data set held when the study started (a DatasetSummary as a dict)."""
STUDY_PARENT = "molhpo:parent"
"""The study a refined study was made from."""
STUDY_RACE = "molhpo:race"
"""The race a study runs in, with its label."""
STUDY_EVALUATION_OF = "molhpo:evaluation_of"
"""The study an evaluation study evaluates."""

# ---- trial system attributes -------------------------------------------------------------------
TRIAL_SPEC = "molhpo:spec"
"""The TrialSpec last dispatched (base64), to take the trial back after a coordinator restart."""
TRIAL_DECISION_PREFIX = "molhpo:decision:"
"""Prefix of the decision log: ``{"seq": n, "prune": bool}`` per step."""

# ---- trial user attributes ---------------------------------------------------------------------
TRIAL_VALID = "valid_metrics"
"""Validation metrics at the best epoch."""
TRIAL_N_PARAMETERS = "n_parameters"
"""Trainable parameters of the trial's model."""
TRIAL_SECONDS = "seconds"
"""Wall seconds from dispatch to end."""
TRIAL_FEASIBLE = "feasible"
"""Whether the trial keeps every constraint of its study."""
TRIAL_FAILURE_CLASS = "failure_class"
"""For FAIL: one of :class:`molhpo.contract.enums.FailureClass`."""
TRIAL_FAILURE_REASON = "failure_reason"
"""For FAIL: the reason in words."""
EVAL_CONFIG = "eval_config"
"""In an evaluation study: "rank-1", "rank-2", ..., "default"."""
EVAL_SEED_INDEX = "eval_seed_index"
"""In an evaluation study: which of the seeds the trial ran."""
TEST_PREDICTIONS = "test_predictions"
"""Test-set predictions of the best epoch's model, when asked for."""
TEST_TARGETS = "test_targets"
"""The test-set targets, in the same order."""
