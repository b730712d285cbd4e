"""Features cached by content on disk: reused across processes, never stale, never torn."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from trainer import featurize as fz
from trainer.datasets import load_dataset


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    fz.clear_cache()
    fz.set_disk_cache(tmp_path)
    yield tmp_path
    fz.set_disk_cache(None)
    fz.clear_cache()


def test_second_process_reads_features_from_disk(disk: Path) -> None:
    table = load_dataset("freesolv")
    first = fz.featurize(table, "rdkit_descriptors")
    files = list(disk.glob("*.pt"))
    assert len(files) == 1
    fz.clear_cache()  # what a fresh trainer process sees
    second = fz.featurize(table, "rdkit_descriptors")
    assert second is not first
    np.testing.assert_array_equal(second.values, first.values)  # type: ignore[union-attr]


def test_key_follows_content_not_name() -> None:
    table = load_dataset("freesolv")
    renamed = dataclasses.replace(table, name="something-else")
    edited = dataclasses.replace(table, smiles=[*table.smiles[:-1], "CCO"])
    key = fz.content_key(table, "graph")
    assert fz.content_key(renamed, "graph") == key
    assert fz.content_key(edited, "graph") != key
    assert fz.content_key(table, "onehot_smiles") != key


def test_unreadable_cache_file_is_recomputed(disk: Path) -> None:
    table = load_dataset("freesolv")
    key = fz.content_key(table, "graph")
    (disk / f"{key}.pt").write_bytes(b"not a pickle")
    features = fz.featurize(table, "graph")
    assert len(features.graphs) == len(table)  # type: ignore[union-attr]
    fz.clear_cache()
    again = fz.featurize(table, "graph")
    assert len(again.graphs) == len(table)  # type: ignore[union-attr]
