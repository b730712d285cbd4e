"""Text reports for the terminal: catalogues, study lists, study summaries, live progress."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from molhpo.client import MolhpoClient
from molhpo.contract.errors import FailedPrecondition
from molhpo.v1 import common_pb2, study_pb2


def param_str(v: common_pb2.ParamValue) -> str:
    """A parameter value in a short form."""
    kind = v.WhichOneof("kind")
    val = getattr(v, kind) if kind else None
    return f"{val:.4g}" if isinstance(val, float) else str(val)


def state_name(state: common_pb2.TrialState.ValueType) -> str:
    """TRIAL_STATE_COMPLETE -> complete."""
    return common_pb2.TrialState.Name(state).removeprefix("TRIAL_STATE_").lower()


def study_state_name(state: common_pb2.StudyState.ValueType) -> str:
    """STUDY_STATE_COMPLETE -> complete."""
    return common_pb2.StudyState.Name(state).removeprefix("STUDY_STATE_").lower()


def _metrics(m: common_pb2.Metrics) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in sorted(m.values.items()))


def dataset_label(ref: common_pb2.DatasetRef) -> str:
    """A study's data in a few words: the built-in name, or the user file and its columns."""
    if not ref.path:
        return ref.name + (f" ({ref.target})" if ref.target else "")
    targets = ", ".join(ref.target_columns) or "its numeric columns"
    if ref.format == "sdf" or (not ref.format and ref.path.lower().endswith(".sdf")):
        return f"{ref.path} (target {targets})"
    return f"{ref.path} (SMILES {ref.smiles_column or 'smiles'}, target {targets})"


_CAUSE_WORDS = {
    "unparsable_smiles": "SMILES RDKit cannot parse",
    "missing_target": "missing target (empty or NaN)",
    "non_numeric_target": "non-numeric target",
}


def dropped_rows_lines(d: common_pb2.DatasetSummary, per_cause: int = 5) -> list[str]:
    """The rows a data set dropped, one line per cause with its count, then the first rows of
    that cause with their line (CSV) or record (SD) and what was wrong."""
    lines: list[str] = []
    counts = dict(d.invalid_counts)
    if not counts and d.n_invalid:  # a summary from an older coordinator
        return [f"{rows(d.n_invalid)} dropped, e.g. {', '.join(d.invalid_examples[:3])}"]
    for cause, n in counts.items():
        if not n:
            continue
        lines.append(f"{rows(n)} dropped: {_CAUSE_WORDS.get(cause, cause)}")
        for r in [r for r in d.invalid_rows if r.cause == cause][:per_cause]:
            where = r.text if r.text.startswith("record ") else f"line {r.row}"
            lines.append(f"  {where}: {r.detail}")
    return lines


def rows(n: int) -> str:
    """ "1 row", "3 rows"."""
    return f"{n} row" if n == 1 else f"{n} rows"


def wait_reason_name(reason: study_pb2.WaitReason.ValueType) -> str:
    """WAIT_REASON_SLOTS_BUSY -> slots busy."""
    return study_pb2.WaitReason.Name(reason).removeprefix("WAIT_REASON_").lower().replace("_", " ")


def print_catalogue(
    what: str, console: Console, offered: study_pb2.ListCapabilitiesResponse | None = None
) -> None:
    """`molhpo list models|datasets|samplers|pruners`: what a coordinator answered
    (``offered``: its registered trainers' models and data, its samplers and pruners), else, or
    when no trainer is registered, this installation's catalogue."""
    if what == "models":
        _print_models(console, offered)
    elif what == "datasets":
        _print_datasets(console, offered)
    else:
        _print_components(what, console, offered)


def _print_models(console: Console, offered: study_pb2.ListCapabilitiesResponse | None) -> None:
    from molhpo.contract import catalogue

    trainers = list(offered.trainers) if offered is not None else []
    names = list(offered.models) if offered is not None and trainers else list(catalogue.MODELS)
    for name in names:
        fam = catalogue.MODELS.get(name)
        # a trainer that named no families is given any
        by = [t.trainer_id for t in trainers if not t.models or name in t.models]
        where = f" (trainers {', '.join(by)})" if len(by) < len(trainers) else ""
        if fam is None:
            console.print(f"{name}{where}: not in this installation's catalogue\n")
            continue
        t = Table(title=f"{fam.name}{where}: {fam.description}", title_justify="left")
        t.add_column("hyperparameter")
        t.add_column("type")
        t.add_column("default")
        t.add_column("range / choices")
        t.add_column("meaning")
        for hp in (*fam.hyperparameters, *catalogue.TRAINING_HYPERPARAMETERS):
            rng = (
                ", ".join(map(str, hp.choices))
                if hp.choices
                else f"{hp.low:g}..{hp.high:g}"
                if hp.low is not None and hp.high is not None
                else ""
            )
            t.add_row(hp.name, hp.kind, str(hp.default), rng, hp.help)
        console.print(t)
        console.print(f"  features: {fam.featurizer}; paper: {fam.paper}\n")


