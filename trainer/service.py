"""Thin gRPC servicer of molhpo.v1.TrainerService over a TrialWorker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import torch

from molhpo.contract.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from molhpo.datasets.user import resolve_confined
from molhpo.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc
from trainer.predict import Ensemble, load_predictor
from trainer.worker import TrialWorker


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    """Accepts trials at once or refuses them; the work runs in the worker's threads.
    Predictions run on ``device``, the trainer's resolved device, as trials do."""

    def __init__(
        self,
        worker: TrialWorker,
        info: Callable[[], trainer_pb2.TrainerInfo],
        artifact_root: Path | None = None,
        *,
        device: str,
    ) -> None:
        self._device = device
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
        try:
            ensemble = Ensemble([load_predictor(p, device=self._device) for p in paths])
            members = ensemble.predict_members(list(request.smiles))
        except torch.OutOfMemoryError as err:
            raise ResourceExhausted(
                f"out of memory on {self._device} while predicting {len(request.smiles)} "
                f"SMILES with {len(paths)} models ({(str(err).splitlines() or ['-'])[0]}); retry "
                "later, "
                "when fewer trials train here, or with fewer SMILES per call"
            ) from None
        return trainer_pb2.CheckpointPredictResponse(
            values=[float(v) for v in members.mean(axis=0)],
            members=[common_pb2.Values(values=[float(v) for v in row]) for row in members],
        )

    def GetTrainerInfo(
        self, request: trainer_pb2.GetTrainerInfoRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.TrainerInfo:
        return self._info()
