"""Thin gRPC servicers: protos to domain objects, a call on the core, and back."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from coordinator import convert
from coordinator.capabilities import capabilities
from coordinator.core import Coordinator
from coordinator.membership import TrainerRecord
from coordinator.spec import ComponentSpec
from molhpo.contract.errors import InvalidArgument
from molhpo.v1 import common_pb2, study_pb2, study_pb2_grpc, trainer_pb2, trainer_pb2_grpc

# WatchStudy checks this often whether the client went away.
_WATCH_POLL_S = 1.0


class StudyServicer(study_pb2_grpc.StudyServiceServicer):
    """molhpo.v1.StudyService over a Coordinator."""

    def __init__(self, core: Coordinator) -> None:
        self._core = core

    def ValidateStudy(
        self, request: study_pb2.StartStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.ValidateStudyResponse:
        spec = convert.spec_from_proto(request)
        summary = self._core.validate(spec)
        return study_pb2.ValidateStudyResponse(
            normalized=convert.spec_to_proto(spec), dataset=convert.summary_to_proto(summary)
        )

    def StartStudy(
        self, request: study_pb2.StartStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.StudyInfo:
        status = self._core.start_study(convert.spec_from_proto(request))
        return convert.status_to_proto(status)

    def GetStudy(
        self, request: study_pb2.GetStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.StudyInfo:
        return convert.status_to_proto(self._core.status(request.name))

    def ListStudies(
        self, request: study_pb2.ListStudiesRequest, context: grpc.ServicerContext
    ) -> study_pb2.ListStudiesResponse:
        return study_pb2.ListStudiesResponse(
            studies=[
                convert.status_to_proto(s, with_request=False) for s in self._core.list_studies()
            ]
        )

    def StopStudy(
        self, request: study_pb2.StopStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.StudyInfo:
        return convert.status_to_proto(self._core.stop_study(request.name, request.cancel_running))

    def ListTrials(
        self, request: study_pb2.ListTrialsRequest, context: grpc.ServicerContext
    ) -> study_pb2.ListTrialsResponse:
        status = self._core.status(request.name)
        return study_pb2.ListTrialsResponse(
            trials=[convert.trial_to_proto(t) for t in status.trials]
        )

    def WatchStudy(
        self, request: study_pb2.WatchStudyRequest, context: grpc.ServicerContext
    ) -> Iterator[study_pb2.StudyEvent]:
        seen = request.after_sequence
        while context.is_active():
            events, finished = self._core.watch(request.name, seen, _WATCH_POLL_S)
            for e in events:
                msg = convert.event_to_proto(e)
                if e.kind.name == "STUDY_FINISHED" or (
                    e.kind.name.startswith("TRIAL_") and e.kind.name != "TRIAL_STARTED"
                ):
                    msg.study.CopyFrom(
                        convert.status_to_proto(self._core.status(request.name), False)
                    )
                seen = e.sequence
                yield msg
            if finished and not events:
                if seen == request.after_sequence and self._core.runner(request.name) is None:
                    # A study this coordinator does not run: one final snapshot.
                    yield study_pb2.StudyEvent(
                        kind=study_pb2.StudyEvent.KIND_STUDY_FINISHED,
                        study=convert.status_to_proto(self._core.status(request.name), False),
                    )
                return

    def ResumeStudy(
        self, request: study_pb2.ResumeStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.StudyInfo:
        return convert.status_to_proto(self._core.resume_study(request.name, request.n_trials))

    def DeleteStudy(
        self, request: study_pb2.DeleteStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.DeleteStudyResponse:
        self._core.delete_study(request.name)
        return study_pb2.DeleteStudyResponse()

    def RefineStudy(
        self, request: study_pb2.RefineStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.StudyInfo:
        status = self._core.refine_study(
            request.parent, request.name, request.percent, request.n_trials
        )
        return convert.status_to_proto(status)

    def EvaluateStudy(
        self, request: study_pb2.EvaluateStudyRequest, context: grpc.ServicerContext
    ) -> study_pb2.StudyInfo:
        status = self._core.evaluate_study(
            request.name,
            top_k=request.top_k,
            seeds=request.seeds,
            include_default=not request.skip_default,
            max_epochs=request.max_epochs,
            evaluation_name=request.evaluation_name,
        )
        return convert.status_to_proto(status)

    def StartRace(
        self, request: study_pb2.StartRaceRequest, context: grpc.ServicerContext
    ) -> study_pb2.RaceInfo:
        if not request.name:
            raise InvalidArgument("name: is empty; name the race")
        base = convert.spec_from_proto(request.base)
        entries = [
            (
                e.label,
                ComponentSpec(e.sampler.name or "tpe", convert.struct_to_dict(e.sampler.options)),
                ComponentSpec(e.pruner.name or "none", convert.struct_to_dict(e.pruner.options)),
            )
            for e in request.entries
        ]
        self._core.start_race(request.name, base, entries, request.concurrent, request.target_value)
        return self._race(request.name)

    def GetRace(
        self, request: study_pb2.GetRaceRequest, context: grpc.ServicerContext
    ) -> study_pb2.RaceInfo:
        return self._race(request.name)

    def _race(self, name: str) -> study_pb2.RaceInfo:
        rows, target, finished = self._core.race(name)
        return convert.race_to_proto(
            name, rows, target, finished, {r.study: self._core.status(r.study) for r in rows}
        )

    def GetReport(
        self, request: study_pb2.GetReportRequest, context: grpc.ServicerContext
    ) -> study_pb2.GetReportResponse:
        r = self._core.report(request.name)
        return study_pb2.GetReportResponse(
            markdown=r.markdown,
            json=r.json,
            best_params_json=r.best_params_json,
            plots=[study_pb2.ReportPlot(name=n, png=b) for n, b in sorted(r.plots.items())],
        )

    def ListCapabilities(
        self, request: study_pb2.ListCapabilitiesRequest, context: grpc.ServicerContext
    ) -> study_pb2.ListCapabilitiesResponse:
        return convert.capabilities_to_proto(capabilities(self._core.pool.snapshot()))


class PredictServicer(study_pb2_grpc.PredictServiceServicer):
    """molhpo.v1.PredictService: forwards to a trainer, which loads the models."""

    def __init__(self, core: Coordinator) -> None:
        self._core = core

    def Predict(
        self, request: study_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> study_pb2.PredictResponse:
        values, members, numbers, units = self._core.predict(
            request.study, list(request.smiles), request.top_k
        )
        resp = study_pb2.PredictResponse(values=values, units=units, trial_numbers=numbers)
        if len(members) > 1:
            resp.members.extend(common_pb2.Values(values=m) for m in members)
        return resp


class MembershipServicer(trainer_pb2_grpc.MembershipServiceServicer):
    """molhpo.v1.MembershipService: trainers join and stay alive."""

    def __init__(
        self, core: Coordinator, heartbeat_interval_s: float, heartbeat_timeout_s: float
    ) -> None:
        self._core = core
        self._interval = heartbeat_interval_s
        self._timeout = heartbeat_timeout_s

    def RegisterTrainer(
        self, request: trainer_pb2.RegisterTrainerRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.RegisterTrainerResponse:
        i = request.info
        from molhpo.contract.errors import InvalidArgument

        if not i.trainer_id or not i.address or i.slots <= 0:
            raise InvalidArgument(
                "info: trainer_id, address and slots > 0 are required to register"
            )
        self._core.pool.register(
            TrainerRecord(
                trainer_id=i.trainer_id,
                address=i.address,
                slots=i.slots,
                device=i.device,
                models=tuple(i.models),
                datasets=tuple(i.datasets),
                last_seen=0.0,
                file_formats=tuple(i.file_formats),
            )
        )
        return trainer_pb2.RegisterTrainerResponse(
            heartbeat_interval_seconds=self._interval, heartbeat_timeout_seconds=self._timeout
        )

    def Heartbeat(
        self, request: trainer_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> trainer_pb2.HeartbeatResponse:
        known = self._core.pool.heartbeat(request.trainer_id, request.running_trial_ids)
        return trainer_pb2.HeartbeatResponse(known=known)