def _print_datasets(console: Console, offered: study_pb2.ListCapabilitiesResponse | None) -> None:
    from molhpo.contract import catalogue

    trainers = list(offered.trainers) if offered is not None else []
    names = list(offered.datasets) if offered is not None and trainers else list(catalogue.DATASETS)
    t = Table(title="built-in data sets")
    for col in ("name", "molecules", "task", "target", "units", "source"):
        t.add_column(col)
    for name in names:
        ds = catalogue.DATASETS.get(name)
        if ds is None:
            t.add_row(name, "", "", "", "", "not in this installation's catalogue")
        else:
            t.add_row(ds.name, str(ds.size), ds.task, ds.target, ds.units, ds.source)
    console.print(t)
    if offered is not None and trainers:
        formats = ", ".join(offered.file_formats) or "none"
        console.print(f"your own files (dataset: {{path: ...}}): {formats}")


def _print_components(
    what: str, console: Console, offered: study_pb2.ListCapabilitiesResponse | None
) -> None:
    rows: list[tuple[str, str, dict[str, str]]]
    if offered is not None:
        infos = offered.samplers if what == "samplers" else offered.pruners
        rows = [(c.name, c.summary, {o.name: o.type_and_default for o in c.options}) for c in infos]
    else:
        rows = _local_components(what)
    t = Table(title=what)
    t.add_column("name")
    t.add_column("what")
    t.add_column("options (type = default)")
    for name, summary, opts in rows:
        t.add_row(name, summary, "\n".join(f"{k}: {v}" for k, v in opts.items()) or "-")
    console.print(t)


def _local_components(what: str) -> list[tuple[str, str, dict[str, str]]]:
    """This installation's samplers or pruners; they come with the coordinator extra."""
    try:
        from coordinator.optimizer._options import describe
        from coordinator.optimizer.pruners import PRUNERS
        from coordinator.optimizer.samplers import SAMPLERS
    except ModuleNotFoundError as err:
        raise FailedPrecondition(
            f"no coordinator answered, and this installation cannot list its {what}: "
            f"{err.name} is missing; install molhpo[coordinator] or give a running "
            "coordinator's address (--coordinator HOST:PORT)"
        ) from None
    registry: dict[str, Any] = dict(SAMPLERS if what == "samplers" else PRUNERS)
    return describe(registry)


def print_study_list(studies: Sequence[study_pb2.StudyInfo], console: Console) -> None:
    """`molhpo study list`."""
    t = Table()
    for col in ("study", "state", "complete", "pruned", "failed", "running", "best value"):
        t.add_column(col)
    for s in studies:
        best = f"{s.best_trial.value:.4f}" if s.HasField("best_trial") else "-"
        t.add_row(
            s.name,
            study_state_name(s.state),
            str(s.n_complete),
            str(s.n_pruned),
            str(s.n_failed),
            str(s.n_running),
            best,
        )
    console.print(t)


