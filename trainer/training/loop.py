"""The training loop of one trial: data, split, features, model, optimiser, per-epoch reports.

``train`` reads a bundled data set, splits it, featurises it through the process-wide cache,
builds the model from the catalogue's hyperparameters and trains it on standardised targets.
After every epoch it measures the validation set in the target's units and reports an
``EpochResult`` through ``on_epoch``, whose answer decides whether to go on (a pruned or
cancelled trial answers False). The weights of the best validation epoch are kept in memory,
and the test set is measured with them at the end.

The recipe is part of the hyperparameters (``catalogue.TRAINING_HYPERPARAMETERS``); the defaults
are plain Adam with a constant learning rate on MSE, no clipping and no early stopping:

- ``optimizer``: adam (weight_decay as an L2 term) or adamw (decoupled weight decay).
- ``scheduler``: constant; cosine (CosineAnnealingLR stepped once per epoch, from lr down to
  ``final_lr_ratio * lr`` at epoch max_epochs); plateau (ReduceLROnPlateau on the validation
  objective, in its direction, with ``plateau_factor`` and ``plateau_patience``).
- ``patience`` > 0: early stopping once that many epochs in a row brought no validation
  improvement of the objective. Training then ends with ``epochs_trained < max_epochs`` and
  ``stopped=False``: ``stopped`` only means that ``on_epoch`` asked to stop.
- ``grad_clip`` > 0: the gradients' global L2 norm is clipped to it (``clip_grad_norm_``).
- ``loss``: mse, l1 or huber (delta 1), all on standardised targets.
- ``amp``: mixed precision for the hidden layers of training steps (``MixedPrecision``):
  bfloat16 on GPUs that compute it natively (compute capability 8.0 and newer), float16 with
  a gradient scaler on older GPUs, off on the CPU. Readouts (pooling), heads, the output
  layer and the loss stay in float32, and every evaluation (validation, test, predictions)
  runs in float32 throughout.

``TrainConfig.max_molecules`` > 0 trains on a random subset of that many molecules (drawn with
``split_seed``, then split as usual): quick smoke runs and tests on a slice of a data set.

Determinism: the split depends only on ``split_seed``. Weight initialisation is seeded with
``seed`` under a process-wide lock (trials run in threads and torch's generator is global);
batch order and dropout masks (``SeededDropout``) come from private generators derived from
``seed``. So on CPU a trial is reproducible even while other trials train in the same process.
On CUDA, scatter-based pooling uses atomic adds and can differ in the last bits between runs.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from molhpo.contract.catalogue import (
    METRICS,
    SYNTHETIC,
    check_pairing,
    get_dataset,
    get_model,
    param_float,
    param_int,
    resolve_params,
)
from molhpo.contract.enums import Direction, FailureClass
from molhpo.contract.errors import DivergedError, InvalidArgument, TrainingError
from molhpo.datasets import DatasetRequest, MoleculeTable, load_table, split_dataset
from trainer.checkpoint import (
    CheckpointSink,
    ResumeStore,
    UnusableResumeState,
    checkpoint_inputs,
    checkpoint_payload,
    data_request_dict,
    restore_resume_state,
    resume_state,
)
from trainer.featurize import (
    ConformerFeatures,
    DescriptorFeatures,
    GraphFeatures,
    SmilesFeatures,
    featurize,
    on_device,
    standardization,
)
from trainer.models.geometry import PairTable, pair_table
from trainer.models.gnn import AttentiveFPRegressor
from trainer.models.mlp import MLP
from trainer.models.schnet import SchNet
from trainer.placement import report_first_forward
from trainer.seeding import build_seeded
from trainer.training.metrics import regression_metrics
from trainer.training.streams import on_own_stream
from trainer.training.synthetic import train_synthetic

EVAL_BATCH_SIZE = 1024
"""Molecules per forward pass when predicting the validation and test sets."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one trial needs; ``params`` may be partial (the catalogue fills defaults).

    ``device`` (an extension of the shared contract) is a torch device string such as "cpu" or
    "cuda:0"; the trainer process decides it (None: nobody handed one over, so the CPU; a
    trainer always does, and ``trainer.placement.Placement`` shows the difference).
    ``max_molecules`` > 0 (also an extension) keeps a random subset of that many molecules,
    drawn with ``split_seed``; 0 uses them all.
    """

    dataset: str
    model: str
    params: Mapping[str, object]
    max_epochs: int
    seed: int = 0
    split: str = "random"
    split_seed: int = 0
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    objective_metric: str = "rmse"
    objective_direction: str = Direction.MINIMIZE
    device: str | None = None
    max_molecules: int = 0
    data: DatasetRequest | None = None
    """A user file, a QM9 property or an invalid-row limit; None: the bundled ``dataset``."""
    dataset_roots: tuple[str, ...] = ()
    """Folders user files must lie in (set by the trainer process, not by studies)."""


@dataclass(frozen=True)
class EpochResult:
    """What one epoch did; ``step`` is the 1-based epoch number (the resource used so far)."""

    step: int
    train_loss: float
    valid_metrics: dict[str, float]
    seconds: float
    samples: int


@dataclass(frozen=True)
class TrainResult:
    """The outcome of ``train``; metrics are in the target's units.

    ``stopped`` is True only when ``on_epoch`` answered False. Early stopping (``patience``)
    ends training with ``epochs_trained < max_epochs`` and ``stopped`` False.
    """

    epochs_trained: int
    stopped: bool
    best_step: int
    best_valid_metrics: dict[str, float]
    test_metrics: dict[str, float]
    seconds: float
    n_parameters: int
    test_predictions: tuple[float, ...] = ()
    """Predictions of the best epoch's model on the test rows (test-row order)."""
    test_targets: tuple[float, ...] = ()
    """The test rows' targets, in the same order."""
    resumed_from: int = 0
    """The epoch this run resumed after (0: it started from scratch)."""


