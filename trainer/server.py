"""The trainer process: wiring, make_server() for tests, serve() for the command line."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health

from molhpo import grpc_util, security, startup_checks
from molhpo.contract import catalogue
from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import InvalidArgument, MolhpoError
from molhpo.cpus import threads_per_slot, usable_cpus
from molhpo.datasets.user import USER_FORMATS
from molhpo.v1 import trainer_pb2, trainer_pb2_grpc
from storage.artifacts import ArtifactStore
from storage.keys import RedisKeys
from storage.redis_conn import check_reachable, connect
from trainer.featurize import set_disk_cache
from trainer.membership import MembershipAgent
from trainer.metrics import BusyCollector, GpuCollector, TrainerMetrics
from trainer.service import TrainerServicer
from trainer.settings import TrainerSettings
from trainer.worker import TrialWorker

log = logging.getLogger(__name__)

# Buffered reports get at least this long to go out on shutdown, even after a long join.
_MIN_FLUSH_S = 1.0

TRAINER_SERVICE = trainer_pb2.DESCRIPTOR.services_by_name["TrainerService"].full_name
SERVICE_NAMES = [TRAINER_SERVICE]


def security_interceptors(settings: TrainerSettings) -> list[grpc.ServerInterceptor]:
    """Checks that only the coordinator calls TrainerService: its client-certificate common
    name (allowed_client_cn, needs mutual TLS) and the shared trainer_token, as configured.
    Health and reflection stay open (probes)."""
    interceptors: list[grpc.ServerInterceptor] = []
    allowed = security.parse_names(settings.allowed_client_cn)
    if allowed:
        if not settings.tls_client_ca:
            raise InvalidArgument(
                f"allowed_client_cn = {settings.allowed_client_cn!r} needs mutual TLS to see "
                "client certificates; set tls_client_ca (with tls_cert and tls_key), or clear "
                "allowed_client_cn"
            )
        interceptors.append(grpc_util.ClientCertInterceptor(SERVICE_NAMES, allowed))
    tokens = security.parse_tokens(
        settings.trainer_token.get_secret_value(), setting="trainer_token"
    )
    if tokens:
        interceptors.append(
            grpc_util.BearerTokenInterceptor(
                SERVICE_NAMES,
                tokens,
                "only the coordinator may call trainers: set the coordinator's trainer_token "
                "to this trainer's trainer_token",
            )
        )
        if not (settings.tls_cert and settings.tls_key):
            log.warning(
                "trainer_token is checked but TLS is off: the token crosses the network in "
                "clear text; set tls_cert and tls_key"
            )
    log.info(
        "security: TLS %s, mutual TLS %s, allowed client CNs %s, trainer token %s",
        "on" if settings.tls_cert and settings.tls_key else "off",
        "on" if settings.tls_client_ca else "off",
        ", ".join(allowed) or "any",
        "on" if tokens else "off",
    )
    return interceptors


def check_settings(settings: TrainerSettings) -> None:
    """What the settings need from the machine, checked before anything starts: folders
    writable, dataset roots present, the device there, listen and metrics ports free, Redis
    answering. A failure raises a MolhpoError of one line naming the setting, its flag and
    environment variable, the value and the fix. The coordinator may come up later: the
    trainer keeps trying to register, so its address is not checked here."""
    cls = TrainerSettings
    for name in ("artifact_dir", "cache_dir"):
        folder = getattr(settings, name)
        problem = startup_checks.folder_problem(Path(folder), create=True) if folder else None
        if problem:
            raise startup_checks.setting_error(cls, name, folder, problem)
    problem = startup_checks.dataset_roots_problem(settings.dataset_root_paths)
    if problem:
        raise startup_checks.setting_error(cls, "dataset_roots", settings.dataset_roots, problem)
    problem = device_problem(settings.device)
    if problem:
        raise startup_checks.setting_error(cls, "device", settings.device, problem)
    host, port = startup_checks.split_address(settings.listen)
    problem = startup_checks.listen_problem(host, port)
    if problem:
        raise startup_checks.setting_error(cls, "listen", settings.listen, problem)
    if settings.metrics_port >= 0:
        problem = startup_checks.listen_problem(settings.metrics_host, settings.metrics_port)
        if problem:
            name = "metrics_port" if "in use" in problem else "metrics_host"
            raise startup_checks.setting_error(cls, name, getattr(settings, name), problem)
    try:
        check_reachable(connect(settings.redis_url), settings.redis_url)
    except MolhpoError as err:
        raise type(err)(f"{startup_checks.setting_name(cls, 'redis_url')}: {err}") from None


def device_problem(setting: str) -> str | None:
    """Why trials cannot run on the ``device`` setting here, with the fix; None when they can."""
    if not setting.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible to this process; use auto or cpu, or run where a GPU is"
    index = int(setting.split(":")[1]) if ":" in setting else 0
    if index >= torch.cuda.device_count():
        return (
            f"this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0; "
            "choose one of them"
        )
    return None


def resolve_device(setting: str) -> str:
    """The device every trial and prediction of this trainer runs on, decided once at start-up
    from the ``device`` setting: ``auto`` is the first visible GPU where there is one, else the
    CPU; ``cuda`` is the first visible GPU; ``cuda:N`` and ``cpu`` stay as they are.

    Raises the one-line setting error (naming ``--device`` and ``MOLHPO_TRAINER_DEVICE``, the
    value and the fix) when the setting asks for a GPU this process cannot use.
    """
    import torch

    problem = device_problem(setting)
    if problem:
        raise startup_checks.setting_error(TrainerSettings, "device", setting, problem)
    if setting == "auto":
        setting = "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda":
        return f"cuda:{torch.cuda.current_device()}"
    return setting


def describe_device(device: str) -> str:
    """A resolved device in words ("cpu", "cuda:0 (NVIDIA H100)"), as GetTrainerInfo says it."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return device


