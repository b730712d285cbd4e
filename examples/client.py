"""Start a study from a dict, follow it, and print the best trial.

Run the local stack first (`molhpo up`), then: python examples/client.py [COORDINATOR]
"""

from __future__ import annotations

import sys
import time

from molhpo.client import MolhpoClient
from molhpo.v1 import study_pb2

STUDY = {
    "name": f"client-example-{int(time.time())}",
    "dataset": {"name": "freesolv"},
    "model": "mlp",
    "search_space": {
        "units": {"type": "int", "low": 32, "high": 512, "log": True},
        "dropout": {"type": "float", "low": 0.0, "high": 0.5},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    },
    "objective": {"metric": "rmse"},
    "sampler": {"name": "tpe", "options": {"n_startup_trials": 4}},
    "pruner": {"name": "median", "options": {"n_startup_trials": 3}},
    "budget": {"n_trials": 8, "max_epochs": 30},
    "parallelism": 2,
}


def main(address: str) -> None:
    with MolhpoClient(address) as client:
        info = client.start_study(STUDY)
        print(f"started {info.name}")
        for event in client.watch(info.name, timeout_s=600):
            kind = study_pb2.StudyEvent.Kind.Name(event.kind)
            if kind != "KIND_EPOCH_REPORTED":
                print(kind, event.trial_number, event.message)
        best = client.best_trial(info.name)
        if best is None:
            print("no trial completed")
            return
        print(f"best trial #{best.number}: validation {dict(best.valid.values)}")
        print(f"test {dict(best.test.values)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:50051")
