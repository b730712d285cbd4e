"""A small Python client of molhpo.v1.StudyService.

Every call has a deadline; statuses come back as molhpo's typed errors
(``molhpo.contract.errors.InvalidArgument`` for INVALID_ARGUMENT, and so on).

    >>> from molhpo.client import MolhpoClient
    >>> with MolhpoClient("127.0.0.1:50051") as c:
    ...     c.start_study("examples/freesolv_gin.yaml")
    ...     for event in c.watch("freesolv-gin"): ...
    ...     best = c.best_trial("freesolv-gin")

A secured coordinator needs a bearer token and/or TLS:

    >>> MolhpoClient("coord.example:50051", token=token, tls_ca="ca.pem")
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc

from molhpo import security, studyfile
from molhpo.contract.errors import error_from_rpc
from molhpo.v1 import study_pb2, study_pb2_grpc

T = TypeVar("T")

StudyLike = study_pb2.StartStudyRequest | Mapping[str, Any] | str | Path


def to_request(study: StudyLike) -> study_pb2.StartStudyRequest:
    """A StartStudyRequest from a request, a study-file dict, or a YAML path."""
    if isinstance(study, study_pb2.StartStudyRequest):
        return study
    if isinstance(study, Mapping):
        return studyfile.from_dict(study)
    return studyfile.load(study)


class MolhpoClient:
    """Talks to a coordinator.

    ``token``: bearer token sent with every call (coordinators with ``auth_tokens``).
    ``tls_ca``: CA file that signs the coordinator's certificate (TLS on); ``tls_client_cert``
    and ``tls_client_key``: own certificate for mutual TLS (TLS on, system roots when no CA);
    ``tls_server_name``: name to check the certificate against instead of the address's host.
    Files are read once, here; ``tls`` passes PEM bytes already read instead. Nothing given:
    plaintext without a token, as on a local stack.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        timeout_s: float = 30.0,
        *,
        token: str = "",
        tls_ca: str | Path = "",
        tls_client_cert: str | Path = "",
        tls_client_key: str | Path = "",
        tls_server_name: str = "",
        tls: security.ClientTLS | None = None,
    ) -> None:
        self.address = address
        self._timeout = timeout_s
        if tls is None:
            tls = security.ClientTLS.from_paths(
                tls_ca, tls_client_cert, tls_client_key, tls_server_name
            )
        self._channel = security.open_channel(address, tls, token.strip())
        self._stub = study_pb2_grpc.StudyServiceStub(self._channel)
        self._predict = study_pb2_grpc.PredictServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"MolhpoClient({self.address!r})"

    def __enter__(self) -> MolhpoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, method: Any, request: Any, timeout_s: float | None = None) -> Any:
        try:
            return method(request, timeout=timeout_s or self._timeout)
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def validate_study(self, study: StudyLike) -> study_pb2.ValidateStudyResponse:
        """The request as the coordinator would run it and what its data holds; raises
        InvalidArgument when bad."""
        return self._call(self._stub.ValidateStudy, to_request(study))

    def start_study(self, study: StudyLike) -> study_pb2.StudyInfo:
        """Start a study from a request, a dict or a YAML path."""
        return self._call(self._stub.StartStudy, to_request(study))

    def get_study(self, name: str) -> study_pb2.StudyInfo:
        """A study's state, counts and best trial."""
        return self._call(
            self._stub.GetStudy,
            study_pb2.GetStudyRequest(name=name),
        )

    def list_studies(self) -> list[study_pb2.StudyInfo]:
        """Every study in the store."""
        return list(self._call(self._stub.ListStudies, study_pb2.ListStudiesRequest()).studies)

    def stop_study(self, name: str, cancel_running: bool = False) -> study_pb2.StudyInfo:
        """Stop dispatching a study's trials."""
        return self._call(
            self._stub.StopStudy,
            study_pb2.StopStudyRequest(name=name, cancel_running=cancel_running),
        )

    def list_trials(self, name: str) -> list[study_pb2.TrialInfo]:
        """A study's trials in number order."""
        return list(
            self._call(self._stub.ListTrials, study_pb2.ListTrialsRequest(name=name)).trials
        )

    def resume_study(self, name: str, n_trials: int = 0) -> study_pb2.StudyInfo:
        """Continue a stopped or finished study until it has ``n_trials`` (0: as started)."""
        return self._call(
            self._stub.ResumeStudy, study_pb2.ResumeStudyRequest(name=name, n_trials=n_trials)
        )

    def delete_study(self, name: str) -> None:
        """Delete a study that does not run, with its checkpoints."""
        self._call(self._stub.DeleteStudy, study_pb2.DeleteStudyRequest(name=name))

    def refine_study(
        self, parent: str, name: str = "", percent: float = 0.0, n_trials: int = 0
    ) -> study_pb2.StudyInfo:
        """Start a follow-up study close to the parent's best trial."""
        return self._call(
            self._stub.RefineStudy,
            study_pb2.RefineStudyRequest(
                parent=parent, name=name, percent=percent, n_trials=n_trials
            ),
        )

    def evaluate_study(
        self,
        name: str,
        *,
        top_k: int = 0,
        seeds: int = 0,
        skip_default: bool = False,
        max_epochs: int = 0,
        evaluation_name: str = "",
    ) -> study_pb2.StudyInfo:
        """Retrain the top-k configurations with several seeds (an evaluation study)."""
        return self._call(
            self._stub.EvaluateStudy,
            study_pb2.EvaluateStudyRequest(
                name=name,
                top_k=top_k,
                seeds=seeds,
                skip_default=skip_default,
                max_epochs=max_epochs,
                evaluation_name=evaluation_name,
            ),
        )

    def start_race(self, request: study_pb2.StartRaceRequest) -> study_pb2.RaceInfo:
        """Run several algorithm set-ups on one workload."""
        return self._call(self._stub.StartRace, request)

    def get_race(self, name: str) -> study_pb2.RaceInfo:
        """A race's table."""
        return self._call(self._stub.GetRace, study_pb2.GetRaceRequest(name=name))

    def get_report(self, name: str) -> study_pb2.GetReportResponse:
        """A study's report (Markdown, JSON, PNG plots)."""
        return self._call(
            self._stub.GetReport, study_pb2.GetReportRequest(name=name), timeout_s=300.0
        )

    def list_capabilities(
        self, timeout_s: float | None = None
    ) -> study_pb2.ListCapabilitiesResponse:
        """What studies can use: the registered trainers' model families, data sets and file
        formats, and the coordinator's samplers and pruners."""
        return self._call(
            self._stub.ListCapabilities, study_pb2.ListCapabilitiesRequest(), timeout_s=timeout_s
        )

    def predict(self, study: str, smiles: list[str], top_k: int = 1) -> study_pb2.PredictResponse:
        """Predictions of a study's best model (or the average of its top-k)."""
        return self._call(
            self._predict.Predict,
            study_pb2.PredictRequest(study=study, smiles=smiles, top_k=top_k),
            timeout_s=300.0,
        )

    def best_trial(self, name: str) -> study_pb2.TrialInfo | None:
        """The best complete trial, or None when there is none yet."""
        info = self.get_study(name)
        return info.best_trial if info.HasField("best_trial") else None

    def watch(
        self, name: str, after_sequence: int = 0, timeout_s: float | None = None
    ) -> Iterator[study_pb2.StudyEvent]:
        """A study's events until it ends (or ``timeout_s`` passes: DeadlineExceeded)."""
        try:
            yield from self._stub.WatchStudy(
                study_pb2.WatchStudyRequest(name=name, after_sequence=after_sequence),
                timeout=timeout_s,
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def wait(self, name: str, timeout_s: float) -> study_pb2.StudyInfo:
        """Block until the study ends; its final state."""
        for _ in self.watch(name, timeout_s=timeout_s):
            pass
        return self.get_study(name)
