"""GPU check: every model family trained on one device, with the figures that show whether the
trainer uses that device well and correctly.

For each family (catalogue defaults, a FreeSolv subset of ``--molecules`` molecules, random
split 80/10/10, ``--epochs`` epochs, seed 0) it trains:

1. float32 (``amp`` off), under the sync guard (``trainer.training.sync_guard``; on CUDA
   ``torch.cuda.set_sync_debug_mode("warn")`` too): synchronising calls per training batch
   (mean and most), peak memory (``torch.cuda.max_memory_allocated`` on CUDA; on the CPU the
   process's peak resident set so far, which only grows), the time of each epoch (training +
   validation; the first includes one-off set-up such as pair tables and kernel autotuning),
   and the test RMSE;
2. with ``amp`` on: its test RMSE and synchronising calls per batch (bfloat16 where the GPU
   computes it natively, float16 with loss scaling on older GPUs, off on the CPU, where the
   two runs are the same);
3. the resume check: the float32 run again, stopped after epoch 1 with its state saved as a
   lost trainer's trial saves it, then resumed in a fresh ``train`` call to the end; its
   validation and test RMSE beside run 1's ("same" within ``--tolerance``: a restored random
   state that went wrong moves the RMSE by ~1e-2, while rounding alone stays far below 1e-6:
   on CUDA atomic additions in pooling, and on a CPU with several threads the matrix kernels,
   whose blocking can follow the memory alignment of the arrays, round differently in the last
   bits).

Every synchronising call counts: the goal is 0 per batch for every family. The command, ready
for a GPU machine:

    python bench/gpu_check.py --device cuda

On a CPU it runs in about 20 seconds (two cores): ``python bench/gpu_check.py``. The exit
status is 1 when a family synchronises, fails, or resumes to other metrics.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from molhpo.contract import catalogue
from molhpo.cpus import usable_cpus
from trainer.training import EpochResult, TrainConfig, TrainResult, train
from trainer.training.precision import autocast_dtype
from trainer.training.sync_guard import BatchSyncs, per_batch_syncs

FAMILIES = tuple(sorted(name for name in catalogue.MODELS if name != catalogue.SYNTHETIC))


@dataclass
class MemoryStore:
    """A trial's resume state kept in memory (``trainer.checkpoint.ResumeStore``)."""

    every: int = 1
    state: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        return self.state

    def save(self, state: dict[str, Any]) -> None:
        self.state = state


@dataclass
class Row:
    """The figures of one family."""

    family: str
    batches: int = 0
    syncs_mean: float = 0.0
    syncs_max: int = 0
    syncs_amp_mean: float = 0.0
    examples: list[str] = field(default_factory=list)
    peak_mib: float = 0.0
    epoch_s: list[float] = field(default_factory=list)
    rmse: float = 0.0
    rmse_amp: float = 0.0
    resume_valid_diff: float = 0.0
    resume_test_diff: float = 0.0
    resumed_from: int = 0
    error: str = ""


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _run(
    config: TrainConfig,
    device: torch.device,
    stop_after: int = 0,
    resume: MemoryStore | None = None,
) -> tuple[TrainResult, list[EpochResult], BatchSyncs]:
    epochs: list[EpochResult] = []

    def on_epoch(epoch: EpochResult) -> bool:
        epochs.append(epoch)
        return stop_after == 0 or epoch.step < stop_after

    with per_batch_syncs(device, cuda_mode="warn") as syncs:
        result = train(config, on_epoch, resume=resume)
    return result, epochs, syncs


