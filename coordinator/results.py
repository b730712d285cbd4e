"""What a study gives back: its best trials, its report, its evaluation summary, and
predictions of its best models (computed on a trainer, which loads their checkpoints)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna

from coordinator.evaluation import Evaluation, evaluate_trials
from coordinator.lifecycle import StudyLifecycle, StudyStatus
from coordinator.membership import TrainerPool
from coordinator.reporting import build_report
from coordinator.trainer_client import TrainerClient
from molhpo.contract import attrs, catalogue
from molhpo.contract.enums import Direction
from molhpo.contract.errors import FailedPrecondition, InvalidArgument, Unavailable


@dataclass(frozen=True)
class StudyReport:
    """What GetReport answers."""

    markdown: str
    json: str
    best_params_json: str
    plots: dict[str, bytes]


def best_trials(status: StudyStatus, k: int) -> list[optuna.trial.FrozenTrial]:
    """The k best complete, feasible trials of a study, best first."""
    name = status.name
    if len(status.directions) > 1:
        raise FailedPrecondition(
            f"study {name!r} has several objectives; it has a Pareto front, not a ranking"
        )
    sign = -1.0 if status.directions[0] == Direction.MAXIMIZE else 1.0
    done = [
        t
        for t in status.trials
        if t.state == optuna.trial.TrialState.COMPLETE
        and t.value is not None
        and t.user_attrs.get(attrs.TRIAL_FEASIBLE, True)
    ]
    if not done:
        raise FailedPrecondition(f"study {name!r} has no complete trial yet")
    return sorted(done, key=lambda t: sign * float(t.value or 0.0))[:k]


class StudyResults:
    """Reads a study's results from the store; forwards predictions to a trainer."""

    def __init__(self, studies: StudyLifecycle, pool: TrainerPool, trainers: TrainerClient) -> None:
        self._studies = studies
        self._pool = pool
        self._trainers = trainers

    def best_trials(self, name: str, k: int) -> list[optuna.trial.FrozenTrial]:
        """The k best complete, feasible trials of a study, best first."""
        return best_trials(self._studies.status(name), k)

    def evaluation(self, name: str) -> Evaluation | None:
        """The evaluation summary of an evaluation study (None for other studies)."""
        status = self._studies.status(name)
        storage = self._studies.storage
        sid = storage.get_study_id_from_name(name)
        if attrs.STUDY_EVALUATION_OF not in storage.get_study_system_attrs(sid):
            return None
        return evaluate_trials(status.trials)

    def report(self, name: str) -> StudyReport:
        """A study's report: Markdown, JSON, best parameters and PNG plots."""
        self._studies.status(name)  # NotFound
        study = optuna.load_study(study_name=name, storage=self._studies.storage)
        predictions = None
        multi = len(study.directions) > 1
        if not multi and any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
            best = self.best_trials(name, 1)[0]
            predictions = _test_predictions(best)
        built = build_report(study, predictions=predictions)
        markdown = built.markdown
        summary = dict(built.summary)
        evaluation = self.evaluation(name)
        if evaluation is not None:
            markdown += "\n" + evaluation_markdown(evaluation)
            summary["evaluation"] = dataclasses.asdict(evaluation)
        return StudyReport(
            markdown=markdown,
            json=json.dumps(summary, indent=2, default=str),
            best_params_json=built.best_params_json or "{}",
            plots=built.plot_files(),
        )

    def predict(
        self, study: str, smiles: Sequence[str], top_k: int
    ) -> tuple[list[float], list[list[float]], list[int], str]:
        """Predictions of the best (or top-k averaged) models of a study, computed on a
        trainer: (values, per-model values, trial numbers, units)."""
        if not smiles:
            raise InvalidArgument("smiles: is empty; give at least one SMILES")
        if top_k < 0:
            raise InvalidArgument(f"top_k: is {top_k}, but must be >= 0 (0 and 1: the best)")
        best = self.best_trials(study, max(top_k, 1))
        paths = []
        for t in best:
            path = t.user_attrs.get("checkpoint")
            if not path:
                raise FailedPrecondition(
                    f"trial {t.number} of study {study!r} kept no checkpoint; retrain it "
                    "(EvaluateStudy) to predict with it"
                )
            paths.append(str(path))
        trainers = sorted(self._pool.snapshot(), key=lambda r: len(r.assigned))
        if not trainers:
            raise Unavailable("no trainer is registered to load the models; start one")
        values, members = self._trainers.predict(trainers[0].address, paths, list(smiles))
        units = ""
        spec = self._studies.spec_of(study)
        if not spec.dataset.path and spec.dataset.name in catalogue.DATASETS:
            units = catalogue.DATASETS[spec.dataset.name].units
        return values, members, [t.number for t in best], units


def _test_predictions(trial: optuna.trial.FrozenTrial) -> dict[str, list[float]] | None:
    """The best model's test-set predictions, from the trial or its checkpoint folder."""
    if attrs.TEST_PREDICTIONS in trial.user_attrs:
        return {
            "y_true": list(trial.user_attrs[attrs.TEST_TARGETS]),
            "y_pred": list(trial.user_attrs[attrs.TEST_PREDICTIONS]),
        }
    path = trial.user_attrs.get("checkpoint")
    if not path:
        return None
    file = Path(str(path)).parent / "test_predictions.json"
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or "y_true" not in data or "y_pred" not in data:
        return None
    return {"y_true": list(data["y_true"]), "y_pred": list(data["y_pred"])}


def evaluation_markdown(e: Evaluation) -> str:
    """The final-evaluation section of a report."""
    lines = [
        "## Final evaluation",
        "",
        "| configuration | runs | test rmse | test mae | test r2 |",
        "|---|---|---|---|---|",
    ]
    for c in e.configs:
        cells = [
            f"{c.test_mean[m]:.4f} +/- {c.test_std[m]:.4f}" if m in c.test_mean else "-"
            for m in ("rmse", "mae", "r2")
        ]
        lines.append(f"| {c.config} | {c.n_runs} | " + " | ".join(cells) + " |")
    if e.ensemble_rmse_mean is not None:
        lines.append("")
        lines.append(
            f"Ensemble of {', '.join(e.ensemble_members)} (averaged predictions): test rmse "
            f"{e.ensemble_rmse_mean:.4f} +/- {e.ensemble_rmse_std or 0.0:.4f}."
        )
    by_name = {c.config: c for c in e.configs}
    if "default" in by_name and "rank-1" in by_name and "rmse" in by_name["default"].test_mean:
        a = by_name["default"].test_mean["rmse"]
        b = by_name["rank-1"].test_mean["rmse"]
        lines.append("")
        lines.append(f"Tuning cut test RMSE from {a:.4f} (default configuration) to {b:.4f}.")
    return "\n".join(lines) + "\n"
