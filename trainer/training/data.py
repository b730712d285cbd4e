"""A trial's molecules on the host: the data set read, cut to ``max_molecules``, split, its
targets' scaling taken from the training rows, and its features (:func:`prepare_data`).

The split depends only on ``split_seed``; so does the subset of ``max_molecules`` > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from molhpo.contract.catalogue import get_model
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import DatasetRequest, MoleculeTable, load_table, split_dataset
from trainer.featurize import Features, featurize
from trainer.training.trial import TrainConfig


@dataclass(frozen=True)
class TrialData:
    """A trial's molecules with their split, target scaling and features.

    ``y_mean`` and ``y_std`` are the mean and standard deviation of the training rows' targets
    (a std of 0 counts as 1): the model trains on ``(targets - y_mean) / y_std``, and its
    predictions are scaled back with them.
    """

    request: DatasetRequest
    table: MoleculeTable
    train_rows: np.ndarray
    valid_rows: np.ndarray
    test_rows: np.ndarray
    y_mean: float
    y_std: float
    featurizer: str
    features: Features

    @property
    def targets(self) -> np.ndarray:
        """The targets [n] of all molecules, in the target's units."""
        targets: np.ndarray = self.table.targets
        return targets


def prepare_data(config: TrainConfig) -> TrialData:
    """``config``'s data set read (a user file only from ``config.dataset_roots``), cut to
    ``max_molecules``, split, its targets scaled on the training rows and its molecules
    featurised for the model (through the process-wide feature cache).

    Raises InvalidArgument when the split leaves no validation molecules.
    """
    request = config.data or DatasetRequest(name=config.dataset)
    roots = tuple(Path(r) for r in config.dataset_roots)
    table = subset(load_table(request, roots), config.max_molecules, config.split_seed)
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
    featurizer = get_model(config.model).featurizer
    return TrialData(
        request=request,
        table=table,
        train_rows=train_rows,
        valid_rows=valid_rows,
        test_rows=test_rows,
        y_mean=y_mean,
        y_std=y_std,
        featurizer=featurizer,
        features=featurize(table, featurizer),
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
``subset``); every other field holding one entry per molecule is cut with the rows."""


def subset(table: MoleculeTable, max_molecules: int, seed: int) -> MoleculeTable:
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
