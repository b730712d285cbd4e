"""Coordinator settings: read once from flags and the environment, then passed down."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coordinator.retry import DEFAULT_MAX_ATTEMPTS
from molhpo.startup_checks import split_address


class CoordinatorSettings(BaseSettings):
    """Every field has an environment twin: ``MOLHPO_COORDINATOR_<FIELD>`` (upper case)."""

    model_config = SettingsConfigDict(env_prefix="MOLHPO_COORDINATOR_", extra="forbid")

    listen: str = Field("127.0.0.1:50051", description="gRPC address to listen on (port 0: any)")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for reports/decisions")
    storage_url: str = Field("", description="Optuna RDB URL; empty: SQLite under state_dir")
    storage_sync: bool = Field(
        False,
        description="flush every store commit to disk (fsync) before going on; off: a commit "
        "survives a coordinator crash but the last ones may be lost if the machine loses "
        "power (SQLite WAL with synchronous=NORMAL; PostgreSQL synchronous_commit=off)",
    )
    state_dir: Path = Field(Path(".molhpo"), description="local state (SQLite store, logs)")
    key_prefix: str = Field("molhpo", min_length=1, description="prefix of every Redis key")
    metrics_port: int = Field(
        0, ge=-1, le=65535, description="Prometheus /metrics port (0: any free; -1: off)"
    )
    metrics_host: str = Field("127.0.0.1", description="address /metrics listens on")
    heartbeat_interval_s: float = Field(
        2.0, gt=0, description="trainers send heartbeats this often"
    )
    heartbeat_timeout_s: float = Field(10.0, gt=0, description="forget trainers silent this long")
    lease_s: float = Field(
        15.0, gt=0, description="a trial whose trainer stops listing it this long is run again"
    )
    max_attempts: int = Field(
        DEFAULT_MAX_ATTEMPTS, ge=1, description="dispatches of a trial at most (retries + 1)"
    )
    decision_timeout_s: float = Field(
        30.0, gt=0, description="trainers wait this long for a pruning decision"
    )
    artifact_dir: str = Field(
        ".molhpo/artifacts",
        description="artifact store root trainers write checkpoints to (deleted with a study)",
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
    tls_ca: str = Field(
        "", description="CA (PEM) that signs trainers' certificates: TLS on calls to trainers"
    )
    tls_client_cert: str = Field(
        "", description="own certificate (PEM) shown to trainers (mutual TLS)"
    )
    tls_client_key: str = Field("", description="private key of tls_client_cert (PEM)")
    tls_server_name: str = Field(
        "", description="name trainers' certificates are checked against (empty: their address)"
    )
    auth_tokens: SecretStr = Field(
        SecretStr(""),
        description="bearer tokens Study/PredictService accept, comma-separated (empty: none "
        "needed)",
    )
    auth_tokens_file: str = Field(
        "", description="file of accepted bearer tokens, one per line (added to auth_tokens)"
    )
    trainer_token: SecretStr = Field(
        SecretStr(""),
        description="secret sent to trainers and required of them; a,b: send a, accept both "
        "(empty: none)",
    )
    rate_limit_per_s: float = Field(
        0.0,
        ge=0,
        description="StudyService/PredictService calls per second per client host (0: off)",
    )
    rate_limit_burst: int = Field(
        50, ge=1, description="calls a client host may make at once before rate_limit_per_s bites"
    )

    @field_validator("listen")
    @classmethod
    def _is_address(cls, value: str) -> str:
        split_address(value)
        return value

    @property
    def dataset_root_paths(self) -> tuple[Path, ...]:
        """``dataset_roots`` as resolved paths."""
        return tuple(Path(r).resolve() for r in self.dataset_roots.split(os.pathsep) if r)