def cap_device_memory(device: str, fraction: float) -> None:
    """Cap what this process may allocate on ``device`` at ``fraction`` of its memory (0: no
    cap), for a GPU shared with other processes. The cap covers the whole process, every slot
    together: torch has no cap per thread, so a slot can still take memory its neighbours
    wanted; a trial that runs out is classified out_of_memory and dispatched again."""
    import torch

    if fraction <= 0.0:
        return
    if not device.startswith("cuda"):
        log.warning("gpu_memory_fraction = %g has no effect on %s", fraction, device)
        return
    torch.cuda.set_per_process_memory_fraction(fraction, torch.device(device))


@dataclass
class TrainerServer:
    """A built, unstarted trainer."""

    server: grpc.Server
    port: int
    address: str
    worker: TrialWorker
    membership: MembershipAgent
    health: health.HealthServicer
    metrics: TrainerMetrics
    settings: TrainerSettings
    device: str
    """The resolved device every trial and prediction runs on (see ``resolve_device``)."""

    def start(self) -> None:
        """Serve, then join the coordinator's pool."""
        self.server.start()
        self.membership.start()

    def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, leave the pool, cancel running trials, send the reports still waiting
        for Redis, stop the server."""
        grpc_util.mark_not_serving(self.health, SERVICE_NAMES)
        self.membership.stop()
        # Running trials stop after their epoch, save their state and go back to the
        # coordinator (DRAINED), which dispatches them again elsewhere to resume.
        self.worker.cancel_all("trainer shutting down", FailureClass.DRAINED)
        grace = self.settings.grace_s if grace_s is None else grace_s
        deadline = time.monotonic() + grace
        self.worker.join(grace)
        # Results (and epochs) buffered while Redis is away go out before the process ends:
        # retried within what is left of the grace period, at least one short try.
        waiting = self.worker.reports_waiting()
        if waiting:
            log.info("sending %d reports that wait for Redis before stopping", waiting)
        self.worker.close(max(deadline - time.monotonic(), _MIN_FLUSH_S))
        self.server.stop(grace).wait()


def make_server(settings: TrainerSettings) -> TrainerServer:
    """Build the trainer (bound, not started) so tests can listen on port 0.

    Every TLS file is read here, once: a bad path fails before anything runs. The device is
    resolved here, once, and handed to the worker (trials) and the servicer (predictions).
    """
    device = resolve_device(settings.device)
    cap_device_memory(device, settings.gpu_memory_fraction)
    credentials = security.server_credentials(
        settings.tls_cert, settings.tls_key, settings.tls_client_ca
    )
    interceptors = security_interceptors(settings)
    coordinator_tls = security.ClientTLS.from_paths(
        settings.tls_ca, settings.tls_client_cert, settings.tls_client_key, settings.tls_server_name
    )
    metrics = TrainerMetrics(settings.slots)
    artifact_root = Path(settings.artifact_dir).resolve() if settings.artifact_dir else None
    worker = _make_worker(settings, device, metrics, artifact_root)
    metrics.registry.register(BusyCollector(worker.busy_seconds))
    metrics.registry.register(
        GpuCollector(
            os.environ.get("CUDA_VISIBLE_DEVICES"),
            expect_gpu=device.startswith("cuda"),
        )
    )
    server = grpc_util.new_server(
        [
            grpc_util.MetricsInterceptor(metrics.registry, "trainer"),
            *interceptors,
            grpc_util.ErrorInterceptor(),
        ],
        max_message_bytes=settings.max_message_bytes,
    )
    port = _bind(server, settings, credentials)
    address = settings.advertise or f"{settings.listen.rsplit(':', 1)[0]}:{port}"
    info = _info_source(worker, address, device)
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(
        TrainerServicer(worker, info, artifact_root, device=device), server
    )
    health_servicer = grpc_util.add_health_and_reflection(server, SERVICE_NAMES)
    membership = MembershipAgent(
        settings.coordinator,
        info,
        tls=coordinator_tls,
        token=security.sending_token(settings.trainer_token.get_secret_value()),
    )
    return TrainerServer(
        server, port, address, worker, membership, health_servicer, metrics, settings, device
    )


def _make_worker(
    settings: TrainerSettings, device: str, metrics: TrainerMetrics, artifact_root: Path | None
) -> TrialWorker:
    """The trial worker, with torch's threads and the feature cache set for its slots."""
    import torch

    # The pod's CPU limit (cgroup quota), not the node's cores, bounds the threads worth having.
    threads = threads_per_slot(settings.torch_threads, settings.slots, usable_cpus())
    torch.set_num_threads(threads)
    set_disk_cache(Path(settings.cache_dir) if settings.cache_dir else None)
    trainer_id = settings.trainer_id or f"{socket.gethostname()}-{os.getpid()}"
    return TrialWorker(
        trainer_id,
        settings.slots,
        connect(settings.redis_url),
        RedisKeys(settings.key_prefix),
        metrics,
        dataset_roots=tuple(str(p) for p in settings.dataset_root_paths),
        artifacts=ArtifactStore(artifact_root) if artifact_root else None,
        device=device,
    )


