"""What a report concludes from the trials: convergence warnings, failure groups, the default
configuration against the best, parameter importance, and the best model's prediction errors.

All but :func:`param_importances` are pure functions over :class:`TrialFacts` and arrays.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from coordinator.reporting.facts import TrialFacts, sign
from coordinator.reporting.text import first_line, fmt, metric_label
from molhpo.contract.errors import InvalidArgument

TOP_TRIALS_CHECKED = 5
"""How many of the best trials get convergence checks."""
MAX_REASONS = 3
"""Example reasons kept per failure class."""

PREMATURE = "premature convergence: best epoch is the first, learning rate likely too high"
UNDERTRAINED = "under-trained: best epoch is the last, train longer"


def convergence_warnings(
    top: Sequence[TrialFacts], budget: int | None, rank_of: Mapping[int, int] | None = None
) -> list[dict[str, Any]]:
    """Warnings about how the best trials converged.

    Best epoch 1 (of more than one trained): the validation metric was never better than after
    the first epoch, which usually means a learning rate so high the model jumps around its
    optimum. Best epoch == epochs trained == the epoch budget: the metric still improved at the
    very end, so more epochs would likely help.
    """
    out = []
    for t in top:
        if t.best_step is None or t.epochs_trained is None:
            continue
        base = {
            "number": t.number,
            "rank": (rank_of or {}).get(t.number),
            "best_step": t.best_step,
            "epochs_trained": t.epochs_trained,
        }
        if t.best_step == 1 and t.epochs_trained > 1:
            out.append({**base, "kind": "premature", "message": PREMATURE})
        elif (
            t.state == "complete"
            and budget is not None
            and budget > 1
            and t.epochs_trained >= budget
            and t.best_step == t.epochs_trained
        ):
            out.append({**base, "kind": "under_trained", "message": UNDERTRAINED})
    return out


def failure_groups(trials: Sequence[TrialFacts]) -> list[dict[str, Any]]:
    """Failed trials grouped by ``failure_class`` (most frequent first), with example reasons."""
    groups: dict[str, list[TrialFacts]] = {}
    for t in trials:
        if t.state == "failed":
            groups.setdefault(t.failure_class or "unknown", []).append(t)
    out = []
    for cls, ts in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        reasons = Counter(t.failure_reason for t in ts if t.failure_reason)
        out.append(
            {
                "failure_class": cls,
                "count": len(ts),
                "trials": [t.number for t in ts],
                "reasons": [{"reason": r, "count": n} for r, n in reasons.most_common(MAX_REASONS)],
            }
        )
    return out


def _comparison_sentence(
    default: TrialFacts, best: TrialFacts, a: float, b: float, *, metric: str, direction: str
) -> tuple[str, bool]:
    """The default-versus-best sentence (validation values ``a`` and ``b``), and whether
    tuning improved on the default."""
    label = metric_label(metric)
    c, d = default.test_metrics.get(metric), best.test_metrics.get(metric)
    has_test = c is not None and d is not None
    if default.number == best.number:
        sentence = (
            f"the default configuration (trial {default.number}) is the best trial: "
            f"validation {label} {fmt(a)}"
            + (f", test {fmt(c)}" if has_test else "")
            + "; tuning did not improve on it"
        )
        return sentence, False
    improved = sign(direction) * b < sign(direction) * a
    if improved:
        verb = "cut" if direction == "minimize" else "raised"
        sentence = f"tuning {verb} validation {label} from {fmt(a)} to {fmt(b)}"
    else:
        sentence = (
            f"tuning did not beat the default configuration: validation {label} "
            f"{fmt(a)} (default) against {fmt(b)} (best feasible)"
        )
    if has_test:
        sentence += f", test from {fmt(c)} to {fmt(d)}"
    sentence += f" (default: trial {default.number}; best: trial {best.number})"
    return sentence, improved


def compare_default(
    default: TrialFacts | None, best: TrialFacts | None, metric: str, direction: str
) -> dict[str, Any] | None:
    """The default configuration's result against the best trial's, with a sentence.

    None when either is missing or the default has no finite value (pruned, failed, running).
    """
    if default is None or best is None or not default.has_finite_value:
        return None
    a, b = default.value, best.value
    if a is None or b is None:
        return None
    sentence, improved = _comparison_sentence(
        default, best, a, b, metric=metric, direction=direction
    )
    rel = (b - a) / abs(a) if a != 0 and math.isfinite(a) and math.isfinite(b) else None
    return {
        "metric": metric,
        "default_trial": default.number,
        "best_trial": best.number,
        "valid_default": a,
        "valid_best": b,
        "valid_relative_change": rel,
        "test_default": default.test_metrics.get(metric),
        "test_best": best.test_metrics.get(metric),
        "improved": improved,
        "sentence": sentence,
    }


# ---- parameter importance --------------------------------------------------------------------


@dataclass(frozen=True)
class Importance:
    """Parameter importances (most important first), or why there are none."""

    evaluator: str | None
    values: dict[str, float]
    reason: str | None
    notes: tuple[str, ...] = ()


_EVALUATORS: tuple[tuple[str, Callable[[], optuna.importance.BaseImportanceEvaluator]], ...] = (
    ("fanova", lambda: optuna.importance.FanovaImportanceEvaluator(seed=0)),
    ("ped_anova", optuna.importance.PedAnovaImportanceEvaluator),
)
"""Evaluators in the order they are tried."""


def _importances(
    study: optuna.Study,
    name: str,
    make: Callable[[], optuna.importance.BaseImportanceEvaluator],
    target: Callable[[FrozenTrial], float] | None,
) -> dict[str, float] | str:
    """One evaluator's finite importances, most important first; or why it gave none."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = optuna.importance.get_param_importances(study, evaluator=make(), target=target)
    except ImportError as err:  # fANOVA's random forest needs scikit-learn
        return f"{name}: unavailable ({first_line(str(err.__cause__ or err))})"
    except Exception as err:  # evaluators raise anything from ValueError to RuntimeError
        return f"{name}: {type(err).__name__}: {first_line(str(err))}"
    clean = {k: float(v) for k, v in result.items() if math.isfinite(float(v))}
    if not clean:
        return f"{name}: no parameter is shared by the complete trials"
    return dict(sorted(clean.items(), key=lambda kv: (-kv[1], kv[0])))


