"""Trainer overhead: molhpo's training loop against a plain PyTorch / PyG loop on the same work.

BENCHMARKS.md row "Trainer overhead": a molhpo trial should reach >= 0.95 of the training
samples/s of the same model trained by a plain hand-written loop. Both sides run in this
process, alternated plain, molhpo, plain, molhpo ... for ``--repeats`` rounds, on FreeSolv
(random split 80/10/10, seed 0: 514 training and 64 validation molecules) with the catalogue's
default hyperparameters (batch 32, Adam, lr 1e-3, no weight decay, MSE on standardised
targets) and torch limited to ``--threads`` threads (default 1) on both sides:

- ``freesolv-gin``: GIN on RDKit graphs. The plain loop batches with
  ``torch_geometric.loader.DataLoader`` (shuffled) over one ``Data`` per molecule, which is
  what a plain PyG script does; validation goes through a second DataLoader in one batch.
- ``freesolv-gin/packed``: the same, but the plain loop batches with molhpo's own
  ``PackedGraphs.batch`` (index arithmetic on flat tensors), so this row isolates the loop
  from the batching.
- ``freesolv-mlp``: the dense net on standardised RDKit descriptors; the plain loop slices a
  ``torch.randperm`` of the training rows and indexes the in-memory feature tensor.

Both sides train the very model ``trainer.models.build_model`` builds (same seed, so the same
initial weights, and the same ``SeededDropout`` layers) on features computed once up front
(molhpo's ``train()`` then finds them in its process-wide cache). Both evaluate the validation
set after every epoch, because molhpo does (a trial reports a validation metric per epoch):
the plain loop in one forward pass, computing the RMSE only; molhpo as it always does (all six
regression metrics, and a copy of the weights when the epoch is the best so far).

The figure, the same on both sides: training samples (514 per epoch) divided by the wall time
from the end of epoch ``--warmup`` to the end of the last epoch. An epoch ends after its
validation pass on the plain side and when ``on_epoch`` returns on the molhpo side, so the
figure covers everything done per epoch: shuffling, batching, forward, backward, optimiser
steps, validation and, for molhpo, the best-weights copy, the EpochResult and the ``on_epoch``
callback. It leaves out featurisation, model construction, the warm-up epoch(s), ``train()``'s
set-up (table, split, feature-cache look-up, target scaling) and its final test-set evaluation;
those are printed apart, per ``train()`` call ("outside the epochs"). With ``--on-epoch worker``
(default) the callback does what ``trainer.worker`` does per epoch short of Redis: the
Prometheus counters and histogram, the EpochReport and TrialReport protos and their
serialisation. The Redis XADD and the wait for a pruning decision are left out (the decision-
latency row of BENCHMARKS.md measures those). ``--on-epoch none`` answers True and nothing else.

Columns: samples/s are medians over rounds; "ratio" is the median over rounds of molhpo/plain
within a round (the two runs of a round are next to each other in time, so machine noise
cancels best there), "q1-q3" its quartiles. "best-epoch ratio" compares the fastest epoch of
each run instead (plain seconds / molhpo seconds, median over rounds): every per-epoch cost of
molhpo is in every epoch, so it is the same overhead seen without the stalls other jobs on a
shared machine cause. On a 2-core machine with a second job running, a plain-against-plain run
of this harness moved "ratio" by 5-7% and "best-epoch ratio" by about 1%. The goal column
says "met" when both ratios reach it, "MISSED" when neither does, and "noisy" when they
disagree (run again with more ``--repeats`` or on a quiet machine). The detail lines give each
round's ratio; molhpo's own figure, sum(EpochResult.samples) / sum(EpochResult.seconds), which
leaves out ``on_epoch``; the time of a ``train()`` call spent outside its epochs; and both
sides' validation RMSE after the last epoch (they should match: the same learning happens).

    python bench/trainer_overhead.py [--repeats 15] [--epochs N] [--warmup 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader

from molhpo.contract.catalogue import get_model, param_float, param_int, resolve_params
from molhpo.datasets import load_dataset, split_dataset
from molhpo.v1 import common_pb2
from trainer.convert import epoch_to_proto
from trainer.featurize import (
    DescriptorFeatures,
    GraphFeatures,
    PackedGraphs,
    featurize,
    standardize,
)
from trainer.metrics import TrainerMetrics
from trainer.models import build_model
from trainer.training.evaluation import EVAL_BATCH_SIZE
from trainer.training.loop import EpochResult, TrainConfig, train

DATASET = "freesolv"
SEED = 0

GOAL = 0.95
"""BENCHMARKS.md: molhpo's samples/s at least this share of the plain loop's."""


@dataclass(frozen=True)
class Workload:
    """One row of the table: a model family and how the plain loop batches its data."""

    name: str
    model: str
    plain_batching: str
    """"pyg" (torch_geometric DataLoader), "packed" (PackedGraphs.batch) or "tensor"."""
    epochs: int
    """Epochs per run unless ``--epochs`` is given (an MLP epoch is ~6x shorter)."""


WORKLOADS = (
    Workload("freesolv-gin", "gin", "pyg", 10),
    Workload("freesolv-gin/packed", "gin", "packed", 10),
    Workload("freesolv-mlp", "mlp", "tensor", 40),
)

BATCHING_LABELS = {
    "pyg": "PyG DataLoader",
    "packed": "molhpo PackedGraphs",
    "tensor": "tensor randperm",
}


@dataclass(frozen=True)
class Prepared:
    """A model family's data, featurised and split once, shared by every run of both sides."""

    params: Mapping[str, object]
    """The catalogue's defaults, resolved."""
    train_rows: np.ndarray
    valid_rows: np.ndarray
    valid_targets: np.ndarray
    """Targets of the validation rows in kcal/mol [n_valid], float64."""
    y: torch.Tensor
    """Standardised targets of every molecule [n], float32."""
    y_mean: float
    y_std: float
    in_features: int
    edge_features: int
    x: torch.Tensor | None
    """MLP: standardised descriptors [n, d]; None for graph models."""
    packed: PackedGraphs | None
    """Graph models: the packed graphs molhpo batches from; None for the MLP."""
    data_list: list[Data]
    """Graph models: one Data per molecule with its standardised target as ``y`` [1]."""


