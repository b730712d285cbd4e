"""Two studies sharing one trainer pool get max-min fair shares of its slots.

A study of short trials and a study of long ones both want every slot. Handing each freed slot
to whoever asks first would let the long study collect slots (it gives them back ten times
less often); max-min fairness hands a freed slot to the waiting study holding fewer, so while
both have work neither holds more than half the slots plus one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import RedisServer

from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2

pytestmark = pytest.mark.integration

SLOTS = 6
FAIR_SHARE = SLOTS // 2


def synthetic(name: str, epoch_seconds: float, max_epochs: int, n_trials: int) -> dict[str, Any]:
    """A study of synthetic trials (a set time per epoch, no CPU) that wants every slot."""
    return {
        "name": name,
        "dataset": {"name": "synthetic"},
        "model": "synthetic",
        "search_space": {
            "lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
            "width": {"type": "int", "low": 8, "high": 1024, "log": True},
            "depth": {"type": "int", "low": 1, "high": 8},
            "dropout": {"type": "float", "low": 0.0, "high": 0.8},
        },
        "fixed_params": {"epoch_seconds": epoch_seconds},
        "sampler": {"name": "random"},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials, "max_epochs": max_epochs},
        "parallelism": SLOTS,
        "seed": 0,
    }


@dataclass(frozen=True)
class Sample:
    """Both studies' counts at one moment, as GetStudy tells them."""

    at: float
    running: dict[str, int]
    undispatched: dict[str, int]
    states: dict[str, int]


def sample(client: MolhpoClient, names: list[str]) -> Sample:
    infos = {n: client.get_study(n) for n in names}
    return Sample(
        time.monotonic(),
        {n: i.n_running for n, i in infos.items()},
        {
            n: i.request.budget.n_trials - (i.n_running + i.n_complete + i.n_pruned + i.n_failed)
            for n, i in infos.items()
        },
        {n: i.state for n, i in infos.items()},
    )


@pytest.fixture
def stack(redis_server: RedisServer, tmp_path: Path) -> Iterator[LocalStack]:
    # No trainer yet: the test adds one once both studies wait, so neither gets a head start.
    with LocalStack(
        state_dir=tmp_path,
        n_trainers=0,
        coordinator_listen="127.0.0.1:0",
        redis_url=redis_server.url,
        key_prefix="sharing",
    ) as st:
        yield st


@pytest.fixture
def start_trainer(
    stack: LocalStack, tmp_path: Path
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """Starts one real trainer process with SLOTS slots (logs/trainer-late.log), when asked."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        log_path = tmp_path / "logs" / "trainer-late.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        args = [
            *(sys.executable, "-m", "molhpo", "trainer"),
            *("--coordinator", stack.coordinator_address),
            *("--redis-url", stack.redis_url),
            *("--key-prefix", stack.key_prefix),
            *("--slots", str(SLOTS)),
            *("--trainer-id", "trainer-late"),
            *("--torch-threads", "1"),
            *("--artifact-dir", str(tmp_path / "artifacts")),
        ]
        with open(log_path, "wb") as out:
            procs.append(
                subprocess.Popen(
                    args,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
            )
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_two_studies_sharing_the_pool_get_max_min_fair_shares(
    stack: LocalStack, start_trainer: Callable[[], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    short = synthetic("short", epoch_seconds=0.1, max_epochs=2, n_trials=40)
    long = synthetic("long", epoch_seconds=0.5, max_epochs=4, n_trials=12)
    names = [short["name"], long["name"]]
    with MolhpoClient(stack.coordinator_address, timeout_s=30) as client:
        for study in (short, long):
            client.start_study(study)
        # Both runners ask for slots at once and every half second after; the trainer takes
        # seconds to start, so both wait when it registers and neither gets a head start.
        proc = start_trainer()
        log_path = tmp_path / "logs" / "trainer-late.log"
        samples: list[Sample] = []
        deadline = time.monotonic() + 300
        while True:
            s = sample(client, names)
            samples.append(s)
            if all(v != common_pb2.STUDY_STATE_RUNNING for v in s.states.values()):
                break
            assert proc.poll() is None, log_path.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the two studies did not finish"
            time.sleep(0.1)
        infos = [client.get_study(n) for n in names]

    assert [i.state for i in infos] == [common_pb2.STUDY_STATE_COMPLETE] * 2
    assert [i.n_complete for i in infos] == [40, 12]
    # While both studies have trials left to dispatch (and the trainer runs some), both want
    # every slot.
    contended = [
        s
        for s in samples
        if all(n > 0 for n in s.undispatched.values()) and sum(s.running.values()) > 0
    ]
    assert len(contended) >= 10, f"only {len(contended)} samples while both had work"
    over = [
        (round(s.at - contended[0].at, 2), s.running)
        for s in contended
        if max(s.running.values()) > FAIR_SHARE + 1
    ]
    assert not over, f"a study held more than {FAIR_SHARE} + 1 of {SLOTS} slots: {over}"
    # And the pool was shared, not left idle: both ran their fair share at once.
    assert any(min(s.running.values()) >= FAIR_SHARE - 1 for s in contended), [
        s.running for s in contended
    ]
