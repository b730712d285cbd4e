"""The coordinator's report consumer loses nothing, on a real redis-server and a real store.

Its trials are the running trials of a study a previous coordinator left (taken back at
start, as after a restart), so no trainer is needed: the tests put epoch reports into the
report stream as trainers do. Faults are real: Redis at its memory limit refusing writes,
redis-server stopped, SQLite triggers making the store refuse or fail a write.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import redis
from conftest import RedisServer
from redis import Redis

from coordinator import convert
from coordinator.core import Coordinator
from coordinator.events import EventKind
from coordinator.membership import TrainerPool
from coordinator.metrics import CoordinatorMetrics
from coordinator.optimizer.search_space import suggest
from coordinator.spec import StudySpec
from coordinator.trainer_client import TrainerClient
from molhpo import studyfile
from molhpo.contract import attrs
from molhpo.v1 import common_pb2
from storage import reports
from storage.keys import RedisKeys
from storage.owned_cache import OwnedStudyStorage
from storage.redis_conn import connect
from storage.reports import ReportReader
from storage.study_store import create_storage

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "synthetic.yaml"


@dataclass
class Rig:
    """A store holding a running study and its running trials, and a coordinator for it."""

    redis: RedisServer
    keys: RedisKeys
    path: Path
    spec: StudySpec
    trials: list[tuple[int, int]]  # (trial id, number)
    coordinator: Coordinator

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def client(self) -> Redis:
        return self.redis.client()

    def epoch(self, which: int, step: int) -> common_pb2.TrialReport:
        trial_id, number = self.trials[which]
        return common_pb2.TrialReport(
            study_name=self.spec.name,
            trial_id=trial_id,
            trial_number=number,
            attempt=1,
            trainer_id="trainer-x",
            epoch=common_pb2.EpochReport(
                step=step, valid=common_pb2.Metrics(values={"rmse": 3.0 - 0.1 * step})
            ),
        )

    def send(self, which: int, steps: range) -> None:
        """Epoch reports into the stream, as the trial's trainer sends them."""
        client = self.client()
        for step in steps:
            reports.publish(client, self.keys, self.epoch(which, step))

    def stored(self, which: int) -> optuna.trial.FrozenTrial:
        """The trial as the store holds it (read through a storage of its own)."""
        return optuna.storages.RDBStorage(self.url).get_trial(self.trials[which][0])

    def unacknowledged(self) -> int:
        return int(self.client().xpending(self.keys.reports, self.keys.report_group)["pending"])

    def steps_in_stream(self) -> set[int]:
        """Steps of the epoch reports still in the stream (acknowledged ones are deleted)."""
        out = set()
        for _id, fields in self.redis.stream(self.keys.reports):
            report = common_pb2.TrialReport()
            report.ParseFromString(fields[b"r"])
            out.add(report.epoch.step)
        return out

    def acknowledged_all(self) -> bool:
        client = self.client()
        return self.unacknowledged() == 0 and client.xlen(self.keys.reports) == 0

    def drain(self) -> None:
        """Wait until the coordinator's store writer has stored what is queued."""
        storage = self.coordinator.storage
        assert isinstance(storage, OwnedStudyStorage)
        assert storage.drain(10)

    def sql(self, statement: str) -> None:
        with sqlite3.connect(self.path) as con:
            con.execute(statement)


