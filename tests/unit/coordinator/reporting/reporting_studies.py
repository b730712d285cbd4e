"""Studies as the coordinator leaves them, for the report tests.

Every study is an in-memory Optuna study filled with ``create_trial`` and the user attributes
the coordinator records (coordinator.study_runner.on_result / _fail).
"""

from __future__ import annotations

import functools
import io
import json
import random
from typing import Any

import matplotlib.image
import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from coordinator import convert
from coordinator.reporting import Report, build_report
from molhpo.contract import attrs
from molhpo.v1 import common_pb2, study_pb2

optuna.logging.set_verbosity(optuna.logging.WARNING)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_EPOCHS = 30
DISTS = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "hidden": IntDistribution(32, 256),
    "pool": CategoricalDistribution(["mean", "sum", "max"]),
}
PREDICTIONS = {
    "y_true": [0.1 * i for i in range(40)],
    "y_pred": [0.1 * i + 0.05 for i in range(40)],
}
"""Predictions 0.05 off every target: RMSE 0.05."""


def curve(best_step: int, epochs: int, best: float) -> dict[int, float]:
    """Validation RMSE per epoch that reaches ``best`` at ``best_step`` and rises after."""
    return {
        s: best + 0.05 * abs(best_step - s) + (0.02 if s != best_step else 0.0)
        for s in range(1, epochs + 1)
    }


def complete(
    value: float,
    params: dict[str, Any],
    *,
    best_step: int,
    epochs: int = MAX_EPOCHS,
    test: float | None = None,
    enqueued: str | None = None,
    seconds: float = 60.0,
) -> FrozenTrial:
    """A complete trial with the user attributes a trainer's result leaves."""
    user_attrs: dict[str, Any] = {
        attrs.TRIAL_VALID: {"rmse": value, "mae": 0.8 * value, "r2": 0.9},
        "test_metrics": {"rmse": test if test is not None else value + 0.05, "mae": 0.7},
        "epochs_trained": epochs,
        "best_step": best_step,
        "trainer_id": "trainer-a",
        attrs.TRIAL_SECONDS: seconds,
        attrs.TRIAL_N_PARAMETERS: 1000 + params["hidden"] * 10,
        "checkpoint": f"ckpt/epoch-{best_step:05d}.pt",
    }
    if enqueued:
        user_attrs["enqueued"] = enqueued
    return create_trial(
        value=value,
        params=params,
        distributions=DISTS,
        user_attrs=user_attrs,
        intermediate_values=curve(best_step, epochs, value),
    )


def request_json(n_trials: int = 24, objectives: tuple[str, ...] = ("rmse",)) -> str:
    """The StartStudyRequest JSON the coordinator keeps with a study."""
    req = study_pb2.StartStudyRequest(
        name="esol-gin",
        model="gin",
        description="GIN on ESOL",
        dataset=common_pb2.DatasetRef(name="esol", split="scaffold"),
        sampler=common_pb2.ComponentSpec(name="tpe"),
        pruner=common_pb2.ComponentSpec(name="median"),
        budget=common_pb2.Budget(n_trials=n_trials, max_epochs=MAX_EPOCHS),
    )
    if len(objectives) == 1:
        req.objective.CopyFrom(
            common_pb2.Objective(metric=objectives[0], direction=common_pb2.DIRECTION_MINIMIZE)
        )
    else:
        for m in objectives:
            req.objectives.append(
                common_pb2.Objective(metric=m, direction=common_pb2.DIRECTION_MINIMIZE)
            )
    return convert.request_to_json(req)


def _failed(cls: str, reason: str) -> FrozenTrial:
    return create_trial(
        state=TrialState.FAIL,
        params={"lr": 0.09, "hidden": 100, "pool": "sum"},
        distributions=DISTS,
        user_attrs={
            attrs.TRIAL_FAILURE_CLASS: cls,
            attrs.TRIAL_FAILURE_REASON: reason,
            "trainer_id": "b",
        },
        intermediate_values={1: 3.0, 2: float("nan")},
    )


