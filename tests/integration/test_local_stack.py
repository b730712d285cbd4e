"""`molhpo up` starts redis-server, a coordinator and trainers, and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (its parent has not reaped it yet).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_stops_every_child_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "molhpo",
            "up",
            "--trainers",
            "2",
            "--state-dir",
            str(tmp_path),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    stack_file = tmp_path / "stack.json"
    deadline = time.monotonic() + 120
    while not stack_file.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.2)
    pids = json.loads(stack_file.read_text())["pids"]
    assert set(pids) == {"redis", "coordinator", "trainer-0", "trainer-1"}
    assert all(_alive(pid) for pid in pids.values())
    proc.send_signal(sig)
    assert proc.wait(60) == 0
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [name for name, pid in pids.items() if _alive(pid)] == []
    assert not stack_file.exists()


def test_children_die_with_a_killed_launcher(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "molhpo",
            "up",
            "--trainers",
            "1",
            "--state-dir",
            str(tmp_path),
            "--listen",
            "127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stack_file = tmp_path / "stack.json"
    deadline = time.monotonic() + 120
    while not stack_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = json.loads(stack_file.read_text())["pids"]
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [name for name, pid in pids.items() if _alive(pid)] == []
