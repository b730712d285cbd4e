"""On the real stack: a study's checkpoint_every decides where a killed trainer's trial
resumes, and decision sequence numbers stay unique and in decision order across a resume of
the study and a coordinator restart."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import RedisServer

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.contract import attrs
from molhpo.contract.errors import MolhpoError
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EVERY = 7  # no multiple of the default 5 below 35: a resume point tells which one was used
_ENDED = (
    common_pb2.STUDY_STATE_COMPLETE,
    common_pb2.STUDY_STATE_STOPPED,
    common_pb2.STUDY_STATE_FAILED,
)


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    env = {
        "MOLHPO_COORDINATOR_HEARTBEAT_TIMEOUT_S": "2",
        "MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S": "0.2",
    }
    with LocalStack(
        state_dir=tmp_path_factory.mktemp("stack"),
        n_trainers=2,
        coordinator_listen="127.0.0.1:0",
        redis_url=redis_server.url,
        key_prefix="ckpt",
        extra_env=env,
    ) as s:
        yield s


def _store(stack: LocalStack, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{stack.state_dir / 'studies.db'}")


def _wait_ended(stack: LocalStack, name: str, timeout_s: float = 600) -> study_pb2.StudyInfo:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
                info = client.get_study(name)
        except MolhpoError:
            info = None
        if info is not None and info.state in _ENDED:
            return info
        assert time.monotonic() < deadline, f"study {name} did not end"
        time.sleep(1.0)


def test_a_killed_trainers_trial_resumes_from_the_studys_checkpoint_interval(
    stack: LocalStack, tmp_path: Path
) -> None:
    data = yaml.safe_load((EXAMPLES / "freesolv_mlp.yaml").read_text())
    data["name"] = "every-seven"
    data["budget"] = {"n_trials": 2, "max_epochs": 60, "checkpoint_every": EVERY}
    data["pruner"] = {"name": "none"}
    data["dataset"]["max_molecules"] = 200
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    req = studyfile.load(path)  # the user's own study file
    victim = None
    retried: list[int] = []
    on_trainer_0: set[int] = set()
    with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
        client.start_study(req)
        for event in client.watch(req.name, timeout_s=600):
            if event.kind == study_pb2.StudyEvent.KIND_TRIAL_STARTED:
                if event.message.endswith("trainer-0"):
                    on_trainer_0.add(event.trial_number)
                else:
                    on_trainer_0.discard(event.trial_number)
            if (
                victim is None
                and event.kind == study_pb2.StudyEvent.KIND_EPOCH_REPORTED
                and event.trial_number in on_trainer_0
                and event.step > EVERY
            ):
                victim = stack.process("trainer-0")
                assert victim is not None
                victim.send_signal(signal.SIGKILL)  # no chance to save on the way out
            if event.kind == study_pb2.StudyEvent.KIND_TRIAL_RETRIED:
                retried.append(event.trial_number)
        info = client.get_study(req.name)
    assert victim is not None
    assert retried, "no trial was dispatched again"
    assert info.state == common_pb2.STUDY_STATE_COMPLETE, info.message
    for t in _store(stack, req.name).trials:
        if t.number not in retried:
            continue
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.user_attrs["attempts"] >= 2
        resumed = t.user_attrs["resumed_from_step"]
        # The last state saved before the kill: a multiple of the study's interval.
        assert resumed >= EVERY and resumed % EVERY == 0, resumed
        assert t.user_attrs["epochs_trained"] == 60


def test_decision_sequence_numbers_stay_unique_across_a_resume_and_a_restart(
    stack: LocalStack,
) -> None:
    req = studyfile.load(EXAMPLES / "synthetic.yaml")
    req.name = "decision-log"
    req.budget.n_trials = 3
    req.budget.max_epochs = 9
    req.parallelism = 1
    req.fixed_params.update({"epoch_seconds": 0.05})
    with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
        client.start_study(req)
        first = client.wait(req.name, timeout_s=600)
        assert first.state == common_pb2.STUDY_STATE_COMPLETE, first.message
        client.resume_study(req.name, n_trials=6)
        for event in client.watch(req.name, timeout_s=600):
            if event.kind == study_pb2.StudyEvent.KIND_EPOCH_REPORTED and event.trial_number >= 4:
                break  # the resumed study is deciding right now
    stack.restart_coordinator(kill=True)
    info = _wait_ended(stack, req.name)
    assert info.state == common_pb2.STUDY_STATE_COMPLETE, info.message

    trials = sorted(_store(stack, req.name).trials, key=lambda t: t.number)
    assert len(trials) == 6
    logged = [
        (t.number, int(key.removeprefix(attrs.TRIAL_DECISION_PREFIX)), value["seq"])
        for t in trials
        for key, value in t.system_attrs.items()
        if key.startswith(attrs.TRIAL_DECISION_PREFIX)
    ]
    seqs = [seq for _n, _step, seq in logged]
    assert len(seqs) == len(set(seqs)), "a decision sequence number was used twice"
    # In decision order: a trial's steps one after another, and (one trial at a time) every
    # decision of a trial before those of the next, across the resume and the restart.
    for t in trials:
        mine = sorted((step, seq) for n, step, seq in logged if n == t.number)
        assert [seq for _step, seq in mine] == sorted(seq for _step, seq in mine), t.number
    by_trial = [
        [seq for n, _step, seq in logged if n == t.number] for t in trials if t.intermediate_values
    ]
    for before, after in itertools.pairwise(by_trial):
        assert max(before) < min(after)
