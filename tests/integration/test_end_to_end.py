"""The whole path of a trial on real parts: redis-server, a coordinator process, two trainer
processes, the SQLite study store; checked against Optuna's own Hyperband."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import RedisServer
from prometheus_client.parser import text_string_to_metric_families

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.contract import attrs
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "freesolv_gin.yaml"
N_TRIALS = 14
MAX_EPOCHS = 9
REDUCTION = 3


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with LocalStack(
        state_dir=tmp_path_factory.mktemp("stack"),
        n_trainers=2,
        coordinator_listen="127.0.0.1:0",
        redis_url=redis_server.url,
        key_prefix="e2e",
    ) as st:
        yield st


@pytest.fixture(scope="module")
def finished_study(stack: LocalStack) -> tuple[study_pb2.StudyInfo, list[study_pb2.TrialInfo]]:
    req = studyfile.load(EXAMPLE)
    req.name = "e2e-gin"
    req.budget.n_trials = N_TRIALS
    req.budget.max_epochs = MAX_EPOCHS
    req.pruner.options.update({"reduction_factor": REDUCTION, "min_resource": 1})
    req.sampler.options.update({"n_startup_trials": 4})
    with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
        client.start_study(req)
        events = list(client.watch(req.name, timeout_s=600))
        info = client.get_study(req.name)
        trials = client.list_trials(req.name)
    assert events[-1].kind == study_pb2.StudyEvent.KIND_STUDY_FINISHED
    return info, trials


def _store(stack: LocalStack) -> str:
    return f"sqlite:///{stack.state_dir / 'studies.db'}"


def test_every_trial_ends_terminal(finished_study: tuple[study_pb2.StudyInfo, list]) -> None:
    info, trials = finished_study
    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert len(trials) == N_TRIALS
    terminal = {
        common_pb2.TRIAL_STATE_COMPLETE,
        common_pb2.TRIAL_STATE_PRUNED,
        common_pb2.TRIAL_STATE_FAIL,
    }
    assert all(t.state in terminal for t in trials)
    assert info.n_running == 0
    assert info.n_complete + info.n_pruned + info.n_failed == N_TRIALS
    assert info.n_pruned > 0, "Hyperband pruned nothing in 14 trials"
    assert info.n_failed == 0, [(t.number, t.failure_reason) for t in trials]
    best = info.best_trial
    assert {"rmse", "mae", "r2"} <= set(best.valid.values)
    assert {"rmse", "mae", "r2"} <= set(best.test.values)
    # Both trainers took work.
    assert len({t.trainer_id for t in trials}) == 2


def test_pruned_trials_trained_no_epoch_past_their_pruning_step(
    finished_study: tuple[study_pb2.StudyInfo, list], stack: LocalStack
) -> None:
    study = optuna.load_study(study_name="e2e-gin", storage=_store(stack))
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned
    for t in pruned:
        decisions = {
            int(k.removeprefix(attrs.TRIAL_DECISION_PREFIX)): v
            for k, v in t.system_attrs.items()
            if k.startswith(attrs.TRIAL_DECISION_PREFIX)
        }
        prune_steps = [s for s, d in decisions.items() if d["prune"]]
        assert len(prune_steps) == 1, (t.number, decisions)
        step = prune_steps[0]
        assert max(t.intermediate_values) == step
        assert t.user_attrs["epochs_trained"] == step


def test_decisions_equal_optunas_hyperband_on_the_same_reports(
    finished_study: tuple[study_pb2.StudyInfo, list], stack: LocalStack
) -> None:
    stored = optuna.load_study(study_name="e2e-gin", storage=_store(stack)).trials
    reports = []
    for t in stored:
        for k, d in t.system_attrs.items():
            if k.startswith(attrs.TRIAL_DECISION_PREFIX):
                step = int(k.removeprefix(attrs.TRIAL_DECISION_PREFIX))
                reports.append((d["seq"], t.number, step, t.intermediate_values[step], d["prune"]))
    reports.sort()
    assert [r[0] for r in reports] == list(range(1, len(reports) + 1))
    # A plain in-process study with the same name (Hyperband brackets hash it) and pruner,
    # fed the same values in the same order.
    reference = optuna.create_study(
        study_name="e2e-gin",
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=MAX_EPOCHS, reduction_factor=REDUCTION
        ),
    )
    trials = [reference.ask() for _ in stored]
    mismatches = []
    for _seq, number, step, value, prune in reports:
        trials[number].report(value, step)
        if trials[number].should_prune() != prune:
            mismatches.append((number, step, prune))
    assert mismatches == []
    assert any(r[4] for r in reports)


def test_every_finished_trial_left_its_best_checkpoint(
    finished_study: tuple[study_pb2.StudyInfo, list], stack: LocalStack
) -> None:
    study = optuna.load_study(study_name="e2e-gin", storage=_store(stack))
    for t in study.trials:
        path = Path(t.user_attrs["checkpoint"])
        assert path.is_file()
        assert path.is_relative_to(stack.state_dir / "artifacts" / "e2e-gin")
        assert path.name == f"epoch-{t.user_attrs['best_step']:05d}.pt"


def test_optuna_cli_lists_the_study_and_its_pruned_trials(
    finished_study: tuple[study_pb2.StudyInfo, list], stack: LocalStack
) -> None:
    optuna_cli = Path(sys.executable).parent / "optuna"
    out = subprocess.run(
        [str(optuna_cli), "studies", "--storage", _store(stack), "-f", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "e2e-gin" in {s["name"] for s in json.loads(out.stdout)}
    out = subprocess.run(
        [
            str(optuna_cli),
            "trials",
            "--storage",
            _store(stack),
            "--study-name",
            "e2e-gin",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = json.loads(out.stdout)
    assert len(rows) == N_TRIALS
    assert "PRUNED" in {r["state"] for r in rows}


def test_metrics_endpoints_answer_in_prometheus_text_format(
    finished_study: tuple[study_pb2.StudyInfo, list], stack: LocalStack
) -> None:
    def scrape(url: str) -> dict[str, float]:
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = resp.read().decode()
        return {
            s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples
        }

    coord = scrape(stack.coordinator_metrics)
    trainers = [scrape(url) for url in stack.trainer_metrics]
    catalogue = yaml.safe_load((ROOT / "deploy" / "metrics.yaml").read_text())
    for service, samples in (("coordinator", coord), *(("trainer", t) for t in trainers)):
        for entry in catalogue[service]:
            if entry.get("requires") in ("gpu", "event"):
                # GPU metrics need a GPU; labelled counters of rare events (retries) have no
                # series until the event happens: tests/integration/test_dead_trainer.py
                continue
            sample = entry["name"] + ("_count" if entry["type"] == "histogram" else "")
            assert sample in samples, f"{service} does not export {entry['name']}"
    with urllib.request.urlopen(stack.coordinator_metrics, timeout=10) as resp:
        by_state = {
            s.labels["state"]: s.value
            for fam in text_string_to_metric_families(resp.read().decode())
            for s in fam.samples
            if s.name == "molhpo_coordinator_study_trials"
        }
    info, _ = finished_study
    assert by_state == {
        "running": 0,
        "complete": info.n_complete,
        "pruned": info.n_pruned,
        "fail": info.n_failed,
    }
    assert coord["molhpo_coordinator_trials_started_total"] == N_TRIALS
    assert coord["molhpo_coordinator_trainers_registered"] == 2
    epochs = sum(scrape(url)["molhpo_trainer_epochs_total"] for url in stack.trainer_metrics)
    info, _ = finished_study
    assert epochs == info.epochs_trained


def test_promtool_finds_no_problem_in_either_metrics_endpoint(
    finished_study: tuple[study_pb2.StudyInfo, list], stack: LocalStack
) -> None:
    import shutil

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install Debian's prometheus package (make test does)"
    for url in (stack.coordinator_metrics, *stack.trainer_metrics):
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read()
        done = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60, check=False
        )
        assert done.returncode == 0, (url, done.stdout.decode(), done.stderr.decode())
        assert done.stdout.strip() == b"" and done.stderr.strip() == b"", url