class _Predict(Protocol):
    def __call__(
        self, model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predictions [len(rows)] of ``model`` for molecules ``rows``; ``on_device``: the same
        row numbers already on the device (else they are copied there)."""


def _nothing_to_prepare(model: nn.Module) -> None:
    return None


@dataclass
class _Data:
    """A trial's inputs on its device, behind one ``predict(model, rows, on_device)`` for every
    input kind.

    ``y`` [n] holds the standardised targets of every molecule (float32, on the device).
    ``prepare(model)`` builds, before the first batch, what batches of this model need beyond
    the features (the pair table of a geometric model); ``predict`` would otherwise build it
    on first use.

    The features themselves are the shared device copies of ``trainer.featurize.on_device``
    (one per content and device for all slots), and a batch is gathered from them on the
    device: given the rows there, ``predict`` copies nothing from the host and reads nothing
    back, so the host queues batch after batch without waiting for the device.
    """

    predict: _Predict
    y: torch.Tensor
    in_features: int
    edge_features: int
    prepare: Callable[[nn.Module], None] = _nothing_to_prepare


def _host_to_device(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """``values`` as a tensor on ``device``. On CUDA through pinned memory with a non-blocking
    copy, so the host does not wait for the device (the pinned buffer is kept until the copy
    is done by torch's caching host allocator)."""
    host = torch.from_numpy(np.ascontiguousarray(values))
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


def _rows_on(
    rows: np.ndarray, on_device: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    return _host_to_device(rows, device) if on_device is None else on_device


def _descriptor_data(
    features: DescriptorFeatures, train_rows: np.ndarray, y: torch.Tensor, device: torch.device
) -> _Data:
    # The raw descriptors (float64) are shared; each batch is standardised with this trial's
    # training statistics as ``standardize`` does, in float64, then cast to float32.
    raw = on_device(
        features,
        device,
        "values",
        lambda: torch.tensor(features.values, dtype=torch.float64, device=device),
    )
    mean, std = (
        _host_to_device(v.astype(np.float64), device)
        for v in standardization(features.values, train_rows)
    )

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = (raw[_rows_on(rows, on_device, device)] - mean) / std
        x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).float()
        out: torch.Tensor = model(x)
        return out

    return _Data(predict=predict, y=y, in_features=features.num_features, edge_features=0)


def _graph_data(features: GraphFeatures, y: torch.Tensor, device: torch.device) -> _Data:
    packed = on_device(features, device, "packed", lambda: features.packed.to(device))

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        b = packed.batch(rows, _rows_on(rows, on_device, device))
        out: torch.Tensor = model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
        return out

    return _Data(
        predict=predict,
        y=y,
        in_features=features.num_node_features,
        edge_features=features.num_edge_features,
    )


def _smiles_data(features: SmilesFeatures, y: torch.Tensor, device: torch.device) -> _Data:
    tokens = on_device(features, device, "tokens", lambda: features.to(device))

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        out: torch.Tensor = model(tokens.one_hot(_rows_on(rows, on_device, device)))
        return out

    return _Data(predict=predict, y=y, in_features=features.num_features, edge_features=0)


def _conformer_data(features: ConformerFeatures, y: torch.Tensor, device: torch.device) -> _Data:
    packed = on_device(features, device, "packed", lambda: features.packed.to(device))
    tables: dict[float, PairTable] = {}  # this trial's pair graphs, by cutoff

    def pairs_of(model: nn.Module) -> PairTable | None:
        cutoff = getattr(model, "cutoff", None)
        if cutoff is None:
            return None
        if cutoff not in tables:
            tables[cutoff] = pair_table(packed.pos, packed.node_ptr, float(cutoff))
        return tables[cutoff]

    def prepare(model: nn.Module) -> None:
        pairs_of(model)

    def predict(
        model: nn.Module, rows: np.ndarray, on_device: torch.Tensor | None = None
    ) -> torch.Tensor:
        ids = _rows_on(rows, on_device, device)
        b = packed.batch(rows, ids)
        table = pairs_of(model)
        pairs = None if table is None else table.batch(rows, ids)
        out: torch.Tensor = model(b.z, b.pos, b.batch, b.num_graphs, pairs)
        return out

    return _Data(
        predict=predict, y=y, in_features=features.num_features, edge_features=0, prepare=prepare
    )


_PER_TABLE_FIELDS = frozenset(
    {
        "name",
        "units",
        "n_invalid",
        "invalid_examples",
        "invalid_rows",
        "invalid_counts",
        "target_names",
    }
)
"""MoleculeTable fields that describe the table, not its molecules (kept as they are by
``_subset``); every other field holding one entry per molecule is cut with the rows."""


def _subset(table: MoleculeTable, max_molecules: int, seed: int) -> MoleculeTable:
    """``table`` cut to ``max_molecules`` random molecules (kept in table order) when it has
    more; the subset gets its own name so its features are cached apart from the full set's.
    Per-molecule fields (SMILES, targets and any array or tuple with one entry per molecule,
    such as conformers) are cut alike."""
    n = len(table)
    if max_molecules <= 0 or max_molecules >= n:
        return table
    keep = np.sort(np.random.default_rng(seed).choice(n, max_molecules, replace=False))
    changes: dict[str, object] = {"name": f"{table.name}[{max_molecules} molecules, seed {seed}]"}
    for f in fields(table):
        value = getattr(table, f.name)
        if f.name in _PER_TABLE_FIELDS or value is None:
            continue
        if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == n:
            cut = value[keep]
            cut.flags.writeable = value.flags.writeable
            changes[f.name] = cut
        elif isinstance(value, list | tuple) and len(value) == n:
            changes[f.name] = type(value)(value[i] for i in keep)
    return replace(table, **changes)  # type: ignore[arg-type]


def _optimizer(params: Mapping[str, object], model: nn.Module) -> torch.optim.Optimizer:
    lr = param_float(params, "lr")
    weight_decay = param_float(params, "weight_decay")
    if params["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def _loss_fn(name: object) -> nn.Module:
    if name == "l1":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss(delta=1.0)
    return nn.MSELoss()


class _Schedule:
    """The learning-rate schedule of the recipe, stepped once per epoch (``end_of_epoch``)."""

    def __init__(
        self,
        params: Mapping[str, object],
        optimizer: torch.optim.Optimizer,
        max_epochs: int,
        direction: str,
    ) -> None:
        self.kind = str(params["scheduler"])
        self.cosine: torch.optim.lr_scheduler.CosineAnnealingLR | None = None
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        lr = param_float(params, "lr")
        if self.kind == "cosine":
            self.cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
                optimizer, T_max=max_epochs, eta_min=param_float(params, "final_lr_ratio") * lr
            )
        elif self.kind == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="min" if direction == Direction.MINIMIZE else "max",
                factor=param_float(params, "plateau_factor"),
                patience=param_int(params, "plateau_patience"),
                threshold=0.0,
            )

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state (for resuming)."""
        if self.cosine is not None:
            return dict(self.cosine.state_dict())
        if self.plateau is not None:
            return dict(self.plateau.state_dict())
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        if self.cosine is not None and state:
            self.cosine.load_state_dict(state)
        elif self.plateau is not None and state:
            self.plateau.load_state_dict(state)

    def end_of_epoch(self, objective: float) -> None:
        """Advance the schedule after an epoch whose validation objective was ``objective``."""
        if self.cosine is not None:
            self.cosine.step()
        elif self.plateau is not None:
            self.plateau.step(objective)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The reduced precision ``amp`` runs hidden layers in on ``device``; None: none (off).

    bfloat16 where the GPU computes it natively (``torch.cuda.is_bf16_supported`` with
    emulation not counted: compute capability 8.0 and newer). Older GPUs (V100, T4) would
    emulate it slowly, so they get float16, which they compute natively, with loss scaling
    against underflow. Off CUDA, None: CPU autocast would only slow small models down.
    """
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        native_bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native_bf16 else torch.float16


def mixed_precision_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that ``amp`` may run in reduced precision.

    They are the per-atom (or per-position) layers before the readout: convolutions, message
    passing and the MLP's hidden layers. Pooling and the other readouts, the head, the output
    layer and the loss are never among them. A model of unknown structure gets none, so
    ``amp`` leaves it in float32.
    """
    if isinstance(model, MLP):
        linears: list[nn.Module] = [m for m in model.net if isinstance(m, nn.Linear)]
        return linears[:-1]
    if isinstance(model, AttentiveFPRegressor):
        net = model.net
        return [net.lin1, net.gate_conv, net.gru, *net.atom_convs, *net.atom_grus]
    if isinstance(model, SchNet):
        return list(model.net.interactions)
    for name in ("convs", "layers"):  # GIN, GCN, GAT and the SMILES CNN; the EGNN
        hidden = getattr(model, name, None)
        if isinstance(hidden, nn.ModuleList):
            return list(hidden)
    return []


def _to_float32(value: Any) -> Any:
    """``value`` with every float16/bfloat16 tensor in it (also in tuples) cast to float32."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.float16, torch.bfloat16) else value
    if isinstance(value, tuple):
        return tuple(_to_float32(v) for v in value)
    return value


class MixedPrecision:
    """``amp`` for one model: autocast to ``dtype`` over its :func:`mixed_precision_layers`
    only, and only within :meth:`step` (the forward pass of a training step).

    Each such layer enters autocast when called and leaves it when it returns, its output
    cast back to float32, so what follows computes in float32: readouts (a sum pooling of
    bfloat16 values would round at every addition), heads, the output layer and the loss.
    Outside ``step`` (evaluation, predictions) the model runs in float32 throughout. With
    ``dtype`` None (no ``amp``, or a device without it) nothing is installed and ``step`` is
    a no-op. The autocast state is per thread, as torch's is; a model trains in one thread.
    """

    def __init__(self, model: nn.Module, device_type: str, dtype: torch.dtype | None) -> None:
        self.dtype = dtype
        self.device_type = device_type
        self.layers = mixed_precision_layers(model) if dtype is not None else []
        self._local = threading.local()
        for layer in self.layers:
            layer.register_forward_pre_hook(self._enter)
            layer.register_forward_hook(self._leave, always_call=True)

    def _entered(self) -> list[tuple[nn.Module, torch.autocast]] | None:
        """This thread's autocast contexts of layers running now; None outside ``step``."""
        entered: list[tuple[nn.Module, torch.autocast]] | None = getattr(
            self._local, "entered", None
        )
        return entered

    def _enter(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        entered = self._entered()
        if entered is not None:
            context = torch.autocast(self.device_type, dtype=self.dtype)
            context.__enter__()
            entered.append((module, context))

    def _leave(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        entered = self._entered()
        if not entered or entered[-1][0] is not module:
            return None
        entered.pop()[1].__exit__(None, None, None)
        return _to_float32(output)

    def step(self) -> AbstractContextManager[None]:
        """The context of a training step's forward pass: ``amp`` on for the hidden layers."""
        return self._stepping() if self.layers else nullcontext()

    @contextmanager
    def _stepping(self) -> Iterator[None]:
        self._local.entered = []
        try:
            yield
        finally:
            entered = self._local.entered
            self._local.entered = None
            while entered:  # left open by a layer whose forward raised
                entered.pop()[1].__exit__(None, None, None)


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


def _check_config(config: TrainConfig) -> None:
    """InvalidArgument for settings that break a rule, before any work is done."""
    if config.data is None or not config.data.path:
        get_dataset(config.dataset)
    get_model(config.model)
    check_pairing(
        config.model, "" if config.data is not None and config.data.path else config.dataset
    )
    if config.max_epochs < 1:
        raise InvalidArgument(f"max_epochs is {config.max_epochs}; it must be at least 1")
    if config.max_molecules < 0:
        raise InvalidArgument(
            f"max_molecules is {config.max_molecules}; it must be 0 (all) or a positive count"
        )
    direction = METRICS.get(config.objective_metric)
    if direction is None:
        raise InvalidArgument(
            f"unknown objective_metric '{config.objective_metric}'; choose one of: "
            f"{', '.join(sorted(METRICS))}"
        )
    if config.objective_direction != direction:
        raise InvalidArgument(
            f"objective_direction is '{config.objective_direction}' but "
            f"{config.objective_metric} is to be {direction}d; set it to '{direction}'"
        )


def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidArgument(f"invalid device '{name}': {exc}; use e.g. cpu or cuda:0") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgument(f"device '{name}' requested but CUDA is not available; use cpu")
    return device


def _evaluate(model: nn.Module, data: _Data, rows: np.ndarray) -> np.ndarray:
    """Standardised predictions [len(rows)] of ``model`` in eval mode, as float64 numpy.

    Always in float32 (no autocast, whatever ``amp`` says): these predictions give the
    pruning metric, the test metrics and the reported predictions.
    """
    model.eval()
    parts: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH_SIZE):
            parts.append(data.predict(model, rows[start : start + EVAL_BATCH_SIZE]).float())
    return torch.cat(parts).double().cpu().numpy()


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


def _is_better(value: float, best: float | None, direction: str) -> bool:
    if best is None:
        return True
    return value < best if direction == Direction.MINIMIZE else value > best


def _train_step(
    model: nn.Module,
    data: _Data,
    rows: np.ndarray,
    rows_on_device: torch.Tensor,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    autocast: Callable[[], AbstractContextManager[Any]],
    grad_clip: float,
) -> torch.Tensor:
    """One optimisation step on molecules ``rows`` (``rows_on_device``: the same on the
    device); returns the batch's summed loss (a 0-d tensor on the device, never read here).

    Nothing in it makes the host wait for the device (``trainer.training.sync_guard`` checks
    this for every family), except the float16 gradient scaler's overflow check, used only on
    GPUs without native bfloat16.
    """
    with autocast():
        pred = data.predict(model, rows, rows_on_device)
    loss = loss_fn(pred.float(), data.y[rows_on_device])
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if grad_clip > 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach() * len(rows)


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
    started = time.perf_counter()
    _check_config(config)
    if config.model == SYNTHETIC:
        return _train_synthetic(config, on_epoch, started)
    family = get_model(config.model)
    params = resolve_params(config.model, config.params)
    lr = param_float(params, "lr")
    batch_size = param_int(params, "batch_size")
    patience = param_int(params, "patience")
    grad_clip = param_float(params, "grad_clip")
    device = _device(config.device)

    request = config.data or DatasetRequest(name=config.dataset)
    roots = tuple(Path(r) for r in config.dataset_roots)
    table = _subset(load_table(request, roots), config.max_molecules, config.split_seed)
    train_rows, valid_rows, test_rows = split_dataset(
        table,
        kind=config.split,
        seed=config.split_seed,
        valid_fraction=config.valid_fraction,
        test_fraction=config.test_fraction,
    )
    if len(valid_rows) == 0:
        raise InvalidArgument(
            f"valid_fraction {config.valid_fraction} leaves no validation molecules out of "
            f"{len(table)}; the best epoch is chosen on them, so make it larger"
        )
    targets = table.targets
    y_mean = float(targets[train_rows].mean())
    y_std = float(targets[train_rows].std())
    if not y_std > 0.0:
        y_std = 1.0
    features = featurize(table, family.featurizer)
    n_parameters = 0
    # From the first copy to the device on, running out of memory is a resource failure.
    try:
        y = torch.tensor((targets - y_mean) / y_std, dtype=torch.float32, device=device)
        if isinstance(features, DescriptorFeatures):
            data = _descriptor_data(features, train_rows, y, device)
        elif isinstance(features, SmilesFeatures):
            data = _smiles_data(features, y, device)
        elif isinstance(features, ConformerFeatures):
            data = _conformer_data(features, y, device)
        else:
            data = _graph_data(features, y, device)

        model = build_seeded(
            config.model, params, data.in_features, data.edge_features, config.seed
        )
        n_parameters = sum(p.numel() for p in model.parameters())
        model = model.to(device)
        report_first_forward(model, config.device)
        mixed = MixedPrecision(
            model, device.type, autocast_dtype(device) if params["amp"] else None
        )
        autocast = mixed.step
        optimizer = _optimizer(params, model)
        schedule = _Schedule(params, optimizer, config.max_epochs, config.objective_direction)
        loss_fn = _loss_fn(params["loss"])
        # float16 autocast needs loss scaling against underflow; bfloat16 and float32 do not
        scaler = torch.amp.GradScaler("cuda", enabled=mixed.dtype == torch.float16)
        order_rng = np.random.default_rng(config.seed)

        def valid_metrics() -> dict[str, float]:
            pred = _evaluate(model, data, valid_rows) * y_std + y_mean
            return regression_metrics(targets[valid_rows], pred)

        best_step = 0
        best_value: float | None = None
        best_metrics: dict[str, float] = {}
        best_state: dict[str, torch.Tensor] = {}
        epochs_trained = 0
        stopped = False
        resumed_from = 0
        saved = resume.load() if resume is not None and restore else None
        # A trial dispatched again picks up where its last attempt saved it.
        point = restore_resume_state(
            saved, config.model, model, optimizer, schedule, order_rng, device
        )
        if point is not None:
            best_step, best_value = point.best_step, point.best_value
            best_metrics, best_state = point.best_metrics, point.best_state
            epochs_trained = resumed_from = point.epoch
        for step in range(resumed_from + 1, config.max_epochs + 1):
            epoch_started = time.perf_counter()
            model.train()
            order = order_rng.permutation(train_rows)
            # One copy of the epoch's order to the device; batches slice it there.
            order_on_device = _host_to_device(order, device)
            data.prepare(model)
            total = torch.zeros((), device=device)
            for start in range(0, len(order), batch_size):
                end = start + batch_size
                total += _train_step(
                    model,
                    data,
                    order[start:end],
                    order_on_device[start:end],
                    loss_fn,
                    optimizer,
                    scaler,
                    autocast,
                    grad_clip,
                )
            train_loss = float(total.item()) / len(order)  # the epoch's one wait for the device
            if not math.isfinite(train_loss):
                raise DivergedError(
                    f"training loss became {train_loss} at epoch {step}; lower lr (now {lr:g}) "
                    "or use a smaller model"
                )
            metrics = valid_metrics()
            if not all(math.isfinite(v) for v in metrics.values()):
                raise DivergedError(
                    f"validation predictions became non-finite at epoch {step} (metrics "
                    f"{metrics}); lower lr (now {lr:g}) or use a smaller model"
                )
            epochs_trained = step
            value = metrics[config.objective_metric]
            if _is_better(value, best_value, config.objective_direction):
                best_step, best_value, best_metrics = step, value, dict(metrics)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if checkpoints is not None and checkpoints.wants(value):
                checkpoints.save(
                    step,
                    value,
                    checkpoint_payload(
                        model_name=config.model,
                        params=params,
                        in_features=data.in_features,
                        edge_features=data.edge_features,
                        model=model,
                        y_mean=y_mean,
                        y_std=y_std,
                        metric=config.objective_metric,
                        valid_metrics=metrics,
                        dataset=config.dataset,
                        split=[
                            config.split,
                            config.split_seed,
                            config.valid_fraction,
                            config.test_fraction,
                        ],
                        # what trainer.predict needs to featurise new SMILES like these
                        inputs=checkpoint_inputs(family.featurizer, features, train_rows, table),
                        data_request=data_request_dict(request),
                        max_molecules=config.max_molecules,
                    ),
                )
            schedule.end_of_epoch(value)
            result = EpochResult(
                step=step,
                train_loss=train_loss,
                valid_metrics=metrics,
                seconds=time.perf_counter() - epoch_started,
                samples=len(order),
            )
            go_on = on_epoch(result)
            # Saved every few epochs, and when stopped (a drained trainer's trial resumes here).
            if (
                resume is not None
                and step < config.max_epochs
                and (not go_on or step % max(resume.every, 1) == 0)
            ):
                resume.save(
                    resume_state(
                        model_name=config.model,
                        epoch=step,
                        model=model,
                        optimizer=optimizer,
                        schedule=schedule,
                        order_rng=order_rng,
                        best_step=best_step,
                        best_value=best_value,
                        best_metrics=best_metrics,
                        best_state=best_state,
                    )
                )
            if not go_on:
                stopped = True
                break
            if patience > 0 and step - best_step >= patience:
                break  # early stopping: no validation improvement for `patience` epochs

        model.load_state_dict(best_state)
        test_metrics: dict[str, float] = {}
        test_pred = np.zeros(0)
        if len(test_rows) > 0:
            test_pred = _evaluate(model, data, test_rows) * y_std + y_mean
            test_metrics = regression_metrics(targets[test_rows], test_pred)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        raise _out_of_memory(config, device, batch_size, n_parameters, exc) from exc

    return TrainResult(
        epochs_trained=epochs_trained,
        stopped=stopped,
        best_step=best_step,
        best_valid_metrics=best_metrics,
        test_metrics=test_metrics,
        seconds=time.perf_counter() - started,
        n_parameters=n_parameters,
        resumed_from=resumed_from,
        test_predictions=tuple(float(v) for v in test_pred),
        test_targets=tuple(float(v) for v in targets[test_rows]),
    )
