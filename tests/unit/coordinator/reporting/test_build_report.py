"""build_report: the report's values (Markdown, JSON, best parameters, PNGs) for whole studies:
the usual molhpo study, one with no complete trial, a multi-objective one, a foreign one."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState
from reporting_studies import (
    MAX_EPOCHS,
    PARETO_POINTS,
    assert_png,
    foreign_study,
    main_report,
    molhpo_study,
    multi_objective_study,
    strict_json,
    unfinished_study,
)

from coordinator.objectives import pareto_front
from coordinator.reporting import build_report
from coordinator.reporting.analysis import PREMATURE, UNDERTRAINED
from molhpo.contract.errors import InvalidArgument


def test_every_value_is_made_and_plots_are_real_pngs() -> None:
    _, report = main_report()
    assert report.markdown.startswith("# Study report: ")
    assert set(report.plots) == {
        "history",
        "intermediate",
        "importance",
        "parallel_coordinates",
        "predicted_vs_true",
    }
    for png in report.plots.values():
        assert_png(png)
    assert set(report.plot_files()) == {f"{name}.png" for name in report.plots}
    assert report.summary["plots_skipped"] == {}
    assert report.summary["plots"] == {name: f"{name}.png" for name in report.plots}
    assert strict_json(report.json) == report.summary
    assert report.json.endswith("}\n")


def test_what_was_tuned_and_counts() -> None:
    _, report = main_report()
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


def test_ranking_is_sorted_by_objective() -> None:
    study, report = main_report()
    ranking = report.summary["ranking"]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    expected = [t.number for t in sorted(complete, key=lambda t: (t.value, t.number))]
    assert [r["number"] for r in ranking] == expected
    assert [r["rank"] for r in ranking] == list(range(1, len(expected) + 1))
    assert ranking[0]["number"] == 1 and ranking[1]["number"] == 2
    assert ranking[0]["test_metrics"]["rmse"] == pytest.approx(0.65)


def test_best_params_json_equals_study_best_params() -> None:
    study, report = main_report()
    assert report.best_params_json is not None
    assert strict_json(report.best_params_json) == study.best_params
    assert report.summary["best"]["number"] == study.best_trial.number
    assert report.summary["files"]["best_params"] == "best_params.json"


def test_default_configuration_is_compared_with_the_best() -> None:
    _, report = main_report()
    cmp_ = report.summary["default_vs_best"]
    assert cmp_["default_trial"] == 0 and cmp_["best_trial"] == 1
    assert cmp_["improved"] is True
    sentence = "tuning cut validation RMSE from 1.2 to 0.6, test from 1.31 to 0.65"
    assert cmp_["sentence"].startswith(sentence)


def test_convergence_warnings_fire_for_first_and_last_best_epoch() -> None:
    _, report = main_report()
    warns = {w["number"]: w for w in report.summary["convergence_warnings"]}
    assert set(warns) == {1, 2}
    assert warns[1]["kind"] == "premature" and warns[1]["message"] == PREMATURE
    assert warns[2]["kind"] == "under_trained" and warns[2]["message"] == UNDERTRAINED


def test_failures_are_grouped_by_class() -> None:
    _, report = main_report()
    groups = {g["failure_class"]: g for g in report.summary["failures"]}
    assert set(groups) == {"diverged", "trainer_lost"}
    assert groups["diverged"]["count"] == 1 and groups["diverged"]["trials"] == [4]
    assert "lower lr" in groups["diverged"]["reasons"][0]["reason"]


def test_importance_appears() -> None:
    _, report = main_report()
    imp = report.summary["importance"]
    assert imp["evaluator"] in ("fanova", "ped_anova")
    assert set(imp["values"]) == {"lr", "hidden", "pool"}
    assert sum(imp["values"].values()) == pytest.approx(1.0)


def test_predictions_give_rmse() -> None:
    _, report = main_report()
    p = report.summary["predictions"]
    assert p["n"] == 40 and p["rmse"] == pytest.approx(0.05)


def test_no_complete_trial() -> None:
    report = build_report(unfinished_study())
    s = report.summary
    assert s["ranking"] == [] and s["best"] is None
    assert report.best_params_json is None and s["files"]["best_params"] is None
    assert s["counts"]["pruned"] == 1 and s["counts"]["failed"] == 1
    assert s["counts"]["running"] == 1
    assert set(s["plots_skipped"]) == {
        "history",
        "importance",
        "parallel_coordinates",
        "predicted_vs_true",
    }
    assert set(report.plots) == {"intermediate"}
    assert_png(report.plots["intermediate"])
    assert s["importance"]["reason"].startswith("needs at least 2 complete trials")
    strict_json(report.json)


def test_multi_objective_report_shows_the_pareto_front() -> None:
    report = build_report(multi_objective_study())
    s = report.summary
    front = pareto_front(list(enumerate(PARETO_POINTS)), ["minimize", "minimize"])
    assert s["ranking_kind"] == "pareto_front"
    assert sorted(r["number"] for r in s["ranking"]) == sorted(front)
    assert [r["number"] for r in s["ranking"]] == sorted(front, key=lambda i: PARETO_POINTS[i][0])
    assert s["best"] is None and s["default_on_pareto_front"] is True
    assert report.best_params_json is not None
    best_params = strict_json(report.best_params_json)
    assert [p["number"] for p in best_params["pareto_front"]] == [r["number"] for r in s["ranking"]]
    assert s["objectives"][1]["metric"] == "n_parameters"
    assert s["importance"]["values"] or s["importance"]["reason"]
    for png in report.plots.values():
        assert_png(png)
    assert "history" in report.plots


def test_foreign_study_without_user_attrs_and_with_nan() -> None:
    report = build_report(foreign_study())
    s = strict_json(report.json)
    assert s["setup"]["model"] is None
    assert s["objectives"] == [{"metric": "objective", "direction": "maximize"}]
    # the infinite value ranks last; the best is the largest finite value
    assert s["ranking"][-1]["value"] is None
    assert s["best"]["number"] == 5
    # best epoch from the intermediate values (3 of 3: no budget known beyond that)
    assert s["best"]["best_step"] == 3 and s["best"]["epochs_trained"] == 3
    assert s["default_vs_best"] is None
    assert "history" in report.plots and "parallel_coordinates" in report.plots
    for png in report.plots.values():
        assert_png(png)


def test_malformed_predictions_are_refused() -> None:
    study = molhpo_study()
    with pytest.raises(InvalidArgument, match="y_pred"):
        build_report(study, predictions={"y_true": [1.0]})
    with pytest.raises(InvalidArgument, match="one prediction per molecule"):
        build_report(study, predictions={"y_true": [1.0, 2.0], "y_pred": [1.0]})


def test_a_broken_plot_is_listed_and_the_rest_of_the_report_stands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from coordinator.reporting import report as report_module

    def broken(*args: object) -> bytes:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report_module, "plot_history", broken)
    report = build_report(foreign_study())
    assert "history" not in report.plots
    assert report.summary["plots_skipped"]["history"] == "plot failed: RuntimeError: no fonts"
    assert "parallel_coordinates" in report.plots
    assert "- history.png: plot failed: RuntimeError: no fonts" in report.markdown
