"""Train/validation/test splits of a data set, deterministic for a seed.

Three kinds (``SPLIT_KINDS``):

* ``random``: rows shuffled with ``numpy.random.default_rng(seed)``.
* ``scaffold``: Bemis-Murcko scaffolds kept together, so the validation and test molecules have
  ring systems the model did not train on (a harder, more realistic estimate than random).
* ``given``: the split that came with the data (``MoleculeTable.given_split``), e.g. the
  solubility set's published test file.

:func:`split_indices` only needs a row count, so it does ``random`` only; :func:`split_dataset`
takes the table and does all three.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

from molhpo.contract.errors import InvalidArgument
from molhpo.datasets.table import MoleculeTable

SPLIT_KINDS: tuple[str, ...] = ("given", "random", "scaffold")
"""Split kinds :func:`split_dataset` knows (:func:`split_indices` does ``random`` only)."""

Split = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Sorted int64 row indices of the (train, valid, test) sets."""


def _check_kind(kind: str) -> None:
    if kind not in SPLIT_KINDS:
        raise InvalidArgument(f"unknown split '{kind}'; choose one of: {', '.join(SPLIT_KINDS)}")


def _check_fraction(label: str, fraction: float) -> None:
    if not (math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise InvalidArgument(
            f"{label} is {fraction}; it must be in [0, 1), e.g. 0.1 for 10% of the rows"
        )


def _sizes(n: int, valid_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(n_train, n_valid, n_test) for ``n`` rows: ``round(n * fraction)`` each, train the rest."""
    if n < 1:
        raise InvalidArgument(f"cannot split {n} rows; a data set needs at least one row")
    _check_fraction("valid_fraction", valid_fraction)
    _check_fraction("test_fraction", test_fraction)
    n_valid = round(n * valid_fraction)
    n_test = round(n * test_fraction)
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise InvalidArgument(
            f"valid_fraction {valid_fraction} and test_fraction {test_fraction} leave no "
            f"training rows out of {n}; make their sum smaller"
        )
    return n_train, n_valid, n_test


def _sorted(*parts: np.ndarray | list[int]) -> Split:
    a, b, c = (np.sort(np.asarray(p, dtype=np.int64)) for p in parts)
    return a, b, c


def split_indices(
    n: int,
    kind: str = "random",
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Disjoint (train, valid, test) index arrays covering ``range(n)``.

    The validation and test sets get ``round(n * fraction)`` rows each and the training set the
    rest. "random" shuffles with ``numpy.random.default_rng(seed)``, so the same (n, seed,
    fractions) always give the same split, whatever process computes it. Each array is sorted
    int64. The other kinds need the molecules; use :func:`split_dataset` for them.
    """
    _check_kind(kind)
    if kind != "random":
        raise InvalidArgument(
            f"split '{kind}' needs the molecules, not only their count; call "
            f"split_dataset(table, '{kind}') instead of split_indices"
        )
    n_train, n_valid, _ = _sizes(n, valid_fraction, test_fraction)
    order = np.random.default_rng(seed).permutation(n)
    return _sorted(order[:n_train], order[n_train : n_train + n_valid], order[n_train + n_valid :])


def murcko_scaffold(smiles: str) -> str:
    """The Bemis-Murcko scaffold of ``smiles`` as canonical SMILES, without stereochemistry.

    Acyclic molecules have the empty scaffold "" (they form one group, as in chemprop and
    DeepChem). SMILES RDKit cannot parse raise InvalidArgument (tables never hold such rows).
    """
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise InvalidArgument(
            f"SMILES {smiles!r} cannot be parsed by RDKit, so it has no scaffold; drop the row"
        )
    return str(MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False))


def scaffold_split(
    smiles: list[str], valid_fraction: float = 0.1, test_fraction: float = 0.1
) -> Split:
    """Deterministic scaffold split: whole scaffold groups go to one set each.

    As in DeepChem's ScaffoldSplitter and chemprop's (unbalanced) scaffold split: rows are
    grouped by :func:`murcko_scaffold`, groups are sorted largest first (ties by scaffold SMILES),
    and each group goes to train if it still fits under ``n_train``, else to valid if that still
    fits under ``n_train + n_valid``, else to test. Set sizes therefore only approximate the
    fractions; the big common scaffolds end up in train and the rare ones in valid/test.
    """
    n_train, n_valid, _ = _sizes(len(smiles), valid_fraction, test_fraction)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, smi in enumerate(smiles):
        groups[murcko_scaffold(smi)].append(i)
    ordered = sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    train: list[int] = []
    valid: list[int] = []
    test: list[int] = []
    for _, rows in ordered:
        if len(train) + len(rows) <= n_train:
            train += rows
        elif len(train) + len(valid) + len(rows) <= n_train + n_valid:
            valid += rows
        else:
            test += rows
    return _sorted(train, valid, test)


def given_split(table: MoleculeTable, seed: int = 0, valid_fraction: float = 0.1) -> Split:
    """The split that came with ``table`` (``table.given_split``).

    Rows labelled "test" are the test set, unchanged. Rows labelled "valid" are the validation
    set if there are any; otherwise ``round(n_train_given * valid_fraction)`` validation rows are
    drawn at random (``default_rng(seed)``) from the rows labelled "train". A table without a
    given split raises InvalidArgument.
    """
    labels = table.given_split
    if labels is None:
        raise InvalidArgument(
            f"dataset '{table.name}' has no given split (its source has no fixed train/test "
            "sets); choose split 'random' or 'scaffold'"
        )
    _check_fraction("valid_fraction", valid_fraction)
    given_train = np.flatnonzero(labels == "train")
    given_valid = np.flatnonzero(labels == "valid")
    test = np.flatnonzero(labels == "test")
    if len(given_valid) > 0:
        train, valid = given_train, given_valid
    else:
        n_valid = round(len(given_train) * valid_fraction)
        order = np.random.default_rng(seed).permutation(given_train)
        train, valid = order[n_valid:], order[:n_valid]
    if len(train) == 0:
        raise InvalidArgument(
            f"the given split of dataset '{table.name}' leaves no training rows with "
            f"valid_fraction {valid_fraction}; make valid_fraction smaller"
        )
    return _sorted(train, valid, test)


def split_dataset(
    table: MoleculeTable,
    kind: str,
    seed: int = 0,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Disjoint, sorted int64 (train, valid, test) row indices of ``table`` covering every row.

    ``random`` is :func:`split_indices` on ``len(table)``; ``scaffold`` is
    :func:`scaffold_split` (deterministic: ``seed`` is not used); ``given`` is
    :func:`given_split` (``test_fraction`` is not used: the test set is the given one). The same
    arguments always give the same split.
    """
    _check_kind(kind)
    if kind == "random":
        return split_indices(len(table), "random", seed, valid_fraction, test_fraction)
    if kind == "scaffold":
        return scaffold_split(table.smiles, valid_fraction, test_fraction)
    return given_split(table, seed, valid_fraction)
