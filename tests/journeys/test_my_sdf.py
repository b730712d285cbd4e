"""Journey: a team runs molhpo as separate services, as the README's cluster notes say (a Redis,
`molhpo coordinator`, two `molhpo trainer`), and tunes a model on their own SD file with a
property as the target and a scaffold split; client commands find the coordinator through
$MOLHPO_ADDRESS."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RedisServer
from journeys_support import (
    Background,
    Molhpo,
    flat,
    freesolv_molecules,
    start_coordinator,
    start_trainer,
    summary_counts,
)
from rdkit import Chem

from molhpo.client import MolhpoClient
from molhpo.v1 import common_pb2

pytestmark = pytest.mark.integration

STUDY = "my-sdf-scaffold"
PREFIX = "journey-sdf"
N_MOLECULES = 120
# The record (1-based) written without its property: dropped as a missing target.
RECORD_WITHOUT_TARGET = 31
STUDY_YAML = f"""\
name: {STUDY}
dataset: {{path: data/my.sdf, target_columns: [hydration_dG], split: scaffold}}
model: mlp
search_space:
  units: {{type: int, low: 8, high: 64, log: true}}
  lr: {{type: float, low: 1.0e-3, high: 1.0e-2, log: true}}
objective: {{metric: mae}}
sampler: {{name: tpe, options: {{n_startup_trials: 2}}}}
pruner: {{name: hyperband, options: {{reduction_factor: 3}}}}
budget: {{n_trials: 4, max_epochs: 6}}
parallelism: 2
seed: 1
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chemist's own data: an SD file written with RDKit (FreeSolv molecules, their hydration
    free energy as an SD property) and a study file."""
    root = tmp_path_factory.mktemp("my-sdf-project")
    (root / "data").mkdir()
    writer = Chem.SDWriter(str(root / "data" / "my.sdf"))
    for i, (name, smiles, dg) in enumerate(freesolv_molecules(N_MOLECULES), start=1):
        mol = Chem.MolFromSmiles(smiles)
        mol.SetProp("_Name", name)
        if i != RECORD_WITHOUT_TARGET:
            mol.SetDoubleProp("hydration_dG", dg)
        mol.SetProp("source", "FreeSolv")
        writer.write(mol)
    writer.close()
    (root / "my_sdf.yaml").write_text(STUDY_YAML)
    return root


@pytest.fixture(scope="module")
def services(workdir: Path, redis_server: RedisServer) -> Iterator[str]:
    """A coordinator and two trainers started one by one; the coordinator's address."""
    ops = Molhpo(workdir)
    coordinator = start_coordinator(ops, redis_server.url, PREFIX)
    trainers: list[Background] = []
    try:
        for i in range(2):
            trainers.append(
                start_trainer(ops, coordinator.address, redis_server.url, PREFIX, f"lab-{i}")
            )
        for trainer in trainers:
            trainer.wait_for("registered with coordinator", 180)
        yield coordinator.address
    finally:
        # SIGTERM, as an orchestrator stops a service: trainers first, then the coordinator.
        codes = [t.stop(signal.SIGTERM) for t in trainers]
        codes.append(coordinator.proc.stop(signal.SIGTERM))
        assert codes == [0] * len(codes), codes


def test_tune_my_sdf_with_a_scaffold_split(services: str, workdir: Path) -> None:
    molhpo = Molhpo(workdir, env={"MOLHPO_ADDRESS": services})
    _, out = molhpo.run("study", "start", "my_sdf.yaml", "--watch")
    assert f"data data/my.sdf: {N_MOLECULES - 1} molecules; 1 row dropped" in flat(out)
    assert "1 row dropped: missing target (empty or NaN)" in flat(out)
    assert re.search(rf"record {RECORD_WITHOUT_TARGET}: .*hydration_dG", out), out
    assert f"study {STUDY}: complete" in out
    counts = summary_counts(out)
    assert counts["total"] == 4 and counts["complete"] >= 1 and counts["failed"] == 0, out

    _, shown = molhpo.run("study", "show", STUDY)
    assert "data/my.sdf (target hydration_dG)" in shown
    assert re.search(r"test:\s+mae \d", shown), shown

    with MolhpoClient(services) as client:
        info = client.get_study(STUDY)
        assert info.state == common_pb2.STUDY_STATE_COMPLETE
        assert info.request.dataset.split == "scaffold"
        assert info.request.objective.metric == "mae"
        assert dict(info.dataset.invalid_counts)["missing_target"] == 1
        assert info.dataset.n_molecules == N_MOLECULES - 1
        best = info.best_trial
        assert best.test.values["mae"] > 0 and best.valid.values["mae"] == pytest.approx(best.value)
