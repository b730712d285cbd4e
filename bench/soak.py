"""Soak: a long study while trainers are SIGKILLed at random; nothing may be lost.

Prints trials requested, terminal, lost (must be 0), still RUNNING (must be 0), retries,
resumed trials and the kills made.

    python bench/soak.py --trials 200 --kill-every 4
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from pathlib import Path

import optuna

from molhpo import studyfile
from molhpo.client import MolhpoClient
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--trainers", type=int, default=2)
    ap.add_argument("--kill-every", type=float, default=4.0, help="mean seconds between kills")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    req = studyfile.load(ROOT / "examples" / "freesolv_mlp.yaml")
    req.name = f"soak-{int(time.time())}"
    req.budget.n_trials = args.trials
    req.budget.max_epochs = args.max_epochs
    req.dataset.max_molecules = 200
    env = {
        "MOLHPO_COORDINATOR_LEASE_S": "3",
        "MOLHPO_COORDINATOR_HEARTBEAT_INTERVAL_S": "0.5",
        "MOLHPO_COORDINATOR_MAX_ATTEMPTS": "10",
    }
    rng = random.Random(args.seed)
    kills = 0
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as state:
        with (
            LocalStack(
                state_dir=Path(state),
                n_trainers=args.trainers,
                coordinator_listen="127.0.0.1:0",
                extra_env=env,
            ) as stack,
            MolhpoClient(stack.coordinator_address, timeout_s=60) as client,
        ):
            client.start_study(req)
            done = threading.Event()

            def killer() -> None:
                nonlocal kills
                while not done.wait(rng.expovariate(1.0 / args.kill_every)):
                    stack.restart_trainer(
                        f"trainer-{rng.randrange(args.trainers)}", kill=True, wait=False
                    )
                    kills += 1

            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            info = client.wait(req.name, timeout_s=6 * 3600)
            done.set()
            thread.join(60)
            trials = client.list_trials(req.name)
        study = optuna.load_study(
            study_name=req.name, storage=f"sqlite:///{Path(state) / 'studies.db'}"
        )
        attempts = [t.user_attrs.get("attempts", 1) for t in study.trials]
        resumed = sum(1 for t in study.trials if t.user_attrs.get("resumed_from_step", 0) > 0)
    terminal = sum(
        t.state
        in (
            common_pb2.TRIAL_STATE_COMPLETE,
            common_pb2.TRIAL_STATE_PRUNED,
            common_pb2.TRIAL_STATE_FAIL,
        )
        for t in trials
    )
    running = sum(t.state == common_pb2.TRIAL_STATE_RUNNING for t in trials)
    failed = sum(t.state == common_pb2.TRIAL_STATE_FAIL for t in trials)
    print(
        f"soak: {time.monotonic() - t0:.0f} s, {kills} trainer kills, study "
        f"{common_pb2.StudyState.Name(info.state)}"
    )
    print(
        f"trials requested {args.trials}, recorded {len(trials)}, terminal {terminal}, "
        f"lost {args.trials - terminal}, running {running}, failed {failed}"
    )
    for t in trials:
        if t.state == common_pb2.TRIAL_STATE_FAIL:
            print(f"  trial {t.number} failed: {t.failure_class}: {t.failure_reason}")
    print(
        f"retries {sum(a - 1 for a in attempts)} (trials retried: "
        f"{sum(1 for a in attempts if a > 1)}), resumed from a saved epoch: {resumed}"
    )


if __name__ == "__main__":
    main()
