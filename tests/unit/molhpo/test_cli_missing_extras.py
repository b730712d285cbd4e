"""A service command run where its install extra is missing says which package is missing and
what to install, in one line, instead of a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from molhpo import cli

# The base install lacks the coordinator's packages; this makes one of them missing here.
WITHOUT = (
    "import sys; sys.modules[{module!r}] = None; "
    "from molhpo.cli import main; sys.exit(main({argv!r}))"
)


def run_without(module: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT.format(module=module, argv=argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"COLUMNS": "300", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize(
    ("command", "module"), [("coordinator", "optuna"), ("trainer", "torch_geometric")]
)
def test_a_service_without_its_extra_names_the_package_and_the_fix(
    command: str, module: str
) -> None:
    done = run_without(module, [command, "--listen", "127.0.0.1:0"])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error (FAILED_PRECONDITION): this needs molhpo[{command}]: {module} is not installed; "
        f"pip install 'molhpo[{command}]' (-c constraints.txt for the tested versions)"
    ]


@pytest.mark.parametrize("command", ["up", "demo"])
def test_the_local_stack_without_both_extras_names_the_package_and_the_fix(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    monkeypatch.setattr(cli, "_STACK_PACKAGES", ("optuna", "molhpo_no_such_module"))
    assert cli.main([command]) == 2
    err = capsys.readouterr().err
    assert "this needs molhpo[coordinator,trainer]: molhpo_no_such_module is not installed" in err