def param_importances(study: optuna.Study, n_complete: int) -> Importance:
    """Sensitivity of the first objective to each parameter.

    fANOVA first (needs scikit-learn; fails on some conditional spaces), PED-ANOVA when that
    fails; both failing gives the reasons instead of an exception, since a report without
    importances is still a report.
    """
    if n_complete < 2:
        return Importance(
            None, {}, f"needs at least 2 complete trials with finite values (have {n_complete})"
        )
    directions = study.directions
    # PED-ANOVA takes a target as "lower is better"; fANOVA does not care about the sign.
    s = -1.0 if directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    target: Callable[[FrozenTrial], float] | None = (
        (lambda t: s * float(t.values[0])) if len(directions) > 1 else None
    )
    errors: list[str] = []
    for name, make in _EVALUATORS:
        found = _importances(study, name, make, target)
        if isinstance(found, str):
            errors.append(found)
            continue
        return Importance(name, found, None, tuple(errors))
    return Importance(None, {}, "; ".join(errors), tuple(errors))


# ---- predictions -----------------------------------------------------------------------------


def prediction_arrays(
    predictions: Mapping[str, Sequence[float]],
) -> tuple[np.ndarray, np.ndarray]:
    """``y_true`` and ``y_pred`` as float arrays; InvalidArgument when they do not fit."""
    missing = [k for k in ("y_true", "y_pred") if k not in predictions]
    if missing:
        raise InvalidArgument(
            f"predictions: missing {', '.join(missing)}; give y_true and y_pred "
            f"(have: {', '.join(sorted(predictions)) or 'nothing'})"
        )
    try:
        y_true = np.asarray(predictions["y_true"], dtype=float).ravel()
        y_pred = np.asarray(predictions["y_pred"], dtype=float).ravel()
    except (TypeError, ValueError) as err:
        raise InvalidArgument(f"predictions: y_true and y_pred must be numbers ({err})") from err
    if y_true.shape != y_pred.shape:
        raise InvalidArgument(
            f"predictions: y_true has {y_true.size} values but y_pred has {y_pred.size}; "
            "give one prediction per molecule"
        )
    return y_true, y_pred


def prediction_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float | int | None]:
    """RMSE, MAE and R2 over the pairs where both values are finite."""
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok], y_pred[ok]
    n = int(ok.sum())
    if n == 0:
        return {"n": 0, "n_dropped": int(y_true.size), "rmse": None, "mae": None, "r2": None}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    return {
        "n": n,
        "n_dropped": int(y_true.size - n),
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else None,
    }
