"""molhpo.contract.enums: failure classes and directions, and directions on the wire."""

from __future__ import annotations

import pytest

from molhpo.contract.enums import (
    Direction,
    FailureClass,
    direction_from_proto,
    direction_to_proto,
)
from molhpo.v1 import common_pb2


@pytest.mark.parametrize(
    ("direction", "wire"),
    [
        (Direction.MINIMIZE, common_pb2.DIRECTION_MINIMIZE),
        (Direction.MAXIMIZE, common_pb2.DIRECTION_MAXIMIZE),
    ],
)
def test_a_direction_goes_over_the_wire_and_back(
    direction: Direction, wire: common_pb2.Direction.ValueType
) -> None:
    assert direction_to_proto(direction) == wire
    assert direction_to_proto(str(direction.value)) == wire  # the plain string a spec holds
    assert direction_from_proto(wire) is direction


def test_an_unspecified_direction_is_left_to_the_caller() -> None:
    assert direction_from_proto(common_pb2.DIRECTION_UNSPECIFIED) is None


def test_a_string_that_is_no_direction_is_refused() -> None:
    with pytest.raises(ValueError, match="'down'"):
        direction_to_proto("down")


def test_members_compare_equal_to_the_strings_kept_in_the_store() -> None:
    assert FailureClass.OUT_OF_MEMORY == "out_of_memory"
    assert f"{FailureClass.TRAINER_LOST}: gone" == "trainer_lost: gone"
    assert Direction.MAXIMIZE == "maximize"
    result = common_pb2.TrialResult(failure_class=FailureClass.DRAINED)
    assert result.failure_class == "drained"
