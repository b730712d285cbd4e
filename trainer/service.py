"""Thin gRPC servicer of molhpo.v1.TrainerService over a TrialWorker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc

from molhpo.errors import FailedPrecondition, InvalidArgument
from molhpo.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from trainer.datasets.user import resolve_confined
from trainer.predict import Ensemble, load_predictor
from trainer.worker import TrialWorker


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """Accepts trials at once or refuses them; the work runs in the worker's threads."""

    def __init__(
        self,
        worker: TrialWorker,
        info: Callable[[], trainer_pb2.TrainerInfo],
        artifact_root: Path | None = None,
    ) -> None:
        self._worker = worker
        self._info = info
        self._artifact_root = artifact_root

    def RunTrial(
        self, request: trainer_pb2.RunTrialRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.RunTrialResponse:
        return trainer_pb2.RunTrialResponse(busy_slots=self._worker.submit(request.spec))

    def CancelTrial(
        self, request: trainer_pb2.CancelTrialRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.CancelTrialResponse:
        self._worker.cancel(request.trial_id, request.reason)
        return trainer_pb2.CancelTrialResponse()

    def PredictWithCheckpoints(
        self, request: trainer_pb2.CheckpointPredictRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.CheckpointPredictResponse:
        if self._artifact_root is None:
            raise FailedPrecondition("this trainer has no artifact store to load models from")
        if not request.checkpoints:
            raise InvalidArgument("checkpoints: is empty")
        paths = [resolve_confined(p, [self._artifact_root]) for p in request.checkpoints]
        members = Ensemble([load_predictor(p) for p in paths]).predict_members(list(request.smiles))
        return trainer_pb2.CheckpointPredictResponse(
            values=[float(v) for v in members.mean(axis=0)],
            members=[common_pb2.Values(values=[float(v) for v in row]) for row in members],
        )

    def GetTrainerInfo(
        self, request: trainer_pb2.GetTrainerInfoRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TrainerInfo:
        return self._info()
