"""A race on FreeSolv: random, TPE, random+Hyperband, TPE+Hyperband on one budget and pool.

Prints what the methodology paper's tables report for each set-up: wall time, trainer-seconds,
epochs trained, best validation RMSE, test RMSE of the winner, and the epochs and seconds each
set-up needed to reach the unpruned random search's best validation RMSE (the anchor, measured
in the same run), with the ratio of epochs against it.

    python bench/race_freesolv.py --model gin --trials 40 --max-epochs 64
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import study_pb2

ROOT = Path(__file__).resolve().parents[1]
SETUPS = [
    ("random", "random", "none"),
    ("tpe", "tpe", "none"),
    ("random-hyperband", "random", "hyperband"),
    ("tpe-hyperband", "tpe", "hyperband"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gin", choices=["gin", "mlp"])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--max-epochs", type=int, default=64)
    ap.add_argument("--trainers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    base = studyfile.load(ROOT / "examples" / f"freesolv_{args.model}.yaml")
    base.budget.n_trials = args.trials
    base.budget.max_epochs = args.max_epochs
    base.parallelism = args.trainers
    base.seed = args.seed
    base.skip_default_trial = True  # every set-up samples all of its trials
    name = f"race-{args.model}-{int(time.time())}"
    req = study_pb2.StartRaceRequest(name=name, base=base)
    for label, sampler, pruner in SETUPS:
        e = req.entries.add(label=label)
        e.sampler.name = sampler
        e.pruner.name = pruner
        if pruner == "hyperband":
            e.pruner.options.update({"min_resource": 1, "reduction_factor": 3})
    t0 = time.monotonic()
    with (
        tempfile.TemporaryDirectory() as state,
        LocalStack(
            state_dir=Path(state), n_trainers=args.trainers, coordinator_listen="127.0.0.1:0"
        ) as stack,
        MolhpoClient(stack.coordinator_address, timeout_s=60) as client,
    ):
        client.start_race(req)
        race = client.get_race(name)
        while not (race.finished and len(race.rows) == len(SETUPS)):
            time.sleep(5.0)
            race = client.get_race(name)
    total = time.monotonic() - t0

    anchor = race.rows[0]
    print(
        f"\nFreeSolv {args.model}: {args.trials} trials, max {args.max_epochs} epochs, "
        f"{args.trainers} trainers, seed {args.seed}; race took {total:.0f} s"
    )
    print(f"target: the unpruned random search's best validation RMSE, {race.target_value:.4f}")
    head = (
        f"{'set-up':18s} {'wall s':>7s} {'trainer s':>9s} {'epochs':>7s} {'best val':>9s}"
        f" {'test':>7s} {'s to tgt':>8s} {'ep to tgt':>9s} {'x fewer epochs':>14s}"
    )
    print(head)
    for r in race.rows:
        reached = r.epochs_to_target >= 0
        ratio = anchor.epochs_to_target / r.epochs_to_target if reached else float("nan")
        print(
            f"{r.label:18s} {r.wall_seconds:7.0f} {r.trainer_seconds:9.0f} {r.epochs:7d} "
            f"{r.best_value:9.4f} {r.best_test.values.get('rmse', float('nan')):7.4f} "
            f"{r.seconds_to_target if reached else float('nan'):8.0f} "
            f"{r.epochs_to_target if reached else -1:9d} {ratio:14.2f}"
        )
    print(
        "\nAnchor (plain Optuna, one process, this kind of machine; BENCHMARKS.md): "
        "random 329 s / 2560 epochs / val 1.566; random+Hyperband 61-86 s / 465-597 epochs."
    )


if __name__ == "__main__":
    main()