def molhpo_study(**kw: Any) -> optuna.Study:
    """A study as the coordinator leaves it: default trial 0, tuned trials, pruned, failed."""
    study = optuna.create_study(direction="minimize")
    st, sid = study._storage, study._study_id
    st.set_study_system_attr(sid, attrs.STUDY_REQUEST, request_json(**kw))
    st.set_study_system_attr(
        sid,
        attrs.STUDY_DATASET,
        {
            "name": "esol",
            "n_molecules": 1128,
            "n_invalid": 0,
            "invalid_examples": [],
            "target_names": ["logS"],
        },
    )
    # 0: the family's default configuration
    study.add_trial(
        complete(
            1.20,
            {"lr": 1e-3, "hidden": 64, "pool": "mean"},
            best_step=22,
            test=1.31,
            enqueued="default",
        )
    )
    # 1: best, but its best epoch is the first (early stopping ended it at 12)
    study.add_trial(
        complete(0.60, {"lr": 0.08, "hidden": 200, "pool": "sum"}, best_step=1, epochs=12)
    )
    # 2: second, still improving at the end of its full budget
    study.add_trial(
        complete(0.62, {"lr": 2e-4, "hidden": 128, "pool": "max"}, best_step=MAX_EPOCHS)
    )
    # 3: pruned after 4 epochs
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"lr": 1e-4, "hidden": 40, "pool": "mean"},
            distributions=DISTS,
            user_attrs={"epochs_trained": 4, "best_step": 4, "seconds": 8.0, "trainer_id": "b"},
            intermediate_values={1: 2.5, 2: 2.2, 3: 2.1, 4: 2.0},
        )
    )
    # 4, 5: failed
    study.add_trial(_failed("diverged", "training loss became nan at epoch 3; lower lr (now 0.09)"))
    study.add_trial(_failed("trainer_lost", "trainer b stopped sending heartbeats"))
    # 6..: ordinary trials, worse than 1 and 2, best epoch in the middle
    rng = random.Random(7)
    for i in range(8):
        params = {
            "lr": 10 ** rng.uniform(-4, -1),
            "hidden": rng.randint(32, 256),
            "pool": rng.choice(["mean", "sum", "max"]),
        }
        study.add_trial(complete(0.7 + 0.05 * i, params, best_step=15))
    return study


def unfinished_study() -> optuna.Study:
    """No trial completed: one pruned, one failed, one running."""
    study = optuna.create_study(direction="minimize")
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"lr": 1e-3},
            distributions={"lr": DISTS["lr"]},
            intermediate_values={1: 2.0, 2: 1.9},
        )
    )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"lr": 1e-1},
            distributions={"lr": DISTS["lr"]},
            user_attrs={"failure_class": "diverged", "failure_reason": "loss became nan"},
        )
    )
    study.add_trial(create_trial(state=TrialState.RUNNING))
    return study


PARETO_POINTS = [(0.9, 5000.0), (0.7, 20000.0), (0.8, 9000.0), (1.0, 6000.0), (0.75, 30000.0)]
"""(validation RMSE, n_parameters) of the multi-objective study's trials."""


def multi_objective_study() -> optuna.Study:
    """RMSE against model size, trial 0 the default configuration."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    study._storage.set_study_system_attr(
        study._study_id, attrs.STUDY_REQUEST, request_json(objectives=("rmse", "n_parameters"))
    )
    for i, (rmse, n) in enumerate(PARETO_POINTS):
        study.add_trial(
            create_trial(
                values=[rmse, n],
                params={"lr": 10 ** (-4 + 0.5 * i), "hidden": 32 + 40 * i, "pool": "mean"},
                distributions=DISTS,
                user_attrs={
                    "valid_metrics": {"rmse": rmse},
                    "test_metrics": {"rmse": rmse + 0.1},
                    "epochs_trained": 10,
                    "best_step": 10 if i == 1 else 5,
                    "seconds": 30.0,
                    "n_parameters": int(n),
                    **({"enqueued": "default"} if i == 0 else {}),
                },
            )
        )
    return study


def foreign_study() -> optuna.Study:
    """A study molhpo did not make: no request, no user attrs, NaN and inf values."""
    study = optuna.create_study(direction="maximize")
    dists = {"x": FloatDistribution(0.0, 1.0), "kind": CategoricalDistribution(["a", "b"])}
    for i in range(6):
        x = i / 5
        study.add_trial(
            create_trial(
                value=x,
                params={"x": x, "kind": "ab"[i % 2]},
                distributions=dists,
                intermediate_values={1: 0.1, 2: float("nan"), 3: x},
            )
        )
    study.add_trial(
        create_trial(value=float("inf"), params={"x": 0.5, "kind": "a"}, distributions=dists)
    )
    study.add_trial(create_trial(value=0.3, params={"x": 0.3}, distributions={"x": dists["x"]}))
    return study


def assert_png(data: bytes) -> None:
    """``data`` is a PNG image of a real size."""
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024
    img = np.asarray(matplotlib.image.imread(io.BytesIO(data), format="png"))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def strict_json(text: str) -> Any:
    """``text`` parsed as JSON, failing on NaN and Infinity (which JSON does not have)."""

    def no_constants(name: str) -> None:
        raise AssertionError(f"the JSON holds {name}, which is not JSON")

    return json.loads(text, parse_constant=no_constants)


@functools.cache
def main_report() -> tuple[optuna.Study, Report]:
    """:func:`molhpo_study` and its report with :data:`PREDICTIONS`, built once."""
    study = molhpo_study()
    return study, build_report(study, predictions=PREDICTIONS)