def check_family(family: str, args: argparse.Namespace, device: torch.device) -> Row:
    row = Row(family)
    base = TrainConfig(
        "freesolv",
        family,
        {"amp": False},
        max_epochs=args.epochs,
        max_molecules=args.molecules,
        device=str(device),
    )
    amp = TrainConfig(
        "freesolv",
        family,
        {"amp": True},
        max_epochs=args.epochs,
        max_molecules=args.molecules,
        device=str(device),
    )
    try:
        _peak_reset(device)
        plain, epochs, syncs = _run(base, device)
        row.peak_mib = _peak_mib(device)
        row.batches = syncs.batches
        row.syncs_mean = syncs.mean
        row.syncs_max = max(syncs.per_batch, default=0)
        row.examples = sorted(set(syncs.examples))[:5]
        row.epoch_s = [e.seconds for e in epochs]
        row.rmse = plain.test_metrics["rmse"]
        mixed, _, amp_syncs = _run(amp, device)
        row.rmse_amp = mixed.test_metrics["rmse"]
        row.syncs_amp_mean = amp_syncs.mean
        store = MemoryStore()
        _run(base, device, stop_after=1, resume=store)
        resumed, _, _ = _run(base, device, resume=store)
        row.resumed_from = resumed.resumed_from
        row.resume_valid_diff = abs(
            resumed.best_valid_metrics["rmse"] - plain.best_valid_metrics["rmse"]
        )
        row.resume_test_diff = abs(resumed.test_metrics["rmse"] - plain.test_metrics["rmse"])
    except Exception as err:  # one family's failure is a row of the report, not the end of it
        row.error = f"{type(err).__name__}: {err}"
    return row


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU is visible; use --device cpu or auto")
    return device


def _describe(device: torch.device) -> str:
    if device.type != "cuda":
        return (
            f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        )
    props = torch.cuda.get_device_properties(device)
    return f"{device} ({props.name}, compute capability {props.major}.{props.minor})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated")
    parser.add_argument("--molecules", type=int, default=160, help="FreeSolv subset size")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: usable CPUs)")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        help="resume check: largest RMSE difference called the same",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or usable_cpus())
    device = _device(args.device)
    tolerance = args.tolerance
    amp = autocast_dtype(device)
    print(f"device: {_describe(device)}; torch {torch.__version__}")
    print(
        f"FreeSolv, {args.molecules} molecules, {args.epochs} epochs per run, catalogue defaults; "
        f"amp: {'off on this device' if amp is None else amp}"
    )
    rows: list[Row] = []
    started = time.perf_counter()
    for family in args.families.split(","):
        row = check_family(family.strip(), args, device)
        rows.append(row)
        if row.error:
            print(f"{row.family}: FAILED {row.error}", flush=True)
        else:
            print(f"{row.family}: done ({sum(row.epoch_s):.1f} s of epochs)", flush=True)
    peak = "peak MiB (CUDA)" if device.type == "cuda" else "peak RSS MiB"
    header = (
        f"| family | batches | syncs/batch (max) | syncs/batch amp | {peak} | epoch 1 s | "
        "epoch 2 s | test RMSE | RMSE amp | resume: valid, test RMSE diff |"
    )
    print()
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    failures = 0
    for r in rows:
        if r.error:
            failures += 1
            print(f"| {r.family} | failed: {r.error} |")
            continue
        same = max(r.resume_valid_diff, r.resume_test_diff) <= tolerance and r.resumed_from == 1
        failures += (r.syncs_max > 0) + (not same)
        epochs = r.epoch_s + [float("nan")] * (2 - len(r.epoch_s))
        print(
            f"| {r.family} | {r.batches} | {r.syncs_mean:.2f} ({r.syncs_max}) | "
            f"{r.syncs_amp_mean:.2f} | {r.peak_mib:.0f} | {epochs[0]:.3f} | {epochs[1]:.3f} | "
            f"{r.rmse:.4f} | {r.rmse_amp:.4f} | {r.resume_valid_diff:.1e}, "
            f"{r.resume_test_diff:.1e} ({'same' if same else 'DIFFERS'}) |"
        )
    for r in rows:
        if r.examples:
            print(f"{r.family} synchronises in: {'; '.join(r.examples)}")
    print(
        f"\n{len(rows)} families in {time.perf_counter() - started:.0f} s; goal: 0 syncs per "
        f"batch and the same metrics after a resume; {failures} misses"
    )
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "device": _describe(device),
                    "torch": torch.__version__,
                    "amp": str(amp),
                    "molecules": args.molecules,
                    "epochs": args.epochs,
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
