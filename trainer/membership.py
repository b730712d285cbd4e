"""Joining the coordinator's pool and staying in it: register, then heartbeat.

If the coordinator is not up yet, or restarts and forgets this trainer, the trainer registers
again, with backoff; it never gives up while it runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc

from molhpo import security
from molhpo.v1 import trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)

_CALL_TIMEOUT_S = 5.0


class MembershipAgent:
    """A background thread that keeps one trainer registered."""

    def __init__(
        self,
        coordinator: str,
        info: Callable[[], trainer_pb2.TrainerInfo],
        tls: security.ClientTLS | None = None,
        token: str = "",
    ) -> None:
        """``tls`` (None: plaintext) verifies the coordinator's certificate and may show the
        trainer's own; ``token`` (the trainer token) goes with every registration/heartbeat."""
        self._coordinator = coordinator
        self._info = info
        self._stop = threading.Event()
        self._registered = threading.Event()
        self._channel = security.open_channel(coordinator, tls, token)
        self._stub = trainer_pb2_grpc.MembershipServiceStub(self._channel)
        self._thread = threading.Thread(target=self._loop, name="membership", daemon=True)

    def start(self) -> None:
        """Begin registering and sending heartbeats."""
        self._thread.start()

    def wait_registered(self, timeout_s: float) -> bool:
        """Whether the trainer registered within ``timeout_s``."""
        return self._registered.wait(timeout_s)

    def stop(self) -> None:
        """Stop sending heartbeats (the coordinator forgets this trainer after its timeout)."""
        self._stop.set()
        self._thread.join(_CALL_TIMEOUT_S + 1)
        self._channel.close()

    def _loop(self) -> None:
        interval = 2.0
        backoff = 0.2
        known = False
        while not self._stop.is_set():
            info = self._info()
            try:
                if not known:
                    resp = self._stub.RegisterTrainer(
                        trainer_pb2.RegisterTrainerRequest(info=info), timeout=_CALL_TIMEOUT_S
                    )
                    interval = max(resp.heartbeat_interval_seconds, 0.05)
                    known = True
                    self._registered.set()
                    log.info("registered with coordinator %s", self._coordinator)
                else:
                    hb = self._stub.Heartbeat(
                        trainer_pb2.HeartbeatRequest(
                            trainer_id=info.trainer_id,
                            busy_slots=info.busy_slots,
                            running_trial_ids=info.running_trial_ids,
                        ),
                        timeout=_CALL_TIMEOUT_S,
                    )
                    if not hb.known:
                        known = False
                        continue
                backoff = 0.2
                self._stop.wait(interval)
            except grpc.RpcError as err:
                known = False
                code = err.code() if hasattr(err, "code") else None
                if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                    # A configuration mistake, not an outage: say so where operators look.
                    log.warning(
                        "coordinator %s refused registration (%s): %s",
                        self._coordinator,
                        code.name,
                        err.details() if hasattr(err, "details") else err,
                    )
                else:
                    log.debug("coordinator %s unreachable: %s", self._coordinator, err)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
