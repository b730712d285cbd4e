"""Parallel scaling and control-plane overhead with synthetic trials.

For N = 1, 4, 16, 64 trainer slots (one trainer process hosting 64 virtual trainers; a study's
parallelism N uses N of them) molhpo runs 3N synthetic trials of E epochs of ``--epoch-s``
seconds each, random sampler, no pruning, so every trial does the same work. Beside it, in the
same run, the anchor: Optuna's own parallel recipe on one machine, ``study.optimize(n_jobs=N)``
threads sharing one SQLite store, running the same curves (report + should_prune per epoch).

Printed per N and system: wall seconds (first dispatch to last result), speed-up against N = 1
(the ideal is N; goal >= 0.9 N) and the control-plane overhead, 1 - ideal wall / wall, where the
ideal is the work divided by N (goal <= 1% at 1-second epochs; Ray Tune reports ~14% for
10,000 one-second trials, a published figure, not measured here).

    python bench/scaling_synthetic.py [--epoch-s 1.0 --epochs 5 --n 1 4 16 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna
from _common import run_to_end, stack, suggest_synthetic, synthetic_request, table

from trainer.training.synthetic import curve_value


def anchor_optuna(n: int, trials: int, epochs: int, epoch_s: float, storage: str) -> float:
    """Wall seconds Optuna's threads (n_jobs=n) take for the same work on one SQLite store."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage,
        study_name=f"anchor-{n}",
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
    )

    def objective(trial: optuna.Trial) -> float:
        params = suggest_synthetic(trial)
        best = float("inf")
        for step in range(1, epochs + 1):
            time.sleep(epoch_s)
            value = curve_value(params, step, 0.02, trial.number)
            best = min(best, value)
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=trials, n_jobs=n)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epoch-s", type=float, default=1.0)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--trials-per-slot", type=int, default=3)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 4, 16, 64])
    args = ap.parse_args()
    work = args.epochs * args.epoch_s  # seconds of one trial
    rows: list[list[object]] = []
    walls: dict[str, dict[int, float]] = {"molhpo": {}, "optuna threads": {}}
    with tempfile.TemporaryDirectory() as tmp, stack(1, max(args.n)) as (_s, client):
        storage = f"sqlite:///{Path(tmp) / 'anchor.db'}"
        for n in args.n:
            trials = args.trials_per_slot * n
            req = synthetic_request(f"scale-{n}", n_trials=trials, max_epochs=args.epochs)
            req.sampler.name = "random"
            req.pruner.name = "none"
            req.pruner.ClearField("options")
            req.parallelism = n
            req.skip_default_trial = True
            req.fixed_params["epoch_seconds"] = args.epoch_s
            info = run_to_end(client, req)
            trials_info = client.list_trials(req.name)
            wall = info.end_time - info.start_time
            per_trial = sum(t.seconds for t in trials_info) / len(trials_info)
            walls["molhpo"][n] = wall
            ideal = trials * work / n
            rows.append(["molhpo", n, trials, wall, ideal, per_trial - work, 1 - ideal / wall])
            time.sleep(0.5)
            wall_a = anchor_optuna(n, trials, args.epochs, args.epoch_s, storage)
            walls["optuna threads"][n] = wall_a
            rows.append(
                ["optuna threads", n, trials, wall_a, ideal, float("nan"), 1 - ideal / wall_a]
            )
    print(
        f"\nsynthetic trials: {args.epochs} epochs x {args.epoch_s} s, "
        f"{args.trials_per_slot} trials per slot, random sampler, no pruning"
    )
    out = []
    for system, n, trials, wall, ideal, extra, overhead in rows:
        n0 = min(args.n)
        # Throughput against the smallest N (each N runs the same trials per slot).
        speedup = n0 * (n / n0) * walls[str(system)][n0] / float(wall)
        out.append(
            [system, n, trials, wall, ideal, speedup, speedup / float(n), extra, f"{overhead:.2%}"]
        )
    print(
        table(
            [
                "system",
                "N",
                "trials",
                "wall s",
                "ideal s",
                "speed-up",
                "x N",
                "s/trial over work",
                "overhead",
            ],
            out,
        )
    )
    print("goals: speed-up >= 0.9 N; overhead <= 1% at 1-s epochs")
    last = max(args.n)
    ratio = walls["optuna threads"][last] / walls["molhpo"][last]
    print(f"at N={last}: molhpo wall vs Optuna threads: {ratio:.2f}x")


if __name__ == "__main__":
    main()
