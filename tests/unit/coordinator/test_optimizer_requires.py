"""Samplers and pruners that compute with a package beyond the coordinator extra (Optuna's
GPSampler: torch) are offered only where it is installed, and refused by name elsewhere."""

from __future__ import annotations

import pytest

from coordinator.optimizer._options import Component, Options, available, describe, lookup
from coordinator.optimizer.samplers import SAMPLERS
from molhpo.contract.errors import InvalidArgument


class _NoOptions(Options):
    pass


def _component(name: str, requires: tuple[str, ...] = ()) -> Component[object]:
    return Component(name, f"{name} summary", _NoOptions, lambda *_: object(), requires)


REGISTRY = {
    "plain": _component("plain"),
    "needs-missing": _component("needs-missing", ("molhpo_no_such_module",)),
    "needs-installed": _component("needs-installed", ("pydantic",)),
}


def test_gp_says_it_computes_with_torch() -> None:
    assert SAMPLERS["gp"].requires == ("torch",)
    assert all(not c.requires for name, c in SAMPLERS.items() if name != "gp")


def test_a_component_whose_module_is_missing_is_not_offered() -> None:
    assert set(available(REGISTRY)) == {"plain", "needs-installed"}
    assert [row[0] for row in describe(REGISTRY)] == ["needs-installed", "plain"]


def test_a_component_whose_module_is_missing_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidArgument) as err:
        lookup("sampler", REGISTRY, "needs-missing")
    message = str(err.value)
    assert "sampler.name" in message and "'needs-missing'" in message
    assert "molhpo_no_such_module" in message and "molhpo[coordinator]" in message
    assert message.endswith("choose one of: needs-installed, plain")


def test_an_unknown_name_lists_only_what_runs_here() -> None:
    with pytest.raises(InvalidArgument, match=r"choose one of: needs-installed, plain$"):
        lookup("sampler", REGISTRY, "annealing")


def test_a_component_whose_module_is_installed_is_found() -> None:
    assert lookup("pruner", REGISTRY, "needs-installed").name == "needs-installed"
