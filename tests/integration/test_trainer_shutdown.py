"""A trainer process told to stop (SIGTERM) while Redis is away delivers the reports it
buffered, its trial's result last, once Redis is back within the grace period, then exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import RedisServer

from coordinator.trainer_client import TrainerClient
from molhpo.local import free_port, wait_for_line
from molhpo.v1 import common_pb2
from storage.keys import RedisKeys

pytestmark = pytest.mark.integration

PREFIX = "shutdown"
GRACE_S = 30


def _spec() -> common_pb2.TrialSpec:
    spec = common_pb2.TrialSpec(
        study_name="shutdown",
        trial_id=7,
        trial_number=3,
        attempt=1,
        dataset=common_pb2.DatasetRef(name="synthetic"),
        model="synthetic",
        max_epochs=100_000,  # runs until it is stopped
        seed=1,
        objective=common_pb2.Objective(metric="rmse", direction=common_pb2.DIRECTION_MINIMIZE),
        decision_timeout_seconds=0.0,  # no pruner: it never waits for a decision
    )
    spec.params["epoch_seconds"].float_value = 0.05
    return spec


def _stream(server: RedisServer) -> list[common_pb2.TrialReport]:
    out = []
    for _id, fields in server.stream(RedisKeys(PREFIX).reports):
        rep = common_pb2.TrialReport()
        rep.ParseFromString(fields[b"r"])
        out.append(rep)
    return out


def test_sigterm_with_redis_away_delivers_the_buffered_result_before_exiting(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    log = tmp_path / "trainer.log"
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        # Nobody listens there: the trainer keeps trying to register, which is harmless here.
        "MOLHPO_TRAINER_COORDINATOR": f"127.0.0.1:{free_port()}",
        "MOLHPO_TRAINER_REDIS_URL": server.url,
        "MOLHPO_TRAINER_KEY_PREFIX": PREFIX,
        "MOLHPO_TRAINER_TRAINER_ID": "trainer-s",
        "MOLHPO_TRAINER_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "MOLHPO_TRAINER_CACHE_DIR": "",
        "MOLHPO_TRAINER_METRICS_PORT": "-1",
        "MOLHPO_TRAINER_TORCH_THREADS": "1",
        "MOLHPO_TRAINER_GRACE_S": str(GRACE_S),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "molhpo", "trainer"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    try:
        address = wait_for_line(log, "listening on", proc, 120).rsplit(" ", 1)[-1]
        TrainerClient(timeout_s=10).run_trial(address, _spec())
        deadline = time.monotonic() + 60
        while len(_stream(server)) < 3:
            assert time.monotonic() < deadline, "the trial reported nothing"
            time.sleep(0.05)

        server.stop()
        time.sleep(0.5)  # epochs go on, their reports wait in the outbox
        proc.send_signal(signal.SIGTERM)
        # Redis comes back (empty: no persistence) well within the grace period.
        restart = threading.Timer(2.0, server.start)
        restart.start()
        rc = proc.wait(GRACE_S + 30)
        restart.join()
        assert rc == 0, log.read_text()

        delivered = _stream(server)
        assert delivered, "nothing buffered reached Redis"
        *epochs, last = delivered
        assert last.WhichOneof("body") == "result", log.read_text()
        assert last.trial_id == 7 and last.attempt == 1
        assert last.result.failure_class == "drained"
        steps = [r.epoch.step for r in epochs]
        assert all(r.WhichOneof("body") == "epoch" for r in epochs)
        assert steps and steps == list(range(steps[0], steps[0] + len(steps)))
        assert last.result.epochs_trained == steps[-1]
        assert "reports that wait for Redis before stopping" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        server.stop()
