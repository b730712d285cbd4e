"""The training of one trial (``train``): data, model, optimiser, epochs, result.

``train`` reads a bundled data set (or a user file), splits it, featurises it through the
process-wide cache (``trainer.training.data``), puts it on the trial's device
(``trainer.training.device_data``), builds the model from the catalogue's hyperparameters with
its optimiser and schedule (``trainer.training.recipe``), resumes from a saved state if the
trial has one (``trainer.checkpoint``), and trains it on standardised targets
(``trainer.training.epochs``). After every epoch it measures the validation set in the target's
units and reports an ``EpochResult`` through ``on_epoch``, whose answer decides whether to go
on (a pruned or cancelled trial answers False). The weights of the best validation epoch are
kept in memory, and the test set is measured with them at the end
(``trainer.training.evaluation``).

The recipe is part of the hyperparameters (``catalogue.TRAINING_HYPERPARAMETERS``); the defaults
are plain Adam with a constant learning rate on MSE, no clipping and no early stopping:

- ``optimizer``, ``scheduler``, ``loss``: see ``trainer.training.recipe``.
- ``patience`` > 0: early stopping once that many epochs in a row brought no validation
  improvement of the objective. Training then ends with ``epochs_trained < max_epochs`` and
  ``stopped=False``: ``stopped`` only means that ``on_epoch`` asked to stop.
- ``grad_clip`` > 0: the gradients' global L2 norm is clipped to it (``clip_grad_norm_``).
- ``amp``: mixed precision for the hidden layers of training steps
  (``trainer.training.precision``): bfloat16 on GPUs that compute it natively (compute
  capability 8.0 and newer), float16 with a gradient scaler on older GPUs, off on the CPU.
  Readouts (pooling), heads, the output layer and the loss stay in float32, and every
  evaluation (validation, test, predictions) runs in float32 throughout.

``TrainConfig.max_molecules`` > 0 trains on a random subset of that many molecules (drawn with
``split_seed``, then split as usual): quick smoke runs and tests on a slice of a data set.

Determinism: the split depends only on ``split_seed``. Weight initialisation is seeded with
``seed`` under a process-wide lock (``trainer.seeding``: trials run in threads and torch's
generator is global); batch order and dropout masks (``SeededDropout``) come from private
generators derived from ``seed``. So on CPU a trial is reproducible even while other trials
train in the same process. On CUDA, scatter-based pooling uses atomic adds and can differ in
the last bits between runs.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

import torch

from molhpo.contract.catalogue import SYNTHETIC, param_int, resolve_params
from molhpo.contract.enums import FailureClass
from molhpo.contract.errors import TrainingError
from trainer.checkpoint import (
    CheckpointSink,
    ResumeStore,
    UnusableResumeState,
    restore_resume_state,
)
from trainer.seeding import build_seeded
from trainer.training.data import prepare_data
from trainer.training.device_data import to_device
from trainer.training.epochs import Progress, run_epochs
from trainer.training.evaluation import measure_test
from trainer.training.recipe import Learner, build_learner
from trainer.training.streams import on_own_stream
from trainer.training.synthetic import train_synthetic
from trainer.training.trial import (
    EpochResult,
    TrainConfig,
    TrainResult,
    check_config,
    resolve_device,
)

__all__ = [
    "EpochResult",
    "TrainConfig",
    "TrainResult",
    "release_cached_memory",
    "train",
]

log = logging.getLogger(__name__)


@on_own_stream
def train(
    config: TrainConfig,
    on_epoch: Callable[[EpochResult], bool],
    checkpoints: CheckpointSink | None = None,
    resume: ResumeStore | None = None,
) -> TrainResult:
    """Train one trial; ``on_epoch`` is called after every epoch, return False to stop at once.

    Epochs good enough for ``checkpoints`` are saved there with everything needed to rebuild
    the model: family, resolved hyperparameters, input sizes, weights and target scaling.
    A trial dispatched again continues from the state its last attempt saved in ``resume``
    (random state included, on this run's device); a state that does not fit the trial is
    dropped with a warning and the trial starts over.

    Raises InvalidArgument for unknown names or out-of-range settings, InvalidConfigError for
    hyperparameters that cannot work, TrainingError of class ``FailureClass.OUT_OF_MEMORY``
    when the device (or host) runs out of memory, DivergedError when the training loss or the
    validation predictions become NaN or infinite.
    """
    try:
        return _train(config, on_epoch, checkpoints, resume, restore=True)
    except UnusableResumeState as err:
        log.warning("%s; the trial starts over", err)
        return _train(config, on_epoch, checkpoints, resume, restore=False)


def _train(
    config: TrainConfig,
    on_epoch: Callable[[EpochResult], bool],
    checkpoints: CheckpointSink | None,
    resume: ResumeStore | None,
    restore: bool,
) -> TrainResult:
    """``train`` in its steps: check the settings, prepare the data, put it on the device,
    build the model and what trains it, resume (when ``restore``), run the epochs, and
    measure the best epoch's model on the test rows."""
    started = time.perf_counter()
    check_config(config)
    if config.model == SYNTHETIC:
        return _train_synthetic(config, on_epoch, started)
    params = resolve_params(config.model, config.params)
    device = resolve_device(config.device)
    data = prepare_data(config)
    n_parameters = 0
    # From the first copy to the device on, running out of memory is a resource failure.
    try:
        inputs = to_device(data, device)
        model = build_seeded(
            config.model, params, inputs.in_features, inputs.edge_features, config.seed
        )
        n_parameters = sum(p.numel() for p in model.parameters())
        learner = build_learner(model, config, params, device)
        progress = _resumed(config, learner, resume if restore else None)
        run_epochs(config, params, data, inputs, learner, progress, on_epoch, checkpoints, resume)
        learner.model.load_state_dict(progress.best_state)
        test_pred, test_metrics = measure_test(learner.model, inputs, data)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        batch_size = param_int(params, "batch_size")
        raise _out_of_memory(config, device, batch_size, n_parameters, exc) from exc

    return TrainResult(
        epochs_trained=progress.epochs_trained,
        stopped=progress.stopped,
        best_step=progress.best_step,
        best_valid_metrics=progress.best_metrics,
        test_metrics=test_metrics,
        seconds=time.perf_counter() - started,
        n_parameters=n_parameters,
        resumed_from=progress.resumed_from,
        test_predictions=tuple(float(v) for v in test_pred),
        test_targets=tuple(float(v) for v in data.targets[data.test_rows]),
    )


def _resumed(config: TrainConfig, learner: Learner, resume: ResumeStore | None) -> Progress:
    """The progress the trial goes on from: where its last attempt saved it in ``resume``
    (loaded into ``learner``), or nothing done yet."""
    saved = resume.load() if resume is not None else None
    # A trial dispatched again picks up where its last attempt saved it.
    point = restore_resume_state(
        saved,
        config.model,
        learner.model,
        learner.optimizer,
        learner.schedule,
        learner.order_rng,
        learner.device,
    )
    return Progress() if point is None else Progress.resumed_at(point)


def _train_synthetic(
    config: TrainConfig, on_epoch: Callable[[EpochResult], bool], started: float
) -> TrainResult:
    """A synthetic trial (trainer.training.synthetic): curves, no network, no data."""

    def report(step: int, loss: float, valid: dict[str, float], seconds: float) -> bool:
        return on_epoch(EpochResult(step, loss, valid, seconds, samples=0))

    epochs, stopped, best_step, best, test = train_synthetic(
        config.params,
        config.max_epochs,
        config.seed,
        config.objective_metric,
        config.objective_direction,
        report,
    )
    return TrainResult(
        epochs_trained=epochs,
        stopped=stopped,
        best_step=best_step,
        best_valid_metrics=best,
        test_metrics=test,
        seconds=time.perf_counter() - started,
        n_parameters=0,
    )


def _out_of_memory(
    config: TrainConfig,
    device: torch.device,
    batch_size: int,
    n_parameters: int,
    exc: BaseException,
) -> TrainingError:
    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return TrainingError(
        f"model '{config.model}' ran out of memory on {device} with batch_size {batch_size} "
        f"and {n_parameters} parameters ({first_line}); trials beside it may have held the "
        "memory, so it is dispatched again; if it fails so every time, lower batch_size or "
        "the model size, or run fewer slots per GPU",
        failure_class=FailureClass.OUT_OF_MEMORY,
    )


def release_cached_memory(device: str | None) -> None:
    """Hand the memory torch's CUDA caching allocator holds, but no tensor uses, back to the
    driver after a trial on ``device`` failed (running out of memory above all): other
    processes on the GPU can then have it, and the next trial starts unfragmented. A no-op
    off CUDA."""
    if device is None or torch.device(device).type != "cuda" or not torch.cuda.is_initialized():
        return
    gc.collect()  # the failed trial's tensors may still hang in reference cycles (tracebacks)
    torch.cuda.empty_cache()
