"""Journey: an operator starts a Redis and `molhpo coordinator` (the README's cluster notes), no
trainer yet, and a user starts a study on it. The study does not wait silently: its watch,
`study show`, GetStudy and the coordinator's metrics say that no trainer is registered; once a
trainer starts (`molhpo trainer --coordinator ...`, as the message says), the study runs to its
end.

(`molhpo up --trainers 0` would be the shorter way, but `molhpo up` refuses fewer than one
trainer.)"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer
from journeys_support import (
    Molhpo,
    Service,
    flat,
    start_coordinator,
    start_trainer,
    summary_counts,
    wait_until,
)

from molhpo.client import MolhpoClient
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

STUDY = "waits-for-a-trainer"
PREFIX = "journey-wait"
STUDY_YAML = f"""\
name: {STUDY}
dataset: {{name: freesolv, split: random}}
model: mlp
search_space:
  units: {{type: int, low: 16, high: 64, log: true}}
  lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
objective: {{metric: rmse}}
sampler: {{name: random}}
pruner: {{name: median}}
budget: {{n_trials: 3, max_epochs: 4}}
parallelism: 2
seed: 0
"""


def _waiting(metrics: str, reason: str) -> float:
    m = re.search(
        rf'^molhpo_coordinator_studies_waiting{{reason="{reason}"}} (\S+)$', metrics, re.M
    )
    assert m, metrics
    return float(m.group(1))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("no-trainer-project")
    (root / "study.yaml").write_text(STUDY_YAML)
    return root


@pytest.fixture(scope="module")
def coordinator(workdir: Path, redis_server: RedisServer) -> Iterator[Service]:
    service = start_coordinator(Molhpo(workdir), redis_server.url, PREFIX)
    yield service
    assert service.proc.stop(signal.SIGTERM) == 0, service.proc.output()[-3000:]


def test_a_study_without_trainers_says_why_then_runs_once_one_starts(
    coordinator: Service, redis_server: RedisServer, workdir: Path
) -> None:
    user = Molhpo(workdir)
    watch = user.start(
        "study",
        "start",
        "study.yaml",
        "--watch",
        "--coordinator",
        coordinator.address,
        log_name="watch",
    )
    trainer = None
    try:
        # Within seconds the watch says what is missing and how to fix it.
        watch.wait_for(f"study {STUDY} started", 60)
        waiting = flat(watch.wait_for("waiting:", 10))
        assert "no trainer is registered" in waiting, waiting
        assert "molhpo trainer --coordinator" in flat(watch.output())

        # `study show` (the address from $MOLHPO_ADDRESS this time), GetStudy and the metrics.
        _, shown = Molhpo(workdir, env={"MOLHPO_ADDRESS": coordinator.address}).run(
            "study", "show", STUDY
        )
        assert f"study {STUDY}: running" in shown
        assert "waiting (no trainers): no trainer is registered" in flat(shown), shown
        with MolhpoClient(coordinator.address) as client:
            info = client.get_study(STUDY)
        assert info.wait_reason == study_pb2.WAIT_REASON_NO_TRAINERS
        assert "no trainer is registered" in info.wait_message
        assert info.n_running == 0 and info.n_complete == 0
        metrics = coordinator.metrics()
        assert _waiting(metrics, "no_trainers") == 1
        assert _waiting(metrics, "slots_busy") == 0
        assert (
            f'molhpo_coordinator_study_waiting_seconds{{reason="no_trainers",study="{STUDY}"}}'
            in metrics
        ), metrics

        # A trainer starts, as the message says; the study runs to its end.
        trainer = start_trainer(user, coordinator.address, redis_server.url, PREFIX, "late")
        rc, out = watch.finish(240)
        assert rc == 0, out
        assert f"study {STUDY}: complete" in out
        # When dispatch resumes, the watch says so (WatchStudy's waiting event, empty message).
        assert out.index("dispatching again") > out.index("waiting:"), out
        counts = summary_counts(out)
        assert counts["total"] == 3 and counts["complete"] >= 1 and counts["failed"] == 0

        with MolhpoClient(coordinator.address) as client:
            info = client.get_study(STUDY)
        assert info.state == common_pb2.STUDY_STATE_COMPLETE
        assert info.wait_reason != study_pb2.WAIT_REASON_NO_TRAINERS and not info.wait_message
        wait_until(
            "the waiting gauge to drop to 0",
            lambda: _waiting(coordinator.metrics(), "no_trainers") == 0,
            15,
        )
        _, shown = user.run("study", "show", STUDY, "--coordinator", coordinator.address)
        assert "waiting" not in shown
    finally:
        watch.stop()
        if trainer is not None:
            assert trainer.stop(signal.SIGTERM) == 0, trainer.output()[-3000:]
