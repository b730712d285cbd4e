"""Train/validation/test splits."""

from __future__ import annotations

import numpy as np
import pytest

from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import SPLIT_KINDS, MoleculeTable, load_dataset, split_dataset, split_indices
from molhpo.datasets.builtin import table_from_rows
from molhpo.datasets.split import murcko_scaffold


def test_sizes_disjoint_and_covering() -> None:
    train, valid, test = split_indices(642, seed=3)
    assert (len(train), len(valid), len(test)) == (514, 64, 64)
    together = np.concatenate([train, valid, test])
    assert sorted(together.tolist()) == list(range(642))
    assert not set(train.tolist()) & set(valid.tolist())
    assert not set(valid.tolist()) & set(test.tolist())
    assert train.dtype == np.int64


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    a = split_indices(100, seed=1, valid_fraction=0.2, test_fraction=0.1)
    b = split_indices(100, seed=1, valid_fraction=0.2, test_fraction=0.1)
    c = split_indices(100, seed=2, valid_fraction=0.2, test_fraction=0.1)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    assert (len(a[0]), len(a[1]), len(a[2])) == (70, 20, 10)


def test_zero_test_fraction_gives_empty_test() -> None:
    train, valid, test = split_indices(10, valid_fraction=0.2, test_fraction=0.0)
    assert (len(train), len(valid), len(test)) == (8, 2, 0)


def test_unknown_kind_lists_every_kind() -> None:
    assert SPLIT_KINDS == ("given", "random", "scaffold")
    with pytest.raises(
        InvalidArgument, match=r"unknown split 'scafold'; choose one of: given, random, scaffold"
    ):
        split_indices(10, kind="scafold")
    table = load_dataset("freesolv")
    with pytest.raises(InvalidArgument, match=r"unknown split 'scafold'"):
        split_dataset(table, "scafold")


def test_split_indices_refers_table_kinds_to_split_dataset() -> None:
    with pytest.raises(
        InvalidArgument, match=r"split 'scaffold' needs the molecules.*split_dataset"
    ):
        split_indices(10, kind="scaffold")


@pytest.mark.parametrize(
    ("n", "valid_fraction", "test_fraction", "fragment"),
    [
        (10, 1.0, 0.0, "valid_fraction is 1.0"),
        (10, 0.1, -0.1, "test_fraction is -0.1"),
        (10, 0.5, 0.5, "leave no training rows"),
        (0, 0.1, 0.1, "cannot split 0 rows"),
    ],
)
def test_bad_arguments(n: int, valid_fraction: float, test_fraction: float, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        split_indices(n, valid_fraction=valid_fraction, test_fraction=test_fraction)


def _assert_partition(parts: tuple[np.ndarray, np.ndarray, np.ndarray], n: int) -> None:
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)  # sorted, no repeats
    together = np.concatenate(parts)
    assert sorted(together.tolist()) == list(range(n))  # disjoint and complete


@pytest.mark.parametrize("kind", ["random", "scaffold"])
@pytest.mark.parametrize("name", ["freesolv", "solubility"])
def test_split_dataset_is_a_deterministic_partition(name: str, kind: str) -> None:
    table = load_dataset(name)
    a = split_dataset(table, kind, seed=5, valid_fraction=0.1, test_fraction=0.2)
    b = split_dataset(table, kind, seed=5, valid_fraction=0.1, test_fraction=0.2)
    _assert_partition(a, len(table))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(a[1]) > 0 and len(a[2]) > 0


def test_random_split_dataset_equals_split_indices() -> None:
    table = load_dataset("freesolv")
    for x, y in zip(
        split_dataset(table, "random", seed=3), split_indices(len(table), seed=3), strict=True
    ):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("name", ["freesolv", "solubility"])
def test_scaffold_split_keeps_each_scaffold_in_one_set(name: str) -> None:
    table = load_dataset(name)
    parts = split_dataset(table, "scaffold", valid_fraction=0.1, test_fraction=0.1)
    owner: dict[str, int] = {}
    for set_index, rows in enumerate(parts):
        for i in rows.tolist():
            scaffold = murcko_scaffold(table.smiles[i])
            assert owner.setdefault(scaffold, set_index) == set_index, scaffold
    # the seed is not used: the scaffold split is one fixed split
    for x, y in zip(parts, split_dataset(table, "scaffold", seed=99), strict=True):
        np.testing.assert_array_equal(x, y)


def test_scaffold_split_puts_large_groups_in_train() -> None:
    rows = [("c1ccccc1C", "1"), ("c1ccccc1CC", "2"), ("c1ccccc1O", "3"), ("c1ccccc1N", "4")]
    rows += [("C1CCCCC1C", "5"), ("C1CCCCC1O", "6"), ("c1ccncc1", "7"), ("C1CC1", "8")]
    rows += [("CCO", "9"), ("CCCC", "10")]
    table = table_from_rows("toy", "u", rows)
    train, valid, test = split_dataset(table, "scaffold", valid_fraction=0.2, test_fraction=0.2)
    # groups largest first, ties by scaffold SMILES: benzene (4 rows), then the acyclic group ""
    # (2 rows, "" sorts before "C1CCCCC1") fill train's 6 places; cyclohexane (2 rows) fills
    # valid's 2; pyridine and cyclopropane go to test
    assert train.tolist() == [0, 1, 2, 3, 8, 9]
    assert valid.tolist() == [4, 5]
    assert test.tolist() == [6, 7]
    assert murcko_scaffold("CCO") == ""
    assert murcko_scaffold("c1ccccc1CC") == "c1ccccc1"


def test_given_split_keeps_the_test_file() -> None:
    table = load_dataset("solubility")
    assert table.given_split is not None
    train, valid, test = split_dataset(table, "given", seed=1, valid_fraction=0.1)
    _assert_partition((train, valid, test), len(table))
    np.testing.assert_array_equal(test, np.flatnonzero(table.given_split == "test"))
    assert len(test) == 257
    assert (len(train), len(valid)) == (1025 - 102, 102)
    assert set(valid.tolist()) <= set(np.flatnonzero(table.given_split == "train").tolist())
    again = split_dataset(table, "given", seed=1, valid_fraction=0.1)
    other = split_dataset(table, "given", seed=2, valid_fraction=0.1)
    np.testing.assert_array_equal(valid, again[1])
    assert not np.array_equal(valid, other[1])
    np.testing.assert_array_equal(test, other[2])  # the seed never moves the test set


def test_given_split_uses_given_valid_rows() -> None:
    labels = np.array(["train", "valid", "test", "train", "valid"])
    table = MoleculeTable(
        name="toy",
        smiles=["C", "CC", "CCC", "CCCC", "CCCCC"],
        targets=np.arange(5.0),
        units="u",
        given_split=labels,
    )
    train, valid, test = split_dataset(table, "given", seed=7, valid_fraction=0.5)
    assert (train.tolist(), valid.tolist(), test.tolist()) == ([0, 3], [1, 4], [2])


def test_given_split_needs_a_table_with_one() -> None:
    with pytest.raises(
        InvalidArgument, match=r"dataset 'freesolv' has no given split.*'random' or 'scaffold'"
    ):
        split_dataset(load_dataset("freesolv"), "given")
