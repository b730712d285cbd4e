"""molhpo.contract.errors: exceptions to gRPC status codes and back."""

from __future__ import annotations

import grpc
import pytest

from molhpo.contract import errors
from molhpo.contract.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    DivergedError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    InvalidConfigError,
    MolhpoError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TrainingError,
    Unauthenticated,
    Unavailable,
    error_from_rpc,
    error_from_status,
    status_code_of,
)

MAPPED: list[tuple[type[MolhpoError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled, grpc.StatusCode.CANCELLED),
    (Internal, grpc.StatusCode.INTERNAL),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]


class _FakeRpcError(grpc.RpcError):
    """A failed call as grpc raises it: code() and details()."""

    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        super().__init__()
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize(("cls", "code"), MAPPED)
def test_error_class_maps_to_its_status_code(cls: type[MolhpoError], code: grpc.StatusCode) -> None:
    assert status_code_of(cls("x")) == code


@pytest.mark.parametrize(("cls", "code"), MAPPED)
def test_status_code_maps_back_to_the_same_class(
    cls: type[MolhpoError], code: grpc.StatusCode
) -> None:
    err = error_from_status(code, "what went wrong")
    assert type(err) is cls
    assert str(err) == "what went wrong"
    assert err.code == code


@pytest.mark.parametrize(("cls", "code"), MAPPED)
def test_round_trip_through_the_status_keeps_class_and_message(
    cls: type[MolhpoError], code: grpc.StatusCode
) -> None:
    original = cls("unknown model 'gin2'; choose one of: gin, mlp")
    back = error_from_status(status_code_of(original), str(original))
    assert type(back) is type(original)
    assert str(back) == str(original)


def test_every_molhpo_error_subclass_has_a_status_code() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, MolhpoError)
    ]
    mapped = {cls for cls, _ in MAPPED}
    training = {TrainingError, DivergedError, InvalidConfigError}
    assert set(classes) == mapped | training | {MolhpoError}


@pytest.mark.parametrize("cls", [TrainingError, DivergedError, InvalidConfigError])
def test_training_errors_map_to_aborted_and_come_back_as_molhpo_error(
    cls: type[TrainingError],
) -> None:
    err = cls("loss is nan")
    code = status_code_of(err)
    assert code == grpc.StatusCode.ABORTED
    back = error_from_status(code, str(err))
    assert isinstance(back, MolhpoError)
    assert back.code == grpc.StatusCode.ABORTED
    assert str(back) == "loss is nan"


def test_training_error_failure_classes() -> None:
    assert TrainingError("x").failure_class == "error"
    assert TrainingError("x", failure_class="cancelled").failure_class == "cancelled"
    assert DivergedError("x").failure_class == "diverged"
    assert InvalidConfigError("x").failure_class == "invalid_config"


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS],
)
def test_unknown_status_gives_molhpo_error_with_that_code(code: grpc.StatusCode) -> None:
    err = error_from_status(code, "details")
    assert type(err) is MolhpoError
    assert err.code == code
    assert status_code_of(err) == code
    assert str(err) == "details"


def test_unknown_status_does_not_change_the_base_class_code() -> None:
    error_from_status(grpc.StatusCode.UNIMPLEMENTED, "x")
    assert MolhpoError.code == grpc.StatusCode.INTERNAL
    assert status_code_of(MolhpoError("y")) == grpc.StatusCode.INTERNAL


@pytest.mark.parametrize(
    "exc", [ValueError("v"), KeyError("k"), RuntimeError(), ZeroDivisionError()]
)
def test_plain_exceptions_map_to_internal(exc: BaseException) -> None:
    assert status_code_of(exc) == grpc.StatusCode.INTERNAL


def test_error_from_rpc_uses_code_and_details() -> None:
    err = error_from_rpc(_FakeRpcError(grpc.StatusCode.NOT_FOUND, "study 'x' not found"))
    assert type(err) is NotFound
    assert str(err) == "study 'x' not found"


def test_error_from_rpc_without_details_uses_the_code_name() -> None:
    err = error_from_rpc(_FakeRpcError(grpc.StatusCode.UNAVAILABLE, None))
    assert type(err) is Unavailable
    assert str(err) == "UNAVAILABLE"


def test_molhpo_errors_are_caught_as_molhpo_error() -> None:
    for cls, code in MAPPED:
        with pytest.raises(MolhpoError):
            raise error_from_status(code, cls.__name__)
