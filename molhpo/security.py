"""Transport security and caller checks shared by molhpo's servers and clients.

What lives here: reading TLS material once into gRPC credentials (servers and channels),
bearer tokens (parsing the configured ones, checking a call's metadata in constant time,
attaching one to outgoing calls), client-certificate common names, and the token bucket of the
rate limiter. The server interceptors that use these are in ``molhpo.grpc_util``.

Everything is off unless configured, so a local stack runs as before: plaintext, no tokens.
Tokens and key material are never logged; messages name the setting, never its value.
"""

from __future__ import annotations

import collections
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from molhpo.contract.errors import InvalidArgument

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
"""Metadata key of the bearer token (gRPC metadata keys are lower case)."""

_BEARER = "bearer "
_MIN_TOKEN_CHARS = 16


# ---- TLS material ------------------------------------------------------------------------------


def read_pem(path: str | Path, setting: str) -> bytes:
    """The bytes of a PEM file named by ``setting``; InvalidArgument when unusable.

    Read once at start-up, so a typo fails the process at once instead of at the first
    handshake with an opaque TLS error.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(
            f"{setting} = '{p}': no such file; point {setting} at a PEM file or leave it empty"
        ) from None
    except OSError as err:
        raise InvalidArgument(
            f"{setting} = '{p}': cannot read it ({err.strerror}); check its permissions"
        ) from None
    if b"-----BEGIN " not in data:
        raise InvalidArgument(
            f"{setting} = '{p}': not a PEM file (no '-----BEGIN' line); "
            "give the PEM-encoded certificate or key"
        )
    return data


def server_credentials(
    cert: str | Path, key: str | Path, client_ca: str | Path = ""
) -> grpc.ServerCredentials | None:
    """Server TLS credentials from the ``tls_cert``/``tls_key``/``tls_client_ca`` settings.

    None when neither certificate nor key is set (plaintext). With ``client_ca`` set, clients
    must present a certificate signed by that CA (mutual TLS).
    """
    cert, key, client_ca = str(cert or ""), str(key or ""), str(client_ca or "")
    if not cert and not key:
        if client_ca:
            raise InvalidArgument(
                "tls_client_ca is set but tls_cert and tls_key are not; mutual TLS needs the "
                "server's own certificate: set tls_cert and tls_key too, or clear tls_client_ca"
            )
        return None
    if not cert or not key:
        missing = "tls_key" if cert else "tls_cert"
        raise InvalidArgument(
            f"{missing} is empty but {'tls_cert' if cert else 'tls_key'} is set; TLS needs "
            "both the certificate and its private key: set both or neither"
        )
    pair = (read_pem(key, "tls_key"), read_pem(cert, "tls_cert"))
    if client_ca:
        return grpc.ssl_server_credentials(
            [pair], root_certificates=read_pem(client_ca, "tls_client_ca"), require_client_auth=True
        )
    return grpc.ssl_server_credentials([pair])


@dataclass(frozen=True)
class ClientTLS:
    """TLS for outgoing calls: the CA that signs the server, optionally our own certificate.

    ``ca`` None: the system's trusted roots. ``server_name`` overrides the name the server's
    certificate is checked against (e.g. when dialling 127.0.0.1 or an IP in a cluster).
    """

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str = ""

    @classmethod
    def from_paths(
        cls,
        ca: str | Path = "",
        cert: str | Path = "",
        key: str | Path = "",
        server_name: str = "",
        names: tuple[str, str, str] = ("tls_ca", "tls_client_cert", "tls_client_key"),
    ) -> ClientTLS | None:
        """Read the files once; None (plaintext) when no CA and no client certificate is set.

        ``names`` are the settings (or flags) the paths came from, for error messages.
        """
        ca, cert, key = str(ca or ""), str(cert or ""), str(key or "")
        if bool(cert) != bool(key):
            given, missing = (names[1], names[2]) if cert else (names[2], names[1])
            raise InvalidArgument(
                f"{given} is set but {missing} is empty; a client certificate needs its "
                f"private key: set both or neither"
            )
        if not ca and not cert:
            return None
        return cls(
            ca=read_pem(ca, names[0]) if ca else None,
            cert=read_pem(cert, names[1]) if cert else None,
            key=read_pem(key, names[2]) if key else None,
            server_name=server_name,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials for these files."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def options(self) -> list[tuple[str, Any]]:
        """Channel options (the server-name override)."""
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


def open_channel(
    address: str,
    tls: ClientTLS | None = None,
    token: str = "",
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``address``: TLS when ``tls`` is given, the bearer token on every call."""
    opts = [*options, *(tls.options() if tls else [])]
    channel = (
        grpc.secure_channel(address, tls.credentials(), options=opts)
        if tls
        else grpc.insecure_channel(address, options=opts)
    )
    if token:
        channel = grpc.intercept_channel(channel, BearerTokenClientInterceptor(token))
    return channel


# ---- bearer tokens -----------------------------------------------------------------------------


