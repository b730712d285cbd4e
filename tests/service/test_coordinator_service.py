"""StudyService on one real coordinator server (port 0) with a real redis-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import RedisServer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from coordinator.server import CoordinatorServer, make_server
from coordinator.settings import CoordinatorSettings
from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.contract.errors import AlreadyExists, InvalidArgument, NotFound
from molhpo.local import wait_for_line
from molhpo.v1 import common_pb2, study_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "freesolv_gin.yaml"


@pytest.fixture
def coordinator(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> Iterator[CoordinatorServer]:
    settings = CoordinatorSettings(
        listen="127.0.0.1:0",
        redis_url=redis_server.url,
        storage_url=f"sqlite:///{tmp_path / 'studies.db'}",
        key_prefix=key_prefix,
        state_dir=tmp_path,
    )
    built = make_server(settings)
    built.start()
    yield built
    built.stop(grace_s=0)


@pytest.fixture
def client(coordinator: CoordinatorServer) -> Iterator[MolhpoClient]:
    with MolhpoClient(f"127.0.0.1:{coordinator.port}", timeout_s=10) as c:
        yield c


def base() -> study_pb2.StartStudyRequest:
    return studyfile.load(EXAMPLE)


def _edit(fn: Callable[[study_pb2.StartStudyRequest], Any]) -> study_pb2.StartStudyRequest:
    req = base()
    fn(req)
    return req


def _set_float(name: str, **kw: float) -> Callable[[study_pb2.StartStudyRequest], None]:
    def edit(req: study_pb2.StartStudyRequest) -> None:
        for p in req.search_space.params:
            if p.name == name:
                for k, v in kw.items():
                    setattr(p.float, k, v)

    return edit


def _set_int(name: str, **kw: int) -> Callable[[study_pb2.StartStudyRequest], None]:
    def edit(req: study_pb2.StartStudyRequest) -> None:
        for p in req.search_space.params:
            if p.name == name:
                for k, v in kw.items():
                    setattr(p.int, k, v)

    return edit


BAD_REQUESTS: list[tuple[str, study_pb2.StartStudyRequest, list[str]]] = [
    ("empty request", study_pb2.StartStudyRequest(), ["name", "empty"]),
    ("unknown model", _edit(lambda r: setattr(r, "model", "gin2")), ["model", "gin2", "mlp"]),
    (
        "unknown dataset",
        _edit(lambda r: setattr(r.dataset, "name", "tox21x")),
        ["dataset.name", "freesolv"],
    ),
    (
        "unknown sampler",
        _edit(lambda r: setattr(r.sampler, "name", "annealing")),
        ["sampler", "annealing", "tpe"],
    ),
    (
        "unknown pruner",
        _edit(lambda r: setattr(r.pruner, "name", "guess")),
        ["pruner", "guess", "hyperband"],
    ),
    (
        "empty search space",
        _edit(lambda r: r.search_space.ClearField("params")),
        ["search_space", "empty"],
    ),
    ("low > high", _edit(_set_float("dropout", low=0.3, high=0.1)), ["dropout", "low", "high"]),
    ("int low > high", _edit(_set_int("num_layers", low=5, high=2)), ["num_layers", "low"]),
    ("log with low <= 0", _edit(_set_float("lr", low=0.0)), ["lr", "log", "low > 0"]),
    ("trials <= 0", _edit(lambda r: setattr(r.budget, "n_trials", 0)), ["budget.n_trials"]),
    (
        "max epochs <= 0",
        _edit(lambda r: setattr(r.budget, "max_epochs", -1)),
        ["budget.max_epochs"],
    ),
    (
        "bad pruner option",
        _edit(lambda r: r.pruner.options.update({"reduction_factor": 1})),
        ["pruner.options.reduction_factor"],
    ),
    (
        "unknown sampler option",
        _edit(lambda r: r.sampler.options.update({"n_startup": 3})),
        ["n_startup", "valid options"],
    ),
]


@pytest.mark.parametrize(
    ("case", "request_", "words"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_start_study_is_invalid_argument_naming_the_field(
    client: MolhpoClient, case: str, request_: study_pb2.StartStudyRequest, words: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as err:
        client.start_study(request_)
    for word in words:
        assert word in str(err.value), f"{case}: {word!r} not in {err.value}"
    # ValidateStudy says the same, and the coordinator keeps serving.
    with pytest.raises(InvalidArgument):
        client.validate_study(request_)
    assert client.list_studies() == []


def test_validate_fills_defaults(client: MolhpoClient) -> None:
    req = base()
    req.ClearField("pruner")
    req.objective.ClearField("direction")
    normalized = client.validate_study(req).normalized
    assert normalized.pruner.name == "hyperband"
    assert normalized.objective.direction == 1  # rmse is minimised


def test_unknown_study_is_not_found(client: MolhpoClient) -> None:
    with pytest.raises(NotFound, match="nope"):
        client.get_study("nope")


def test_duplicate_name_is_already_exists(client: MolhpoClient) -> None:
    req = base()
    req.name = "dup"
    client.start_study(req)
    with pytest.raises(AlreadyExists, match="dup"):
        client.start_study(req)
    # No trainer is registered: the study waits, it does not fail its trials.
    info = client.get_study("dup")
    assert info.state == common_pb2.STUDY_STATE_RUNNING
    assert info.n_failed == 0
    stopped = client.stop_study("dup")
    assert stopped.name == "dup"


def test_health_serving_and_reflection_lists_services(coordinator: CoordinatorServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{coordinator.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", "molhpo.v1.StudyService", "molhpo.v1.MembershipService"):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(ch)
        answers = refl.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for a in answers for s in a.list_services_response.service}
    assert {"molhpo.v1.StudyService", "molhpo.v1.MembershipService"} <= names


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _watch_until_not_serving(
    address: str, service: str, stop: Callable[[], None], still_up: Callable[[], bool]
) -> list[int]:
    """Watch ``service``'s health, call ``stop`` once it says SERVING, and return the statuses
    seen until NOT_SERVING. Fails if the server goes away first or if it is already down
    (``still_up`` false) when NOT_SERVING arrives."""
    seen: list[int] = []
    with grpc.insecure_channel(address) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(
            health_pb2.HealthCheckRequest(service=service), timeout=60
        )
        try:
            for resp in watch:
                seen.append(resp.status)
                if resp.status == SERVING and len(seen) == 1:
                    stop()
                elif resp.status == NOT_SERVING:
                    # Our open Watch holds the server in its grace period: it is still up.
                    assert still_up(), "NOT_SERVING came only after the server had stopped"
                    break
        except grpc.RpcError as err:
            pytest.fail(
                f"{service!r}: the watch ended with {err.code()} after {seen}, never NOT_SERVING"
            )
        finally:
            watch.cancel()  # ends the grace period at once
    return seen


@pytest.mark.parametrize("service", ["", "molhpo.v1.StudyService"], ids=["server", "study"])
def test_stop_marks_not_serving(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path, service: str
) -> None:
    """CoordinatorServer.stop (what SIGTERM runs) tells a client watching health NOT_SERVING
    while the server still answers, before its grace period ends."""
    built = make_server(
        CoordinatorSettings(
            listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix=key_prefix,
            storage_url=f"sqlite:///{tmp_path / 's.db'}",
            state_dir=tmp_path,
        )
    )
    built.start()
    stopper = threading.Thread(target=built.stop, kwargs={"grace_s": 30.0})
    try:
        seen = _watch_until_not_serving(
            f"127.0.0.1:{built.port}", service, stopper.start, stopper.is_alive
        )
    finally:
        if stopper.ident is None:  # never got as far as stopping
            built.stop(grace_s=0)
        else:
            stopper.join(60)
    assert seen == [SERVING, NOT_SERVING]
    assert not stopper.is_alive()


def test_sigterm_marks_not_serving_before_the_process_exits(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    """A real coordinator process: SIGTERM turns health to NOT_SERVING for a watching client,
    and the process exits cleanly once its last call ended."""
    log_path = tmp_path / "coordinator.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MOLHPO_COORDINATOR_GRACE_S": "30"}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "molhpo",
                "coordinator",
                "--listen",
                "127.0.0.1:0",
                "--redis-url",
                redis_server.url,
                "--key-prefix",
                key_prefix,
                "--state-dir",
                str(tmp_path),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=tmp_path,
        )
    try:
        line = wait_for_line(log_path, "coordinator listening on", proc, 120)
        address = line.rsplit(" ", 1)[-1]
        seen = _watch_until_not_serving(
            address,
            "",
            lambda: proc.send_signal(signal.SIGTERM),
            lambda: proc.poll() is None,
        )
        assert seen == [SERVING, NOT_SERVING]
        assert proc.wait(60) == 0, log_path.read_text(errors="replace")[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_trainer_silent_past_its_heartbeat_timeout_is_forgotten(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> None:
    from molhpo.v1 import trainer_pb2, trainer_pb2_grpc

    built = make_server(
        CoordinatorSettings(
            listen="127.0.0.1:0",
            redis_url=redis_server.url,
            key_prefix=key_prefix,
            storage_url=f"sqlite:///{tmp_path / 's.db'}",
            state_dir=tmp_path,
            heartbeat_interval_s=0.1,
            heartbeat_timeout_s=0.5,
        )
    )
    built.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{built.port}") as ch:
            stub = trainer_pb2_grpc.MembershipServiceStub(ch)
            info = trainer_pb2.TrainerInfo(trainer_id="t1", address="127.0.0.1:1", slots=2)
            resp = stub.RegisterTrainer(trainer_pb2.RegisterTrainerRequest(info=info), timeout=5)
            assert resp.heartbeat_timeout_seconds == 0.5
            assert [t.trainer_id for t in built.core.pool.snapshot()] == ["t1"]
            assert stub.Heartbeat(trainer_pb2.HeartbeatRequest(trainer_id="t1"), timeout=5).known
            deadline = time.monotonic() + 10
            while built.core.pool.snapshot() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert built.core.pool.snapshot() == []
            # A forgotten trainer is told to register again.
            hb = stub.Heartbeat(trainer_pb2.HeartbeatRequest(trainer_id="t1"), timeout=5)
            assert not hb.known
            with pytest.raises(grpc.RpcError) as err:
                stub.RegisterTrainer(
                    trainer_pb2.RegisterTrainerRequest(
                        info=trainer_pb2.TrainerInfo(trainer_id="t2")
                    ),
                    timeout=5,
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        built.stop(grace_s=0)


def test_start_study_is_idempotent_by_request_id(client: MolhpoClient) -> None:
    req = base()
    req.name = "idem"
    req.request_id = "b8f2c1"
    first = client.start_study(req)
    again = client.start_study(req)  # a client retry after a lost answer
    assert again.name == first.name == "idem"
    assert len(client.list_studies()) == 1
    req.request_id = "another"
    with pytest.raises(AlreadyExists):
        client.start_study(req)
    client.stop_study("idem")
