"""Molecular data sets and their train/validation/test splits.

Bundled data sets ship inside the package (``molhpo/datasets/data``, see SOURCES.txt there);
``qm9`` is read from the optional qm9pack package; user files are read from allowed folders
only. Nothing is downloaded at run time. Bundled names are those of
``molhpo.contract.catalogue.DATASETS``.

These readers are shared code that both services use, so they belong to neither. A trainer
reads a trial's data set with them; the coordinator reads the same data set with them when it
validates a study (``coordinator/datasets.py``), before any trainer exists, so it refuses
exactly what a trainer would fail on (a missing file, a wrong column, too many rows RDKit
rejects). They need RDKit and numpy, never torch, so the coordinator carries RDKit but not the
ML stack; featurisation into tensors stays in ``trainer/featurize``.
"""

from __future__ import annotations

from molhpo.datasets.builtin import LOADERS, load_dataset
from molhpo.datasets.qm9 import QM9_PROPERTIES, load_qm9
from molhpo.datasets.request import DatasetRequest, load_table
from molhpo.datasets.split import SPLIT_KINDS, split_dataset, split_indices
from molhpo.datasets.table import (
    MAX_INVALID_SHARE,
    Conformer,
    MoleculeTable,
    check_invalid_share,
)
from molhpo.datasets.user import TabularTable, load_tabular_csv, load_user_file

__all__ = [
    "LOADERS",
    "MAX_INVALID_SHARE",
    "QM9_PROPERTIES",
    "SPLIT_KINDS",
    "Conformer",
    "DatasetRequest",
    "MoleculeTable",
    "TabularTable",
    "check_invalid_share",
    "load_dataset",
    "load_qm9",
    "load_table",
    "load_tabular_csv",
    "load_user_file",
    "split_dataset",
    "split_indices",
]