def print_summary(
    info: study_pb2.StudyInfo,
    trials: Sequence[study_pb2.TrialInfo],
    console: Console,
    trials_table: bool = False,
) -> None:
    """A study's summary: counts, best trial with validation and test metrics."""
    req = info.request
    wall = (info.end_time or 0) - info.start_time if info.start_time else 0.0
    console.print(
        f"\n[bold]study {info.name}[/bold]: {study_state_name(info.state)}"
        + (f" ({info.message})" if info.message else "")
    )
    if req.model:
        console.print(
            f"  {req.model} on {dataset_label(req.dataset)}; {req.sampler.name} sampler, "
            f"{req.pruner.name} pruner; objective {req.objective.metric}"
        )
    if info.HasField("dataset"):
        d = info.dataset
        console.print(
            f"  data: {d.name}, {d.n_molecules} molecules"
            + (f", {rows(d.n_invalid)} dropped" if d.n_invalid else "")
        )
        for line in dropped_rows_lines(d):
            console.print(f"    {line}", markup=False, highlight=False)
    if info.wait_message:
        console.print(
            f"  [yellow]waiting ({wait_reason_name(info.wait_reason)})[/yellow]: "
            f"{info.wait_message}"
        )
    console.print(
        f"  trials: {len(trials)} total, {info.n_complete} complete, "
        f"{info.n_pruned} pruned, {info.n_failed} failed, {info.n_running} running"
    )
    console.print(
        f"  epochs trained: {info.epochs_trained}"
        + (f"; wall time {wall:.1f} s" if wall > 0 else "")
    )
    if info.HasField("best_trial"):
        b = info.best_trial
        console.print(
            f"  [bold]best trial #{b.number}[/bold]: value {b.value:.4f} "
            f"(best epoch {b.best_step} of {b.epochs_trained} trained)"
        )
        console.print(
            "    params: " + ", ".join(f"{k}={param_str(v)}" for k, v in sorted(b.params.items()))
        )
        console.print(f"    validation: {_metrics(b.valid)}")
        console.print(f"    test:       {_metrics(b.test)}")
    else:
        console.print("  no complete trial yet")
    failed = [t for t in trials if t.state == common_pb2.TRIAL_STATE_FAIL]
    for t in failed[:5]:
        console.print(
            f"  [red]trial #{t.number} failed[/red]: {t.failure_class}: {t.failure_reason}"
        )
    if trials_table:
        tab = Table()
        for col in ("#", "state", "value", "epochs", "test rmse", "params"):
            tab.add_column(col)
        for t in trials:
            tab.add_row(
                str(t.number),
                state_name(t.state),
                f"{t.value:.4f}" if t.has_value else "-",
                str(t.epochs_trained),
                f"{t.test.values['rmse']:.4f}" if "rmse" in t.test.values else "-",
                ", ".join(f"{k}={param_str(v)}" for k, v in sorted(t.params.items())),
            )
        console.print(tab)


def watch_with_progress(
    client: MolhpoClient, name: str, n_trials: int, console: Console
) -> study_pb2.StudyInfo:
    """Follow a study's events with a progress bar until it ends; its final state."""
    done_kinds = {
        study_pb2.StudyEvent.KIND_TRIAL_PRUNED,
        study_pb2.StudyEvent.KIND_TRIAL_COMPLETED,
        study_pb2.StudyEvent.KIND_TRIAL_FAILED,
    }
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[best]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(name, total=n_trials, best="")
        for ev in client.watch(name):
            if ev.kind == study_pb2.StudyEvent.KIND_STUDY_WAITING:
                if ev.message:
                    progress.console.print(
                        f"[yellow]waiting[/yellow]: {ev.message}", markup=True, highlight=False
                    )
                else:
                    progress.console.print("dispatching again", highlight=False)
            if ev.kind in done_kinds:
                s = ev.study
                best = f"best {s.best_trial.value:.4f}" if s.HasField("best_trial") else ""
                progress.update(
                    task,
                    completed=s.n_complete + s.n_pruned + s.n_failed,
                    best=f"{s.n_complete} complete, {s.n_pruned} pruned, "
                    f"{s.n_failed} failed  {best}",
                )
    return client.get_study(name)


def print_race(race: study_pb2.RaceInfo, console: Console) -> None:
    """A race table, as the methodology's tables report it."""
    t = Table(title=f"race {race.name}" + ("" if race.finished else " (running)"))
    for col in (
        "set-up",
        "wall s",
        "trainer s",
        "epochs",
        "best valid",
        "test rmse",
        "s to target",
        "epochs to target",
    ):
        t.add_column(col)
    for r in race.rows:
        t.add_row(
            r.label,
            f"{r.wall_seconds:.0f}",
            f"{r.trainer_seconds:.0f}",
            str(r.epochs),
            f"{r.best_value:.4f}",
            f"{r.best_test.values['rmse']:.4f}" if "rmse" in r.best_test.values else "-",
            f"{r.seconds_to_target:.0f}" if r.seconds_to_target >= 0 else "never",
            str(r.epochs_to_target) if r.epochs_to_target >= 0 else "never",
        )
    console.print(t)
    console.print(f"target value: {race.target_value:.4f} (validation)")


def write_report(r: study_pb2.GetReportResponse, out: Path) -> list[Path]:
    """Write a GetReport answer into ``out``; the files written."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "report.md": r.markdown.encode(),
        "report.json": r.json.encode(),
        "best_params.json": r.best_params_json.encode(),
    }
    files.update({Path(p.name).name: p.png for p in r.plots})
    written = []
    for name, data in files.items():
        path = out / name
        path.write_bytes(data)
        written.append(path)
    return written
