"""Loaders for the data sets bundled with molhpo.

Each loader reads a file under ``molhpo/datasets/data`` (listed with its licence in
SOURCES.txt) and parses every molecule with RDKit; rows RDKit cannot parse are dropped and counted
so a trial can report them instead of failing. Loaded tables are cached per process: every trial
of a study reads the same immutable table.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Callable
from importlib import resources

from rdkit import Chem, rdBase

from molhpo.contract.catalogue import get_dataset
from molhpo.contract.errors import Internal
from molhpo.datasets.qm9 import load_qm9
from molhpo.datasets.table import (
    MAX_INVALID_EXAMPLES,
    MoleculeTable,
    TableBuilder,
)

__all__ = [
    "LOADERS",
    "MAX_INVALID_EXAMPLES",
    "MoleculeTable",
    "load_dataset",
    "load_freesolv",
    "load_solubility",
    "table_from_rows",
    "table_from_sdf_text",
]


def _data_text(filename: str) -> str:
    """The text of a bundled data file (works from a wheel as well as from a checkout)."""
    return (resources.files("molhpo.datasets") / "data" / filename).read_text(encoding="utf-8")


def table_from_rows(
    name: str, units: str, rows: list[tuple[str, str]], target_name: str = "target"
) -> MoleculeTable:
    """A MoleculeTable from (smiles, target text) rows, dropping rows RDKit or float() reject.

    The SMILES are kept as written in the source (not canonicalised), so rows can be traced back.
    """
    builder = TableBuilder(name, units, (target_name,))
    with rdBase.BlockLogs():  # RDKit would print a parse error per bad row
        # bundled CSV files have one header line and no blank lines: data row i is line i + 2
        for i, (smi, target_text) in enumerate(rows):
            mol = Chem.MolFromSmiles(smi) if smi else None
            builder.add(smi, mol, (target_text,), smiles=smi, row=i + 2)
    return builder.build()


def add_sdf_text(
    builder: TableBuilder, text: str, label: str | None = None, first_record: int = 1
) -> int:
    """Add every record of SD file ``text`` to ``builder``; the number of records read.

    Targets are the SD properties named by ``builder.target_names``; the SMILES kept is RDKit's
    canonical SMILES of the parsed molecule. Records RDKit cannot parse, or that lack a target
    property, are counted as invalid and shown as "record N" (N counts from ``first_record``).
    """
    supplier = Chem.SDMolSupplier()
    count = 0
    with rdBase.BlockLogs():
        supplier.SetData(text)
        for count, mol in enumerate(supplier, start=1):
            values = [
                mol.GetProp(prop) if mol is not None and mol.HasProp(prop) else None
                for prop in builder.target_names
            ]
            record = first_record + count - 1
            builder.add(f"record {record}", mol, values, label=label, row=record)
    return count


def table_from_sdf_text(name: str, units: str, text: str, target_name: str) -> MoleculeTable:
    """A MoleculeTable from the records of one SD file's text, target from SD property
    ``target_name`` (see :func:`add_sdf_text`)."""
    builder = TableBuilder(name, units, (target_name,))
    add_sdf_text(builder, text)
    return builder.build()


def load_freesolv() -> MoleculeTable:
    """FreeSolv: 642 experimental hydration free energies in kcal/mol (column ``expt``)."""
    reader = csv.DictReader(io.StringIO(_data_text("freesolv.csv")))
    rows = [(row["smiles"], row["expt"]) for row in reader]
    return table_from_rows("freesolv", "kcal/mol", rows, target_name="expt")


def load_solubility() -> MoleculeTable:
    """Huuskonen aqueous solubility: 1025 + 257 molecules, log S in log10(mol/L).

    Read from RDKit's solubility.train.sdf and solubility.test.sdf (SD property ``SOL``); the
    files' own split is kept as ``given_split`` ("train" rows first, then "test"), so
    ``split_dataset(table, "given")`` tests on exactly the published test file.
    """
    builder = TableBuilder("solubility", "log10(mol/L)", ("SOL",))
    n_train = add_sdf_text(builder, _data_text("solubility.train.sdf"), label="train")
    add_sdf_text(builder, _data_text("solubility.test.sdf"), label="test", first_record=n_train + 1)
    return builder.build()


LOADERS: dict[str, Callable[[], MoleculeTable]] = {
    "freesolv": load_freesolv,
    "qm9": load_qm9,
    "solubility": load_solubility,
}
"""Loader per data-set name; the keys equal those of ``molhpo.contract.catalogue.DATASETS``.

``qm9`` is every molecule with target ``homo`` and needs the optional qm9pack package (its
loader raises InvalidArgument with the pip command otherwise); call
:func:`molhpo.datasets.qm9.load_qm9` for another target or a subset.
"""


@functools.cache
def _load_cached(name: str) -> MoleculeTable:
    loader = LOADERS.get(name)
    if loader is None:
        raise Internal(f"dataset '{name}' is in the catalogue but has no loader in LOADERS")
    table = loader()
    if len(table) == 0:
        raise Internal(f"dataset '{name}' has no parsable molecules; check its bundled file")
    return table


def load_dataset(name: str) -> MoleculeTable:
    """The bundled data set ``name`` (cached per process; treat the table as read-only).

    Unknown names raise InvalidArgument listing the valid ones.
    """
    get_dataset(name)  # raises InvalidArgument for unknown names
    return _load_cached(name)