@dataclass(frozen=True)
class Run:
    """One run of one side: when each epoch ended and, for molhpo, its records and call time."""

    ends: list[float]
    """``time.perf_counter()`` at the end of each epoch."""
    epochs: list[EpochResult]
    last_rmse: float
    """Validation RMSE (kcal/mol) after the last epoch: both sides should learn alike."""
    call_seconds: float = 0.0
    """molhpo: wall time of the whole ``train()`` call."""


def prepare(model: str) -> Prepared:
    """Load, split and featurise FreeSolv as ``train()`` does for ``model``'s defaults."""
    params = resolve_params(model, {})
    table = load_dataset(DATASET)
    train_rows, valid_rows, _ = split_dataset(
        table, kind="random", seed=SEED, valid_fraction=0.1, test_fraction=0.1
    )
    targets = np.asarray(table.targets, dtype=np.float64)
    y_mean = float(targets[train_rows].mean())
    y_std = float(targets[train_rows].std()) or 1.0
    y = torch.tensor((targets - y_mean) / y_std, dtype=torch.float32)
    features = featurize(table, get_model(model).featurizer)
    x: torch.Tensor | None = None
    packed: PackedGraphs | None = None
    data_list: list[Data] = []
    if isinstance(features, DescriptorFeatures):
        in_features, edge_features = features.num_features, 0
        x = torch.from_numpy(standardize(features.values, train_rows))
    elif isinstance(features, GraphFeatures):
        in_features, edge_features = features.num_node_features, features.num_edge_features
        packed = features.packed
        data_list = [
            Data(x=g.x, edge_index=g.edge_index, edge_attr=g.edge_attr, y=y[i : i + 1])
            for i, g in enumerate(features.graphs)
        ]
    else:
        raise ValueError(f"model '{model}' takes {type(features).__name__}; use gin or mlp")
    return Prepared(
        params=params,
        train_rows=train_rows,
        valid_rows=valid_rows,
        valid_targets=targets[valid_rows],
        y=y,
        y_mean=y_mean,
        y_std=y_std,
        in_features=in_features,
        edge_features=edge_features,
        x=x,
        packed=packed,
        data_list=data_list,
    )


