"""The Markdown report: each section says what the summary holds."""

from __future__ import annotations

import copy

from reporting_studies import foreign_study, main_report, multi_objective_study, unfinished_study

from coordinator.reporting import build_report
from coordinator.reporting.markdown import MAX_TABLE_ROWS, render_markdown


def test_what_was_tuned_and_trials() -> None:
    _, report = main_report()
    md = report.markdown
    for text in ("gin", "esol", "tpe", "median", "minimize validation RMSE", "1128 molecules"):
        assert text in md
    assert "| budget | 24 trials, up to 30 epochs per trial |" in md
    assert "11 complete, 1 pruned, 2 failed, 0 running" in md
    assert md.startswith("# Study report: ") and "\nGIN on ESOL\n" in md


def test_ranking_table_lists_the_ranking_in_order() -> None:
    _, report = main_report()
    md = report.markdown
    assert "| rank | trial | RMSE (valid) | test | epochs | time | n_parameters | params |" in md
    assert md.index("| 1 | 1 |") < md.index("| 2 | 2 |")
    assert "| 11 | 0 (default) |" in md
    assert "| 1 of 12 |" in md


def test_result_best_parameters_warnings_and_failures() -> None:
    _, report = main_report()
    md = report.markdown
    assert "Best trial: **1**, validation RMSE **0.6**, test RMSE 0.65." in md
    assert "Tuning cut validation RMSE from 1.2 to 0.6, test from 1.31 to 0.65" in md
    assert "## Best parameters" in md and "Also in `best_params.json`." in md
    assert "premature convergence: best epoch is the first, learning rate likely too high" in md
    assert "under-trained: best epoch is the last, train longer" in md
    assert "| diverged | 1 | 4 |" in md
    assert "## Parameter importance" in md
    assert "40 predictions: RMSE 0.05" in md
    assert "![history](history.png)" in md


def test_a_long_ranking_is_cut_and_points_to_the_json() -> None:
    _, report = main_report()
    s = copy.deepcopy(report.summary)
    s["ranking"] = [dict(s["ranking"][0], rank=i + 1) for i in range(MAX_TABLE_ROWS + 3)]
    md = render_markdown(s)
    assert f"| {MAX_TABLE_ROWS} | 1 |" in md and f"| {MAX_TABLE_ROWS + 1} | 1 |" not in md
    assert "\n3 more in report.json." in md


def test_dropped_rows_and_a_bad_request_are_said() -> None:
    _, report = main_report()
    s = copy.deepcopy(report.summary)
    s["setup"]["dataset_summary"]["invalid_counts"] = {"unparsable_smiles": 2, "missing_target": 0}
    s["setup"]["request_error"] = "molhpo:request is not a JSON object"
    md = render_markdown(s)
    assert "1128 molecules (rows dropped: 2 unparsable SMILES)" in md
    assert "Note: molhpo:request is not a JSON object" in md


def test_no_complete_trial() -> None:
    md = build_report(unfinished_study()).markdown
    assert "**No trial completed**" in md
    assert "## Ranking" not in md and "## Best parameters" not in md
    assert "None (no complete trial to check)." in md
    assert "Skipped:" in md and "- history.png: no complete trial with a finite value" in md


def test_multi_objective_shows_the_pareto_front() -> None:
    md = build_report(multi_objective_study()).markdown
    assert "## Pareto front" in md and "## Ranking (Pareto front)" in md
    assert "over RMSE (minimize), n_parameters (minimize); no single trial is best." in md
    assert "Default configuration (trial 0): 0.9, 5000; on the Pareto front." in md
    assert "(parameters of every Pareto-optimal trial)" in md


def test_a_foreign_study_says_what_was_not_recorded() -> None:
    md = build_report(foreign_study()).markdown
    assert "| model | not recorded |" in md
    assert "trainer-seconds not recorded" in md
    assert "maximize objective" in md
