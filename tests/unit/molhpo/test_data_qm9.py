"""QM9 from qm9pack's data files: a small folder in qm9pack's format, and the missing package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from molhpo.contract.catalogue import DATASETS
from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import LOADERS, Conformer, load_dataset
from molhpo.datasets.qm9 import QM9_PART_FILES, QM9_PROPERTIES, load_qm9, read_qm9_folder

HEADER = (
    "XYZ_file,Index,SMILES,InChi,N_atoms,Stoichiometry,Elements,XYZ_Ang,Mulliken_pop,"
    "Harmonic_Freq_cmi,RotA_GHz,RotB_GHz,RotC_GHz,Dipole_debye,Polarizability_bohr3,HOMO_au,"
    "LUMO_au,HOMO_LUMO_gap_au,R2_bohr2,ZPVE_au,InternalEnergy_0K_au,InternalEnergy_298K_au,"
    "Enthalphy_298K_au,GibbsFreeEnergy_298K_au,Heatcapacity_Cv_cal_mol_K"
)
METHANE = (
    '"dsgdb9nsd_000001.xyz",1,"C","InChI=1S/CH4/h1H4",5,"[4,1,0,0,0]",'
    "\"['C','H','H','H','H']\","
    '"[[-0.0126981359,1.0858041578,0.0080009958],[0.002150416,-0.0060313176,0.0019761204],'
    "[1.0117308433,1.4637511618,0.],[-0.540815069,1.4475266138,-0.8766437152],"
    '[-0.5238136345,1.4379326443,0.9063972942]]",'
    '"[-0.535689,0.133921,0.133922,0.133923,0.133923]","[1341.307,1341.3284]",'
    "157.7118,157.70997,157.70699,0.,13.21,-0.3877,0.1171,0.5048,35.3641,0.044749,"
    "-40.47893,-40.476062,-40.475117,-40.498597,6.469"
)
WATER = (
    '"dsgdb9nsd_000003.xyz",3,"O","InChI=1S/H2O/h1H2",3,"[2,0,0,1,0]","[\'O\',\'H\',\'H\']",'
    '"[[-0.0343604951,0.9775395708,0.0076015923],[0.0647664923,0.0205721989,0.0015346341],'
    '[0.8717903737,1.3007924048,0.0006931336]]","[-0.1,0.05,0.05]","[1.0]",'
    "799.58812,437.90386,282.94545,1.8511,6.31,-0.2928,0.0687,0.3615,19.0002,0.021375,"
    "-76.404702,-76.401867,-76.400922,-76.422349,6.002"
)


def _folder(tmp_path: Path) -> Path:
    bad_smiles = WATER.replace('"O","InChI', '"O(","InChI').replace(",3,", ",4,", 1)
    short_xyz = METHANE.replace(",[-0.5238136345,1.4379326443,0.9063972942]", "")
    parts = {
        QM9_PART_FILES[0]: [METHANE, WATER],
        QM9_PART_FILES[1]: [bad_smiles],
        QM9_PART_FILES[2]: [short_xyz],
    }
    for name, rows in parts.items():
        (tmp_path / name).write_text("\n".join([HEADER, *rows]) + "\n", encoding="utf-8")
    return tmp_path


def test_reads_qm9pack_format_with_conformers(tmp_path: Path) -> None:
    table = read_qm9_folder(_folder(tmp_path), "homo")
    assert table.name == "qm9" and table.units == "hartree"
    assert table.smiles == ["C", "O"]
    np.testing.assert_allclose(table.targets, [-0.3877, -0.2928])
    assert table.target_names == ("homo",)
    assert table.n_invalid == 2  # unparsable SMILES, coordinates not matching the elements
    assert table.invalid_examples == ("O(", "C")
    assert table.conformers is not None and len(table.conformers) == 2
    methane = table.conformers[0]
    assert isinstance(methane, Conformer)
    assert methane.z.dtype == np.int64 and methane.z.tolist() == [6, 1, 1, 1, 1]
    assert methane.pos.dtype == np.float64 and methane.pos.shape == (5, 3)
    assert methane.pos[1, 0] == pytest.approx(0.002150416)
    assert methane.pos[2, 2] == 0.0  # qm9pack writes such numbers as "0."
    assert not methane.pos.flags.writeable
    assert table.conformers[1].z.tolist() == [8, 1, 1]


def test_targets_units_and_subset(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    gap = read_qm9_folder(folder, "gap")
    assert gap.name == "qm9[gap]"  # featurizer caches are keyed by name
    assert gap.units == "hartree" and gap.targets[0] == pytest.approx(0.5048)
    cv = read_qm9_folder(folder, "cv")
    assert cv.units == QM9_PROPERTIES["cv"][1] == "cal/(mol K)"
    assert cv.targets.tolist() == [6.469, 6.002]
    one = read_qm9_folder(folder, "mu", subset=1, seed=0)
    assert len(one) + one.n_invalid == 1
    again = read_qm9_folder(folder, "mu", subset=1, seed=0)
    assert one.name == "qm9[mu,subset=1,seed=0]"
    assert one.smiles == again.smiles and one.invalid_examples == again.invalid_examples
    with pytest.raises(InvalidArgument, match=r"unknown qm9 target 'HOMO'; choose one of: mu"):
        read_qm9_folder(folder, "HOMO")
    with pytest.raises(InvalidArgument, match="subset is -1"):
        read_qm9_folder(folder, "homo", subset=-1)
    (folder / QM9_PART_FILES[2]).unlink()
    with pytest.raises(InvalidArgument, match=r"qm9_part3\.csv' is missing.*pip install qm9pack"):
        read_qm9_folder(folder, "homo")


def test_missing_qm9pack_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    # qm9 looks qm9pack up through importlib.util, this very module
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        InvalidArgument, match=r"needs the 'qm9pack' package.*`pip install qm9pack`"
    ):
        load_qm9()


def test_qm9_is_registered() -> None:
    info = DATASETS["qm9"]
    assert "qm9" in LOADERS
    assert info.units == "hartree" and "homo" in info.target
    if importlib.util.find_spec("qm9pack") is None:
        # not installed here: loading the registered data set gives the clear error
        with pytest.raises(InvalidArgument, match="pip install qm9pack"):
            load_dataset("qm9")
