"""TrainerService on one real trainer server (port 0) with a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from conftest import RedisServer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from molhpo.contract.errors import InvalidArgument, NotFound, ResourceExhausted, error_from_rpc
from molhpo.local import free_port
from molhpo.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from storage.keys import RedisKeys
from storage.reports import ReportReader
from trainer.server import TrainerServer, make_server
from trainer.settings import TrainerSettings


@pytest.fixture
def trainer(redis_server: RedisServer, key_prefix: str) -> Iterator[TrainerServer]:
    # No coordinator listens there: the trainer serves anyway and keeps trying to register.
    built = make_server(
        TrainerSettings(
            listen="127.0.0.1:0",
            coordinator=f"127.0.0.1:{free_port()}",
            redis_url=redis_server.url,
            key_prefix=key_prefix,
            slots=1,
            torch_threads=1,
            trainer_id="t-test",
        )
    )
    built.start()
    yield built
    built.stop(grace_s=5)


@pytest.fixture
def stub(trainer: TrainerServer) -> Iterator[trainer_pb2_grpc.TrainerServiceStub]:
    with grpc.insecure_channel(trainer.address) as ch:
        yield trainer_pb2_grpc.TrainerServiceStub(ch)


def spec(trial_id: int, model: str = "mlp", max_epochs: int = 200) -> common_pb2.TrialSpec:
    return common_pb2.TrialSpec(
        study_name="s",
        trial_id=trial_id,
        trial_number=trial_id,
        attempt=1,
        dataset=common_pb2.DatasetRef(name="freesolv"),
        model=model,
        max_epochs=max_epochs,
        objective=common_pb2.Objective(metric="rmse"),
    )


def call(fn: object, request: object) -> object:
    try:
        return fn(request, timeout=10)  # type: ignore[operator]
    except grpc.RpcError as err:
        raise error_from_rpc(err) from None


def test_unknown_model_is_invalid_argument(stub: trainer_pb2_grpc.TrainerServiceStub) -> None:
    with pytest.raises(InvalidArgument, match="gin2"):
        call(stub.RunTrial, trainer_pb2.RunTrialRequest(spec=spec(1, model="gin2")))


def test_full_trainer_answers_resource_exhausted_and_cancel_reports_failure(
    stub: trainer_pb2_grpc.TrainerServiceStub,
    trainer: TrainerServer,
    redis_server: RedisServer,
    key_prefix: str,
) -> None:
    keys = RedisKeys(key_prefix)
    reader = ReportReader(redis_server.client(), keys, "test")
    reader.ensure_group()
    resp = call(stub.RunTrial, trainer_pb2.RunTrialRequest(spec=spec(7)))
    assert resp.busy_slots == 1  # type: ignore[attr-defined]
    with pytest.raises(ResourceExhausted, match="slots"):
        call(stub.RunTrial, trainer_pb2.RunTrialRequest(spec=spec(8)))
    info = call(stub.GetTrainerInfo, trainer_pb2.GetTrainerInfoRequest())
    assert list(info.running_trial_ids) == [7]  # type: ignore[attr-defined]
    with pytest.raises(NotFound):
        call(stub.CancelTrial, trainer_pb2.CancelTrialRequest(trial_id=99))
    call(stub.CancelTrial, trainer_pb2.CancelTrialRequest(trial_id=7, reason="test says stop"))
    deadline = time.monotonic() + 60
    result = None
    while result is None and time.monotonic() < deadline:
        for entry in reader.read(block_ms=500):
            assert entry.report is not None
            if entry.report.WhichOneof("body") == "result":
                result = entry.report.result
    assert result is not None
    assert result.state == common_pb2.TRIAL_STATE_FAIL
    assert result.failure_class == "cancelled"
    assert result.failure_reason == "test says stop"
    # The slot is free again.
    deadline = time.monotonic() + 10
    while trainer.worker.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert trainer.worker.busy() == 0


def test_health_serving(trainer: TrainerServer) -> None:
    with grpc.insecure_channel(trainer.address) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="molhpo.v1.TrainerService"), timeout=5
        )
    assert resp.status == health_pb2.HealthCheckResponse.SERVING
