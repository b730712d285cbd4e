"""Start-up checks of a service's settings: a bad one fails with one line that names the
setting, its flag and environment variable, the value, the rule and the fix.

Format rules (an address is HOST:PORT) are validators on the settings classes. What needs the
machine (a port still free, a folder writable, Redis answering) is checked by the functions
here, once, before a service builds anything, so a bad setting never ends in a traceback
halfway through start-up.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, start_http_server
from pydantic_settings import BaseSettings

from molhpo.contract.errors import InvalidArgument, MolhpoError, Unavailable

ADDRESS_RULE = "must be HOST:PORT with a port from 0 to 65535, e.g. 127.0.0.1:50051"


def setting_name(settings_cls: type[BaseSettings], name: str) -> str:
    """How a user sets ``name``: ``listen (--listen, env MOLHPO_COORDINATOR_LISTEN)``."""
    env = f"{settings_cls.model_config.get('env_prefix', '')}{name.upper()}"
    return f"{name} (--{name.replace('_', '-')}, env {env})"


def setting_error(
    settings_cls: type[BaseSettings],
    name: str,
    value: object,
    problem: str,
    error: type[MolhpoError] = InvalidArgument,
) -> MolhpoError:
    """``error`` whose message reads ``NAME (--FLAG, env VAR) = 'VALUE': PROBLEM``; ``problem``
    says what is wrong and how to fix it."""
    return error(f"{setting_name(settings_cls, name)} = {str(value)!r}: {problem}")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (fit for a log or an error)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def split_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) as ``(host, port)``.

    Raises:
        ValueError: naming the rule, when ``value`` is no such address.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(ADDRESS_RULE)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() for c in host):
        raise ValueError(ADDRESS_RULE)
    return host, int(port_text)


def listen_problem(host: str, port: int) -> str | None:
    """Why this process could not listen on ``host:port`` now, with the fix; None when it can.

    Port 0 (any free port) only checks the host. The probe socket sets SO_REUSEADDR as
    servers do, so a port held only by closed connections in TIME_WAIT counts as free.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        return f"cannot resolve host {host!r} ({err.strerror}); give an address of this machine"
    family, kind, proto, _name, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return (
                    f"port {port} is already in use on {host}; stop what listens there or "
                    "choose another port (0: any free one)"
                )
            if err.errno == errno.EADDRNOTAVAIL:
                return (
                    f"{host} is no address of this machine; use 127.0.0.1 (this machine only), "
                    "0.0.0.0 (every interface) or one of this machine's addresses"
                )
            if err.errno == errno.EACCES:
                return f"port {port} needs privileges this process lacks; use a port above 1023"
            return f"cannot listen there ({err.strerror}); choose another address"
    return None


def folder_problem(path: Path, *, create: bool) -> str | None:
    """Why ``path`` cannot serve as a folder this process writes to, with the fix; None when
    it can. With ``create`` a missing folder is made (with its parents)."""
    if path.exists() and not path.is_dir():
        return "it is a file, not a folder; give a folder"
    if not path.exists():
        if not create:
            return "no such folder; create it or give an existing one"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            return f"cannot create the folder ({err.strerror}); give a folder this user may write"
    if not os.access(path, os.W_OK | os.X_OK):
        return "this user may not write in that folder; give a writable one or fix its rights"
    return None


def dataset_roots_problem(roots: tuple[Path, ...]) -> str | None:
    """Why a dataset root is unusable (each must be an existing folder); None when all are."""
    if not roots:
        return "no folder given; give at least one folder (several separated by ':')"
    for root in roots:
        if not root.is_dir():
            what = "is a file" if root.exists() else "does not exist"
            return (
                f"{root} {what}; every dataset root must be an existing folder (several "
                "separated by ':')"
            )
    return None


def serve_metrics(
    settings_cls: type[BaseSettings], port: int, host: str, registry: CollectorRegistry
) -> int:
    """Serve ``/metrics`` of ``registry`` on ``host:port`` (0: any free port); the port bound.

    A port that cannot be bound is one line naming the ``metrics_port`` setting.
    """
    try:
        httpd, _thread = start_http_server(port, host, registry=registry)
    except OSError as err:
        raise setting_error(
            settings_cls,
            "metrics_port",
            port,
            f"cannot serve /metrics on {host} ({err.strerror or err}); "
            "choose a free port (0: any, -1: off)",
            Unavailable,
        ) from None
    bound: int = httpd.server_address[1]
    print(f"metrics http://{host}:{bound}/metrics", flush=True)
    return bound
