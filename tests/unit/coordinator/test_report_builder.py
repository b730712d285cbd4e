"""Study reports: files, PNGs, ranking, best params, default-vs-best, importance, warnings.

Pure: every study is an in-memory Optuna study filled with ``create_trial`` and the user
attributes the coordinator records (coordinator.study_runner.on_result / _fail).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import matplotlib.image
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from coordinator import convert
from coordinator.objectives import pareto_front
from coordinator.report_builder import (
    ATTR_DATASET,
    ATTR_REQUEST,
    PREMATURE,
    UNDERTRAINED,
    Report,
    best_trial,
    build_report,
    compare_default,
    convergence_warnings,
    rank_single,
    trial_facts,
)
from molhpo.contract.attrs import STUDY_DATASET, STUDY_REQUEST
from molhpo.errors import InvalidArgument
from molhpo.v1 import common_pb2, study_pb2

optuna.logging.set_verbosity(optuna.logging.WARNING)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_EPOCHS = 30
DISTS = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "hidden": IntDistribution(32, 256),
    "pool": CategoricalDistribution(["mean", "sum", "max"]),
}


def _curve(best_step: int, epochs: int, best: float) -> dict[int, float]:
    """Validation RMSE per epoch that reaches ``best`` at ``best_step`` and rises after."""
    return {
        s: best + 0.05 * abs(best_step - s) + (0.02 if s != best_step else 0.0)
        for s in range(1, epochs + 1)
    }


def _complete(
    value: float,
    params: dict[str, Any],
    *,
    best_step: int,
    epochs: int = MAX_EPOCHS,
    test: float | None = None,
    enqueued: str | None = None,
    seconds: float = 60.0,
) -> optuna.trial.FrozenTrial:
    attrs: dict[str, Any] = {
        "valid_metrics": {"rmse": value, "mae": 0.8 * value, "r2": 0.9},
        "test_metrics": {"rmse": test if test is not None else value + 0.05, "mae": 0.7},
        "epochs_trained": epochs,
        "best_step": best_step,
        "trainer_id": "trainer-a",
        "seconds": seconds,
        "n_parameters": 1000 + params["hidden"] * 10,
        "checkpoint": f"ckpt/epoch-{best_step:05d}.pt",
    }
    if enqueued:
        attrs["enqueued"] = enqueued
    return create_trial(
        value=value,
        params=params,
        distributions=DISTS,
        user_attrs=attrs,
        intermediate_values=_curve(best_step, epochs, value),
    )


def _request_json(n_trials: int = 24, objectives: tuple[str, ...] = ("rmse",)) -> str:
    req = study_pb2.StartStudyRequest(
        name="esol-gin",
        model="gin",
        description="GIN on ESOL",
        dataset=common_pb2.DatasetRef(name="esol", split="scaffold"),
        sampler=common_pb2.ComponentSpec(name="tpe"),
        pruner=common_pb2.ComponentSpec(name="median"),
        budget=common_pb2.Budget(n_trials=n_trials, max_epochs=MAX_EPOCHS),
    )
    if len(objectives) == 1:
        req.objective.CopyFrom(
            common_pb2.Objective(metric=objectives[0], direction=common_pb2.DIRECTION_MINIMIZE)
        )
    else:
        for m in objectives:
            req.objectives.append(
                common_pb2.Objective(metric=m, direction=common_pb2.DIRECTION_MINIMIZE)
            )
    return convert.request_to_json(req)


def _molhpo_study(**kw: Any) -> optuna.Study:
    """A study as the coordinator leaves it: default trial 0, tuned trials, pruned, failed."""
    study = optuna.create_study(direction="minimize")
    st, sid = study._storage, study._study_id
    st.set_study_system_attr(sid, ATTR_REQUEST, _request_json(**kw))
    st.set_study_system_attr(
        sid,
        ATTR_DATASET,
        {
            "name": "esol",
            "n_molecules": 1128,
            "n_invalid": 0,
            "invalid_examples": [],
            "target_names": ["logS"],
        },
    )
    # 0: the family's default configuration
    study.add_trial(
        _complete(
            1.20,
            {"lr": 1e-3, "hidden": 64, "pool": "mean"},
            best_step=22,
            test=1.31,
            enqueued="default",
        )
    )
    # 1: best, but its best epoch is the first (early stopping ended it at 12)
    study.add_trial(
        _complete(0.60, {"lr": 0.08, "hidden": 200, "pool": "sum"}, best_step=1, epochs=12)
    )
    # 2: second, still improving at the end of its full budget
    study.add_trial(
        _complete(0.62, {"lr": 2e-4, "hidden": 128, "pool": "max"}, best_step=MAX_EPOCHS)
    )
    # 3: pruned after 4 epochs
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"lr": 1e-4, "hidden": 40, "pool": "mean"},
            distributions=DISTS,
            user_attrs={"epochs_trained": 4, "best_step": 4, "seconds": 8.0, "trainer_id": "b"},
            intermediate_values={1: 2.5, 2: 2.2, 3: 2.1, 4: 2.0},
        )
    )
    # 4, 5: failed
    for cls, reason in (
        ("diverged", "training loss became nan at epoch 3; lower lr (now 0.09)"),
        ("trainer_lost", "trainer b stopped sending heartbeats"),
    ):
        study.add_trial(
            create_trial(
                state=TrialState.FAIL,
                params={"lr": 0.09, "hidden": 100, "pool": "sum"},
                distributions=DISTS,
                user_attrs={"failure_class": cls, "failure_reason": reason, "trainer_id": "b"},
                intermediate_values={1: 3.0, 2: float("nan")},
            )
        )
    # 6..: ordinary trials, worse than 1 and 2, best epoch in the middle
    rng = random.Random(7)
    for i in range(8):
        study.add_trial(
            _complete(
                0.7 + 0.05 * i,
                {
                    "lr": 10 ** rng.uniform(-4, -1),
                    "hidden": rng.randint(32, 256),
                    "pool": rng.choice(["mean", "sum", "max"]),
                },
                best_step=15,
            )
        )
    return study


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024
    img = matplotlib.image.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def _strict_json(path: Path) -> Any:
    def no_constants(name: str) -> None:
        raise AssertionError(f"{path.name} holds {name}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=no_constants)


@pytest.fixture(scope="module")
def main_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Report]:
    study = _molhpo_study()
    out = tmp_path_factory.mktemp("report")
    preds = {"y_true": [0.1 * i for i in range(40)], "y_pred": [0.1 * i + 0.05 for i in range(40)]}
    return study, build_report(study, out, predictions=preds)


def test_attr_names_match_the_coordinator() -> None:
    assert ATTR_REQUEST == STUDY_REQUEST
    assert ATTR_DATASET == STUDY_DATASET


def test_every_file_is_written_and_plots_are_real_pngs(
    main_report: tuple[optuna.Study, Report],
) -> None:
    _, report = main_report
    out = report.markdown.parent
    assert report.markdown == out / "report.md" and report.markdown.stat().st_size > 0
    assert report.json == out / "report.json"
    assert report.best_params == out / "best_params.json"
    assert set(report.plots) == {
        "history",
        "intermediate",
        "importance",
        "parallel_coordinates",
        "predicted_vs_true",
    }
    for name, path in report.plots.items():
        assert path.name == f"{name}.png"
        _assert_png(path)
    assert report.summary["plots_skipped"] == {}
    assert _strict_json(report.json) == report.summary


def test_what_was_tuned_and_counts(main_report: tuple[optuna.Study, Report]) -> None:
    _, report = main_report
    s = report.summary
    assert s["setup"]["model"] == "gin"
    assert s["setup"]["dataset"] == "esol"
    assert s["setup"]["sampler"] == "tpe"
    assert s["setup"]["pruner"] == "median"
    assert s["setup"]["max_epochs"] == MAX_EPOCHS
    assert s["objectives"] == [{"metric": "rmse", "direction": "minimize"}]
    assert s["counts"] == {
        "complete": 11,
        "pruned": 1,
        "failed": 2,
        "running": 0,
        "waiting": 0,
        "total": 14,
    }
    assert s["epochs_trained"] == MAX_EPOCHS + 12 + MAX_EPOCHS + 4 + 2 + 2 + 8 * MAX_EPOCHS
    assert s["trainer_seconds"] == pytest.approx(11 * 60.0 + 8.0)
    assert s["wall_seconds"] is not None and s["wall_seconds"] >= 0
    md = report.markdown.read_text()
    for text in ("gin", "esol", "tpe", "median", "minimize validation RMSE", "1128 molecules"):
        assert text in md
    assert "11 complete, 1 pruned, 2 failed, 0 running" in md


def test_ranking_is_sorted_by_objective(main_report: tuple[optuna.Study, Report]) -> None:
    study, report = main_report
    ranking = report.summary["ranking"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    expected = [t.number for t in sorted(complete, key=lambda t: (t.value, t.number))]
    assert [r["number"] for r in ranking] == expected
    assert [r["rank"] for r in ranking] == list(range(1, len(expected) + 1))
    assert ranking[0]["number"] == 1 and ranking[1]["number"] == 2
    assert ranking[0]["test_metrics"]["rmse"] == pytest.approx(0.65)
    # the Markdown table lists them in the same order
    md = report.markdown.read_text()
    rows = [
        ln for ln in md.splitlines() if ln.startswith("| 1 | 1 |") or ln.startswith("| 2 | 2 |")
    ]
    assert len(rows) == 2
    assert md.index("| 1 | 1 |") < md.index("| 2 | 2 |")


def test_best_params_json_equals_study_best_params(
    main_report: tuple[optuna.Study, Report],
) -> None:
    study, report = main_report
    assert report.best_params is not None
    assert _strict_json(report.best_params) == study.best_params
    assert report.summary["best"]["number"] == study.best_trial.number
    assert "## Best parameters" in report.markdown.read_text()


def test_default_configuration_is_compared_with_the_best(
    main_report: tuple[optuna.Study, Report],
) -> None:
    _, report = main_report
    cmp_ = report.summary["default_vs_best"]
    assert cmp_["default_trial"] == 0 and cmp_["best_trial"] == 1
    assert cmp_["improved"] is True
    sentence = "tuning cut validation RMSE from 1.2 to 0.6, test from 1.31 to 0.65"
    assert cmp_["sentence"].startswith(sentence)
    assert sentence[1:] in report.markdown.read_text()


def test_convergence_warnings_fire_for_first_and_last_best_epoch(
    main_report: tuple[optuna.Study, Report],
) -> None:
    _, report = main_report
    warns = {w["number"]: w for w in report.summary["convergence_warnings"]}
    assert set(warns) == {1, 2}
    assert warns[1]["kind"] == "premature" and warns[1]["message"] == PREMATURE
    assert warns[2]["kind"] == "under_trained" and warns[2]["message"] == UNDERTRAINED
    md = report.markdown.read_text()
    assert "premature convergence: best epoch is the first, learning rate likely too high" in md
    assert "under-trained: best epoch is the last, train longer" in md


def test_failures_are_grouped_by_class(main_report: tuple[optuna.Study, Report]) -> None:
    _, report = main_report
    groups = {g["failure_class"]: g for g in report.summary["failures"]}
    assert set(groups) == {"diverged", "trainer_lost"}
    assert groups["diverged"]["count"] == 1 and groups["diverged"]["trials"] == [4]
    assert "lower lr" in groups["diverged"]["reasons"][0]["reason"]
    assert "| diverged | 1 | 4 |" in report.markdown.read_text()


def test_importance_appears(main_report: tuple[optuna.Study, Report]) -> None:
    _, report = main_report
    imp = report.summary["importance"]
    assert imp["evaluator"] in ("fanova", "ped_anova")
    assert set(imp["values"]) == {"lr", "hidden", "pool"}
    assert sum(imp["values"].values()) == pytest.approx(1.0)
    assert "## Parameter importance" in report.markdown.read_text()


def test_predictions_give_rmse(main_report: tuple[optuna.Study, Report]) -> None:
    _, report = main_report
    p = report.summary["predictions"]
    assert p["n"] == 40 and p["rmse"] == pytest.approx(0.05)


def test_importance_ranks_the_driving_parameter_first(tmp_path: Path) -> None:
    rng = random.Random(3)
    study = optuna.create_study(direction="minimize")
    dists = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "dropout": FloatDistribution(0.0, 0.5),
        "pool": CategoricalDistribution(["mean", "sum"]),
    }
    for _ in range(24):
        lr = 10 ** rng.uniform(-4, -1)
        p = {"lr": lr, "dropout": rng.uniform(0.0, 0.5), "pool": rng.choice(["mean", "sum"])}
        value = 0.5 + (math.log10(lr) + 2.5) ** 2 + 0.01 * rng.random()
        study.add_trial(create_trial(value=value, params=p, distributions=dists))
    report = build_report(study, tmp_path)
    imp = report.summary["importance"]["values"]
    assert next(iter(imp)) == "lr", imp
    _assert_png(report.plots["importance"])


def test_no_complete_trial(tmp_path: Path) -> None:
    study = optuna.create_study(direction="minimize")
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"lr": 1e-3},
            distributions={"lr": DISTS["lr"]},
            intermediate_values={1: 2.0, 2: 1.9},
        )
    )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"lr": 1e-1},
            distributions={"lr": DISTS["lr"]},
            user_attrs={"failure_class": "diverged", "failure_reason": "loss became nan"},
        )
    )
    study.add_trial(create_trial(state=TrialState.RUNNING))
    report = build_report(study, tmp_path)
    s = report.summary
    assert s["ranking"] == [] and s["best"] is None
    assert report.best_params is None and not (tmp_path / "best_params.json").exists()
    assert s["counts"]["pruned"] == 1 and s["counts"]["failed"] == 1
    assert s["counts"]["running"] == 1
    assert set(s["plots_skipped"]) == {
        "history",
        "importance",
        "parallel_coordinates",
        "predicted_vs_true",
    }
    assert set(report.plots) == {"intermediate"}
    _assert_png(report.plots["intermediate"])
    md = report.markdown.read_text()
    assert "No trial completed" in md
    assert "Skipped:" in md and "history.png" in md
    assert s["importance"]["reason"].startswith("needs at least 2 complete trials")
    _strict_json(report.json)


def test_multi_objective_report_shows_the_pareto_front(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["minimize", "minimize"])
    study._storage.set_study_system_attr(
        study._study_id, ATTR_REQUEST, _request_json(objectives=("rmse", "n_parameters"))
    )
    points = [(0.9, 5000.0), (0.7, 20000.0), (0.8, 9000.0), (1.0, 6000.0), (0.75, 30000.0)]
    for i, (rmse, n) in enumerate(points):
        study.add_trial(
            create_trial(
                values=[rmse, n],
                params={"lr": 10 ** (-4 + 0.5 * i), "hidden": 32 + 40 * i, "pool": "mean"},
                distributions=DISTS,
                user_attrs={
                    "valid_metrics": {"rmse": rmse},
                    "test_metrics": {"rmse": rmse + 0.1},
                    "epochs_trained": 10,
                    "best_step": 10 if i == 1 else 5,
                    "seconds": 30.0,
                    "n_parameters": int(n),
                    **({"enqueued": "default"} if i == 0 else {}),
                },
            )
        )
    report = build_report(study, tmp_path)
    s = report.summary
    front = pareto_front(list(enumerate(points)), ["minimize", "minimize"])
    assert s["ranking_kind"] == "pareto_front"
    assert sorted(r["number"] for r in s["ranking"]) == sorted(front)
    assert [r["number"] for r in s["ranking"]] == sorted(front, key=lambda i: points[i][0])
    assert s["best"] is None and s["default_on_pareto_front"] is True
    best_params = _strict_json(tmp_path / "best_params.json")
    assert [p["number"] for p in best_params["pareto_front"]] == [r["number"] for r in s["ranking"]]
    assert s["objectives"][1]["metric"] == "n_parameters"
    assert s["importance"]["values"] or s["importance"]["reason"]
    for path in report.plots.values():
        _assert_png(path)
    assert "history" in report.plots
    assert "Pareto front" in report.markdown.read_text()


def test_foreign_study_without_user_attrs_and_with_nan(tmp_path: Path) -> None:
    """A study molhpo did not make: no request, no user attrs, NaN and inf values."""
    study = optuna.create_study(direction="maximize")
    dists = {"x": FloatDistribution(0.0, 1.0), "kind": CategoricalDistribution(["a", "b"])}
    for i in range(6):
        x = i / 5
        study.add_trial(
            create_trial(
                value=x,
                params={"x": x, "kind": "ab"[i % 2]},
                distributions=dists,
                intermediate_values={1: 0.1, 2: float("nan"), 3: x},
            )
        )
    study.add_trial(
        create_trial(value=float("inf"), params={"x": 0.5, "kind": "a"}, distributions=dists)
    )
    study.add_trial(create_trial(value=0.3, params={"x": 0.3}, distributions={"x": dists["x"]}))
    report = build_report(study, tmp_path)
    s = _strict_json(report.json)
    assert s["setup"]["model"] is None
    assert s["objectives"] == [{"metric": "objective", "direction": "maximize"}]
    # the infinite value ranks last; the best is the largest finite value
    assert s["ranking"][-1]["value"] is None
    assert s["best"]["number"] == 5
    # best epoch from the intermediate values (3 of 3: no budget known beyond that)
    assert s["best"]["best_step"] == 3 and s["best"]["epochs_trained"] == 3
    assert s["default_vs_best"] is None
    assert "history" in report.plots and "parallel_coordinates" in report.plots
    for path in report.plots.values():
        _assert_png(path)
    assert "not recorded" in report.markdown.read_text()


def test_malformed_predictions_are_refused_before_writing(tmp_path: Path) -> None:
    study = _molhpo_study()
    with pytest.raises(InvalidArgument, match="y_pred"):
        build_report(study, tmp_path / "a", predictions={"y_true": [1.0]})
    with pytest.raises(InvalidArgument, match="one prediction per molecule"):
        build_report(study, tmp_path / "b", predictions={"y_true": [1.0, 2.0], "y_pred": [1.0]})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_convergence_rules() -> None:
    def facts(best_step: int, epochs: int, state: TrialState = TrialState.COMPLETE) -> Any:
        t = create_trial(
            state=state,
            value=1.0 if state == TrialState.COMPLETE else None,
            user_attrs={"best_step": best_step, "epochs_trained": epochs},
        )
        return trial_facts(t)

    # best epoch last but early-stopped short of the budget: no warning
    assert convergence_warnings([facts(8, 8)], budget=30) == []
    # last epoch of the full budget: under-trained
    assert [w["kind"] for w in convergence_warnings([facts(30, 30)], budget=30)] == [
        "under_trained"
    ]
    # first epoch: premature; a one-epoch trial says nothing
    assert [w["kind"] for w in convergence_warnings([facts(1, 9)], budget=30)] == ["premature"]
    assert convergence_warnings([facts(1, 1)], budget=1) == []
    # middle: fine
    assert convergence_warnings([facts(12, 30)], budget=30) == []


def test_default_comparison_for_maximised_metric_and_default_best() -> None:
    def facts(value: float, r2_test: float, enqueued: str | None = None) -> Any:
        attrs: dict[str, Any] = {"test_metrics": {"r2": r2_test}}
        if enqueued:
            attrs["enqueued"] = enqueued
        return trial_facts(create_trial(value=value, user_attrs=attrs), "maximize")

    d, b = facts(0.7, 0.65, "default"), dataclasses.replace(facts(0.8, 0.78), number=5)
    cmp_ = compare_default(d, b, "r2", "maximize")
    assert cmp_ is not None
    assert cmp_["sentence"].startswith("tuning raised validation R2 from 0.7 to 0.8, test from")
    same = compare_default(d, d, "r2", "maximize")
    assert same is not None and same["improved"] is False
    assert "is the best trial" in same["sentence"]


def test_infeasible_trials_rank_after_feasible_ones_and_are_never_best() -> None:
    def facts(number: int, value: float, feasible: bool) -> Any:
        t = create_trial(value=value, user_attrs={"feasible": feasible})
        return dataclasses.replace(trial_facts(t), number=number)

    trials = [facts(0, 0.9, True), facts(1, 0.5, False), facts(2, 0.7, True)]
    ranking = rank_single(trials, "minimize")
    assert [t.number for t in ranking] == [2, 0, 1]
    best = best_trial(ranking)
    assert best is not None and best.number == 2
