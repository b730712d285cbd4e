"""The study store: an Optuna RDB storage from a URL.

SQLite under the local state directory on one machine; PostgreSQL in a cluster. Because it is
Optuna's own schema, ``optuna-dashboard URL`` and the ``optuna`` command line read it as is.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from molhpo.contract.errors import InvalidArgument, Unavailable

URL_FORMS = "sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB"
POSTGRES_FIX = "pip install 'molhpo[postgres]' (it brings psycopg2-binary)"
_POSTGRES_DRIVERS = ("psycopg2", "psycopg")
"""PostgreSQL drivers a bare ``postgresql://`` URL may use, in order of preference."""


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
    parsed = resolve_url(url)
    engine_kwargs: dict[str, object] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        # Writers from several threads wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 30}
    else:
        engine_kwargs["pool_pre_ping"] = True
        engine_kwargs["connect_args"] = _connect_args(parsed, sync)
    try:
        storage = optuna.storages.RDBStorage(_render(parsed), engine_kwargs=engine_kwargs)
    except SQLAlchemyError as err:
        raise _unreachable(parsed, err) from None
    if not sync and parsed.get_backend_name() == "sqlite":
        event.listen(storage.engine, "connect", _sqlite_fast_commits)
        storage.engine.dispose()  # connections made before the listener reconnect with it
    return storage


def _sqlite_fast_commits(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def resolve_url(url: str) -> URL:
    """``url`` parsed, with a driver that is installed.

    SQLAlchemy maps a bare ``postgresql://`` to psycopg 3, which the ``postgres`` extra does not
    install; a bare ``postgresql://`` (or Heroku-style ``postgres://``) here gets the first
    PostgreSQL driver that imports: psycopg2, else psycopg.

    Raises:
        InvalidArgument: ``url`` is no database URL, names an unknown database, or its driver
            is not installed; the message says how to fix it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InvalidArgument(f"{url!r} is not a database URL; use {URL_FORMS}") from None
    shown = parsed.render_as_string(hide_password=True)
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgres", "postgresql"):
        if not driver:
            driver = next((d for d in _POSTGRES_DRIVERS if _imports(d)), "")
            if not driver:
                raise InvalidArgument(
                    f"{shown!r} is a PostgreSQL URL but no PostgreSQL driver is installed; "
                    f"{POSTGRES_FIX}"
                )
        parsed = parsed.set(drivername=f"postgresql+{driver}")
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise InvalidArgument(
            f"{shown!r} names an unknown database or driver {parsed.drivername!r}; use {URL_FORMS}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        fix = POSTGRES_FIX if backend.startswith("postgres") else "install that driver's package"
        raise InvalidArgument(
            f"{shown!r} needs the driver {parsed.drivername!r}, which is not installed "
            f"({err}); {fix}"
        ) from None
    return parsed


def check_storage(url: str) -> None:
    """Open and close one connection to the store at ``url``, creating a SQLite file's folder.

    Raises:
        InvalidArgument: as ``resolve_url``.
        Unavailable: the database cannot be reached or refuses the connection.
    """
    parsed = resolve_url(url)
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise Unavailable(
                    f"cannot create the folder {str(folder)!r} of the SQLite file "
                    f"({err.strerror}); give a path this user may write"
                ) from None
    else:
        connect_args = _connect_args(parsed, sync=True)
    engine = create_engine(_render(parsed), connect_args=connect_args)
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as err:
        raise _unreachable(parsed, err) from None
    finally:
        engine.dispose()


_CONNECT_TIMEOUT_S = 10


def _connect_args(parsed: URL, sync: bool) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        # Without it, a host that drops packets hangs start-up for minutes.
        args["connect_timeout"] = _CONNECT_TIMEOUT_S
        if not sync:
            args["options"] = "-c synchronous_commit=off"
    return args


def _render(parsed: URL) -> str:
    return parsed.render_as_string(hide_password=False)


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _unreachable(parsed: URL, err: SQLAlchemyError) -> Unavailable:
    cause = " ".join(str(getattr(err, "orig", None) or err).split())
    return Unavailable(
        f"cannot open the study store {parsed.render_as_string(hide_password=True)!r} "
        f"({cause}); check that the database server runs and that the host, port, user, "
        "password and database name are right"
    )
