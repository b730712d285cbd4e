"""Features cached by content on disk: reused across processes, never stale, never torn."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from molhpo.datasets import load_dataset
from trainer import featurize as fz


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    fz.clear_cache()
    fz.set_disk_cache(tmp_path / "features")
    yield tmp_path / "features"
    fz.set_disk_cache(None)
    fz.clear_cache()


# A fresh interpreter: loads the features from the cache folder with every featuriser made to
# count its calls, and saves what it got for the parent to compare.
_SECOND_PROCESS = """
import json, sys
from pathlib import Path

import numpy as np

from trainer import featurize as fz
from molhpo.datasets import load_dataset

calls = []


def counted(name, compute):
    def run(smiles):
        calls.append(name)
        return compute(smiles)

    return run


for name, compute in list(fz.FEATURIZERS.items()):
    fz.FEATURIZERS[name] = counted(name, compute)
fz.set_disk_cache(Path(sys.argv[1]))
features = fz.featurize(load_dataset("freesolv"), "rdkit_descriptors")
np.save(sys.argv[2], features.values)
print(json.dumps({"featurized": calls}))
"""


def test_second_process_reads_features_from_disk(disk: Path, tmp_path: Path) -> None:
    table = load_dataset("freesolv")
    first = fz.featurize(table, "rdkit_descriptors")
    files = list(disk.glob("*.pt"))
    assert [f.name for f in files] == [f"{fz.content_key(table, 'rdkit_descriptors')}.pt"]
    before = files[0].stat()
    got = tmp_path / "second.npy"
    root = Path(__file__).resolve().parents[3]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.run(
        [sys.executable, "-c", _SECOND_PROCESS, str(disk), str(got)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report == {"featurized": []}, "the second process featurised instead of reading the disk"
    after = files[0].stat()
    # Read, not rewritten: same file, untouched.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(disk.iterdir()) == files
    np.testing.assert_array_equal(np.load(got), first.values)  # type: ignore[union-attr]


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
