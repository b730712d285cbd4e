"""The coordinator runs without torch: a real ``python -m molhpo coordinator`` process (a real
redis-server, a SQLite study store) validates, starts, shows, stops and reports studies, one of
them run to its end by a real trainer process, and never imports ``torch`` or
``torch_geometric``.

What the coordinator imported is read from its own process: it runs under ``python -X
importtime``, which writes one line to stderr for every module the interpreter loads, lazy
imports inside functions included. The log must also name what the coordinator loads (Optuna,
RDKit for the data-set checks, matplotlib for the report's plots) and hold imports made after
it started listening, while it served the calls, or it observed nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import RedisServer

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import wait_for_line
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NEVER = ("torch", "torch_geometric")
# What the coordinator must load: proof that the log is its own.
SEEN = (
    "coordinator.server",
    "coordinator.reporting",
    "optuna",
    "rdkit.Chem",
    "molhpo.datasets.builtin",
    "matplotlib.backends.backend_agg",
)
READY = "coordinator listening on"
START_TIMEOUT_S = 120.0


def imported_modules(importtime_log: str) -> set[str]:
    """Every module ``python -X importtime`` reported loading ("import time: self | cumulative |
    name", nested imports indented)."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                names.add(name)
    return names


@dataclass
class Process:
    """A child process with its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not end in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise


def spawn(args: list[str], log: Path) -> Process:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=log.parent,
        )
    return Process(proc, log)


@pytest.fixture
def coordinator(
    redis_server: RedisServer, key_prefix: str, tmp_path: Path
) -> Iterator[tuple[Process, str]]:
    """``python -X importtime -m molhpo coordinator`` and its address."""
    process = spawn(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "molhpo",
            "coordinator",
            "--listen",
            "127.0.0.1:0",
            "--redis-url",
            redis_server.url,
            "--storage-url",
            f"sqlite:///{tmp_path / 'studies.db'}",
            "--state-dir",
            str(tmp_path),
            "--key-prefix",
            key_prefix,
            "--metrics-port",
            "-1",
            "--artifact-dir",
            str(tmp_path / "artifacts"),
        ],
        tmp_path / "coordinator.log",
    )
    try:
        line = wait_for_line(process.log, READY, process.proc, START_TIMEOUT_S)
        yield process, line.rsplit(" ", 1)[-1]
    finally:
        if process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(10)


def start_trainer(address: str, redis_url: str, key_prefix: str, tmp_path: Path) -> Process:
    """A real trainer process (it imports torch; the coordinator must not)."""
    process = spawn(
        [
            sys.executable,
            "-m",
            "molhpo",
            "trainer",
            "--coordinator",
            address,
            "--redis-url",
            redis_url,
            "--key-prefix",
            key_prefix,
            "--slots",
            "2",
            "--trainer-id",
            "trainer-0",
            "--torch-threads",
            "1",
            "--metrics-port",
            "-1",
            "--artifact-dir",
            str(tmp_path / "artifacts"),
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        tmp_path / "trainer.log",
    )
    wait_for_line(process.log, "registered with coordinator", process.proc, START_TIMEOUT_S)
    return process


def wait_until_waiting(client: MolhpoClient, name: str, timeout_s: float = 60.0) -> str:
    """The study's wait message once it says why it gets no slot."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = client.get_study(name)
        if info.wait_reason != study_pb2.WAIT_REASON_UNSPECIFIED and info.wait_message:
            assert info.wait_reason == study_pb2.WAIT_REASON_NO_TRAINERS, info
            return info.wait_message
        time.sleep(0.2)
    raise AssertionError(f"study {name} never said why it waits: {client.get_study(name)}")


def test_the_coordinator_runs_studies_without_importing_torch(
    coordinator: tuple[Process, str],
    redis_server: RedisServer,
    key_prefix: str,
    tmp_path: Path,
) -> None:
    process, address = coordinator
    with MolhpoClient(address, timeout_s=60) as client:
        # A study on a built-in data set, checked with RDKit in the coordinator; no trainer yet.
        gin = studyfile.load(ROOT / "examples" / "freesolv_gin.yaml")
        gin.name = "no-torch-gin"
        gin.budget.n_trials = 2
        gin.budget.max_epochs = 2
        checked = client.validate_study(gin)
        assert checked.dataset.n_molecules == 642
        assert client.start_study(gin).name == gin.name
        assert "no trainer is registered" in wait_until_waiting(client, gin.name)
        waiting_report = client.get_report(gin.name)
        assert gin.name in waiting_report.markdown
        client.stop_study(gin.name, cancel_running=True)

        # A trainer joins and runs a synthetic study to its end: the report has plots.
        trainer = start_trainer(address, redis_server.url, key_prefix, tmp_path)
        try:
            synthetic = studyfile.load(ROOT / "examples" / "synthetic.yaml")
            synthetic.name = "no-torch-synthetic"
            synthetic.budget.n_trials = 6
            synthetic.budget.max_epochs = 3
            synthetic.parallelism = 2
            synthetic.fixed_params.update({"epoch_seconds": 0.02})
            client.start_study(synthetic)
            events = list(client.watch(synthetic.name, timeout_s=300))
            assert events[-1].kind == study_pb2.StudyEvent.KIND_STUDY_FINISHED
            info = client.get_study(synthetic.name)
            assert info.state == common_pb2.STUDY_STATE_COMPLETE
            assert info.n_complete >= 1, info
            report = client.get_report(synthetic.name)
            assert report.plots and all(p.png.startswith(b"\x89PNG") for p in report.plots)
        finally:
            trainer.stop()
    assert process.stop() == 0, process.log.read_text()[-3000:]

    log = process.log.read_text()
    modules = imported_modules(log)
    loaded = sorted(m for m in modules if m.split(".")[0] in NEVER)
    assert not loaded, f"the coordinator imported {', '.join(loaded[:8])} (log: {process.log})"
    missing = [m for m in SEEN if m not in modules]
    assert not missing, f"the import log lacks {missing}: it is not the coordinator's"
    assert imported_modules(log.split(READY, 1)[1]), "no import recorded while serving calls"