def _bind(
    server: grpc.Server, settings: TrainerSettings, credentials: grpc.ServerCredentials | None
) -> int:
    """Listen on ``settings.listen``; the port bound (a free one for port 0)."""
    try:
        return grpc_util.bind(server, settings.listen, credentials)
    except (OSError, RuntimeError) as err:
        raise startup_checks.setting_error(
            TrainerSettings,
            "listen",
            settings.listen,
            f"cannot listen there ({err}); choose a free port on an address of this machine",
        ) from None


def _info_source(
    worker: TrialWorker, address: str, device: str
) -> Callable[[], trainer_pb2.TrainerInfo]:
    """What the trainer tells the coordinator about itself, read afresh at each call."""
    device_in_words = describe_device(device)

    def info() -> trainer_pb2.TrainerInfo:
        return trainer_pb2.TrainerInfo(
            trainer_id=worker.trainer_id,
            address=address,
            slots=worker.slots,
            busy_slots=worker.busy(),
            device=device_in_words,
            running_trial_ids=worker.running_ids(),
            models=sorted(catalogue.MODELS),
            datasets=sorted(catalogue.DATASETS),
            file_formats=list(USER_FORMATS),
        )

    return info


def serve(settings: TrainerSettings) -> None:
    """Run the trainer until SIGTERM/SIGINT."""
    check_settings(settings)
    built = make_server(settings)
    if settings.metrics_port >= 0:
        startup_checks.serve_metrics(
            TrainerSettings, settings.metrics_port, settings.metrics_host, built.metrics.registry
        )
    built.start()
    print(f"trainer {built.worker.trainer_id} listening on {built.address}", flush=True)
    done = grpc_util.wait_for_termination_signal(built.stop)
    done.wait()
