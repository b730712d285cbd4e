"""One-hot SMILES tokenisation and 3D conformers, including shipped geometries and fallback."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from molhpo.contract.errors import InvalidArgument
from trainer.featurize import ConformerFeatures, SmilesFeatures, featurize
from trainer.featurize import conformers as conformers_module
from trainer.featurize.conformers import compute_conformers, embed
from trainer.featurize.smiles import PAD_TOKEN, compute_onehot_smiles, tokenize


def test_tokens_of_a_smiles_with_two_letter_and_bracket_atoms() -> None:
    assert tokenize("ClC(Br)c1ccccc1[NH3+]") == [
        "Cl", "C", "(", "Br", ")", "c", "1", "c", "c", "c", "c", "c", "1", "[NH3+]"
    ]  # fmt: skip
    assert tokenize("C%12CC%12=O") == ["C", "%12", "C", "C", "%12", "=", "O"]
    assert tokenize("[C@@H](F)/C=C\\Cl") == [
        "[C@@H]", "(", "F", ")", "/", "C", "=", "C", "\\", "Cl"
    ]  # fmt: skip


def test_untokenisable_character_is_named() -> None:
    with pytest.raises(InvalidArgument, match=r"position 1 \('\]'\)"):
        tokenize("C]")


def test_one_hot_matrices_round_trip() -> None:
    smiles = ["ClC(Br)c1ccccc1[NH3+]", "CCO", "C"]
    features = compute_onehot_smiles(smiles)
    assert isinstance(features, SmilesFeatures)
    assert features.alphabet[0] == PAD_TOKEN
    assert set(features.alphabet) == {PAD_TOKEN, "Cl", "C", "(", "Br", ")", "c", "1", "[NH3+]", "O"}
    assert features.max_len == 14
    matrix = features.one_hot()
    assert matrix.shape == (3, len(features.alphabet), 14)
    assert torch.all(matrix.sum(dim=1) == 1.0)  # one token (maybe padding) per position
    assert [features.decode(m) for m in matrix] == smiles
    assert matrix[2, 0, 1:].tolist() == [1.0] * 13  # "C" is padded after its one token
    assert features.one_hot(np.array([1])).shape == (1, len(features.alphabet), 14)


def test_conformers_have_hydrogens_and_are_reproducible() -> None:
    features = compute_conformers(["CCO", "c1ccccc1", "[Na+].[Cl-]"])
    packed = features.packed
    assert features.n_fallback == 0
    assert packed.node_ptr.tolist() == [0, 9, 21, 23]  # ethanol 9 atoms, benzene 12
    assert sorted(packed.z[:9].tolist()) == [1, 1, 1, 1, 1, 1, 6, 6, 8]
    assert packed.pos.shape == (23, 3) and packed.pos.dtype == torch.float32
    # an optimised C-C bond of ethanol is about 1.5 Å
    assert torch.linalg.norm(packed.pos[0] - packed.pos[1]).item() == pytest.approx(1.51, abs=0.05)
    assert packed.pos[:21, 2].abs().max() > 0.1 or packed.pos[:9, 2].abs().max() > 0.1  # 3D
    assert torch.equal(compute_conformers(["CCO"]).packed.pos, packed.pos[:9])
    batch = packed.batch(np.array([2, 0]))
    assert batch.z.shape == (11,) and batch.batch.tolist() == [0, 0] + [1] * 9
    assert torch.equal(batch.pos[2:], packed.pos[:9])


def test_failed_embedding_falls_back_to_flat_2d(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conformers_module.rdDistGeom, "EmbedMolecule", lambda *args: -1)
    z, pos, embedded = embed("CCO")
    assert not embedded
    assert len(z) == 9 and pos.shape == (9, 3)
    assert np.all(pos[:, 2] == 0.0) and np.abs(pos[:, :2]).max() > 0.1
    assert compute_conformers(["CCO", "C"]).n_fallback == 2


@dataclass(frozen=True)
class _Geometry:
    z: np.ndarray
    pos: np.ndarray


@dataclass(frozen=True)
class _TableWithConformers:
    name: str
    smiles: list[str]
    conformers: tuple[_Geometry, ...] | None


def test_shipped_conformers_are_used_instead_of_embedding() -> None:
    water = _Geometry(np.array([8, 1, 1]), np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]))
    table = _TableWithConformers("toy-shipped-geometry", ["O"], (water,))
    features = featurize(table, "conformers_3d")  # type: ignore[arg-type]
    assert isinstance(features, ConformerFeatures)
    assert features.packed.z.tolist() == [8, 1, 1]
    assert features.packed.pos[1].tolist() == pytest.approx([0.96, 0.0, 0.0])
    assert featurize(table, "conformers_3d") is features  # type: ignore[arg-type]
    embedded = featurize(  # no shipped geometry: RDKit embeds (and adds hydrogens)
        _TableWithConformers("toy-no-geometry", ["O"], None),  # type: ignore[arg-type]
        "conformers_3d",
    )
    assert isinstance(embedded, ConformerFeatures)
    assert embedded.packed.z.tolist() == [8, 1, 1]
    assert embedded.packed.pos[1].tolist() != pytest.approx([0.96, 0.0, 0.0])
