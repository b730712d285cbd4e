"""Journey: a chemist tunes a model on their own CSV file, with their own column names and a few
bad rows, on the local stack (`molhpo up`), from the command line and the Python client; then
reports, predicts, evaluates, refines, races, stops, resumes and deletes, as the README says."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from journeys_support import (
    MOLHPO,
    REPO,
    Molhpo,
    Stack,
    UserCsv,
    dropped_rows_by_cause,
    flat,
    molhpo_up,
    summary_counts,
    user_env,
    wait_until,
    write_user_csv,
)

from molhpo.client import MolhpoClient
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

STUDY = "my-solvation"
# The user's study file, as the README documents one for a file of their own. The learning
# rates reach down to 1e-4, where six epochs teach a small MLP little: the median pruner stops
# such trials once one trial is complete.
STUDY_YAML = f"""\
name: {STUDY}
description: hydration free energies from our own spreadsheet
dataset: {{path: my.csv, smiles_column: SMILES_str, target_columns: [dG_exp]}}
model: mlp
search_space:
  units: {{type: int, low: 8, high: 64, log: true}}
  dropout: {{type: float, low: 0.0, high: 0.2}}
  lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
fixed_params: {{batch_size: 16}}
objective: {{metric: rmse, direction: minimize}}
sampler: {{name: random}}
pruner: {{name: median, options: {{n_startup_trials: 1, n_warmup_steps: 1}}}}
budget: {{n_trials: 6, max_epochs: 6}}
parallelism: 2
seed: 0
"""
CAUSE_HEADERS = {
    "unparsable_smiles": "SMILES RDKit cannot parse",
    "missing_target": "missing target (empty or NaN)",
    "non_numeric_target": "non-numeric target",
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("my-csv-project")


@pytest.fixture(scope="module")
def my_csv(workdir: Path) -> UserCsv:
    data = write_user_csv(workdir / "my.csv")
    (workdir / "my.yaml").write_text(STUDY_YAML)
    return data


@pytest.fixture(scope="module")
def stack(workdir: Path, my_csv: UserCsv) -> Iterator[Stack]:
    with molhpo_up(workdir) as running:
        yield running


@pytest.fixture(scope="module")
def molhpo(workdir: Path, stack: Stack) -> Molhpo:
    """Client commands find the coordinator through .molhpo/stack.json in the working dir."""
    return Molhpo(workdir)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[MolhpoClient]:
    with MolhpoClient(stack.address) as c:
        yield c


def _expected_counts(data: UserCsv) -> dict[str, int]:
    counts = dict.fromkeys(CAUSE_HEADERS, 0)
    for _smiles, cause in data.bad_lines.values():
        counts[cause] += 1
    return counts


def _check_dropped_rows(output: str, data: UserCsv) -> None:
    """Each cause with its count, and each bad row under its cause with its file line."""
    blocks = dropped_rows_by_cause(output)
    counts = _expected_counts(data)
    for cause, words in CAUSE_HEADERS.items():
        header = f"{counts[cause]} {'row' if counts[cause] == 1 else 'rows'} dropped: {words}"
        assert header in flat(output), f"no {header!r} in:\n{output}"
        lines = {int(m.group(1)) for ln in blocks[words] if (m := re.match(r"line (\d+):", ln))}
        assert lines == {line for line, (_s, c) in data.bad_lines.items() if c == cause}, blocks
    ethanol = next(line for line, (smiles, _c) in data.bad_lines.items() if smiles == "CCO")
    assert f"line {ethanol}: target 'dG_exp' is empty" in blocks[CAUSE_HEADERS["missing_target"]]
    assert not any(
        ln.startswith(f"line {ethanol}:") for ln in blocks[CAUSE_HEADERS["unparsable_smiles"]]
    )


def test_tune_my_csv_then_report_predict_evaluate_and_refine(
    molhpo: Molhpo, client: MolhpoClient, my_csv: UserCsv, workdir: Path
) -> None:
    """One user's session, step by step, on the same stack and the same study."""
    counts = _start_and_follow(molhpo, my_csv)
    best = _the_client_sees_the_same_study(client, my_csv, counts)
    _show_with_trials(molhpo, my_csv, counts, best)
    _report(molhpo, my_csv, workdir, best)
    _predict(molhpo, client, counts, best)
    _evaluate(molhpo, client, counts)
    refined = _refine(molhpo, client, best)
    # Every study is listed with its state.
    _, out = molhpo.run("study", "list")
    for name in (STUDY, f"{STUDY}-eval", refined):
        assert re.search(rf"{re.escape(name)}\W+complete\b", out), out
    _optuna_reads_the_store(workdir)


