"""Molecular data sets and their train/validation/test splits.

Bundled data sets ship inside the package (``trainer/datasets/data``, see SOURCES.txt there);
``qm9`` is read from the optional qm9pack package; user files are read from allowed folders
only. Nothing is downloaded at run time. Bundled names are those of
``molhpo.contract.catalogue.DATASETS``.
"""

from __future__ import annotations

from trainer.datasets.builtin import LOADERS, load_dataset
from trainer.datasets.qm9 import QM9_PROPERTIES, load_qm9
from trainer.datasets.request import DatasetRequest, load_table
from trainer.datasets.split import SPLIT_KINDS, split_dataset, split_indices
from trainer.datasets.table import (
    MAX_INVALID_SHARE,
    Conformer,
    MoleculeTable,
    check_invalid_share,
)
from trainer.datasets.user import TabularTable, load_tabular_csv, load_user_file

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
