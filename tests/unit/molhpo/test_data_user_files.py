"""User data files: CSV/SD molecules, plain numeric tables, path confinement, bad rows."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from molhpo.contract.errors import InvalidArgument
from molhpo.datasets import (
    MAX_INVALID_SHARE,
    check_invalid_share,
    load_tabular_csv,
    load_user_file,
)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_single_target_takes_the_only_numeric_column(tmp_path: Path) -> None:
    _write(tmp_path / "logp.csv", "name,smiles,logp\nethanol,CCO,-0.3\nbenzene,c1ccccc1,2.1\n")
    table = load_user_file("logp.csv", roots=(tmp_path,))
    assert table.name == f"file:{(tmp_path / 'logp.csv').resolve()}"
    assert table.smiles == ["CCO", "c1ccccc1"]
    assert table.targets.tolist() == [-0.3, 2.1]
    assert table.target_names == ("logp",)
    assert table.target_matrix is None and table.n_tasks == 1
    assert table.n_invalid == 0 and table.given_split is None


def test_csv_multi_task(tmp_path: Path) -> None:
    path = _write(tmp_path / "multi.csv", "Mol,a,b,note\nC,1,10,x\nCC,2,20,y\nCCC,3,30,z\n")
    table = load_user_file(path, roots=(tmp_path,), smiles_column="Mol")
    assert table.target_names == ("a", "b")  # 'note' is not numeric
    assert table.n_tasks == 2 and table.target_matrix is not None
    np.testing.assert_array_equal(table.target_matrix, [[1, 10], [2, 20], [3, 30]])
    np.testing.assert_array_equal(table.targets, [1, 2, 3])
    assert not table.target_matrix.flags.writeable
    only_b = load_user_file(path, roots=(tmp_path,), smiles_column="Mol", target_columns=["b"])
    assert only_b.targets.tolist() == [10, 20, 30] and only_b.target_matrix is None


def test_csv_bad_smiles_are_dropped_counted_and_checked(tmp_path: Path) -> None:
    lines = ["smiles,y"] + [f"{'C' * (i + 1)},{i}" for i in range(8)]
    lines += ["C1CC,8", "not a smiles,9", "CCO,", "CC(,11"]
    _write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    table = load_user_file(tmp_path / "bad.csv", roots=(tmp_path,))
    assert len(table) == 8
    assert table.n_invalid == 4
    assert table.invalid_examples == ("C1CC", "not a smiles", "CCO", "CC(")
    assert MAX_INVALID_SHARE == 0.1
    with pytest.raises(InvalidArgument) as err:
        check_invalid_share(table)
    message = str(err.value)
    assert "4 of 12 rows (33.3%)" in message and "allowed 10%" in message
    assert "'C1CC'" in message and "'not a smiles'" in message
    check_invalid_share(table, max_share=0.5)  # a larger share is allowed when asked for
    with pytest.raises(InvalidArgument, match="max_share is 2"):
        check_invalid_share(table, max_share=2)


def test_sdf_targets_are_named_properties(tmp_path: Path) -> None:
    source = resources.files("molhpo.datasets") / "data" / "solubility.test.sdf"
    path = _write(tmp_path / "sol.sdf", source.read_text(encoding="utf-8"))
    table = load_user_file(path, roots=(tmp_path,), target_columns=["SOL", "ID"])
    assert len(table) == 257 and table.n_invalid == 0
    assert table.target_names == ("SOL", "ID")
    assert table.smiles[0] == "CCC(C)CC"
    assert table.targets[0] == pytest.approx(-3.68)
    with pytest.raises(InvalidArgument, match=r"needs target_columns.*SOL"):
        load_user_file(path, roots=(tmp_path,))
    missing = load_user_file(path, roots=(tmp_path,), target_columns=["NOPE"])
    assert len(missing) == 0 and missing.n_invalid == 257
    assert missing.invalid_examples[0] == "record 1"


def test_paths_outside_the_roots_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _write(root / "ok.csv", "smiles,y\nC,1\n")
    secret = _write(tmp_path / "secret.csv", "smiles,y\nC,1\n")
    for bad in ("../../etc/passwd", "../secret.csv", str(secret), "/etc/passwd"):
        with pytest.raises(InvalidArgument, match="outside the allowed data folders"):
            load_user_file(bad, roots=(root,))
        with pytest.raises(InvalidArgument, match="outside the allowed data folders"):
            load_tabular_csv(bad, "y", roots=(root,))
    os.symlink(secret, root / "link.csv")
    with pytest.raises(InvalidArgument, match=r"'link.csv' resolves to .*secret.csv'"):
        load_user_file("link.csv", roots=(root,))
    assert len(load_user_file(root / "ok.csv", roots=(root,))) == 1
    assert len(load_user_file(secret, roots=(root, tmp_path))) == 1  # a second root
    with pytest.raises(InvalidArgument, match="roots is empty"):
        load_user_file("ok.csv", roots=())


def test_missing_files_and_bad_arguments_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"data file 'nope\.csv' does not exist"):
        load_user_file("nope.csv", roots=(tmp_path,))
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(InvalidArgument, match=r"'folder\.csv' is not a regular file"):
        load_user_file("folder.csv", roots=(tmp_path,))
    _write(tmp_path / "mols.txt", "smiles,y\nC,1\n")
    with pytest.raises(InvalidArgument, match=r"unknown data file format 'txt'.*csv, sdf"):
        load_user_file("mols.txt", roots=(tmp_path,))
    assert len(load_user_file("mols.txt", roots=(tmp_path,), format="csv")) == 1
    with pytest.raises(InvalidArgument, match=r"SMILES column 'SMILES' is not a column.*smiles, y"):
        load_user_file("mols.txt", roots=(tmp_path,), format="csv", smiles_column="SMILES")
    with pytest.raises(InvalidArgument, match=r"target column 'z' is not a column"):
        load_user_file("mols.txt", roots=(tmp_path,), format="csv", target_columns=["z"])
    _write(tmp_path / "words.csv", "smiles,name\nC,methane\n")
    with pytest.raises(InvalidArgument, match="no numeric column besides 'smiles'"):
        load_user_file("words.csv", roots=(tmp_path,))
    _write(tmp_path / "empty.csv", "")
    with pytest.raises(InvalidArgument, match=r"'.*empty\.csv' is empty"):
        load_user_file("empty.csv", roots=(tmp_path,))


def test_tabular_csv(tmp_path: Path) -> None:
    _write(tmp_path / "t.csv", "x1,x2,y,x3\n1,2,3,4\n5,6,7,8\n9,,11,12\n13,14,nan,16\n")
    table = load_tabular_csv("t.csv", "y", roots=(tmp_path,))
    assert table.name == f"file:{(tmp_path / 't.csv').resolve()}" and table.target_name == "y"
    assert table.feature_names == ("x1", "x2", "x3")
    np.testing.assert_array_equal(table.features, [[1, 2, 4], [5, 6, 8]])
    assert table.features.dtype == np.float64 and not table.features.flags.writeable
    np.testing.assert_array_equal(table.targets, [3, 7])
    assert table.n_invalid == 2 and len(table) == 2
    picked = load_tabular_csv("t.csv", "y", ["x3", "x1"], roots=(tmp_path,))
    np.testing.assert_array_equal(picked.features, [[4, 1], [8, 5], [12, 9]])
    assert picked.n_invalid == 1
    _write(tmp_path / "text.csv", "x,y\n1,2\nabc,3\n")
    with pytest.raises(InvalidArgument, match=r"column 'x' of 'text.csv' has 'abc' in row 3"):
        load_tabular_csv("text.csv", "y", roots=(tmp_path,))
    with pytest.raises(InvalidArgument, match=r"target column 'q' is not a column"):
        load_tabular_csv("text.csv", "q", roots=(tmp_path,))


def test_dropped_rows_are_counted_by_cause_with_their_file_lines(tmp_path: Path) -> None:
    # Valid SMILES with empty or NaN targets (ethanol among them) are missing targets, not
    # unparsable molecules; a blank line does not shift the line numbers.
    path = _write(
        tmp_path / "own.csv",
        "id,SMILES_str,dG_exp\n"
        "a,CCO,-5.0\n"
        "b,C1CC,-3.2\n"
        "c,CCO,\n"
        "d,CCC,nan\n"
        "e,c1ccccc1,abc\n"
        "\n"
        "f,CCCl,inf\n"
        "g,,1.0\n"
        "h,CC(=O)O,-6.1\n",
    )
    table = load_user_file(
        path, roots=(tmp_path,), smiles_column="SMILES_str", target_columns=["dG_exp"]
    )
    assert table.smiles == ["CCO", "CC(=O)O"]
    assert table.n_invalid == 6
    assert table.invalid_counts == {
        "unparsable_smiles": 2,
        "missing_target": 2,
        "non_numeric_target": 2,
    }
    assert [(r.row, r.text, r.cause) for r in table.invalid_rows] == [
        (3, "C1CC", "unparsable_smiles"),
        (4, "CCO", "missing_target"),
        (5, "CCC", "missing_target"),
        (6, "c1ccccc1", "non_numeric_target"),
        (8, "CCCl", "non_numeric_target"),
        (9, "", "unparsable_smiles"),
    ]
    assert table.invalid_rows[1].detail == "target 'dG_exp' is empty"
    assert "'abc', not a number" in table.invalid_rows[3].detail
    with pytest.raises(InvalidArgument) as err:
        check_invalid_share(table, 0.1)
    message = str(err.value)
    assert "2 with SMILES RDKit cannot parse (line 3" in message
    assert "2 with missing target (line 4: target 'dG_exp' is empty" in message


def test_sdf_dropped_records_name_the_record_and_the_missing_property(tmp_path: Path) -> None:
    block = "\n     RDKit          2D\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
    atom = "    0.0000    0.0000    0.0000 C   0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n"
    with_prop = f"{block}{atom}>  <y>\n1.5\n\n$$$$\n"
    without = f"{block}{atom}$$$$\n"
    path = _write(tmp_path / "own.sdf", "m1" + with_prop + "m2" + without)
    table = load_user_file(path, roots=(tmp_path,), target_columns=["y"])
    assert len(table) == 1
    assert table.invalid_counts["missing_target"] == 1
    (row,) = table.invalid_rows
    assert (row.row, row.text, row.cause) == (2, "record 2", "missing_target")