def _wait(what: str, ok: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _make_rig(server: RedisServer, prefix: str, tmp_path: Path, n: int) -> Rig:
    req = studyfile.load(EXAMPLE)
    req.name = "consumer"
    req.budget.n_trials = n  # every trial is running already: nothing more to dispatch
    req.budget.max_epochs = 9
    spec = convert.spec_from_proto(req)
    path = tmp_path / "studies.db"
    url = f"sqlite:///{path}"
    storage = create_storage(url, sync=False)
    study = optuna.create_study(storage=storage, study_name=spec.name, direction="minimize")
    sid = study._study_id
    storage.set_study_system_attr(sid, attrs.STUDY_STATE, "RUNNING")
    storage.set_study_system_attr(
        sid, attrs.STUDY_REQUEST, convert.request_to_json(convert.spec_to_proto(spec))
    )
    trials = []
    for _ in range(n):
        trial = study.ask()
        suggest(trial, spec.params)
        sent = common_pb2.TrialSpec(
            study_name=spec.name, trial_id=trial._trial_id, trial_number=trial.number, attempt=1
        )
        storage.set_trial_system_attr(
            trial._trial_id, attrs.TRIAL_SPEC, base64.b64encode(sent.SerializeToString()).decode()
        )
        trials.append((trial._trial_id, trial.number))
    keys = RedisKeys(prefix)
    coordinator = Coordinator(
        storage=create_storage(url, sync=False),
        redis_client=connect(server.url, socket_timeout=2.0),
        keys=keys,
        # Long leases: the trials' trainer never shows up, and they must not be re-run.
        pool=TrainerPool(60.0, lease_s=600.0),
        trainers=TrainerClient(timeout_s=2.0),
        metrics=CoordinatorMetrics(),
    )
    return Rig(server, keys, path, spec, trials, coordinator)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop or to fill up."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _decisions_without_redis_key(rig: Rig) -> list[str]:
    """Decisions the store logs whose Redis decision is missing or different."""
    client = rig.client()
    missing = []
    for trial_id, number in rig.trials:
        trial = optuna.storages.RDBStorage(rig.url).get_trial(trial_id)
        for key, value in trial.system_attrs.items():
            if not key.startswith(attrs.TRIAL_DECISION_PREFIX):
                continue
            step = key.removeprefix(attrs.TRIAL_DECISION_PREFIX)
            raw = client.hget(rig.keys.decisions(trial_id), step)
            want = "prune" if value["prune"] else "continue"
            if raw is None or (raw.decode() if isinstance(raw, bytes) else raw) != want:
                missing.append(f"trial {number} step {step}: store {want}, Redis {raw!r}")
    return missing


def _decision_steps(trial: optuna.trial.FrozenTrial) -> set[int]:
    return {
        int(k.removeprefix(attrs.TRIAL_DECISION_PREFIX))
        for k in trial.system_attrs
        if attrs.TRIAL_DECISION_PREFIX in k
    }


def test_decisions_redis_refuses_are_neither_stored_nor_acknowledged(
    own_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    rig = _make_rig(own_redis, key_prefix, tmp_path, n=2)
    client = rig.client()
    ReportReader(client, rig.keys, "coordinator").ensure_group()
    rig.send(0, range(1, 5))
    rig.send(1, range(1, 4))
    # Redis at its memory limit: it still hands out and acknowledges reports, but refuses the
    # decisions (and would refuse any acknowledgement's effect on memory: none is asked).
    client.config_set("maxmemory", 1)
    try:
        rig.coordinator.start()
        _wait("the reports were delivered", lambda: rig.unacknowledged() == 7)
        time.sleep(2.0)  # the consumer tries again and again
        assert rig.unacknowledged() == 7
        for which in (0, 1):
            stored = rig.stored(which)
            assert stored.intermediate_values == {}
            assert _decision_steps(stored) == set()
            # Undone in memory too: deciding again starts from what is stored.
            cached = rig.coordinator.storage.get_trial(rig.trials[which][0])
            assert cached.intermediate_values == {}
            assert client.exists(rig.keys.decisions(rig.trials[which][0])) == 0

        client.config_set("maxmemory", 0)  # Redis takes writes again
        _wait("every report was acknowledged", rig.acknowledged_all)
        for which, steps in ((0, {1, 2, 3, 4}), (1, {1, 2, 3})):
            stored = rig.stored(which)
            assert set(stored.intermediate_values) == steps
            assert _decision_steps(stored) == steps
        assert _decisions_without_redis_key(rig) == []
    finally:
        client.config_set("maxmemory", 0)
        rig.coordinator.close(2.0)


def test_a_batch_met_by_a_stopped_redis_writes_nothing_and_is_handled_again(
    own_redis: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    rig = _make_rig(own_redis, key_prefix, tmp_path, n=2)
    batch: list[object] = [rig.epoch(0, 1), rig.epoch(1, 1), rig.epoch(0, 2), rig.epoch(1, 2)]
    rig.coordinator.start()
    try:
        own_redis.stop()
        with pytest.raises(redis.RedisError):
            rig.coordinator.consumer.handle_batch(batch)
        rig.drain()
        for which in (0, 1):
            assert rig.stored(which).intermediate_values == {}
            assert _decision_steps(rig.stored(which)) == set()

        own_redis.start()  # the same port, empty
        rig.coordinator.consumer.handle_batch(batch)
        rig.drain()
        for which in (0, 1):
            assert set(rig.stored(which).intermediate_values) == {1, 2}
            assert _decision_steps(rig.stored(which)) == {1, 2}
        assert _decisions_without_redis_key(rig) == []
    finally:
        rig.coordinator.close(2.0)


def test_a_store_write_refused_for_good_fails_its_trial_and_the_rest_goes_on(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    rig = _make_rig(redis_server, key_prefix, tmp_path, n=2)
    bad_id, bad_number = rig.trials[0]
    rig.sql(
        "CREATE TRIGGER refuse BEFORE INSERT ON trial_intermediate_values "
        f"WHEN NEW.trial_id = {bad_id} AND NEW.step = 2 BEGIN SELECT zeroblob(2000000000); END"
    )
    rig.coordinator.start()
    try:
        rig.send(0, range(1, 4))
        rig.send(1, range(1, 3))
        runner = rig.coordinator.runner(rig.spec.name)
        assert runner is not None
        _wait("the trial stopped running", lambda: not runner.owns(bad_id))
        _wait("every report was acknowledged", rig.acknowledged_all)
        bad = rig.stored(0)
        assert bad.state == optuna.trial.TrialState.FAIL
        assert bad.user_attrs["failure_class"] == "store"
        assert "the value of step 2" in bad.user_attrs["failure_reason"]
        assert "DataError" in bad.user_attrs["failure_reason"]
        assert bad.intermediate_values == {1: pytest.approx(2.9)}
        good = rig.stored(1)
        assert good.state == optuna.trial.TrialState.RUNNING
        assert set(good.intermediate_values) == {1, 2}
        assert runner.owns(rig.trials[1][0])
        events, _finished = runner.events.after(0, 0.0)
        failed = [e for e in events if e.kind is EventKind.TRIAL_FAILED]
        assert [e.trial_number for e in failed] == [bad_number]
        assert "store" in failed[0].message
    finally:
        rig.coordinator.close(2.0)


def test_reports_whose_writes_the_store_cannot_take_yet_wait_unacknowledged(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    rig = _make_rig(redis_server, key_prefix, tmp_path, n=1)
    trial_id, _number = rig.trials[0]
    rig.sql(
        "CREATE TRIGGER away BEFORE INSERT ON trial_intermediate_values "
        f"WHEN NEW.trial_id = {trial_id} AND NEW.step = 2 "
        "BEGIN SELECT abs(-9223372036854775808); END"
    )
    rig.coordinator.start()
    try:
        rig.send(0, range(1, 4))
        _wait("step 1 was stored", lambda: set(rig.stored(0).intermediate_values) == {1})
        time.sleep(1.5)  # the writer tries step 2 again and again
        assert set(rig.stored(0).intermediate_values) == {1}
        (gauge,) = rig.coordinator.metrics.store_stalled_seconds.collect()
        stalled = gauge.samples[0].value
        assert stalled >= 1.0, "the stalled-store gauge does not show the wait"
        # What is not stored stays in the stream, delivered and unacknowledged.
        assert {2, 3} <= rig.steps_in_stream()
        assert rig.unacknowledged() == len(rig.steps_in_stream())
        rig.sql("DROP TRIGGER away")
        _wait("every report was acknowledged", rig.acknowledged_all)
        stored = rig.stored(0)
        assert stored.state == optuna.trial.TrialState.RUNNING
        assert set(stored.intermediate_values) == {1, 2, 3}
        (gauge,) = rig.coordinator.metrics.store_stalled_seconds.collect()
        assert gauge.samples[0].value == 0
    finally:
        rig.coordinator.close(2.0)