def _start_and_follow(molhpo: Molhpo, my_csv: UserCsv) -> dict[str, int]:
    """Start and follow: the data check comes first, then the progress and the summary."""
    _, out = molhpo.run("study", "start", "my.yaml", "--watch")
    n_bad = len(my_csv.bad_lines)
    assert f"data my.csv: {my_csv.n_good} molecules; {n_bad} rows dropped" in flat(out)
    _check_dropped_rows(out, my_csv)
    assert f"study {STUDY}: complete" in out
    counts = summary_counts(out)
    assert counts["total"] == 6 and counts["failed"] == 0 and counts["running"] == 0
    assert counts["complete"] >= 1 and counts["pruned"] >= 1, out
    return counts


def _the_client_sees_the_same_study(
    client: MolhpoClient, my_csv: UserCsv, counts: dict[str, int]
) -> study_pb2.TrialInfo:
    """The Python client sees the same study; its best trial."""
    info = client.get_study(STUDY)
    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert (info.n_complete, info.n_pruned) == (counts["complete"], counts["pruned"])
    assert dict(info.dataset.invalid_counts) == _expected_counts(my_csv)
    rows = {r.row: r for r in info.dataset.invalid_rows}
    assert {line: rows[line].cause for line in my_csv.bad_lines} == {
        line: cause for line, (_s, cause) in my_csv.bad_lines.items()
    }
    trials = client.list_trials(STUDY)
    states = {t.state for t in trials}
    assert states == {common_pb2.TRIAL_STATE_COMPLETE, common_pb2.TRIAL_STATE_PRUNED}
    best = client.best_trial(STUDY)
    assert best is not None and math.isfinite(best.value) and "rmse" in best.test.values
    return best


def _show_with_trials(
    molhpo: Molhpo, my_csv: UserCsv, counts: dict[str, int], best: study_pb2.TrialInfo
) -> None:
    """`study show --trials`: the summary, the dropped rows and one row per trial."""
    _, shown = molhpo.run("study", "show", STUDY, "--trials")
    _check_dropped_rows(shown, my_csv)
    table = [ln for ln in shown.splitlines() if re.match(r"^\W*\d+\W+(complete|pruned)\W", ln)]
    assert len(table) == 6, shown
    assert sum("pruned" in ln for ln in table) == counts["pruned"]
    assert f"best trial #{best.number}" in shown


def _report(molhpo: Molhpo, my_csv: UserCsv, workdir: Path, best: study_pb2.TrialInfo) -> None:
    """The report: Markdown, JSON, the best parameters and PNG plots."""
    molhpo.run("report", STUDY, "--out", "reports/mine")
    folder = workdir / "reports" / "mine"
    names = {p.name for p in folder.iterdir()}
    assert {"report.md", "report.json", "best_params.json"} <= names
    pngs = sorted(folder.glob("*.png"))
    assert pngs and all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in pngs), names
    report = json.loads((folder / "report.json").read_text())
    assert report["study"] == STUDY
    assert report["setup"]["dataset_summary"]["invalid_counts"] == _expected_counts(my_csv)
    assert json.loads((folder / "best_params.json").read_text()).keys() == set(best.params)
    md = (folder / "report.md").read_text()
    assert f"# Study report: {STUDY}" in md and "rows dropped" in md


