"""What every molhpo gRPC server shares: error mapping, metrics and security interceptors
(bearer tokens, client-certificate names, rate limits), health checking, reflection, TLS
binding, graceful shutdown."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, Counter, Histogram

from molhpo import security
from molhpo.contract.errors import MolhpoError, status_code_of

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""Default largest request or response (the ``max_message_bytes`` setting)."""

Refusal = tuple[grpc.StatusCode, str]


class ErrorInterceptor(grpc.ServerInterceptor):
    """Turns MolhpoError into its status code and anything unexpected into INTERNAL.

    Servicers raise; they never call ``context.abort`` themselves.
    """

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        return _rewrap(
            handler,
            lambda fn: _unary_with_status(fn, method),
            lambda fn: _stream_with_status(fn, method),
        )


def _unary_with_status(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    """A unary handler whose errors become status codes (see :class:`ErrorInterceptor`)."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request, context)
        except MolhpoError as err:
            context.abort(err.code, _short(str(err)))
        except Exception as err:
            if _aborted(context):
                raise
            _abort_internal(context, method, err)

    return call


def _stream_with_status(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    """A server-streaming handler whose errors become status codes."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from fn(request, context)
        except MolhpoError as err:
            context.abort(err.code, _short(str(err)))
        except Exception as err:
            if _aborted(context):
                raise
            _abort_internal(context, method, err)

    return call


def _abort_internal(context: grpc.ServicerContext, method: str, err: Exception) -> None:
    """Log an unexpected error with its traceback; the caller sees only its type."""
    log.exception("%s failed", method)
    context.abort(status_code_of(err), f"internal error: {type(err).__name__}")


class MetricsInterceptor(grpc.ServerInterceptor):
    """Counts requests by method and code and times them (low-cardinality labels only)."""

    def __init__(self, registry: CollectorRegistry, service_label: str) -> None:
        self._requests = Counter(
            "molhpo_grpc_server_handled",
            "gRPC requests handled, by method and status code.",
            ["service", "method", "code"],
            registry=registry,
        )
        self._latency = Histogram(
            "molhpo_grpc_server_handling_seconds",
            "gRPC request latency (unary calls).",
            ["service", "method"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self._service = service_label

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]

        def wrap_unary(fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                t0 = time.perf_counter()
                code = "OK"
                try:
                    return fn(request, context)
                except Exception:
                    c = context.code() if hasattr(context, "code") else None
                    code = c.name if isinstance(c, grpc.StatusCode) else "UNKNOWN"
                    raise
                finally:
                    self._latency.labels(self._service, method).observe(time.perf_counter() - t0)
                    self._requests.labels(self._service, method, code).inc()

            return call

        def wrap_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                code = "OK"
                try:
                    yield from fn(request, context)
                except Exception:
                    c = context.code() if hasattr(context, "code") else None
                    code = c.name if isinstance(c, grpc.StatusCode) else "UNKNOWN"
                    raise
                finally:
                    self._requests.labels(self._service, method, code).inc()

            return call

        return _rewrap(handler, wrap_unary, wrap_stream)


def _service_of(method: str) -> str:
    # "/molhpo.v1.StudyService/StartStudy" -> "molhpo.v1.StudyService"
    return method.lstrip("/").rsplit("/", 1)[0]


def _refusal_handler(handler: grpc.RpcMethodHandler, refusal: Refusal) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers ``refusal`` without reading the
    request (no deserializer: an unauthenticated payload is never parsed)."""
    code, message = refusal

    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


def _guarded(
    handler: grpc.RpcMethodHandler, check: Callable[[grpc.ServicerContext], Refusal | None]
) -> grpc.RpcMethodHandler:
    """``handler`` with ``check`` run first on every call; a refusal aborts the call."""

    def wrap_unary(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            refusal = check(context)
            if refusal is not None:
                context.abort(*refusal)
            return fn(request, context)

        return call

    def wrap_stream(fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            refusal = check(context)
            if refusal is not None:
                context.abort(*refusal)
            yield from fn(request, context)

        return call

    return _rewrap(handler, wrap_unary, wrap_stream)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Calls of ``services`` need ``authorization: Bearer <token>`` with one of ``tokens``.

    Missing or wrong tokens get UNAUTHENTICATED before the request is even parsed. Other
    services (health checking, reflection: probes) stay open. Tokens compare in constant time
    and never appear in messages or logs.
    """

    def __init__(self, services: Iterable[str], tokens: Sequence[str], hint: str) -> None:
        if not tokens:
            raise ValueError("BearerTokenInterceptor needs at least one token")
        self._services = frozenset(services)
        self._tokens = tuple(tokens)
        self._hint = hint

    def __repr__(self) -> str:
        return f"BearerTokenInterceptor({sorted(self._services)}, <{len(self._tokens)} tokens>)"

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) not in self._services:
            return handler
        refusal = security.check_bearer(
            handler_call_details.invocation_metadata, self._tokens, self._hint
        )
        return handler if refusal is None else _refusal_handler(handler, refusal)


class ClientCertInterceptor(grpc.ServerInterceptor):
    """Calls of ``services`` need a verified client certificate whose common name is one of
    ``allowed`` (mutual TLS): PERMISSION_DENIED for other names, UNAUTHENTICATED for none."""

    def __init__(self, services: Iterable[str], allowed: Sequence[str]) -> None:
        self._services = frozenset(services)
        self._allowed = tuple(allowed)

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) not in self._services:
            return handler
        return _guarded(handler, lambda ctx: security.check_common_name(ctx, self._allowed))


class RateLimitInterceptor(grpc.ServerInterceptor):
    """A token bucket per peer host on ``services``: RESOURCE_EXHAUSTED over the limit.

    Placed before the token check so that unauthenticated floods (token guessing) are
    limited too. A streaming call costs one token when it starts.
    """

    def __init__(self, services: Iterable[str], bucket: security.TokenBucket) -> None:
        self._services = frozenset(services)
        self._bucket = bucket

    def _check(self, context: grpc.ServicerContext) -> Refusal | None:
        host = security.peer_host(context.peer() or "unknown")
        if self._bucket.take(host):
            return None
        return (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"rate limit of {self._bucket.rate:g} calls/s (burst {self._bucket.burst}) per "
            "client exceeded; retry later with fewer calls, or ask the operator to raise "
            "rate_limit_per_s / rate_limit_burst",
        )

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or _service_of(handler_call_details.method) not in self._services:
            return handler
        return _guarded(handler, self._check)


# Status messages travel in HTTP/2 headers (8 KiB soft limit): long user input echoed in an
# error would turn INVALID_ARGUMENT into RESOURCE_EXHAUSTED.
_MAX_STATUS_CHARS = 2000


def _short(message: str) -> str:
    if len(message) <= _MAX_STATUS_CHARS:
        return message
    return message[: _MAX_STATUS_CHARS - 20] + " ... (message cut)"


def _aborted(context: grpc.ServicerContext) -> bool:
    # context.abort raises a bare Exception after setting the code; let that one through.
    return context.code() not in (None, grpc.StatusCode.OK)


def _rewrap(
    handler: grpc.RpcMethodHandler, wrap_unary: Callable[..., Any], wrap_stream: Callable[..., Any]
) -> grpc.RpcMethodHandler:
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap_unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap_stream(handler.unary_stream),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


def new_server(
    interceptors: Iterable[grpc.ServerInterceptor],
    max_workers: int = 32,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> grpc.Server:
    """An unstarted server with molhpo's interceptors and message-size limits."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=list(interceptors),
        options=[
            # Off, so a second server on a port in use fails instead of sharing its calls.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
    )


def add_health_and_reflection(
    server: grpc.Server, service_names: list[str]
) -> health.HealthServicer:
    """Add the standard health service (all SERVING) and reflection for ``service_names``."""
    servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    for name in ["", *service_names]:
        servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    return servicer


def bind(
    server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Bind ``address`` (port 0 picks a free one), with TLS when ``credentials`` are given;
    returns the port."""
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        extra = (
            " (with TLS: check that tls_cert and tls_key are a matching PEM pair)"
            if credentials is not None
            else ""
        )
        raise OSError(f"cannot listen on {address}{extra}")
    return port


def wait_for_termination_signal(on_signal: Callable[[], None]) -> threading.Event:
    """Call ``on_signal`` once on SIGTERM or SIGINT; the returned event is set afterwards."""
    done = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if done.is_set():
            return
        log.info("signal %d: shutting down", signum)
        on_signal()
        done.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return done


def mark_not_serving(servicer: health.HealthServicer, service_names: list[str]) -> None:
    """Health answers NOT_SERVING from now on (first step of a graceful stop)."""
    for name in ["", *service_names]:
        servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
