"""A bad setting stops a service at start-up with one line that names the setting, its flag and
environment variable, the value and the fix, and a non-zero exit: never a traceback.

Each case runs the real command a user types (``molhpo coordinator``, ``molhpo trainer``,
``molhpo up``) in a subprocess.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from conftest import RedisServer
from throwaway_postgres import PostgresServer

from molhpo.contract.errors import InvalidArgument
from molhpo.local import free_port
from storage.study_store import check_storage, create_storage, resolve_url

pytestmark = pytest.mark.integration

MOLHPO = str(Path(sys.executable).parent / "molhpo")


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port something listens on for the whole module."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


@pytest.fixture(scope="module")
def no_pg_driver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that, first on PYTHONPATH, makes psycopg2 and psycopg fail to import, as on a
    machine without the ``postgres`` extra."""
    folder = tmp_path_factory.mktemp("no-pg-driver")
    for module in ("psycopg2", "psycopg"):
        (folder / f"{module}.py").write_text(
            f"raise ImportError(\"No module named '{module}'\", name={module!r})\n"
        )
    return folder


def run_molhpo(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``molhpo ARGS`` as a user runs it, with the MOLHPO_* environment of ``env`` only."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MOLHPO_")}
    return subprocess.run(
        [MOLHPO, *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def assert_one_line(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The command failed with exactly one line on stderr, holding every fragment."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} missing from: {lines[0]}"
    return lines[0]


# ---- the coordinator -------------------------------------------------------------------------


def test_bare_postgresql_url_uses_the_installed_driver(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    url = f"postgresql://user@127.0.0.1:{free_port()}/db"
    done = run_molhpo(
        ["coordinator", "--storage-url", url, "--redis-url", redis_server.url], tmp_path
    )
    assert_one_line(
        done,
        "storage_url",
        "MOLHPO_COORDINATOR_STORAGE_URL",
        # the URL the user wrote, with the driver that is installed (not psycopg 3)
        "postgresql+psycopg2://user@127.0.0.1",
        "Connection refused",
        "check that the database server runs",
    )


def test_postgresql_url_without_a_driver_names_the_extra(
    tmp_path: Path, redis_server: RedisServer, no_pg_driver: Path
) -> None:
    done = run_molhpo(
        ["coordinator", "--redis-url", redis_server.url],
        tmp_path,
        {
            "MOLHPO_COORDINATOR_STORAGE_URL": "postgresql://user@db.example/molhpo",
            "PYTHONPATH": str(no_pg_driver),
        },
    )
    assert_one_line(
        done,
        "MOLHPO_COORDINATOR_STORAGE_URL",
        "postgresql://user@db.example/molhpo",
        "no PostgreSQL driver is installed",
        "pip install 'molhpo[postgres]'",
    )


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (
            ["--redis-url", "redis://127.0.0.1:{free}/0"],
            {},
            ["redis_url", "MOLHPO_COORDINATOR_REDIS_URL", "Connection refused", "redis-server"],
        ),
        (
            [],
            {"MOLHPO_COORDINATOR_REDIS_URL": "http://127.0.0.1:6379"},
            ["MOLHPO_COORDINATOR_REDIS_URL", "'http://127.0.0.1:6379'", "redis://HOST:PORT/DB"],
        ),
        (
            ["--listen", "50051"],
            {},
            ["listen", "MOLHPO_COORDINATOR_LISTEN", "'50051'", "HOST:PORT"],
        ),
        (
            ["--listen", "127.0.0.1:{busy}", "--redis-url", "{redis}"],
            {},
            ["listen", "MOLHPO_COORDINATOR_LISTEN", "already in use", "choose another port"],
        ),
        (
            ["--metrics-port", "{busy}", "--redis-url", "{redis}"],
            {},
            ["metrics_port", "MOLHPO_COORDINATOR_METRICS_PORT", "already in use"],
        ),
        (
            ["--metrics-port", "70000"],
            {},
            ["metrics_port", "'70000'", "65535"],
        ),
        (
            [],
            {"MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S": "-2"},
            ["heartbeat_interval_s", "MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S", "-2", "than 0"],
        ),
        (
            ["--dataset-roots", "no/such/folder", "--redis-url", "{redis}"],
            {},
            ["dataset_roots", "MOLHPO_COORDINATOR_DATASET_ROOTS", "does not exist"],
        ),
        (
            ["--storage-url", "mysql2://x/y", "--redis-url", "{redis}"],
            {},
            ["storage_url", "unknown database", "sqlite:///PATH"],
        ),
    ],
    ids=[
        "redis-down",
        "redis-not-a-url",
        "listen-no-host",
        "listen-in-use",
        "metrics-in-use",
        "metrics-port-range",
        "negative-interval",
        "dataset-root-missing",
        "unknown-database",
    ],
)
def test_coordinator_refuses_a_bad_setting_in_one_line(
    tmp_path: Path,
    redis_server: RedisServer,
    busy_port: int,
    *,
    args: list[str],
    env: dict[str, str],
    fragments: list[str],
) -> None:
    values = {"free": str(free_port()), "busy": str(busy_port), "redis": redis_server.url}
    done = run_molhpo(["coordinator", *(a.format(**values) for a in args)], tmp_path, env)
    assert_one_line(done, *fragments)


# ---- the trainer -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--redis-url", "redis://127.0.0.1:{free}/0"],
            ["redis_url", "MOLHPO_TRAINER_REDIS_URL", "Connection refused"],
        ),
        (
            ["--coordinator", "coordinator.example", "--redis-url", "{redis}"],
            ["coordinator", "MOLHPO_TRAINER_COORDINATOR", "HOST:PORT"],
        ),
        (
            ["--device", "gpu0"],
            ["device", "MOLHPO_TRAINER_DEVICE", "'gpu0'", "auto, cpu, cuda or cuda:N"],
        ),
        (
            ["--cache-dir", "{file}", "--redis-url", "{redis}"],
            ["cache_dir", "MOLHPO_TRAINER_CACHE_DIR", "is a file"],
        ),
        (
            ["--listen", "127.0.0.1:{busy}", "--redis-url", "{redis}"],
            ["listen", "MOLHPO_TRAINER_LISTEN", "already in use"],
        ),
        (
            ["--slots", "0"],
            ["slots", "MOLHPO_TRAINER_SLOTS", "'0'", "greater than or equal to 1"],
        ),
    ],
    ids=["redis-down", "coordinator-no-port", "device", "cache-dir-file", "listen-in-use", "slots"],
)
def test_trainer_refuses_a_bad_setting_in_one_line(
    tmp_path: Path,
    redis_server: RedisServer,
    busy_port: int,
    args: list[str],
    fragments: list[str],
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    values = {
        "free": str(free_port()),
        "busy": str(busy_port),
        "redis": redis_server.url,
        "file": str(a_file),
    }
    done = run_molhpo(["trainer", *(a.format(**values) for a in args)], tmp_path)
    assert_one_line(done, *fragments)


def test_trainer_asked_for_a_missing_gpu_says_so(tmp_path: Path, redis_server: RedisServer) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = run_molhpo(["trainer", "--device", "cuda", "--redis-url", redis_server.url], tmp_path)
    assert_one_line(done, "device", "MOLHPO_TRAINER_DEVICE", "no CUDA GPU", "use auto or cpu")


# ---- the local stack -------------------------------------------------------------------------


def test_up_with_a_postgresql_url_it_cannot_open(tmp_path: Path) -> None:
    url = f"postgresql://user@127.0.0.1:{free_port()}/db"
    done = run_molhpo(["up", "--storage-url", url, "--listen", "127.0.0.1:0"], tmp_path)
    assert_one_line(done, "--storage-url", "postgresql+psycopg2://user@", "Connection refused")
    assert not (tmp_path / ".molhpo" / "logs").exists(), "nothing should have been started"


def test_up_without_a_postgres_driver_names_the_extra(tmp_path: Path, no_pg_driver: Path) -> None:
    done = run_molhpo(
        ["up", "--storage-url", "postgresql://user@host/db", "--listen", "127.0.0.1:0"],
        tmp_path,
        {"PYTHONPATH": str(no_pg_driver)},
    )
    assert_one_line(done, "--storage-url", "pip install 'molhpo[postgres]'")


def test_up_on_a_port_in_use(tmp_path: Path, busy_port: int) -> None:
    done = run_molhpo(["up", "--listen", f"127.0.0.1:{busy_port}"], tmp_path)
    assert_one_line(done, "--listen", str(busy_port), "already in use")


def test_up_passes_on_the_coordinators_one_line(tmp_path: Path, redis_server: RedisServer) -> None:
    """A setting only the coordinator reads (its environment) still ends in one line."""
    done = run_molhpo(
        ["up", "--listen", "127.0.0.1:0", "--redis-url", redis_server.url],
        tmp_path,
        {"MOLHPO_COORDINATOR_LEASE_S": "-1"},
    )
    assert_one_line(
        done, "coordinator exited", "lease_s", "MOLHPO_COORDINATOR_LEASE_S", "greater than 0"
    )


# ---- the study store URL, in process ---------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_bare_postgres_urls_open_the_store(postgres_server: PostgresServer, scheme: str) -> None:
    url = f"{scheme}://postgres@127.0.0.1:{postgres_server.port}/postgres"
    assert resolve_url(url).drivername == "postgresql+psycopg2"
    check_storage(url)
    storage = create_storage(url)
    optuna.create_study(storage=storage, study_name=f"bare-{scheme}")
    assert f"bare-{scheme}" in optuna.study.get_all_study_names(storage)
    storage.engine.dispose()


def test_a_url_that_is_no_url_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="is not a database URL"):
        resolve_url("studies.db")
