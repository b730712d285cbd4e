"""storage.keys.RedisKeys: key names under a prefix, and which prefixes are allowed."""

from __future__ import annotations

import pytest

from molhpo.contract.errors import InvalidArgument
from storage.keys import RedisKeys


def test_default_prefix_is_molhpo() -> None:
    assert RedisKeys().reports == "molhpo:reports"


def test_every_key_lives_under_the_prefix() -> None:
    keys = RedisKeys("dep-1.a_b")
    assert keys.reports == "dep-1.a_b:reports"
    assert keys.decision(12, 3) == "dep-1.a_b:decision:12:3"
    assert keys.decisions(12) == "dep-1.a_b:decisions:12"
    assert keys.pruned(12) == "dep-1.a_b:pruned:12"


def test_report_group_is_the_coordinator() -> None:
    assert RedisKeys("x").report_group == "coordinator"


def test_decision_keys_are_distinct_per_trial_and_step() -> None:
    keys = RedisKeys("p")
    names = {keys.decision(t, s) for t in (1, 2, 12, 21) for s in (1, 2, 12, 21)}
    assert len(names) == 16


def test_per_trial_keys_are_distinct_per_trial_and_from_each_other() -> None:
    keys = RedisKeys("p")
    trials = [1, 2, 11, 111]
    names = [k for t in trials for k in (keys.decisions(t), keys.pruned(t), keys.decision(t, 1))]
    assert len(set(names)) == len(names)
    assert keys.reports not in names


def test_different_prefixes_give_different_keys() -> None:
    a, b = RedisKeys("a"), RedisKeys("b")
    assert a.reports != b.reports
    assert a.decision(1, 1) != b.decision(1, 1)
    assert a.pruned(1) != b.pruned(1)


def test_prefix_of_64_characters_is_allowed() -> None:
    assert RedisKeys("p" * 64).reports == "p" * 64 + ":reports"


@pytest.mark.parametrize("prefix", ["", "has space", "p" * 65, "a:b", "a/b", "é"])
def test_invalid_prefix_is_rejected_naming_it(prefix: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        RedisKeys(prefix)
    assert f"key prefix {prefix!r} is not allowed" in str(err.value)
    assert "1-64 letters" in str(err.value)


def test_prefix_with_trailing_newline_is_rejected() -> None:
    with pytest.raises(InvalidArgument):
        RedisKeys("molhpo\n")
