"""The study store: an Optuna RDB storage from a URL.

SQLite under the local state directory on one machine; PostgreSQL in a cluster. Because it is
Optuna's own schema, ``optuna-dashboard URL`` and the ``optuna`` command line read it as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from molhpo.errors import InvalidArgument


def default_url(state_dir: Path) -> str:
    """The embedded SQLite store under ``state_dir``."""
    return f"sqlite:///{(state_dir / 'studies.db').resolve()}"


def create_storage(url: str, sync: bool = True) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url``, creating the SQLite file's folder when needed.

    With ``sync`` False a commit returns before it is flushed to disk: it survives a crash
    of this process, not a power loss of the machine holding the store. That takes the
    fsync (milliseconds) out of every pruning decision: SQLite runs in WAL mode with
    ``synchronous=NORMAL``, PostgreSQL sessions with ``synchronous_commit=off``.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise InvalidArgument(
            f"storage url {url!r} is not a database URL; use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB"
        ) from err
    engine_kwargs: dict[str, object] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Writers from several threads wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 30}
    else:
        engine_kwargs["pool_pre_ping"] = True
        if not sync and parsed.get_backend_name() == "postgresql":
            engine_kwargs["connect_args"] = {"options": "-c synchronous_commit=off"}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    if not sync and parsed.get_backend_name() == "sqlite":
        event.listen(storage.engine, "connect", _sqlite_fast_commits)
        storage.engine.dispose()  # connections made before the listener reconnect with it
    return storage


def _sqlite_fast_commits(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
