"""Shared fixtures: a real redis-server on a free port, a throwaway PostgreSQL, free ports,
small study requests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest
import redis
from throwaway_postgres import PostgresServer

from molhpo.local import find_redis_server, free_port

# Tools the dev extra and `make tools` put beside this Python (promtool, kubectl, hadolint) are
# found as if the virtual environment were activated; the system's copies still come first.
_VENV_BIN = str(Path(sys.executable).parent)
if _VENV_BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.pathsep.join(p for p in (os.environ.get("PATH"), _VENV_BIN) if p)


@dataclass
class RedisServer:
    """A redis-server child process the tests can stop and start again on the same port."""

    directory: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) the server and wait until it answers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                find_redis_server(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Stop the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def client(self) -> redis.Redis:
        """A client of this server."""
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stream(self, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Every entry of a stream, oldest first: (entry id, fields), in bytes as the client
        above returns them."""
        return cast(list[tuple[bytes, dict[bytes, bytes]]], self.client().xrange(key))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests use distinct key prefixes."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server of the session's own (never the machine's): a fresh data
    folder, a free port, deleted at the end. Tests create their own databases on it."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


_prefix_counter = iter(range(1, 1_000_000))


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix of this test's own."""
    return f"t{next(_prefix_counter)}-{int(time.time() * 1000) % 100000}"


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread for a module: tiny models train faster so, and far faster
    on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
