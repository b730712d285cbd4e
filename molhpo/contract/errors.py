"""One exception family for molhpo, and the one table from error to gRPC status code.

Servers raise these from their core; an interceptor turns them into gRPC statuses. The client
turns statuses back into the same typed errors, so ``except InvalidArgument`` works on both
sides of the wire. Part of the contract: the coordinator, the trainer and the client raise and
catch the same classes.
"""

from __future__ import annotations

import grpc

from molhpo.contract.enums import FailureClass


class MolhpoError(Exception):
    """Base of every error molhpo raises on purpose.

    Messages name the value, the rule and the fix, e.g.
    ``unknown model 'gin2'; choose one of: gin, mlp``.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(MolhpoError):
    """A request, spec or option breaks a rule; nothing was started."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MolhpoError):
    """The named study, trial, trainer, model or dataset does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MolhpoError):
    """A study of that name exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class ResourceExhausted(MolhpoError):
    """No free slot (trainer) or a limit was reached; retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(MolhpoError):
    """The operation does not fit the current state (e.g. stopping a finished study)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(MolhpoError):
    """A service molhpo depends on (Redis, a trainer, the coordinator) cannot be reached."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(MolhpoError):
    """A call or wait ran past its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(MolhpoError):
    """The operation was cancelled."""

    code = grpc.StatusCode.CANCELLED


class Unauthenticated(MolhpoError):
    """The call carried no valid credentials (bearer token, client certificate); send them."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MolhpoError):
    """The caller is known but may not do this (e.g. a certificate name not allowed)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Internal(MolhpoError):
    """A bug: something that should not happen did. Reported with its reason."""

    code = grpc.StatusCode.INTERNAL


class TrainingError(MolhpoError):
    """A trial failed for a reason of its own (diverging loss, bad configuration).

    ``failure_class`` tells retry policy what kind of failure it was; such failures are
    recorded as FAIL and not retried blindly.
    """

    code = grpc.StatusCode.ABORTED

    def __init__(self, message: str, failure_class: str = FailureClass.ERROR) -> None:
        super().__init__(message)
        self.failure_class = failure_class


class DivergedError(TrainingError):
    """The loss became NaN or infinite."""

    def __init__(self, message: str) -> None:
        super().__init__(message, failure_class=FailureClass.DIVERGED)


class InvalidConfigError(TrainingError):
    """The hyperparameters cannot build or train the model (e.g. a shape that cannot work)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, failure_class=FailureClass.INVALID_CONFIG)


_BY_CODE: dict[grpc.StatusCode, type[MolhpoError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        ResourceExhausted,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unauthenticated,
        PermissionDenied,
        Internal,
    )
}


def status_code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code an exception is answered with (INTERNAL for anything unexpected)."""
    if isinstance(error, MolhpoError):
        return error.code
    return grpc.StatusCode.INTERNAL


def error_from_status(code: grpc.StatusCode, details: str) -> MolhpoError:
    """The typed error for a gRPC status, as raised by the client."""
    cls = _BY_CODE.get(code, MolhpoError)
    err = cls(details)
    if cls is MolhpoError:
        err.code = code
    return err


def error_from_rpc(err: grpc.RpcError) -> MolhpoError:
    """The typed error for a failed call, as raised by molhpo's clients."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return error_from_status(code, details or code.name)