# ---- the plain side ------------------------------------------------------------------------


Step = Callable[[torch.Tensor, torch.Tensor], float]
"""One optimiser step on a batch's predictions and targets; the batch's summed loss."""
EpochFns = tuple[Callable[[], float], Callable[[], torch.Tensor]]
"""A plain loop's ``train_epoch`` (mean training loss) and ``predict_valid``."""


def run_plain(workload: Workload, prep: Prepared, epochs: int) -> Run:
    """The hand-written loop: Adam, MSE on standardised targets, a validation RMSE per epoch."""
    torch.manual_seed(SEED)  # as train() does before building, so the same initial weights
    model = build_model(workload.model, prep.params, prep.in_features, prep.edge_features)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=param_float(prep.params, "lr"),
        weight_decay=param_float(prep.params, "weight_decay"),
    )

    def step(pred: torch.Tensor, target: torch.Tensor) -> float:
        loss = F.mse_loss(pred, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.item()) * len(target)

    train_epoch, predict_valid = _plain_epochs(workload, model, prep, step)
    ends: list[float] = []
    for _ in range(epochs):
        model.train()
        train_loss = train_epoch()
        model.eval()
        with torch.no_grad():
            pred = predict_valid().double().numpy() * prep.y_std + prep.y_mean
        valid_rmse = float(np.sqrt(np.mean((pred - prep.valid_targets) ** 2)))
        if not (math.isfinite(train_loss) and math.isfinite(valid_rmse)):
            raise RuntimeError(f"the plain {workload.name} loop diverged; its lr is too high")
        ends.append(time.perf_counter())
    return Run(ends, [], valid_rmse)


def _plain_epochs(
    workload: Workload, model: torch.nn.Module, prep: Prepared, step: Step
) -> EpochFns:
    """The plain loop's epoch functions for the workload's way of batching."""
    batch_size = param_int(prep.params, "batch_size")
    if workload.plain_batching == "tensor" and prep.x is not None:
        return _tensor_epochs(model, prep, prep.x, step, batch_size)
    if workload.plain_batching == "pyg" and prep.data_list:
        return _pyg_epochs(model, prep, step, batch_size)
    if workload.plain_batching == "packed" and prep.packed is not None:
        return _packed_epochs(model, prep, prep.packed, step, batch_size)
    raise ValueError(
        f"plain batching '{workload.plain_batching}' does not fit model '{workload.model}'"
    )


def _tensor_epochs(
    model: torch.nn.Module, prep: Prepared, x: torch.Tensor, step: Step, batch_size: int
) -> EpochFns:
    """Batches sliced from one feature tensor (fingerprints, SMILES codes)."""
    y, n_train = prep.y, len(prep.train_rows)
    train_idx = torch.from_numpy(prep.train_rows)
    valid_idx = torch.from_numpy(prep.valid_rows)

    def train_epoch() -> float:
        perm = train_idx[torch.randperm(n_train)]
        total = 0.0
        for start in range(0, n_train, batch_size):
            idx = perm[start : start + batch_size]
            total += step(model(x[idx]), y[idx])
        return total / n_train

    def predict_valid() -> torch.Tensor:
        out: torch.Tensor = model(x[valid_idx])
        return out

    return train_epoch, predict_valid


def _pyg_epochs(model: torch.nn.Module, prep: Prepared, step: Step, batch_size: int) -> EpochFns:
    """Graphs batched by torch-geometric's DataLoader."""
    n_train = len(prep.train_rows)
    train_loader = DataLoader(
        [prep.data_list[i] for i in prep.train_rows], batch_size=batch_size, shuffle=True
    )
    valid_loader = DataLoader(
        [prep.data_list[i] for i in prep.valid_rows], batch_size=EVAL_BATCH_SIZE
    )

    def train_epoch() -> float:
        total = 0.0
        for b in train_loader:
            total += step(model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs), b.y)
        return total / n_train

    def predict_valid() -> torch.Tensor:
        return torch.cat(
            [model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs) for b in valid_loader]
        )

    return train_epoch, predict_valid


