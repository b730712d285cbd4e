"""The coordinator process: wiring, make_server() for tests, serve() for the command line."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health

from coordinator.core import Coordinator
from coordinator.membership import TrainerPool
from coordinator.metrics import CoordinatorMetrics
from coordinator.service import MembershipServicer, PredictServicer, StudyServicer
from coordinator.settings import CoordinatorSettings
from coordinator.trainer_client import TrainerClient
from coordinator.wiring import CoordinatorOptions
from molhpo import grpc_util, security, startup_checks
from molhpo.contract.errors import MolhpoError
from molhpo.v1 import study_pb2, study_pb2_grpc, trainer_pb2, trainer_pb2_grpc
from storage.keys import RedisKeys
from storage.redis_conn import check_reachable, connect
from storage.study_store import check_storage, create_storage, default_url

log = logging.getLogger(__name__)

STUDY_SERVICE = study_pb2.DESCRIPTOR.services_by_name["StudyService"].full_name
PREDICT_SERVICE = study_pb2.DESCRIPTOR.services_by_name["PredictService"].full_name
MEMBERSHIP_SERVICE = trainer_pb2.DESCRIPTOR.services_by_name["MembershipService"].full_name
SERVICE_NAMES = [STUDY_SERVICE, PREDICT_SERVICE, MEMBERSHIP_SERVICE]
USER_SERVICES = [STUDY_SERVICE, PREDICT_SERVICE]
"""Services users call: bearer tokens (auth_tokens) and rate limits apply to these."""

_USER_TOKEN_HINT = (
    "send a token listed in the coordinator's auth_tokens (molhpo CLI: --token or "
    "MOLHPO_TOKEN; Python: MolhpoClient(token=...))"
)
_TRAINER_TOKEN_HINT = "set the trainer's trainer_token to the coordinator's trainer_token"


@dataclass
class CoordinatorServer:
    """A built, unstarted coordinator: its gRPC server, core and health servicer."""

    server: grpc.Server
    port: int
    core: Coordinator
    health: health.HealthServicer
    metrics: CoordinatorMetrics
    settings: CoordinatorSettings

    def start(self) -> None:
        """Start the core loops and the gRPC server."""
        self.core.start()
        self.server.start()

    def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first, then stop taking calls, then stop the loops."""
        grpc_util.mark_not_serving(self.health, SERVICE_NAMES)
        self.server.stop(self.settings.grace_s if grace_s is None else grace_s).wait()
        self.core.close()


_SWITCH_INTERVAL_S = 0.0005


def security_interceptors(settings: CoordinatorSettings) -> list[grpc.ServerInterceptor]:
    """Rate limits, then user tokens on Study/PredictService and the trainer token on
    MembershipService, as configured (none by default). Health and reflection stay open."""
    interceptors: list[grpc.ServerInterceptor] = []
    if settings.rate_limit_per_s > 0:
        bucket = security.TokenBucket(settings.rate_limit_per_s, settings.rate_limit_burst)
        interceptors.append(grpc_util.RateLimitInterceptor(USER_SERVICES, bucket))
    user_tokens = security.parse_tokens(
        settings.auth_tokens.get_secret_value(), settings.auth_tokens_file, "auth_tokens"
    )
    if user_tokens:
        interceptors.append(
            grpc_util.BearerTokenInterceptor(USER_SERVICES, user_tokens, _USER_TOKEN_HINT)
        )
    trainer_tokens = security.parse_tokens(
        settings.trainer_token.get_secret_value(), setting="trainer_token"
    )
    if trainer_tokens:
        interceptors.append(
            grpc_util.BearerTokenInterceptor(
                [MEMBERSHIP_SERVICE], trainer_tokens, _TRAINER_TOKEN_HINT
            )
        )
    tls_on = bool(settings.tls_cert and settings.tls_key)
    if (user_tokens or trainer_tokens) and not tls_on:
        log.warning(
            "bearer tokens are checked but TLS is off: tokens cross the network in clear text; "
            "set tls_cert and tls_key (or terminate TLS in front of the coordinator)"
        )
    log.info(
        "security: TLS %s, mutual TLS %s, user tokens %s (%d), trainer token %s, rate limit %s",
        "on" if tls_on else "off",
        "on" if settings.tls_client_ca else "off",
        "on" if user_tokens else "off",
        len(user_tokens),
        "on" if trainer_tokens else "off",
        f"{settings.rate_limit_per_s:g}/s burst {settings.rate_limit_burst}"
        if settings.rate_limit_per_s > 0
        else "off",
    )
    return interceptors


def trainer_client(settings: CoordinatorSettings) -> TrainerClient:
    """The client of trainers, with the TLS material and trainer token of ``settings``."""
    return TrainerClient(
        tls=security.ClientTLS.from_paths(
            settings.tls_ca,
            settings.tls_client_cert,
            settings.tls_client_key,
            settings.tls_server_name,
        ),
        token=security.sending_token(settings.trainer_token.get_secret_value()),
        max_message_bytes=settings.max_message_bytes,
    )