def parse_tokens(
    inline: str = "", file: str | Path = "", setting: str = "auth_tokens"
) -> list[str]:
    """Tokens from a comma-separated value and/or a file with one token per line.

    Blank lines and lines starting with ``#`` in the file are skipped. A file that names no
    token is an error rather than "auth off": a mistake must not open the service.
    """
    tokens = [t.strip() for t in inline.split(",") if t.strip()]
    if file:
        p = Path(file)
        try:
            lines = p.read_text().splitlines()
        except FileNotFoundError:
            raise InvalidArgument(
                f"{setting}_file = '{p}': no such file; point it at a file with one token per "
                "line or leave it empty"
            ) from None
        except OSError as err:
            raise InvalidArgument(
                f"{setting}_file = '{p}': cannot read it ({err.strerror}); check permissions"
            ) from None
        from_file = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
        if not from_file:
            raise InvalidArgument(
                f"{setting}_file = '{p}' holds no token; write one token per line "
                f"(or clear {setting}_file to turn token checks off)"
            )
        tokens += from_file
    for i, t in enumerate(tokens, 1):
        if any(c.isspace() or c == "," for c in t) or not t.isprintable():
            raise InvalidArgument(
                f"{setting}: token #{i} contains whitespace, a comma or an unprintable "
                "character; tokens must be single printable words"
            )
        if len(t) < _MIN_TOKEN_CHARS:
            log.warning(
                "%s: token #%d is shorter than %d characters; use long random tokens "
                "(e.g. `openssl rand -hex 32`)",
                setting,
                i,
                _MIN_TOKEN_CHARS,
            )
    return list(dict.fromkeys(tokens))


def sending_token(value: str) -> str:
    """The token a process sends from a comma-separated token setting: the first one.

    Receivers accept every listed token, so a secret rotates by listing "new,old" everywhere,
    then dropping "old".
    """
    names = parse_names(value)
    return names[0] if names else ""


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, or None when there is none."""
    for key, value in metadata or ():
        if key.lower() != AUTHORIZATION:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if text[: len(_BEARER)].lower() == _BEARER:
            return text[len(_BEARER) :].strip()
        return None
    return None


def token_matches(given: str, accepted: Sequence[str]) -> bool:
    """Whether ``given`` is one of ``accepted``, comparing every one in constant time."""
    g = given.encode()
    found = False
    for t in accepted:
        found |= hmac.compare_digest(g, t.encode())
    return found


def check_bearer(
    metadata: Iterable[tuple[str, str | bytes]] | None, accepted: Sequence[str], hint: str
) -> tuple[grpc.StatusCode, str] | None:
    """None when the call carries an accepted token, else the status to answer with.

    ``hint`` tells the caller how to send the right token (it never contains one).
    """
    given = bearer_token(metadata)
    if not given:
        return (
            grpc.StatusCode.UNAUTHENTICATED,
            f"missing bearer token: this service needs metadata 'authorization: Bearer "
            f"<token>'; {hint}",
        )
    if not token_matches(given, accepted):
        return grpc.StatusCode.UNAUTHENTICATED, f"invalid token; {hint}"
    return None


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerTokenClientInterceptor(
    grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor
):
    """Adds ``authorization: Bearer <token>`` to every outgoing call.

    An interceptor rather than call credentials: it works on plaintext channels too (a local
    stack behind a TLS-terminating proxy), where gRPC refuses call credentials.
    """

    def __init__(self, token: str) -> None:
        self._entry = (AUTHORIZATION, f"Bearer {token}")

    def __repr__(self) -> str:
        return "BearerTokenClientInterceptor(<token hidden>)"

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [m for m in (details.metadata or ()) if m[0] != AUTHORIZATION]
        return _CallDetails(
            details.method,
            details.timeout,
            [*metadata, self._entry],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(
        self,
        continuation: Callable[..., Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        return continuation(self._details(client_call_details), request)


# ---- client certificates -----------------------------------------------------------------------


def parse_names(value: str) -> list[str]:
    """A comma-separated setting as a list (blanks dropped)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def peer_common_names(context: grpc.ServicerContext) -> list[str]:
    """Common names of the verified client certificate (empty without mutual TLS)."""
    auth = context.auth_context() or {}
    return [v.decode(errors="replace") for v in auth.get("x509_common_name", [])]


def check_common_name(
    context: grpc.ServicerContext, allowed: Sequence[str]
) -> tuple[grpc.StatusCode, str] | None:
    """None when the client certificate's common name is allowed, else the status to answer."""
    names = peer_common_names(context)
    if not names:
        return (
            grpc.StatusCode.UNAUTHENTICATED,
            "no client certificate: this service accepts only callers with a certificate whose "
            f"common name is one of {', '.join(allowed)} (mutual TLS)",
        )
    if not any(n in allowed for n in names):
        return (
            grpc.StatusCode.PERMISSION_DENIED,
            f"client certificate common name {names[0]!r} is not allowed; this service accepts "
            f"{', '.join(allowed)} (setting allowed_client_cn)",
        )
    return None


# ---- rate limits -------------------------------------------------------------------------------


def peer_host(peer: str) -> str:
    """The host of a gRPC peer string ("ipv4:10.0.0.1:5000" -> "10.0.0.1"; "ipv6:[::1]:5" ->
    "::1"), so all connections of one machine share a bucket."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1 : rest.find("]")] if "]" in rest else rest
    if kind in ("ipv4", "ipv6"):
        return rest.rsplit(":", 1)[0]
    return peer


class TokenBucket:
    """Per-key token buckets: ``rate`` tokens a second, at most ``burst`` saved up.

    Idle buckets (full again) are dropped once more than ``max_keys`` exist, so many peers
    cannot grow memory without bound.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise InvalidArgument(
                f"rate limit {rate}/s with burst {burst}: the rate must be > 0 and the burst "
                ">= 1 (set rate_limit_per_s = 0 to turn rate limits off)"
            )
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        """Spend one token of ``key``'s bucket; False when it is empty (over the limit)."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            if len(self._buckets) > self._max_keys:
                self._drop_idle(now)
            return allowed

    def _drop_idle(self, now: float) -> None:
        refill_s = self.burst / self.rate
        for k in [k for k, (_, last) in self._buckets.items() if now - last >= refill_s]:
            del self._buckets[k]