def _packed_epochs(
    model: torch.nn.Module, prep: Prepared, packed: PackedGraphs, step: Step, batch_size: int
) -> EpochFns:
    """Graphs batched from one packed store, as molhpo's loop does."""
    y, n_train = prep.y, len(prep.train_rows)

    def train_epoch() -> float:
        order = prep.train_rows[torch.randperm(n_train).numpy()]
        total = 0.0
        for start in range(0, n_train, batch_size):
            rows = order[start : start + batch_size]
            b = packed.batch(rows)
            pred = model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
            total += step(pred, y[torch.from_numpy(rows)])
        return total / n_train

    def predict_valid() -> torch.Tensor:
        b = packed.batch(prep.valid_rows)
        out: torch.Tensor = model(b.x, b.edge_index, b.edge_attr, b.batch, b.num_graphs)
        return out

    return train_epoch, predict_valid


# ---- the molhpo side -----------------------------------------------------------------------


def worker_callback(metrics: TrainerMetrics) -> Callable[[EpochResult], None]:
    """What ``TrialWorker._on_epoch`` does per epoch, short of Redis."""

    def report(ep: EpochResult) -> None:
        metrics.epochs.inc()
        metrics.samples.inc(ep.samples)
        metrics.epoch_seconds.observe(ep.seconds)
        rep = common_pb2.TrialReport(
            study_name="bench", trial_id=1, trial_number=0, attempt=1, trainer_id="bench"
        )
        rep.epoch.CopyFrom(epoch_to_proto(ep))
        rep.SerializeToString()  # what storage.reports.publish hands to XADD

    return report


def run_molhpo(
    workload: Workload, epochs: int, report: Callable[[EpochResult], None] | None
) -> Run:
    """One ``train()`` call for the same model and data; epochs end when on_epoch returns."""
    ends: list[float] = []
    records: list[EpochResult] = []

    def on_epoch(ep: EpochResult) -> bool:
        if report is not None:
            report(ep)
        records.append(ep)
        ends.append(time.perf_counter())
        return True

    config = TrainConfig(
        dataset=DATASET, model=workload.model, params={}, max_epochs=epochs, seed=SEED
    )
    started = time.perf_counter()
    train(config, on_epoch)
    seconds = time.perf_counter() - started
    return Run(ends, records, records[-1].valid_metrics["rmse"], seconds)


# ---- figures -------------------------------------------------------------------------------


def samples_per_second(run: Run, n_train: int, warmup: int) -> float:
    """Training samples/s from the end of epoch ``warmup`` to the end of the last epoch."""
    return (len(run.ends) - warmup) * n_train / (run.ends[-1] - run.ends[warmup - 1])


def best_epoch_seconds(run: Run, warmup: int) -> float:
    """The shortest epoch after the warm-up, end to end."""
    return float(np.diff(run.ends[warmup - 1 :]).min())


def self_reported(run: Run, warmup: int) -> float:
    """molhpo's own figure over the same epochs: sum of samples / sum of EpochResult.seconds."""
    kept = run.epochs[warmup:]
    return sum(e.samples for e in kept) / sum(e.seconds for e in kept)


def outside_epochs(run: Run) -> float:
    """Seconds of a ``train()`` call spent outside its epochs (set-up, test evaluation)."""
    first_epoch = run.epochs[0].seconds
    return run.call_seconds - (run.ends[-1] - run.ends[0]) - first_epoch


@dataclass
class Row:
    """The figures of one workload, one entry per round."""

    plain: list[float]
    molhpo: list[float]
    ratios: list[float]
    best_ratios: list[float]
    self_reported: list[float]
    outside: list[float]
    rmse: list[tuple[float, float]]
    """(plain, molhpo) validation RMSE after the last epoch."""