def _predict(
    molhpo: Molhpo, client: MolhpoClient, counts: dict[str, int], best: study_pb2.TrialInfo
) -> None:
    """Predictions of the tuned model, as numbers; the client gets the same ones."""
    _, out = molhpo.run("predict", STUDY, "CCO", "c1ccccc1O")
    assert f"trials {best.number}" in out
    printed = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"(CCO|c1ccccc1O)\s*\W\s*(-?\d+\.\d{4})\b", out)
    }
    molecules = ["CCO", "c1ccccc1O"]
    expected = dict(zip(molecules, client.predict(STUDY, molecules).values, strict=True))
    assert printed == pytest.approx(expected, abs=1e-4)
    # The average of the two best models.
    _, out = molhpo.run("predict", STUDY, "CCO", "c1ccccc1O", "--top-k", "2")
    top2 = client.predict(STUDY, molecules, top_k=2)
    assert len(top2.trial_numbers) == min(counts["complete"], 2)
    assert f"trials {', '.join(map(str, top2.trial_numbers))}" in out, out
    # An unparsable SMILES is refused by name, and nothing is predicted.
    rc, out = molhpo.run("predict", STUDY, "CCO", "C1CC", ok=False)
    assert rc == 2 and "INVALID_ARGUMENT" in out and "C1CC" in out, out


def _evaluate(molhpo: Molhpo, client: MolhpoClient, counts: dict[str, int]) -> None:
    """Final evaluation: the 2 best and the default, 2 seeds each, at full budget."""
    _, out = molhpo.run("study", "evaluate", STUDY, "--top-k", "2", "--seeds", "2", "--watch")
    assert f"evaluation study {STUDY}-eval started" in out
    assert "## Final evaluation" in out and "rank-1" in out and "default" in out, out
    ranks = min(counts["complete"], 2)
    evaluation = client.get_study(f"{STUDY}-eval")
    assert evaluation.state == common_pb2.STUDY_STATE_COMPLETE
    assert evaluation.n_complete == (ranks + 1) * 2 and evaluation.n_failed == 0


def _refine(molhpo: Molhpo, client: MolhpoClient, best: study_pb2.TrialInfo) -> str:
    """Refine around the best trial (+/- 20%), then follow it to its end; its name."""
    _, out = molhpo.run("study", "refine", STUDY, "--percent", "20")
    refined = re.search(rf"study (\S+) refines {STUDY}", out)
    assert refined, out
    final = client.wait(refined.group(1), timeout_s=240)
    assert final.state == common_pb2.STUDY_STATE_COMPLETE and final.n_failed == 0
    refined_trials = client.list_trials(refined.group(1))
    assert refined_trials[0].params == best.params  # it starts where the parent ended
    lr, units = best.params["lr"].float_value, best.params["units"].int_value
    for t in refined_trials:
        assert lr / 1.2 - 1e-12 <= t.params["lr"].float_value <= lr * 1.2 + 1e-12
        assert abs(t.params["units"].int_value - units) <= max(1, math.ceil(units * 0.2))
    return refined.group(1)


