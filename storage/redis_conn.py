"""Redis connections with timeouts and bounded retries."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from molhpo.errors import InvalidArgument


def connect(url: str, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A Redis client for ``url`` (``redis://host:port/db``).

    Commands time out after ``socket_timeout`` seconds (blocking commands add their own block
    time) and are retried three times with exponential backoff on connection errors.
    """
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise InvalidArgument(
            f"redis url {url!r} is not a Redis URL; use redis://HOST:PORT/DB or unix://PATH"
        )
    return redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
