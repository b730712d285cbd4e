"""What the journeys share: running ``molhpo`` as a user does (the venv's console script, in a
working directory of the user's, output read as text), the local stack of ``molhpo up``, the
user's own data files, and the record of every ``molhpo`` command the tier ran (the README test
compares it with the commands the README documents).

Not a conftest.py: the tiers below ``tests/`` import ``RedisServer`` from ``tests/conftest.py``
as the module ``conftest``, which a second conftest module would shadow.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
MOLHPO = Path(sys.executable).parent / "molhpo"
FREESOLV = REPO / "molhpo" / "datasets" / "data" / "freesolv.csv"
STACK_START_S = 240.0

T = TypeVar("T")


@dataclass
class Ran:
    """One ``molhpo`` command a journey ran: its arguments (after ``molhpo``), the test that ran
    it, and its exit code (None: a service or a background command, stopped by the test)."""

    args: tuple[str, ...]
    test: str
    returncode: int | None
    output: str = ""


COMMANDS: list[Ran] = []
"""Every ``molhpo`` command run in this session, in order (one registry for every journey
module: this module is imported once)."""


def flat(text: str) -> str:
    """Text with every run of white space made one space (terminal output wraps)."""
    return " ".join(text.split())


def wait_until(
    what: str, check: Callable[[], T | None], timeout_s: float, every_s: float = 0.2
) -> T:
    """Poll ``check`` until it answers something truthy; fail naming ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: none of molhpo's variables unless given, a wide
    terminal (rich wraps at $COLUMNS), unbuffered Python output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLHPO_")}
    env.update({"COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


@dataclass
class Background:
    """A command left running (a service, or a study followed with --watch)."""

    proc: subprocess.Popen[bytes]
    log: Path
    command: str

    def output(self) -> str:
        """What it printed so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, needle: str, timeout_s: float) -> str:
        """The first printed line holding ``needle``; fails if the process ends first."""

        def line() -> str | None:
            found = next((ln for ln in self.output().splitlines() if needle in ln), None)
            if found is None and self.proc.poll() is not None:
                raise AssertionError(
                    f"`{self.command}` exited with {self.proc.returncode} before printing "
                    f"{needle!r}:\n{self.output()[-4000:]}"
                )
            return found

        return wait_until(f"{needle!r} from `{self.command}`", line, timeout_s)

    def finish(self, timeout_s: float) -> tuple[int, str]:
        """Wait for it to end by itself; its exit code and output."""
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"`{self.command}` did not end within {timeout_s:.0f} s:\n{self.output()[-4000:]}"
            ) from None
        return rc, self.output()

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Signal it (Ctrl-C is SIGINT), wait, kill it if it lingers; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


@dataclass
class Molhpo:
    """The ``molhpo`` command of the venv, run in the user's working directory ``cwd``."""

    cwd: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout_s: float = 300.0, ok: bool = True) -> tuple[int, str]:
        """Run ``molhpo ARGS`` to its end; exit code and output (stdout, then stderr).
        ``ok``: fail unless it exits 0."""
        command = "molhpo " + " ".join(args)
        try:
            done = subprocess.run(
                [str(MOLHPO), *args],
                cwd=self.cwd,
                env=user_env(**self.env),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            out = str(err.stdout or "")[-4000:]
            raise AssertionError(f"`{command}` ran over {timeout_s:.0f} s:\n{out}") from None
        out = done.stdout + done.stderr
        _record(args, done.returncode, out)
        if ok and done.returncode != 0:
            raise AssertionError(f"`{command}` exited with {done.returncode}:\n{out[-4000:]}")
        return done.returncode, out

    def start(self, *args: str, log_name: str) -> Background:
        """Start ``molhpo ARGS`` and leave it running; its output goes to a log file."""
        _record(args, None, "")
        logs = self.cwd / "journey-logs"
        logs.mkdir(exist_ok=True)
        log = logs / f"{log_name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(MOLHPO), *args],
                cwd=self.cwd,
                env=user_env(**self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        return Background(proc, log, "molhpo " + " ".join(args))


def _record(args: tuple[str, ...], returncode: int | None, output: str) -> None:
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    COMMANDS.append(Ran(tuple(args), test, returncode, output))


@dataclass
class Stack:
    """A running ``molhpo up``: the launcher and what it wrote to ``.molhpo/stack.json``."""

    up: Background
    workdir: Path
    info: dict[str, object]

    @property
    def address(self) -> str:
        """The coordinator's address."""
        return str(self.info["coordinator"])

    @property
    def redis_url(self) -> str:
        """The Redis the stack started."""
        return str(self.info["redis_url"])

    def metrics(self) -> str:
        """The coordinator's /metrics page."""
        with urllib.request.urlopen(str(self.info["coordinator_metrics"]), timeout=10) as resp:
            return resp.read().decode()


@contextmanager
def molhpo_up(workdir: Path, *flags: str) -> Iterator[Stack]:
    """``molhpo up FLAGS`` in ``workdir`` until the stack is ready; stopped with Ctrl-C after.

    The coordinator listens on a free port (``--listen 127.0.0.1:0``), not 50051, so stacks of
    other test runs on the machine never collide; client commands find it as the README says,
    through ``.molhpo/stack.json`` in the working directory.
    """
    up = Molhpo(workdir).start("up", "--listen", "127.0.0.1:0", *flags, log_name="up")
    stack_file = workdir / ".molhpo" / "stack.json"

    def ready() -> bool:
        if up.proc.poll() is not None:
            raise AssertionError(f"molhpo up exited with {up.proc.returncode}:\n{up.output()}")
        return stack_file.exists() and "Ctrl-C stops everything" in up.output()

    pids: dict[str, int] = {}
    try:
        wait_until("molhpo up to start its stack", ready, STACK_START_S)
        info = json.loads(stack_file.read_text())
        pids = dict(info["pids"])
        yield Stack(up, workdir, info)
    finally:
        rc = up.stop(signal.SIGINT)
        if rc != 0:
            logs = workdir / ".molhpo" / "logs"
            tails = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                for p in sorted(logs.glob("*.log"))
            )
            raise AssertionError(f"molhpo up ended with {rc}:\n{up.output()[-2000:]}\n{tails}")
    assert not stack_file.exists(), "molhpo up left .molhpo/stack.json behind"
    # "Ctrl-C stops every process"
    wait_until(
        f"every process of molhpo up to end ({pids})",
        lambda: not [name for name, pid in pids.items() if _alive(pid)],
        20,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has ended; only its parent has not reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Service:
    """A ``molhpo coordinator`` or ``molhpo trainer`` started on its own, as in a cluster."""

    proc: Background
    address: str
    metrics_url: str

    def metrics(self) -> str:
        """Its /metrics page."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            return resp.read().decode()


def start_coordinator(molhpo: Molhpo, redis_url: str, key_prefix: str) -> Service:
    """``molhpo coordinator`` on a free port (its state in the working directory's .molhpo)."""
    proc = molhpo.start(
        "coordinator",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        redis_url,
        "--key-prefix",
        key_prefix,
        log_name="coordinator",
    )
    try:
        address = proc.wait_for("coordinator listening on", 120).rsplit(" ", 1)[-1]
        metrics = proc.wait_for("metrics http", 10).split()[-1]
    except BaseException:
        proc.stop()
        raise
    return Service(proc, address, metrics)


def start_trainer(
    molhpo: Molhpo, coordinator: str, redis_url: str, key_prefix: str, name: str
) -> Background:
    """``molhpo trainer`` registering at ``coordinator`` (one torch thread: the machine's cores
    are shared by every trainer of the test)."""
    return molhpo.start(
        "trainer",
        "--coordinator",
        coordinator,
        "--redis-url",
        redis_url,
        "--key-prefix",
        key_prefix,
        "--trainer-id",
        name,
        "--torch-threads",
        "1",
        log_name=name,
    )


# ---- the user's data ----------------------------------------------------------------------------


def freesolv_molecules(n: int) -> list[tuple[str, str, float]]:
    """The first ``n`` FreeSolv molecules: (name, SMILES, hydration free energy)."""
    with FREESOLV.open(newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    return [(r["iupac"], r["smiles"], float(r["expt"])) for r in rows]


# Rows that cannot be used, each with the cause the summary must give and where it goes in the
# file (after that many good rows). Ethanol parses fine: only its empty target drops it.
BAD_ROWS: tuple[tuple[int, tuple[str, str, str], str], ...] = (
    (10, ("typo in a ring", "C1CC(", "-1.5"), "unparsable_smiles"),
    (25, ("nothing exported", "", "-2.0"), "unparsable_smiles"),
    (40, ("ethanol", "CCO", ""), "missing_target"),
    (70, ("not measured", "CCCCCCCCO", "NaN"), "missing_target"),
    (100, ("pending", "CC(C)CO", ""), "missing_target"),
    (120, ("with units", "CCCCCl", "-0.2 kcal/mol"), "non_numeric_target"),
    (130, ("overflowed", "CCCBr", "inf"), "non_numeric_target"),
)


@dataclass
class UserCsv:
    """A user's CSV with their own column names: FreeSolv molecules with bad rows mixed in."""

    path: Path
    n_good: int
    # file line (1-based, the header is line 1) -> (SMILES cell, cause)
    bad_lines: dict[int, tuple[str, str]]


def write_user_csv(path: Path, n_good: int = 150) -> UserCsv:
    """``compound,SMILES_str,dG_exp`` rows from FreeSolv, and :data:`BAD_ROWS`."""
    good = freesolv_molecules(n_good)
    rows: list[list[str]] = []
    bad_lines: dict[int, tuple[str, str]] = {}
    bad = {after: (row, cause) for after, row, cause in BAD_ROWS}
    for i, (name, smiles, dg) in enumerate(good):
        if i in bad:
            row, cause = bad[i]
            rows.append(list(row))
            bad_lines[len(rows) + 1] = (row[1], cause)
        rows.append([name, smiles, f"{dg:g}"])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["compound", "SMILES_str", "dG_exp"])
        writer.writerows(rows)
    return UserCsv(path, n_good, bad_lines)


def dropped_rows_by_cause(output: str) -> dict[str, list[str]]:
    """The dropped-rows block a study summary prints, as {cause header: [its row lines]}."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in output.splitlines():
        line = raw.strip()
        if " dropped: " in line and line.split(" ", 1)[0].isdigit():
            current = found.setdefault(line.split(" dropped: ", 1)[1], [])
        elif current is not None and (line.startswith("line ") or line.startswith("record ")):
            current.append(line)
        else:
            current = None
    return found


def summary_counts(output: str) -> dict[str, int]:
    """The last ``trials: N total, C complete, P pruned, F failed, R running`` line, as numbers."""
    lines = [ln for ln in output.splitlines() if ln.strip().startswith("trials: ")]
    assert lines, f"no trial counts in:\n{output[-3000:]}"
    parts = lines[-1].strip().removeprefix("trials: ").split(", ")
    counts = {}
    for part in parts:
        n, word = part.split(" ", 1)
        counts[word] = int(n)
    return counts