def measure(
    workload: Workload,
    prep: Prepared,
    epochs: int,
    args: argparse.Namespace,
    report: Callable[[EpochResult], None] | None,
) -> Row:
    """``args.repeats`` rounds of a plain run then a molhpo run."""
    n_train = len(prep.train_rows)
    row = Row([], [], [], [], [], [], [])
    for _ in range(args.repeats):
        plain = run_plain(workload, prep, epochs)
        molhpo = run_molhpo(workload, epochs, report)
        p = samples_per_second(plain, n_train, args.warmup)
        m = samples_per_second(molhpo, n_train, args.warmup)
        row.plain.append(p)
        row.molhpo.append(m)
        row.ratios.append(m / p)
        row.best_ratios.append(
            best_epoch_seconds(plain, args.warmup) / best_epoch_seconds(molhpo, args.warmup)
        )
        row.self_reported.append(self_reported(molhpo, args.warmup))
        row.outside.append(outside_epochs(molhpo))
        row.rmse.append((plain.last_rmse, molhpo.last_rmse))
    return row


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def verdict(ratio: float, best_epoch_ratio: float) -> str:
    """met / MISSED when both estimates agree on the goal, noisy when they do not."""
    met = (ratio >= GOAL, best_epoch_ratio >= GOAL)
    if all(met):
        return "met"
    return "noisy" if any(met) else "MISSED"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15, help="rounds of plain then molhpo")
    ap.add_argument(
        "--epochs", type=int, default=0, help="epochs per run, warm-up included (0: per workload)"
    )
    ap.add_argument("--warmup", type=int, default=1, help="first epochs left out of the figure")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, both sides")
    ap.add_argument("--on-epoch", choices=["worker", "none"], default="worker")
    ap.add_argument(
        "--workloads", default=",".join(w.name for w in WORKLOADS), help="comma-separated rows"
    )
    args = ap.parse_args()
    if args.warmup < 1:
        ap.error(f"--warmup is {args.warmup}, but must be >= 1 (the figure starts at its end)")
    if args.epochs and args.epochs <= args.warmup:
        ap.error(f"--epochs is {args.epochs}, but must be > --warmup ({args.warmup})")
    if args.repeats < 1:
        ap.error(f"--repeats is {args.repeats}, but must be >= 1")
    if args.threads < 1:
        ap.error(f"--threads is {args.threads}, but must be >= 1")
    known = {w.name: w for w in WORKLOADS}
    chosen = args.workloads.split(",")
    unknown = [name for name in chosen if name not in known]
    if unknown:
        ap.error(f"unknown workload(s) {unknown}; choose from: {', '.join(known)}")
    for name in chosen:
        if not args.epochs and known[name].epochs <= args.warmup:
            ap.error(f"{name} runs {known[name].epochs} epochs; pass --epochs > --warmup")
    torch.set_num_threads(args.threads)
    report = worker_callback(TrainerMetrics(slots=1)) if args.on_epoch == "worker" else None

    print(
        f"FreeSolv, {args.repeats} rounds of plain then molhpo, {args.warmup} warm-up epoch(s) "
        f"left out, torch threads {args.threads}, on_epoch={args.on_epoch}"
    )
    lines = [
        f"{'workload':20s} {'plain batching':20s} {'epochs':>6s} {'plain samples/s':>15s} "
        f"{'molhpo samples/s':>16s} {'ratio':>6s} {'q1-q3':>11s} {'best-epoch ratio':>16s} "
        f"{'goal >= ' + str(GOAL):>12s}"
    ]
    prepared: dict[str, Prepared] = {}
    for name in chosen:
        workload = known[name]
        epochs = args.epochs or workload.epochs
        if workload.model not in prepared:
            prepared[workload.model] = prepare(workload.model)
        row = measure(workload, prepared[workload.model], epochs, args, report)
        ratio = statistics.median(row.ratios)
        best = statistics.median(row.best_ratios)
        q1, q3 = quartiles(row.ratios)
        print(
            f"  {name}: molhpo/plain per round {' '.join(f'{r:.3f}' for r in row.ratios)}; "
            f"molhpo's EpochResult figure {statistics.median(row.self_reported):.0f} samples/s; "
            f"train() outside the epochs {statistics.median(row.outside) * 1e3:.0f} ms per call; "
            f"last validation RMSE plain {statistics.median(r[0] for r in row.rmse):.2f}, "
            f"molhpo {statistics.median(r[1] for r in row.rmse):.2f} kcal/mol"
        )
        lines.append(
            f"{name:20s} {BATCHING_LABELS[workload.plain_batching]:20s} {epochs:6d} "
            f"{statistics.median(row.plain):15.0f} {statistics.median(row.molhpo):16.0f} "
            f"{ratio:6.3f} {q1:5.3f}-{q3:5.3f} {best:16.3f} "
            f"{verdict(ratio, best):>12s}"
        )
    print()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
