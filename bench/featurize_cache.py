"""Featurisation cache speed-up: what a trial pays for its features, cold and cached.

Without a cache every trial featurises its data set again; molhpo computes features once per
content key and keeps them in memory (trials of one trainer) and on disk (every trainer of the
machine, and restarts). Prints, per featuriser and data set, the cold time, the disk-cache and
memory-cache times, and the speed-ups.

    python bench/featurize_cache.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from molhpo.datasets import load_dataset
from trainer import featurize as fz

CASES = [
    ("freesolv", "rdkit_descriptors"),
    ("freesolv", "graph"),
    ("freesolv", "onehot_smiles"),
    ("freesolv", "conformers_3d"),
    ("solubility", "rdkit_descriptors"),
    ("solubility", "graph"),
]


def timed(table: object, name: str) -> float:
    """Seconds one featurize() call takes."""
    t0 = time.perf_counter()
    fz.featurize(table, name)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(
        f"{'data set':12s} {'featuriser':18s} {'cold s':>8s} {'disk s':>8s} {'memory s':>9s}"
        f" {'x disk':>8s} {'x memory':>10s}"
    )
    for dataset, name in CASES:
        table = load_dataset(dataset)
        with tempfile.TemporaryDirectory() as tmp:
            cold, disk, memory = [], [], []
            for _ in range(args.repeats):
                fz.set_disk_cache(None)
                fz.clear_cache()
                cold.append(timed(table, name))
            fz.set_disk_cache(Path(tmp))
            fz.clear_cache()
            fz.featurize(table, name)  # fills the disk cache
            for _ in range(args.repeats):
                fz.clear_cache()  # a new trainer process: disk only
                disk.append(timed(table, name))
                memory.append(timed(table, name))
            fz.set_disk_cache(None)
        c, d, m = (statistics.median(x) for x in (cold, disk, memory))
        print(f"{dataset:12s} {name:18s} {c:8.3f} {d:8.4f} {m:9.6f} {c / d:8.0f} {c / m:10.0f}")
    fz.clear_cache()


if __name__ == "__main__":
    main()
