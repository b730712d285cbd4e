"""The cluster-mode study store: a study on PostgreSQL, read back by optuna-dashboard's API.

The PostgreSQL is the tests' own throwaway server (conftest ``postgres_server``), never one the
machine runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import RedisServer
from throwaway_postgres import PostgresServer

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh database of this module's on the tests' throwaway PostgreSQL."""
    return postgres_server.create_database(f"molhpo_test_{uuid.uuid4().hex[:10]}")


@pytest.fixture(scope="module")
def pg_study(
    pg_url: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> str:
    req = studyfile.load(ROOT / "examples" / "freesolv_mlp.yaml")
    req.name = "pg-mlp"
    req.budget.n_trials = 6
    req.budget.max_epochs = 8
    with (
        LocalStack(
            state_dir=tmp_path_factory.mktemp("pg"),
            n_trainers=2,
            coordinator_listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix="pg",
            storage_url=pg_url,
        ) as stack,
        MolhpoClient(stack.coordinator_address, timeout_s=30) as client,
    ):
        client.start_study(req)
        info = client.wait(req.name, timeout_s=600)
    assert info.n_running == 0
    return req.name


def test_study_runs_on_postgresql(pg_url: str, pg_study: str) -> None:
    study = optuna.load_study(study_name=pg_study, storage=pg_url)
    assert len(study.trials) == 6
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert study.best_trial.user_attrs["test_metrics"]["rmse"] > 0


def test_optuna_dashboard_reads_the_study(pg_url: str, pg_study: str) -> None:
    port = free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    proc = subprocess.Popen(
        [str(dashboard), pg_url, "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        studies = None
        while studies is None and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as resp:
                    studies = json.loads(resp.read())["study_summaries"]
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        assert studies is not None, "optuna-dashboard did not answer"
        summary = next(s for s in studies if s["study_name"] == pg_study)
        with urllib.request.urlopen(
            f"{base}/api/studies/{summary['study_id']}", timeout=10
        ) as resp:
            detail = json.loads(resp.read())
        assert len(detail["trials"]) == 6
        assert {t["state"] for t in detail["trials"]} <= {"Complete", "Pruned"}
    finally:
        proc.terminate()
        proc.wait(10)