def _optuna_reads_the_store(workdir: Path) -> None:
    """The store is Optuna's own: the README's `optuna trials` command reads it."""
    optuna = MOLHPO.parent / "optuna"
    store = f"sqlite:///{workdir}/.molhpo/studies.db"
    done = subprocess.run(
        [str(optuna), "trials", "--storage", store, "--study-name", STUDY],
        capture_output=True,
        text=True,
        timeout=120,
        env=user_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "COMPLETE" in done.stdout and "PRUNED" in done.stdout


def test_stop_resume_and_delete_a_study_of_my_csv(
    molhpo: Molhpo, client: MolhpoClient, my_csv: UserCsv, workdir: Path
) -> None:
    name = "my-long-run"
    molhpo.run("study", "start", "my.yaml", "--name", name, "--trials", "300")
    _, out = molhpo.run("study", "stop", name)
    assert f"study {name} stopping (running trials finish)" in out

    def stopped() -> bool:
        info = client.get_study(name)
        return info.state == common_pb2.STUDY_STATE_STOPPED and info.n_running == 0

    wait_until(f"{name} to stop", stopped, 120)
    _, out = molhpo.run("study", "show", name)
    assert f"study {name}: stopped" in out
    so_far = len(client.list_trials(name))
    assert so_far < 300

    # Go on after the stop, up to two trials more, and follow it to its end.
    _, out = molhpo.run("study", "resume", name, "--trials", str(so_far + 2), "--watch")
    assert f"study {name} resumed" in out and f"study {name}: complete" in out
    assert summary_counts(out)["total"] == so_far + 2
    assert len(client.list_trials(name)) == so_far + 2

    # Resume for long again, then stop cancelling the running trials.
    molhpo.run("study", "resume", name, "--trials", "300")
    _, out = molhpo.run("study", "stop", name, "--cancel")
    assert "(running trials cancelled)" in out
    wait_until(f"{name} to stop with its trials cancelled", stopped, 60)

    # Delete: gone from the list, from `show`, and its checkpoints from the artifact store.
    assert (workdir / ".molhpo" / "artifacts" / name).exists()
    _, out = molhpo.run("study", "delete", name)
    assert f"study {name} deleted" in out
    rc, out = molhpo.run("study", "show", name, ok=False)
    assert rc == 2 and "NOT_FOUND" in out, out
    _, out = molhpo.run("study", "list")
    assert name not in out
    assert not (workdir / ".molhpo" / "artifacts" / name).exists()


def test_race_two_pruners_on_my_csv(molhpo: Molhpo, my_csv: UserCsv, workdir: Path) -> None:
    body = STUDY_YAML.replace(f"name: {STUDY}", "name: my-race").replace(
        "budget: {n_trials: 6, max_epochs: 6}", "budget: {n_trials: 4, max_epochs: 4}"
    )
    (workdir / "race.yaml").write_text(
        body
        + """\
race:
  name: my-race
  entries:
    - {label: random, sampler: {name: random}, pruner: {name: none}}
    - {label: random-median, sampler: {name: random}, pruner: {name: median}}
"""
    )
    _, out = molhpo.run("race", "start", "race.yaml", "--watch")
    assert "race my-race: random, random-median" in out
    table = [ln for ln in out.splitlines() if re.match(r"^\W*(random|random-median)\W", ln)]
    assert len(table) == 2, out
    assert "target value:" in out


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("models", ["mlp", "gin", "units", "hidden_channels"]),
        ("datasets", ["freesolv", "solubility"]),
        ("samplers", ["tpe", "random", "cmaes"]),
        ("pruners", ["hyperband", "median", "asha"]),
    ],
)
def test_list_what_can_be_tuned(workdir: Path, what: str, expected: list[str]) -> None:
    _, out = Molhpo(workdir).run("list", what)
    for word in expected:
        assert word in out, out


def test_the_readme_python_client_snippet_runs(stack: Stack, workdir: Path) -> None:
    """The README's Python client example, as written but for the coordinator's address, run
    where examples/freesolv_gin.yaml is a shortened copy (4 trials of 3 epochs)."""
    readme = (REPO / "README.md").read_text()
    snippet = next(
        b for b in re.findall(r"^```python\n(.*?)^```", readme, re.S | re.M) if "MolhpoClient(" in b
    )
    assert '"127.0.0.1:50051"' in snippet
    here = workdir / "readme-snippet"
    (here / "examples").mkdir(parents=True)
    study = yaml.safe_load((REPO / "examples" / "freesolv_gin.yaml").read_text())
    study["budget"] = {"n_trials": 4, "max_epochs": 3}
    (here / "examples" / "freesolv_gin.yaml").write_text(yaml.safe_dump(study))
    (here / "snippet.py").write_text(snippet.replace('"127.0.0.1:50051"', repr(stack.address)))
    done = subprocess.run(
        [sys.executable, "snippet.py"],
        cwd=here,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    lines = out.strip().splitlines()
    # one line per event (kind, trial number, value), then the best trial's params and metrics
    assert len(lines) > 4 and re.match(r"\d+ -?\d+ ", lines[0]), out
    assert "hidden_channels" in out and "'rmse': " in lines[-1], out
