"""Trainer settings: read once from flags and the environment, then passed down."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from molhpo.startup_checks import split_address

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class TrainerSettings(BaseSettings):
    """Every field has an environment twin: ``MOLHPO_TRAINER_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="MOLHPO_TRAINER_", extra="forbid")

    listen: str = Field("127.0.0.1:0", description="gRPC address to listen on (port 0: any)")
    advertise: str = Field("", description="address the coordinator dials; empty: the bound one")
    coordinator: str = Field("127.0.0.1:50051", description="coordinator address to register at")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for reports/decisions")
    key_prefix: str = Field("molhpo", min_length=1, description="prefix of every Redis key")
    slots: int = Field(1, ge=1, le=256, description="trials run at once")
    trainer_id: str = Field("", description="stable id; empty: hostname-pid")
    device: str = Field(
        "auto",
        description="torch device of every trial and prediction: auto (a GPU if one is "
        "visible, else cpu), cpu, cuda, cuda:N; resolved once at start-up",
    )
    gpu_memory_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of the GPU's memory this trainer may allocate, all slots together "
        "(0: no cap); for a GPU shared with other processes",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op threads; 0: usable cores (CPU affinity and cgroup quota) "
        "/ slots",
    )
    metrics_port: int = Field(
        0, ge=-1, le=65535, description="Prometheus /metrics port (0: any free; -1: off)"
    )
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on")
    artifact_dir: str = Field(
        ".molhpo/artifacts",
        description="artifact store root: trial checkpoints (shared volume in a cluster)",
    )
    cache_dir: str = Field(
        ".molhpo/cache/features",
        description="features kept on disk across trials and restarts (empty: memory only)",
    )
    dataset_roots: str = Field(
        ".",
        description="folders user data files must lie in, separated by ':' (os.pathsep)",
    )
    grace_s: float = Field(5.0, ge=0, description="shutdown grace for in-flight calls")
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="largest gRPC request or response, in bytes"
    )
    # --- security (everything off by default: a local stack needs none of it) ---
    tls_cert: str = Field("", description="server certificate (PEM); with tls_key: TLS on")
    tls_key: str = Field("", description="private key of tls_cert (PEM)")
    tls_client_ca: str = Field(
        "", description="CA (PEM) client certificates must be signed by: mutual TLS on"
    )
    allowed_client_cn: str = Field(
        "",
        description="client certificate CNs allowed, e.g. molhpo-coordinator (needs "
        "tls_client_ca; empty: any)",
    )
    tls_ca: str = Field(
        "", description="CA (PEM) that signs the coordinator's certificate: TLS when registering"
    )
    tls_client_cert: str = Field(
        "", description="own certificate (PEM) shown to the coordinator (mutual TLS)"
    )
    tls_client_key: str = Field("", description="private key of tls_client_cert (PEM)")
    tls_server_name: str = Field(
        "", description="name the coordinator's certificate is checked against (empty: address)"
    )
    trainer_token: SecretStr = Field(
        SecretStr(""),
        description="secret the coordinator must send, sent when registering; a,b: send a, "
        "accept both (empty: none)",
    )

    @field_validator("listen", "coordinator")
    @classmethod
    def _is_address(cls, value: str) -> str:
        split_address(value)
        return value

    @field_validator("advertise")
    @classmethod
    def _is_address_or_empty(cls, value: str) -> str:
        if value:
            split_address(value)
        return value

    @field_validator("device")
    @classmethod
    def _is_device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError("must be auto, cpu, cuda or cuda:N (N: the GPU's index)")
        return value

    @property
    def dataset_root_paths(self) -> tuple[Path, ...]:
        """``dataset_roots`` as resolved paths."""
        return tuple(Path(r).resolve() for r in self.dataset_roots.split(os.pathsep) if r)
