"""Optimizer throughput: trials per second with zero-cost trials on top of a history.

For each history size (0, 1,000, 5,000 finished trials already in the study) two systems run
``--trials`` more trials of the synthetic search space (4 parameters) with the same sampler,
multivariate TPE with constant liar (molhpo's ``tpe`` defaults), seed 0:

- the anchor, Optuna's own distributed recipe: ``--workers`` processes calling
  ``study.optimize`` on one study in one SQLite store, the objective free;
- molhpo: a coordinator and one trainer with 8 slots running synthetic trials of one
  0-second epoch (so a trial costs a gRPC dispatch, one report and one result), the history
  written into its store before the study is resumed.

Printed: trials per second of each and their ratio (goal >= 3x). The history is written with
Optuna's ``add_trials`` before timing starts, the same trials for both.

    python bench/optimizer_throughput.py [--history 0 1000 5000 --trials 100 --workers 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from _common import (
    SYNTHETIC_SPACE,
    run_to_end,
    stack,
    suggest_synthetic,
    synthetic_request,
    table,
)

from trainer.training.synthetic import curve_value


def history(n: int) -> list[optuna.trial.FrozenTrial]:
    """``n`` finished trials with random parameters and their synthetic values."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        params = {
            "lr": float(10 ** rng.uniform(-5, -1)),
            "width": round(2 ** rng.uniform(3, 10)),
            "depth": int(rng.integers(1, 9)),
            "dropout": float(rng.uniform(0, 0.8)),
        }
        out.append(
            optuna.trial.create_trial(
                params=params,
                distributions=SYNTHETIC_SPACE,
                value=curve_value(params, 1, 0.02, i),
            )
        )
    return out


def sampler() -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, constant_liar=True)


def _worker(url: str, n: int) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="anchor", storage=url, sampler=sampler())

    def objective(trial: optuna.Trial) -> float:
        return curve_value(suggest_synthetic(trial), 1, 0.02, trial.number)

    study.optimize(objective, n_trials=n)


def anchor(db: Path, past: list[optuna.trial.FrozenTrial], trials: int, workers: int) -> float:
    """Trials per second of Optuna worker processes sharing one SQLite study."""
    url = f"sqlite:///{db}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="anchor", storage=url)
    study.add_trials(past)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker, args=(url, trials // workers + (i < trials % workers)))
        for i in range(workers)
    ]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    # Process start-up (imports, ~1-2 s) is in the anchor's time, as it is in its recipe.
    return trials / (time.perf_counter() - t0)


def molhpo(state: Path, past: list[optuna.trial.FrozenTrial], trials: int, slots: int) -> float:
    """Trials per second of a molhpo study resumed on top of the same history."""
    with stack(1, slots) as (s, client):
        req = synthetic_request(f"throughput-{len(past)}", n_trials=1, max_epochs=1)
        req.pruner.name = "none"
        req.pruner.ClearField("options")
        req.parallelism = slots
        req.skip_default_trial = True
        req.fixed_params["epoch_seconds"] = 0.0
        run_to_end(client, req)
        url = f"sqlite:///{s.state_dir / 'studies.db'}"
        optuna.load_study(study_name=req.name, storage=url).add_trials(past)
        t0 = time.time()
        client.resume_study(req.name, n_trials=1 + len(past) + trials)
        info = client.wait(req.name, 3600)
        return trials / (info.end_time - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--history", type=int, nargs="+", default=[0, 1000, 5000])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8)
    args = ap.parse_args()
    rows: list[list[object]] = []
    for n in args.history:
        past = history(n)
        with tempfile.TemporaryDirectory() as tmp:
            a = anchor(Path(tmp) / "anchor.db", past, args.trials, args.workers)
            m = molhpo(Path(tmp), past, args.trials, args.slots)
        rows.append([n, a, m, f"{m / a:.2f}x"])
    print(
        f"\nzero-cost trials, multivariate TPE (constant liar), {args.trials} trials timed; "
        f"anchor: {args.workers} Optuna worker processes on one SQLite store; molhpo: 1 trainer, "
        f"{args.slots} slots"
    )
    print(table(["history", "optuna trials/s", "molhpo trials/s", "ratio"], rows))
    print("goal: ratio >= 3x")


if __name__ == "__main__":
    main()
