"""Calls from the coordinator to trainers, each with a deadline, over TLS and with the
trainer token when configured."""

from __future__ import annotations

import threading

import grpc

from molhpo import security
from molhpo.contract.errors import error_from_rpc
from molhpo.v1 import common_pb2, trainer_pb2, trainer_pb2_grpc


class TrainerClient:
    """One channel per trainer address, reused across calls.

    ``tls`` (None: plaintext) verifies trainers' certificates and may show the coordinator's
    own; ``token`` (empty: none) goes with every call as ``authorization: Bearer``.
    """

    def __init__(
        self,
        timeout_s: float = 10.0,
        tls: security.ClientTLS | None = None,
        token: str = "",
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self._timeout = timeout_s
        self._tls = tls
        self._token = token
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}

    def __repr__(self) -> str:
        return f"TrainerClient(tls={self._tls is not None}, token={'set' if self._token else ''})"

    def _stub(self, address: str) -> trainer_pb2_grpc.TrainerServiceStub:
        with self._lock:
            ch = self._channels.get(address)
            if ch is None:
                ch = security.open_channel(address, self._tls, self._token, self._options)
                self._channels[address] = ch
        return trainer_pb2_grpc.TrainerServiceStub(ch)

    def run_trial(self, address: str, spec: common_pb2.TrialSpec) -> None:
        """Hand a trial to a trainer; raises the typed error it answered with."""
        try:
            self._stub(address).RunTrial(
                trainer_pb2.RunTrialRequest(spec=spec), timeout=self._timeout
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def cancel_trial(self, address: str, trial_id: int, reason: str) -> None:
        """Ask a trainer to stop a trial."""
        try:
            self._stub(address).CancelTrial(
                trainer_pb2.CancelTrialRequest(trial_id=trial_id, reason=reason),
                timeout=self._timeout,
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None

    def predict(
        self, address: str, checkpoints: list[str], smiles: list[str]
    ) -> tuple[list[float], list[list[float]]]:
        """Predictions of checkpoints on a trainer: (mean, per checkpoint)."""
        try:
            resp = self._stub(address).PredictWithCheckpoints(
                trainer_pb2.CheckpointPredictRequest(checkpoints=checkpoints, smiles=smiles),
                timeout=max(self._timeout, 120.0),
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from None
        return list(resp.values), [list(m.values) for m in resp.members]

    def close(self) -> None:
        """Close every channel."""
        with self._lock:
            for ch in self._channels.values():
                ch.close()
            self._channels.clear()
