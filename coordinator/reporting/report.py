"""A study's report as values: Markdown, JSON, best parameters and PNG plots.

:func:`build_report` reads the study, decides (:mod:`~coordinator.reporting.facts`,
:mod:`~coordinator.reporting.analysis`), draws (:mod:`~coordinator.reporting.plots`) and
renders (:mod:`~coordinator.reporting.markdown`); it writes nothing. Whoever needs files
(``molhpo report --out``) writes these values under the names in
:mod:`~coordinator.reporting.files`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from coordinator.reporting.analysis import (
    TOP_TRIALS_CHECKED,
    Importance,
    compare_default,
    convergence_warnings,
    failure_groups,
    param_importances,
    prediction_arrays,
    prediction_metrics,
)
from coordinator.reporting.facts import (
    TrialFacts,
    best_trial,
    default_trial,
    epoch_budget,
    rank_pareto,
    rank_single,
    search_space,
    study_effort,
    study_setup,
    trial_facts,
)
from coordinator.reporting.files import BEST_PARAMS_FILE, JSON_FILE, MARKDOWN_FILE, PLOT_FILES
from coordinator.reporting.markdown import render_markdown
from coordinator.reporting.plots import (
    NothingToPlot,
    plot_history,
    plot_importance,
    plot_intermediate,
    plot_parallel,
    plot_predictions,
)
from coordinator.reporting.text import objective_label

SCHEMA_VERSION = 1
"""Version of the JSON summary's layout."""


@dataclass(frozen=True)
class Report:
    """A study's report, ready to send or to write."""

    markdown: str
    json: str
    """``summary`` as strict JSON text (the content of report.json)."""
    summary: dict[str, Any]
    """The JSON-ready facts: setup, counts, ranking, importance, warnings, plots made."""
    plots: dict[str, bytes]
    """Plot name (a key of :data:`PLOT_FILES`) -> PNG; plots without data are left out and
    listed in ``summary["plots_skipped"]``."""
    best_params_json: str | None
    """The best trial's parameters (single objective) or the Pareto front's (multi-objective)
    as JSON; None when no trial completed."""

    def plot_files(self) -> dict[str, bytes]:
        """The plots by file name (history.png, ...), as the Markdown links them."""
        return {PLOT_FILES[name]: png for name, png in self.plots.items()}


def build_report(
    study: optuna.Study, *, predictions: Mapping[str, Sequence[float]] | None = None
) -> Report:
    """The report of a study in the store, running or finished, made by molhpo or not.

    ``predictions`` (keys ``y_true`` and ``y_pred``, e.g. the best model on the test set) adds
    the ``predicted_vs_true`` plot; malformed predictions raise InvalidArgument.
    """
    pred = prediction_arrays(predictions) if predictions is not None else None
    directions = [d.name.lower() for d in study.directions]
    # Study.system_attrs is gone from Optuna's public API; the storage still answers.
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    setup = study_setup(system_attrs, study.user_attrs, directions)
    trials = [trial_facts(t, directions[0]) for t in study.get_trials(deepcopy=False)]
    n_finite = sum(1 for t in trials if t.state == "complete" and t.has_finite_value)
    importance = param_importances(study, n_finite)
    pred_metrics = prediction_metrics(*pred) if pred is not None else None
    label = objective_label(str(setup["objectives"][0]["metric"]))
    plots, skipped = _draw_plots(
        trials,
        direction=directions[0],
        label=label,
        importance=importance,
        pred=pred,
        pred_metrics=pred_metrics,
    )
    outcome = _outcome(trials, directions, setup, importance)
    multi = len(directions) > 1
    # An empty Pareto front is no file of parameters.
    writes_best_params = outcome["best_params"] is not None and not (
        multi and not outcome["ranking"]
    )
    summary: dict[str, Any] = _jsonable(
        {
            "schema": SCHEMA_VERSION,
            "study": study.study_name,
            "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "multi_objective": multi,
            "directions": directions,
            "objectives": setup["objectives"],
            "setup": setup,
            "search_space": search_space(trials),
            **_effort_json(trials),
            **outcome,
            "predictions": pred_metrics,
            "plots": {name: PLOT_FILES[name] for name in plots},
            "plots_skipped": skipped,
            "files": {
                "markdown": MARKDOWN_FILE,
                "json": JSON_FILE,
                "best_params": BEST_PARAMS_FILE if writes_best_params else None,
            },
            "trials": [_trial_json(t, directions) for t in trials],
        }
    )
    return Report(
        markdown=render_markdown(summary),
        json=_json_text(summary),
        summary=summary,
        plots=plots,
        best_params_json=_json_text(outcome["best_params"]) if writes_best_params else None,
    )


def _effort_json(trials: Sequence[TrialFacts]) -> dict[str, Any]:
    """The summary's counts and costs."""
    effort = study_effort(trials)
    return {
        "counts": effort.counts,
        "epochs_trained": effort.epochs_trained,
        "trainer_seconds": effort.trainer_seconds,
        "wall_seconds": effort.wall_seconds,
        "first_trial_start": effort.first_start,
        "last_trial_end": effort.last_end,
    }


