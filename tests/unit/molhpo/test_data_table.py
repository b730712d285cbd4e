"""MoleculeTable consistency checks and the TableBuilder's rules for unusable rows."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem

from molhpo.contract.errors import Internal
from molhpo.datasets import Conformer, MoleculeTable
from molhpo.datasets.table import MAX_INVALID_EXAMPLES, TableBuilder


def test_builder_drops_and_counts_unusable_rows() -> None:
    builder = TableBuilder("toy", "u", ("a", "b"))
    assert builder.add("CCO", Chem.MolFromSmiles("CCO"), ("1", 2.0), label="train")
    assert not builder.add("bad", None, ("1", "2"), label="train")
    assert not builder.add("C", Chem.MolFromSmiles("C"), ("1", "inf"), label="test")
    assert not builder.add("CC", Chem.MolFromSmiles("CC"), (None, "2"), label="test")
    assert builder.add("OCC", Chem.MolFromSmiles("OCC"), (3, "4"), smiles="OCC", label="test")
    table = builder.build()
    assert table.smiles == ["CCO", "OCC"]  # canonical unless the SMILES is given
    assert table.n_invalid == 3 and table.invalid_examples == ("bad", "C", "CC")
    assert table.targets.tolist() == [1.0, 3.0]
    assert table.target_matrix is not None and table.target_matrix.tolist() == [[1, 2], [3, 4]]
    assert table.given_split is not None and table.given_split.tolist() == ["train", "test"]
    assert not table.given_split.flags.writeable


def test_builder_keeps_only_a_few_examples() -> None:
    builder = TableBuilder("toy", "u", ("y",))
    for i in range(MAX_INVALID_EXAMPLES + 3):
        builder.add(f"bad{i}", None, ("1",))
    table = builder.build()
    assert len(table) == 0 and table.n_invalid == MAX_INVALID_EXAMPLES + 3
    assert len(table.invalid_examples) == MAX_INVALID_EXAMPLES
    assert table.targets.shape == (0,)


def test_inconsistent_tables_are_refused() -> None:
    with pytest.raises(Internal, match=r"targets has shape \(1,\), expected \(2,\)"):
        MoleculeTable("t", ["C", "CC"], np.zeros(1), "u")
    with pytest.raises(Internal, match="given_split holds labels other than"):
        MoleculeTable("t", ["C"], np.zeros(1), "u", given_split=np.array(["holdout"]))
    with pytest.raises(Internal, match="1 conformers for 2 molecules"):
        conformer = Conformer(np.array([6]), np.zeros((1, 3)))
        MoleculeTable("t", ["C", "CC"], np.zeros(2), "u", conformers=(conformer,))
    with pytest.raises(Internal, match="pos must be"):
        Conformer(np.array([6, 1]), np.zeros((1, 3)))
