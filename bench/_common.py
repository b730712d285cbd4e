"""What the benchmarks share: a local stack on a temporary state folder, running a study to its
end, and printing a table."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import optuna

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

ROOT = Path(__file__).resolve().parents[1]
ENDED = (
    common_pb2.STUDY_STATE_COMPLETE,
    common_pb2.STUDY_STATE_STOPPED,
    common_pb2.STUDY_STATE_FAILED,
)


@contextlib.contextmanager
def stack(
    n_trainers: int = 1, slots: int = 1, env: dict[str, str] | None = None
) -> Iterator[tuple[LocalStack, MolhpoClient]]:
    """A local stack (own redis-server, SQLite store) and a client to its coordinator."""
    with (
        tempfile.TemporaryDirectory() as state,
        LocalStack(
            state_dir=Path(state),
            n_trainers=n_trainers,
            slots=slots,
            coordinator_listen="127.0.0.1:0",
            extra_env=dict(env or {}),
        ) as s,
        MolhpoClient(s.coordinator_address, timeout_s=60) as client,
    ):
        yield s, client


SYNTHETIC_SPACE: dict[str, optuna.distributions.BaseDistribution] = {
    "lr": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
    "width": optuna.distributions.IntDistribution(8, 1024, log=True),
    "depth": optuna.distributions.IntDistribution(1, 8),
    "dropout": optuna.distributions.FloatDistribution(0.0, 0.8),
}
"""The search space of examples/synthetic.yaml, for the Optuna anchors."""


def suggest_synthetic(trial: optuna.Trial) -> dict[str, float | int]:
    """Ask an Optuna trial for a point of SYNTHETIC_SPACE."""
    out: dict[str, float | int] = {}
    for name, d in SYNTHETIC_SPACE.items():
        if isinstance(d, optuna.distributions.IntDistribution):
            out[name] = trial.suggest_int(name, d.low, d.high, log=d.log)
        elif isinstance(d, optuna.distributions.FloatDistribution):
            out[name] = trial.suggest_float(name, d.low, d.high, log=d.log)
    return out


def synthetic_request(name: str, **budget: int) -> study_pb2.StartStudyRequest:
    """examples/synthetic.yaml under another name, with budget fields replaced."""
    req = studyfile.load(ROOT / "examples" / "synthetic.yaml")
    req.name = name
    for key, value in budget.items():
        setattr(req.budget, key, value)
    return req


def run_to_end(
    client: MolhpoClient, req: study_pb2.StartStudyRequest, timeout_s: float = 3600
) -> study_pb2.StudyInfo:
    """Start a study and wait for it to end; raises when it fails."""
    client.start_study(req)
    # Watching costs the coordinator less than polling GetStudy, which lists every trial.
    info = client.wait(req.name, timeout_s)
    if info.state != common_pb2.STUDY_STATE_COMPLETE:
        raise RuntimeError(f"study {req.name} ended {info.state}: {info.message}")
    return info


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain aligned table (first column left, others right)."""
    cells = [[str(h) for h in header]] + [
        [f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        parts = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts))
    return "\n".join(lines)
