"""Pruning-decision latency: from a trainer writing an epoch report to it reading the decision.

molhpo: one trainer process with 64 slots runs a synthetic study of parallelism 64 (TPE +
Hyperband, so decisions are real), every epoch ``--epoch-s`` long; the trainer's histogram
``molhpo_trainer_decision_wait_seconds`` (buckets fine below 5 ms) is read before and after,
and p50/p99 are interpolated inside its buckets.

The anchor, in the same run: Optuna's in-process ``trial.report`` + ``trial.should_prune``
with the same pruner, on an SQLite store and in memory, timed per call while 64 trials are
running (trials asked first, then reported round-robin). Published figures for context: Katib's
metrics collector ~1 s, Syne Tune polls every 5 s. Goal: p99 <= 5 ms with 64 trials running.

    python bench/decision_latency.py [--trials 256 --epoch-s 0.5 --max-epochs 9]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
from _common import run_to_end, stack, synthetic_request, table
from prometheus_client.parser import text_string_to_metric_families

from trainer.training.synthetic import curve_value

METRIC = "molhpo_trainer_decision_wait_seconds"


def buckets(url: str) -> dict[float, float]:
    """Cumulative bucket counts of the decision-wait histogram at a /metrics URL."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out: dict[float, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == METRIC:
            for s in fam.samples:
                if s.name == METRIC + "_bucket":
                    out[float(s.labels["le"])] = s.value
    return out


def quantile(cumulative: dict[float, float], q: float) -> float:
    """The q-quantile of a histogram, linear inside the bucket it falls in (Prometheus'
    histogram_quantile)."""
    edges = sorted(cumulative)
    total = cumulative[edges[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for edge in edges:
        if cumulative[edge] >= rank:
            if edge == float("inf"):
                return lower
            inside = cumulative[edge] - below
            return lower + (edge - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = edge, cumulative[edge]
    return edges[-1]


def anchor(storage: str | None, n_running: int, steps: int) -> tuple[float, float]:
    """p50 and p99 seconds of report + should_prune with Optuna's Hyperband, n trials running."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=steps),
    )
    trials = [study.ask() for _ in range(n_running)]
    params = [
        {"lr": 10 ** -(1 + 4 * (i / n_running)), "width": 128, "depth": 3, "dropout": 0.2}
        for i in range(n_running)
    ]
    times: list[float] = []
    alive = list(range(n_running))
    for step in range(1, steps + 1):
        for i in list(alive):
            t0 = time.perf_counter()
            trials[i].report(curve_value(params[i], step, 0.02, i), step)
            pruned = trials[i].should_prune()
            times.append(time.perf_counter() - t0)
            if pruned:
                study.tell(trials[i], state=optuna.trial.TrialState.PRUNED)
                alive.remove(i)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=256)
    ap.add_argument("--running", type=int, default=64)
    ap.add_argument("--epoch-s", type=float, default=0.5)
    ap.add_argument("--max-epochs", type=int, default=9)
    args = ap.parse_args()
    with stack(1, args.running) as (s, client):
        url = s.trainer_metrics[0]
        before = buckets(url)
        req = synthetic_request("latency", n_trials=args.trials, max_epochs=args.max_epochs)
        req.parallelism = args.running
        req.fixed_params["epoch_seconds"] = args.epoch_s
        info = run_to_end(client, req)
        after = buckets(url)
    diff = {le: after[le] - before.get(le, 0.0) for le in after}
    n = int(diff[float("inf")])
    wall = info.end_time - info.start_time
    rows: list[list[object]] = [
        [
            f"molhpo ({args.running} running)",
            n,
            quantile(diff, 0.5) * 1e3,
            quantile(diff, 0.99) * 1e3,
            f"{diff[0.005] / n:.1%}",
        ]
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for label, storage in (
            ("optuna, SQLite store", f"sqlite:///{Path(tmp) / 'a.db'}"),
            ("optuna, in memory", None),
        ):
            p50, p99 = anchor(storage, args.running, args.max_epochs)
            rows.append([label, "", p50 * 1e3, p99 * 1e3, ""])
    print(
        f"\ndecision latency: {args.trials} synthetic trials, {args.running} running, "
        f"{args.epoch_s} s epochs, TPE + Hyperband; study wall {wall:.1f} s"
    )
    print(table(["system", "decisions", "p50 ms", "p99 ms", "<= 5 ms"], rows))
    print("published: Katib collector ~1000 ms, Syne Tune polling 5000 ms; goal p99 <= 5 ms")


if __name__ == "__main__":
    main()
