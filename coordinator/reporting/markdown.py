"""The Markdown report, rendered from the JSON-ready summary, one function per section.

Every section takes the summary (as :func:`coordinator.reporting.report.build_report` makes
it) and returns its lines, each section ending with an empty line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from coordinator.reporting.analysis import TOP_TRIALS_CHECKED
from coordinator.reporting.facts import DEFAULT_MARK
from coordinator.reporting.files import BEST_PARAMS_FILE, JSON_FILE, PLOT_FILES
from coordinator.reporting.text import (
    cell,
    duration,
    evaluator_name,
    fmt,
    metric_label,
    metrics_text,
    objective_label,
    params_text,
)

MAX_TABLE_ROWS = 50
"""Rows of the ranking table (report.json lists every complete trial)."""

Summary = Mapping[str, Any]

_DROP_CAUSES = {
    "unparsable_smiles": "unparsable SMILES",
    "missing_target": "missing target",
    "non_numeric_target": "non-numeric target",
}


def render_markdown(s: Summary) -> str:
    """The Markdown report for a summary as :func:`build_report` makes it (JSON-ready)."""
    lines = _header(s) + _setup_section(s) + _trials_section(s)
    if not s["ranking"]:
        lines += _no_result_section()
    else:
        lines += _pareto_section(s) if s["multi_objective"] else _result_section(s)
        lines += _ranking_section(s) + _best_params_section(s)
    lines += _importance_section(s) + _convergence_section(s) + _failures_section(s)
    lines += _predictions_section(s) + _plots_section(s)
    return "\n".join(lines)


def _metrics(s: Summary) -> list[str]:
    return [str(o["metric"]) for o in s["objectives"]]


def _header(s: Summary) -> list[str]:
    lines = [f"# Study report: {s['study']}", ""]
    if s["setup"].get("description"):
        lines += [str(s["setup"]["description"]), ""]
    return [*lines, f"Generated {s['generated_at']}.", ""]


# ---- what was tuned --------------------------------------------------------------------------


def _dataset_text(setup: Mapping[str, Any]) -> str | None:
    """The data set, its target and split, its size and the rows it dropped."""
    dataset = setup.get("dataset")
    if dataset and setup.get("target"):
        dataset = f"{dataset} (target {setup['target']})"
    if dataset and setup.get("split"):
        dataset = f"{dataset}, {setup['split']} split"
    ds = setup.get("dataset_summary")
    if dataset and isinstance(ds, dict) and ds.get("n_molecules"):
        dataset = f"{dataset}, {ds['n_molecules']} molecules"
        dropped = {k: v for k, v in (ds.get("invalid_counts") or {}).items() if v}
        if dropped:
            dataset += (
                " (rows dropped: "
                + ", ".join(f"{n} {_DROP_CAUSES.get(k, k)}" for k, n in dropped.items())
                + ")"
            )
    return dataset


def _budget_text(s: Summary) -> str | None:
    setup = s["setup"]
    bits = []
    if setup.get("n_trials"):
        bits.append(f"{setup['n_trials']} trials")
    if s.get("epoch_budget"):
        bits.append(f"up to {s['epoch_budget']} epochs per trial")
    if setup.get("timeout_seconds"):
        bits.append(f"timeout {duration(setup['timeout_seconds'])}")
    return ", ".join(bits) or None


def _setup_rows(s: Summary) -> list[tuple[str, Any]]:
    setup = s["setup"]
    objectives = "; ".join(
        f"{o['direction']} {objective_label(str(o['metric']))}" for o in s["objectives"]
    )
    rows: list[tuple[str, Any]] = [
        ("model", setup.get("model")),
        ("data set", _dataset_text(setup)),
        ("objective" if not s["multi_objective"] else "objectives", objectives),
        ("sampler", setup.get("sampler")),
        ("pruner", setup.get("pruner")),
    ]
    if setup.get("constraints"):
        limits = "; ".join(f"{c['metric']} <= {fmt(c['max'])}" for c in setup["constraints"])
        rows.append(("constraints", limits))
    rows.append(("budget", _budget_text(s)))
    space = s.get("search_space") or {}
    if space:
        rows.append(("search space", "; ".join(f"{k}: {v}" for k, v in space.items())))
    return rows


def _setup_section(s: Summary) -> list[str]:
    lines = ["## What was tuned", "", "| | |", "|---|---|"]
    for key, value in _setup_rows(s):
        lines.append(f"| {key} | {cell(fmt(value) if value else 'not recorded')} |")
    if s["setup"].get("request_error"):
        lines += ["", f"Note: {s['setup']['request_error']}"]
    return [*lines, ""]


# ---- trials and results ----------------------------------------------------------------------


def _trials_section(s: Summary) -> list[str]:
    c = s["counts"]
    seconds = s["trainer_seconds"]
    span = s.get("first_trial_start") and s.get("last_trial_end")
    return [
        "## Trials",
        "",
        f"- {c['total']} trials: {c['complete']} complete, {c['pruned']} pruned, "
        f"{c['failed']} failed, {c['running']} running"
        + (f", {c['waiting']} waiting" if c.get("waiting") else ""),
        f"- {s['epochs_trained']} epochs trained in total; "
        + (
            f"{fmt(seconds)} trainer-seconds ({duration(seconds)})"
            if seconds is not None
            else "trainer-seconds not recorded"
        ),
        f"- wall time {duration(s['wall_seconds'])}"
        + (
            f" (first trial started {s['first_trial_start']}, last ended {s['last_trial_end']})"
            if span
            else ""
        ),
        "",
    ]


def _no_result_section() -> list[str]:
    return [
        "## Result",
        "",
        "**No trial completed**, so there is no ranking, no best configuration and no "
        "parameter importance yet.",
        "",
    ]


def _pareto_section(s: Summary) -> list[str]:
    labels = [metric_label(m) for m in _metrics(s)]
    objectives = ", ".join(
        f"{lab} ({o['direction']})" for lab, o in zip(labels, s["objectives"], strict=True)
    )
    lines = [
        "## Pareto front",
        "",
        f"{len(s['ranking'])} trials are Pareto-optimal over {objectives}; "
        "no single trial is best.",
        "",
    ]
    if s.get("default") is not None:
        d = s["default"]
        on = s.get("default_on_pareto_front")
        vals = ", ".join(fmt(v) for v in d.get("values") or []) or d["state"]
        lines += [
            f"Default configuration (trial {d['number']}): {vals}; "
            + ("on the Pareto front." if on else "not on the Pareto front."),
            "",
        ]
    return lines


def _best_line(s: Summary) -> str:
    b = s["best"]
    if b is None:
        return "No feasible complete trial: there is no best configuration."
    metric = _metrics(s)[0]
    test = b["test_metrics"].get(metric)
    return (
        f"Best trial: **{b['number']}**, {objective_label(metric)} **{fmt(b['value'])}**"
        + (f", test {metric_label(metric)} {fmt(test)}" if test is not None else "")
        + "."
    )


def _result_section(s: Summary) -> list[str]:
    lines = ["## Result", "", _best_line(s)]
    cmp_ = s.get("default_vs_best")
    if cmp_ is not None:
        text = str(cmp_["sentence"])
        lines += ["", text[0].upper() + text[1:] + "."]
    elif s.get("default") is not None:
        d = s["default"]
        lines += [
            "",
            f"The default configuration (trial {d['number']}) did not complete "
            f"({d['state']}), so there is nothing to compare the best trial with.",
        ]
    return [*lines, ""]


def _ranking_row(r: Mapping[str, Any], with_n_parameters: bool) -> str:
    mark = "" if r["feasible"] else " (infeasible)"
    tag = " (default)" if r.get("enqueued") == DEFAULT_MARK else ""
    epochs = fmt(r["epochs_trained"])
    if r.get("best_step") is not None and r.get("epochs_trained") is not None:
        epochs = f"{r['best_step']} of {r['epochs_trained']}"
    cells = [
        str(r["rank"]),
        f"{r['number']}{tag}{mark}",
        *[fmt(v) for v in r.get("values") or []],
        metrics_text(r["test_metrics"]),
        epochs,
        duration(r["seconds"]),
        *([fmt(r["n_parameters"])] if with_n_parameters else []),
        params_text(r["params"]),
    ]
    return "| " + " | ".join(cell(x) for x in cells) + " |"


def _ranking_section(s: Summary) -> list[str]:
    ranking = s["ranking"]
    metrics = _metrics(s)
    labels = [metric_label(m) for m in metrics]
    value_heads = [f"{lab} (valid)" if lab.isupper() else lab for lab in labels]
    with_n = "n_parameters" not in metrics
    heads = ["rank", "trial", *value_heads, "test", "epochs", "time"]
    heads += ["n_parameters"] if with_n else []
    lines = [
        "## Ranking (Pareto front)" if s["multi_objective"] else "## Ranking",
        "",
        "| " + " | ".join([*heads, "params"]) + " |",
        "|" + "---|" * (len(heads) + 1),
    ]
    lines += [_ranking_row(r, with_n) for r in ranking[:MAX_TABLE_ROWS]]
    if len(ranking) > MAX_TABLE_ROWS:
        lines.append(f"\n{len(ranking) - MAX_TABLE_ROWS} more in {JSON_FILE}.")
    return [*lines, "", "Epochs: best epoch of epochs trained; time: training time per trial.", ""]


def _best_params_section(s: Summary) -> list[str]:
    lines = ["## Best parameters", ""]
    if s.get("best_params") is None:
        return [*lines, "None (no feasible complete trial).", ""]
    which = " (parameters of every Pareto-optimal trial)." if s["multi_objective"] else "."
    return [
        *lines,
        f"Also in `{BEST_PARAMS_FILE}`{which}",
        "",
        "```json",
        json.dumps(s["best_params"], indent=2),
        "```",
        "",
    ]


# ---- analysis --------------------------------------------------------------------------------


def _importance_section(s: Summary) -> list[str]:
    imp = s["importance"]
    lines = ["## Parameter importance", ""]
    if not imp["values"]:
        return [*lines, f"Not available: {imp['reason']}.", ""]
    lines += [
        f"Sensitivity of {objective_label(_metrics(s)[0])} to each parameter "
        f"({evaluator_name(imp['evaluator'])}, normalised to sum to 1; most important first):",
        "",
        "| rank | parameter | importance |",
        "|---|---|---|",
    ]
    for i, (name, v) in enumerate(imp["values"].items(), 1):
        lines.append(f"| {i} | {cell(name)} | {v:.3f} |")
    if imp.get("notes"):
        lines += ["", "Evaluators that did not work: " + cell("; ".join(imp["notes"]))]
    return [*lines, ""]


def _convergence_section(s: Summary) -> list[str]:
    lines = ["## Convergence warnings", ""]
    for w in s["convergence_warnings"]:
        where = f" (rank {w['rank']})" if w.get("rank") else ""
        lines.append(
            f"- trial {w['number']}{where}: {w['message']} "
            f"(best epoch {w['best_step']} of {w['epochs_trained']})"
        )
    if not s["convergence_warnings"]:
        checked = min(len(s["ranking"]), TOP_TRIALS_CHECKED)
        lines.append(
            f"None for the top {checked} trials."
            if s["ranking"]
            else "None (no complete trial to check)."
        )
    return [*lines, ""]


def _failures_section(s: Summary) -> list[str]:
    lines = ["## Failed trials", ""]
    if not s["failures"]:
        return [*lines, "None.", ""]
    lines += ["| failure class | count | trials | reasons |", "|---|---|---|---|"]
    for g in s["failures"]:
        reasons = "; ".join(
            f"{r['reason']}" + (f" (x{r['count']})" if r["count"] > 1 else "") for r in g["reasons"]
        )
        lines.append(
            f"| {cell(g['failure_class'])} | {g['count']} | "
            f"{', '.join(map(str, g['trials']))} | {cell(reasons or '—')} |"
        )
    return [*lines, ""]


def _predictions_section(s: Summary) -> list[str]:
    p = s.get("predictions")
    if not p:
        return []
    dropped = f" ({p['n_dropped']} non-finite pairs left out)" if p["n_dropped"] else ""
    return [
        "## Predictions",
        "",
        f"{p['n']} predictions: RMSE {fmt(p['rmse'])}, MAE {fmt(p['mae'])}, "
        f"R2 {fmt(p['r2'])}{dropped}.",
        "",
    ]


def _plots_section(s: Summary) -> list[str]:
    lines = ["## Plots", ""]
    for name, file in s["plots"].items():
        lines += [f"![{name}]({file})", ""]
    if s["plots_skipped"]:
        lines += ["Skipped:", ""]
        for name, reason in s["plots_skipped"].items():
            lines.append(f"- {PLOT_FILES.get(name, name)}: {cell(str(reason))}")
        lines.append("")
    return lines
