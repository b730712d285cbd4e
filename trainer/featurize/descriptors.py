"""RDKit 2D descriptors as a feature matrix for the dense models.

The raw matrix is computed once per data set (see ``trainer.featurize.featurize``); each trial
then standardises it with the mean and standard deviation of its own training rows, so no
statistic leaks from validation or test molecules into the features.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem import Descriptors


@dataclass(frozen=True)
class DescriptorFeatures:
    """Raw RDKit descriptors of a data set.

    ``values`` has shape [n_molecules, n_descriptors], float64 (some descriptors such as Ipc
    exceed float32's range for larger molecules), read-only; NaN marks a descriptor RDKit could
    not compute or that came out infinite. ``names`` are the descriptors' RDKit names.
    """

    values: np.ndarray
    names: tuple[str, ...]

    @property
    def num_features(self) -> int:
        return int(self.values.shape[1])


def descriptor_names() -> tuple[str, ...]:
    """Names of the descriptors computed, in column order (``rdkit.Chem.Descriptors.descList``)."""
    return tuple(name for name, _ in Descriptors.descList)


def compute_descriptors(smiles: list[str]) -> DescriptorFeatures:
    """All ``Descriptors.descList`` descriptors of each molecule; failures become NaN."""
    functions = [fn for _, fn in Descriptors.descList]
    values = np.full((len(smiles), len(functions)), np.nan, dtype=np.float64)
    with rdBase.BlockLogs(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some descriptors warn on unusual molecules
        for row, smi in enumerate(smiles):
            mol = Chem.MolFromSmiles(smi)
            if mol is None:
                continue
            for col, fn in enumerate(functions):
                try:
                    values[row, col] = float(fn(mol))
                except Exception:  # any RDKit failure means "missing value"
                    continue
    values[~np.isfinite(values)] = np.nan
    values.flags.writeable = False
    return DescriptorFeatures(values=values, names=descriptor_names())


def standardization(values: np.ndarray, train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean [d] and standard deviation [d] (float64) ``standardize`` uses: those of the
    finite values of ``train_rows``; 0 and 1 for columns with none, std 1 for constant ones."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        train = values[train_rows]
        train = np.where(np.isfinite(train), train, np.nan)  # inf counts as missing too
        mean = np.nanmean(train, axis=0)
        std = np.nanstd(train, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0.0), std, 1.0)
    return mean, std


def standardize(values: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """``values`` standardised with the mean/std of ``train_rows``, as a float32 matrix.

    Shapes: values [n, d], train_rows [n_train] (row indices) -> [n, d]. Columns that are
    constant on the training rows get std 1 (so they become 0), and missing (NaN) or non-finite
    entries become 0, i.e. the training mean.
    """
    mean, std = standardization(values, train_rows)
    with np.errstate(over="ignore", invalid="ignore"):
        out = (values - mean) / std
    out[~np.isfinite(out)] = 0.0
    return out.astype(np.float32)
