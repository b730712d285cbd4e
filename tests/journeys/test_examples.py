"""Journey: a newcomer runs every file in `examples/` on the local stack (`molhpo up`), with
smaller budgets, and the demo (`make demo` runs `molhpo demo --study
examples/freesolv_gin.yaml`) on a shortened copy of its study."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from journeys_support import REPO, Molhpo, Stack, molhpo_up, summary_counts, user_env

from molhpo.client import MolhpoClient
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

EXAMPLES = sorted(p.name for p in (REPO / "examples").iterdir() if p.is_file())
TRIALS, MAX_EPOCHS = 4, 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout's examples folder, so commands read exactly as the README writes them."""
    root = tmp_path_factory.mktemp("examples-project")
    shutil.copytree(REPO / "examples", root / "examples")
    return root


@pytest.fixture(scope="module")
def stack(workdir: Path) -> Iterator[Stack]:
    with molhpo_up(workdir) as running:
        yield running


def _up_flags_the_example_asks_for(text: str) -> list[str] | None:
    """The `molhpo up ...` flags an example's comments tell its user to run it with."""
    m = re.search(r"molhpo up((?: --?[\w-]+(?: [\w.:/-]*\w)?)*)", text)
    return shlex.split(m.group(1)) if m else None


def test_every_example_is_run_by_this_journey() -> None:
    handled = {".yaml", ".py"}
    assert EXAMPLES, "examples/ is empty"
    assert [n for n in EXAMPLES if Path(n).suffix not in handled] == []


@pytest.mark.parametrize("example", [n for n in EXAMPLES if n.endswith(".yaml")])
def test_study_example_runs_to_completion(
    example: str, workdir: Path, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    text = (REPO / "examples" / example).read_text()
    name = yaml.safe_load(text)["name"]
    flags = _up_flags_the_example_asks_for(text)
    args: tuple[str, ...] = ("study", "start", f"examples/{example}", "--trials", str(TRIALS))
    args += ("--max-epochs", str(MAX_EPOCHS), "--watch")
    if flags is None:
        stack: Stack = request.getfixturevalue("stack")
        _, out = Molhpo(workdir).run(*args)
    else:
        # The example names its own stack (e.g. many virtual trainers in one process).
        shutil.copytree(REPO / "examples", tmp_path / "examples")
        with molhpo_up(tmp_path, *flags) as stack:
            _, out = Molhpo(tmp_path).run(*args)
            info = _final(stack, name)
    if flags is None:
        info = _final(stack, name)
    assert f"study {name} started: {TRIALS} trials" in out
    assert f"study {name}: complete" in out, out
    counts = summary_counts(out)
    assert counts["total"] == TRIALS and counts["failed"] == 0 and counts["complete"] >= 1, out
    assert info.state == common_pb2.STUDY_STATE_COMPLETE and info.n_failed == 0
    assert info.best_trial.epochs_trained <= MAX_EPOCHS


def _final(stack: Stack, name: str) -> study_pb2.StudyInfo:
    with MolhpoClient(stack.address) as client:
        return client.get_study(name)


def test_client_example_runs_against_the_stack(stack: Stack, workdir: Path) -> None:
    assert "client.py" in EXAMPLES
    done = subprocess.run(
        [sys.executable, "examples/client.py", stack.address],
        cwd=workdir,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    started = re.search(r"started (client-example-\d+)", out)
    assert started, out
    assert "KIND_STUDY_FINISHED" in out and re.search(r"best trial #\d+: validation", out), out
    with MolhpoClient(stack.address) as client:
        info = client.get_study(started.group(1))
    assert info.state == common_pb2.STUDY_STATE_COMPLETE and info.n_failed == 0


def test_demo_on_a_shortened_study(tmp_path: Path) -> None:
    """`make demo` is `molhpo demo --study examples/freesolv_gin.yaml` (24 trials of up to 48
    epochs); here the same file with 4 trials of 3 epochs, in a fresh working directory."""
    (tmp_path / "examples").mkdir()
    study = yaml.safe_load((REPO / "examples" / "freesolv_gin.yaml").read_text())
    study["budget"] = {"n_trials": TRIALS, "max_epochs": MAX_EPOCHS}
    (tmp_path / "examples" / "freesolv_gin.yaml").write_text(yaml.safe_dump(study))
    _, out = Molhpo(tmp_path).run("demo", "--study", "examples/freesolv_gin.yaml", timeout_s=400)
    name = re.search(r"study (freesolv-gin-\d{8}-\d{6}): gin on freesolv", out)
    assert name, out
    assert f"study {name.group(1)}: complete" in out, out
    assert summary_counts(out)["failed"] == 0
    report = tmp_path / ".molhpo" / "reports" / name.group(1)
    assert (report / "report.md").exists() and list(report.glob("*.png")), out
    assert re.search(r"predictions of the best model \(.*\): CCO -?\d", out), out
    assert "an unparsable SMILES is refused" in out and "stack stopped" in out
    assert not (tmp_path / ".molhpo" / "stack.json").exists()

    # The optuna command the demo prints (and the README shows) reads the store.
    printed = next(ln.strip() for ln in out.splitlines() if " trials --storage sqlite:" in ln)
    done = subprocess.run(
        shlex.split(printed),
        cwd=tmp_path,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "COMPLETE" in done.stdout
