"""Redis connections with timeouts and bounded retries."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from molhpo.contract.errors import InvalidArgument, Unavailable
from molhpo.startup_checks import redact_url


def connect(url: str, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A Redis client for ``url`` (``redis://host:port/db``).

    Commands time out after ``socket_timeout`` seconds (blocking commands add their own block
    time) and are retried three times with exponential backoff on connection errors.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidArgument(
            f"redis url {redact_url(url)!r} is not a Redis URL; use redis://HOST:PORT/DB or "
            "unix://PATH"
        )
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
    except ValueError as err:
        raise InvalidArgument(
            f"redis url {redact_url(url)!r} is not a valid Redis URL ({err}); use "
            "redis://HOST:PORT/DB or unix://PATH"
        ) from None


def check_reachable(client: redis.Redis, url: str) -> None:
    """PING the server behind ``client`` (made from ``url``) once, with its retries.

    Raises:
        Unavailable: it does not answer, or refuses the password; the message says why.
    """
    shown = redact_url(url)
    try:
        client.ping()
    except redis.AuthenticationError as err:
        raise Unavailable(
            f"Redis at {shown!r} refused the login ({err}); put the right user and password "
            "in the URL (redis://USER:PASSWORD@HOST:PORT/DB)"
        ) from None
    except redis.RedisError as err:
        raise Unavailable(
            f"cannot reach Redis at {shown!r} ({err}); start redis-server there, or point the "
            "URL at a running Redis"
        ) from None
