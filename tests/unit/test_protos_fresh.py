"""The committed stubs in molhpo/v1 are exactly what `make protos` generates now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_protos(tmp_path: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "protos").rglob("*.proto"))
    plugin = Path(sys.executable).parent / "protoc-gen-mypy"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-Iprotos",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--plugin=protoc-gen-mypy={plugin}",
            *protos,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc generated nothing"
    stale = [
        str(rel) for rel in generated if (ROOT / rel).read_bytes() != (tmp_path / rel).read_bytes()
    ]
    assert stale == [], f"stale stubs {stale}: run `make protos` and commit the result"
    committed = sorted(p.relative_to(ROOT) for p in (ROOT / "molhpo" / "v1").glob("*_pb2*"))
    assert committed == generated