def check_settings(settings: CoordinatorSettings) -> None:
    """What the settings need from the machine, checked before anything starts: folders
    writable, dataset roots present, listen and metrics ports free, Redis answering, the
    study store open. A failure raises a MolhpoError of one line naming the setting, its flag
    and environment variable, the value and the fix."""
    cls = CoordinatorSettings
    for name, folder in (
        ("state_dir", settings.state_dir),
        ("artifact_dir", settings.artifact_dir),
    ):
        problem = startup_checks.folder_problem(Path(folder), create=True) if folder else None
        if problem:
            raise startup_checks.setting_error(cls, name, folder, problem)
    problem = startup_checks.dataset_roots_problem(settings.dataset_root_paths)
    if problem:
        raise startup_checks.setting_error(cls, "dataset_roots", settings.dataset_roots, problem)
    host, port = startup_checks.split_address(settings.listen)
    problem = startup_checks.listen_problem(host, port)
    if problem:
        raise startup_checks.setting_error(cls, "listen", settings.listen, problem)
    if settings.metrics_port >= 0:
        problem = startup_checks.listen_problem(settings.metrics_host, settings.metrics_port)
        if problem:
            name = "metrics_port" if "in use" in problem else "metrics_host"
            value = getattr(settings, name)
            raise startup_checks.setting_error(cls, name, value, problem)
    try:
        check_reachable(connect(settings.redis_url), settings.redis_url)
    except MolhpoError as err:
        raise type(err)(f"{startup_checks.setting_name(cls, 'redis_url')}: {err}") from None
    try:
        check_storage(settings.storage_url or default_url(settings.state_dir))
    except MolhpoError as err:
        where = "storage_url" if settings.storage_url else "state_dir"
        raise type(err)(f"{startup_checks.setting_name(cls, where)}: {err}") from None


def make_server(settings: CoordinatorSettings) -> CoordinatorServer:
    """Build the coordinator (bound, not started) so tests can listen on port 0.

    Every TLS file and token file is read here, once: a bad path fails before anything runs.
    """
    credentials = security.server_credentials(
        settings.tls_cert, settings.tls_key, settings.tls_client_ca
    )
    interceptors = security_interceptors(settings)
    trainers = trainer_client(settings)
    storage = create_storage(
        settings.storage_url or default_url(settings.state_dir), sync=settings.storage_sync
    )
    redis_client = connect(settings.redis_url)
    metrics = CoordinatorMetrics()
    pool = TrainerPool(settings.heartbeat_timeout_s, lease_s=settings.lease_s)
    core = Coordinator(
        storage=storage,
        redis_client=redis_client,
        keys=RedisKeys(settings.key_prefix),
        pool=pool,
        trainers=trainers,
        metrics=metrics,
        options=CoordinatorOptions(
            decision_timeout_s=settings.decision_timeout_s,
            dataset_roots=settings.dataset_root_paths,
            artifact_root=Path(settings.artifact_dir).resolve() if settings.artifact_dir else None,
            max_attempts=settings.max_attempts,
        ),
    )
    server = grpc_util.new_server(
        [
            grpc_util.MetricsInterceptor(metrics.registry, "coordinator"),
            *interceptors,
            grpc_util.ErrorInterceptor(),
        ],
        max_message_bytes=settings.max_message_bytes,
    )
    study_pb2_grpc.add_StudyServiceServicer_to_server(StudyServicer(core), server)
    study_pb2_grpc.add_PredictServiceServicer_to_server(PredictServicer(core), server)
    trainer_pb2_grpc.add_MembershipServiceServicer_to_server(
        MembershipServicer(core, settings.heartbeat_interval_s, settings.heartbeat_timeout_s),
        server,
    )
    health_servicer = grpc_util.add_health_and_reflection(server, SERVICE_NAMES)
    try:
        port = grpc_util.bind(server, settings.listen, credentials)
    except (OSError, RuntimeError) as err:
        raise startup_checks.setting_error(
            CoordinatorSettings,
            "listen",
            settings.listen,
            f"cannot listen there ({err}); choose a free port on an address of this machine",
        ) from None
    return CoordinatorServer(server, port, core, health_servicer, metrics, settings)


def serve(settings: CoordinatorSettings) -> None:
    """Run the coordinator until SIGTERM/SIGINT."""
    # The report consumer does many short Redis round trips; each must win the GIL back from
    # the sampler's CPU-bound ask. Python's default 5 ms switch interval would add up to 5 ms
    # per round trip to every pruning decision.
    sys.setswitchinterval(_SWITCH_INTERVAL_S)
    check_settings(settings)
    built = make_server(settings)
    if settings.metrics_port >= 0:
        port = startup_checks.serve_metrics(
            CoordinatorSettings,
            settings.metrics_port,
            settings.metrics_host,
            built.metrics.registry,
        )
        log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    built.start()
    host = settings.listen.rsplit(":", 1)[0]
    print(f"coordinator listening on {host}:{built.port}", flush=True)
    done = grpc_util.wait_for_termination_signal(built.stop)
    done.wait()