def _outcome(
    trials: Sequence[TrialFacts],
    directions: Sequence[str],
    setup: Mapping[str, Any],
    importance: Importance,
) -> dict[str, Any]:
    """The summary's ranking, best and default trials, importance, warnings and failures."""
    multi = len(directions) > 1
    metric = str(setup["objectives"][0]["metric"])
    ranking = rank_pareto(trials, directions) if multi else rank_single(trials, directions[0])
    rank_of = {t.number: i + 1 for i, t in enumerate(ranking)}
    best = None if multi else best_trial(ranking)
    default = default_trial(trials)
    budget = epoch_budget(setup["max_epochs"], trials)
    return {
        "epoch_budget": budget,
        "ranking_kind": "pareto_front" if multi else "objective",
        "ranking": [{"rank": rank_of[t.number], **_trial_json(t, directions)} for t in ranking],
        "best": _trial_json(best, directions) if best is not None else None,
        "best_params": _best_params(ranking, best, multi),
        "default": _trial_json(default, directions) if default is not None else None,
        "default_on_pareto_front": (
            default.number in rank_of if multi and default is not None else None
        ),
        "default_vs_best": (
            None if multi else compare_default(default, best, metric, directions[0])
        ),
        "importance": {
            "evaluator": importance.evaluator,
            "target": metric,
            "values": importance.values,
            "reason": importance.reason,
            "notes": list(importance.notes),
        },
        "convergence_warnings": convergence_warnings(ranking[:TOP_TRIALS_CHECKED], budget, rank_of),
        "failures": failure_groups(trials),
    }


def _best_params(ranking: Sequence[TrialFacts], best: TrialFacts | None, multi: bool) -> Any:
    """A parameter dict (single objective) or the Pareto front's parameters (multi-objective);
    None when no feasible trial completed (single objective)."""
    if multi:
        return {
            "pareto_front": [
                {"number": t.number, "values": list(t.values or ()), "params": t.params}
                for t in ranking
            ]
        }
    return dict(best.params) if best is not None else None


def _draw_plots(
    trials: Sequence[TrialFacts],
    *,
    direction: str,
    label: str,
    importance: Importance,
    pred: tuple[np.ndarray, np.ndarray] | None,
    pred_metrics: Mapping[str, Any] | None,
) -> tuple[dict[str, bytes], dict[str, str]]:
    """Every plot as PNG bytes, and the reason for each plot left out."""
    plots: dict[str, bytes] = {}
    skipped: dict[str, str] = {}

    def draw(name: str, fn: Callable[[], bytes]) -> None:
        try:
            plots[name] = fn()
        except NothingToPlot as reason:
            skipped[name] = str(reason)
        except Exception as err:  # one broken plot must not cost the whole report
            skipped[name] = f"plot failed: {type(err).__name__}: {err}"

    draw("history", lambda: plot_history(trials, direction, label))
    draw("intermediate", lambda: plot_intermediate(trials, label))
    draw("importance", lambda: plot_importance(importance))
    draw(
        "parallel_coordinates",
        lambda: plot_parallel(trials, list(importance.values), direction, label),
    )
    if pred is not None and pred_metrics is not None:
        y_true, y_pred = pred
        draw("predicted_vs_true", lambda: plot_predictions(y_true, y_pred, pred_metrics))
    else:
        skipped["predicted_vs_true"] = "no predictions given"
    return plots, skipped


def _json_text(obj: Any) -> str:
    """Strict JSON (no NaN), indented, with a final newline: the report's JSON files."""
    return json.dumps(_jsonable(obj), indent=2, allow_nan=False, sort_keys=False) + "\n"


def _jsonable(x: Any) -> Any:
    """Strict-JSON form: non-finite floats become null, tuples lists, keys strings."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()  # numpy's float64 is a float: it must become a Python number first
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, bool | str | int) or x is None:
        return x
    if isinstance(x, dt.datetime):
        return x.isoformat()
    return str(x)  # paths, and anything else, as text


def _trial_json(t: TrialFacts, directions: Sequence[str]) -> dict[str, Any]:
    return {
        "number": t.number,
        "state": t.state,
        "value": t.value if len(directions) == 1 else None,
        "values": list(t.values) if t.values else None,
        "feasible": t.feasible,
        "params": t.params,
        "valid_metrics": t.valid_metrics,
        "test_metrics": t.test_metrics,
        "epochs_trained": t.epochs_trained,
        "best_step": t.best_step,
        "seconds": t.train_seconds,
        "n_parameters": t.n_parameters,
        "enqueued": t.enqueued,
        "trainer_id": t.trainer_id,
        "failure_class": t.failure_class,
        "failure_reason": t.failure_reason,
        "started": t.started,
        "ended": t.ended,
    }
