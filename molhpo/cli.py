"""The ``molhpo`` command line.

Server flags mirror the settings objects field for field; each has an environment twin
(``MOLHPO_COORDINATOR_*``, ``MOLHPO_TRAINER_*``) named in ``--help``. Client commands find the
coordinator from ``--coordinator``, else ``$MOLHPO_ADDRESS``, else the local stack's
``.molhpo/stack.json``, else 127.0.0.1:50051; a secured coordinator takes ``--token``
(``$MOLHPO_TOKEN``) and ``--tls-ca``/``--tls-cert``/``--tls-key`` (``$MOLHPO_TLS_*``).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.markup import escape

from molhpo import report, startup_checks
from molhpo.contract.errors import FailedPrecondition, InvalidArgument, MolhpoError

if TYPE_CHECKING:
    from molhpo.client import MolhpoClient

console = Console()
err_console = Console(stderr=True)


def _add_settings_flags(
    p: argparse.ArgumentParser, model: type[BaseModel], env_prefix: str
) -> None:
    for name, info in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        ann = info.annotation
        kind: Any = str
        if ann in (int, float):
            kind = ann
        env = f"{env_prefix}{name.upper()}"
        default = info.default
        if isinstance(default, SecretStr):
            # A secret: prefer the environment (flags show in `ps`); never echo a value.
            default = default.get_secret_value()
        p.add_argument(
            flag,
            dest=name,
            type=kind,
            default=None,
            help=f"{info.description} [env {env}; default {default!r}]",
        )


def _settings(model: type[BaseSettings], args: argparse.Namespace) -> Any:
    """The settings from the flags given, else the environment, else the defaults; a bad value
    exits with one line naming the setting, its flag and environment variable, the value and
    the rule."""
    given = {k: v for k, v in vars(args).items() if k in model.model_fields and v is not None}
    try:
        return model(**given)
    except ValidationError as err:
        first = err.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        if name not in model.model_fields:
            raise SystemExit(f"error: {first['msg']}") from None
        value = first.get("input")
        if model.model_fields[name].annotation is SecretStr:
            value = "***"
        rule = first["msg"].removeprefix("Value error, ")
        rule = rule[:1].lower() + rule[1:]
        raise SystemExit(
            f"error: {startup_checks.setting_name(model, name)} = {str(value)!r}: {rule}"
        ) from None


def coordinator_address(args: argparse.Namespace) -> str:
    """Where client commands find the coordinator."""
    if getattr(args, "coordinator", None):
        return str(args.coordinator)
    if os.environ.get("MOLHPO_ADDRESS"):
        return os.environ["MOLHPO_ADDRESS"]
    from molhpo.local import read_stack_file

    stack = read_stack_file(Path(getattr(args, "state_dir", None) or ".molhpo"))
    if stack and isinstance(stack.get("coordinator"), str):
        return str(stack["coordinator"])
    return "127.0.0.1:50051"


_CLIENT_ENV = {
    "token": "MOLHPO_TOKEN",
    "token_file": "MOLHPO_TOKEN_FILE",
    "tls_ca": "MOLHPO_TLS_CA",
    "tls_cert": "MOLHPO_TLS_CERT",
    "tls_key": "MOLHPO_TLS_KEY",
    "tls_server_name": "MOLHPO_TLS_SERVER_NAME",
}


def _client_option(args: argparse.Namespace, name: str) -> str:
    """A client flag's value, else its environment twin, else empty."""
    given = getattr(args, name, None)
    if given:
        return str(given)
    return os.environ.get(_CLIENT_ENV[name], "")


def client_token(args: argparse.Namespace) -> str:
    """The bearer token from ``--token``/``$MOLHPO_TOKEN``, else the first line of
    ``--token-file``/``$MOLHPO_TOKEN_FILE``; empty when none is given."""
    token = _client_option(args, "token")
    if token:
        return token.strip()
    path = _client_option(args, "token_file")
    if not path:
        return ""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise InvalidArgument(
            f"--token-file '{path}': cannot read it ({err.strerror}); give a readable file "
            "holding the token on its first line"
        ) from None
    for line in lines:
        if line.strip() and not line.startswith("#"):
            return line.strip()
    raise InvalidArgument(f"--token-file '{path}' holds no token; write the token on one line")


def open_client(args: argparse.Namespace) -> MolhpoClient:
    """A client of the coordinator with the address, token and TLS files the flags (or their
    environment twins) name."""
    from molhpo import security
    from molhpo.client import MolhpoClient

    tls = security.ClientTLS.from_paths(
        _client_option(args, "tls_ca"),
        _client_option(args, "tls_cert"),
        _client_option(args, "tls_key"),
        _client_option(args, "tls_server_name"),
        names=("--tls-ca", "--tls-cert", "--tls-key"),
    )
    return MolhpoClient(coordinator_address(args), token=client_token(args), tls=tls)


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# ---- commands --------------------------------------------------------------------------------


_OWN_PACKAGES = {"molhpo", "coordinator", "trainer", "storage"}
# What `molhpo up` and `molhpo demo` start needs, looked up (not imported) before any child runs.
_STACK_PACKAGES = ("optuna", "redis", "torch", "torch_geometric")


def missing_extra(extras: str, missing: str) -> FailedPrecondition:
    """One line for a command whose install extra is missing: the package and what to
    install."""
    return FailedPrecondition(
        f"this needs molhpo[{extras}]: {missing} is not installed; "
        f"pip install 'molhpo[{extras}]' (-c constraints.txt for the tested versions)"
    )


def _missing_package(err: ModuleNotFoundError) -> str:
    """The missing package of an import error; molhpo's own modules missing are no install
    problem and are raised as they are."""
    top = (err.name or "").split(".")[0]
    if top in _OWN_PACKAGES:
        raise err
    return top


def check_stack_installed() -> None:
    """FailedPrecondition naming the first package of both services' extras not installed."""
    for module in _STACK_PACKAGES:
        if importlib.util.find_spec(module) is None:
            raise missing_extra("coordinator,trainer", module)


def cmd_coordinator(args: argparse.Namespace) -> int:
    from coordinator.settings import CoordinatorSettings

    # Settings first: a bad value is refused before the service's heavy imports.
    settings = _settings(CoordinatorSettings, args)
    try:
        from coordinator.server import serve
    except ModuleNotFoundError as err:
        raise missing_extra("coordinator", _missing_package(err)) from None

    _logging()
    serve(settings)
    return 0


def cmd_trainer(args: argparse.Namespace) -> int:
    from trainer.settings import TrainerSettings

    settings = _settings(TrainerSettings, args)
    try:
        from trainer.server import serve
    except ModuleNotFoundError as err:
        raise missing_extra("trainer", _missing_package(err)) from None

    _logging()
    serve(settings)
    return 0


def check_up_flags(args: argparse.Namespace) -> None:
    """``molhpo up``'s flags checked before any process starts, so a bad one fails with one
    line naming the flag, the value and the fix instead of a child's log."""
    check_stack_installed()
    from storage.redis_conn import check_reachable, connect
    from storage.study_store import check_storage

    def bad(flag: str, value: object, problem: str) -> InvalidArgument:
        return InvalidArgument(f"{flag} {str(value)!r}: {problem}")

    if args.trainers < 1:
        raise bad("--trainers", args.trainers, "must be at least 1")
    if args.slots < 1:
        raise bad("--slots", args.slots, "must be at least 1")
    problem = startup_checks.folder_problem(Path(args.state_dir), create=True)
    if problem:
        raise bad("--state-dir", args.state_dir, problem)
    try:
        host, port = startup_checks.split_address(args.listen)
    except ValueError as err:
        raise bad("--listen", args.listen, str(err)) from None
    problem = startup_checks.listen_problem(host, port)
    if problem:
        raise bad("--listen", args.listen, problem)
    checks = (
        ("--redis-url", lambda url: check_reachable(connect(url), url), args.redis_url),
        ("--storage-url", check_storage, args.storage_url),
    )
    for flag, check, url in checks:
        try:
            if url:
                check(url)
        except MolhpoError as err:
            raise type(err)(f"{flag}: {err}") from None


def cmd_up(args: argparse.Namespace) -> int:
    import signal
    import threading

    from molhpo.local import LocalStack

    check_up_flags(args)
    stack = LocalStack(
        state_dir=Path(args.state_dir),
        n_trainers=args.trainers,
        slots=args.slots,
        coordinator_listen=args.listen,
        redis_url=args.redis_url or "",
        storage_url=args.storage_url or "",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with console.status("starting redis-server, coordinator and trainers"):
        stack.start()
    console.print(
        f"coordinator  {stack.coordinator_address}  (metrics {stack.coordinator_metrics})"
    )
    console.print(f"redis        {stack.redis_url}")
    for i, m in enumerate(stack.trainer_metrics):
        console.print(f"trainer-{i}    metrics {m}")
    console.print(f"state        {stack.state_dir}   logs in {stack.state_dir / 'logs'}")
    console.print("Ctrl-C stops everything.")
    try:
        while not stop.wait(1.0):
            dead = [n for n, ok in stack.alive().items() if not ok]
            if dead:
                err_console.print(f"[red]{', '.join(dead)} exited; stopping the stack[/red]")
                return 1
    finally:
        stack.stop()
        console.print("stack stopped")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    check_stack_installed()
    from molhpo.demo import run_demo

    return run_demo(Path(args.study), Path(args.state_dir), args.trainers)


def cmd_study_start(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        checked = c.validate_study(Path(args.file))
        req = checked.normalized
        d = checked.dataset
        console.print(
            f"data {d.name}: {d.n_molecules} molecules"
            + (f"; {report.rows(d.n_invalid)} dropped" if d.n_invalid else ""),
            highlight=False,
        )
        for line in report.dropped_rows_lines(d):
            console.print(f"  {line}", markup=False, highlight=False)
        if args.name:
            req.name = args.name
        if args.trials:
            req.budget.n_trials = args.trials
        if args.max_epochs:
            req.budget.max_epochs = args.max_epochs
        info = c.start_study(req)
        console.print(
            f"study [bold]{info.name}[/bold] started: {req.budget.n_trials} trials, "
            f"{req.model} on {report.dataset_label(req.dataset)}, "
            f"{req.sampler.name} + {req.pruner.name}"
        )
        if args.watch:
            final = report.watch_with_progress(c, info.name, req.budget.n_trials, console)
            report.print_summary(final, c.list_trials(info.name), console)
    return 0


def cmd_study_list(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        report.print_study_list(c.list_studies(), console)
    return 0


def cmd_study_show(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        info = c.get_study(args.name)
        report.print_summary(info, c.list_trials(args.name), console, trials_table=args.trials)
    return 0


def cmd_study_stop(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        c.stop_study(args.name, args.cancel)
        console.print(
            f"study {args.name} stopping"
            + (" (running trials cancelled)" if args.cancel else " (running trials finish)")
        )
    return 0


def _follow(c: Any, info: Any, args: argparse.Namespace) -> None:
    if getattr(args, "watch", False):
        total = info.request.budget.n_trials or 0
        final = report.watch_with_progress(c, info.name, total, console)
        report.print_summary(final, c.list_trials(info.name), console)


def cmd_study_resume(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        info = c.resume_study(args.name, args.trials)
        console.print(f"study {info.name} resumed")
        _follow(c, info, args)
    return 0


def cmd_study_delete(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        c.delete_study(args.name)
        console.print(f"study {args.name} deleted")
    return 0


def cmd_study_refine(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        info = c.refine_study(args.parent, args.name or "", args.percent, args.trials)
        console.print(f"study {info.name} refines {args.parent} (+/- {args.percent or 20:g}%)")
        _follow(c, info, args)
    return 0


def cmd_study_evaluate(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        info = c.evaluate_study(
            args.name,
            top_k=args.top_k,
            seeds=args.seeds,
            skip_default=args.skip_default,
            max_epochs=args.max_epochs,
        )
        console.print(f"evaluation study {info.name} started")
        if args.watch:
            _follow(c, info, args)
            md = c.get_report(info.name).markdown
            if "## Final evaluation" in md:
                console.print(md[md.index("## Final evaluation") :])
    return 0


def cmd_race_start(args: argparse.Namespace) -> int:
    import time

    from molhpo import studyfile

    req = studyfile.load_race(Path(args.file))
    with open_client(args) as c:
        c.start_race(req)
        console.print(f"race {req.name}: {', '.join(e.label for e in req.entries)}")
        if args.watch:
            while True:
                race = c.get_race(req.name)
                if race.finished and len(race.rows) == len(req.entries):
                    break
                time.sleep(2.0)
            report.print_race(race, console)
    return 0


def cmd_race_show(args: argparse.Namespace) -> int:
    with open_client(args) as c:
        report.print_race(c.get_race(args.name), console)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    out = Path(args.out or f"reports/{args.name}")
    with open_client(args) as c:
        r = c.get_report(args.name)
    written = report.write_report(r, out)
    console.print(f"report of {args.name} in {out}/: " + ", ".join(p.name for p in written))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from rich.table import Table

    smiles = list(args.smiles)
    if args.file:
        smiles += [ln.split()[0] for ln in Path(args.file).read_text().splitlines() if ln.strip()]
    with open_client(args) as c:
        resp = c.predict(args.study, smiles, args.top_k)
    t = Table(title=f"{args.study}: trials {', '.join(map(str, resp.trial_numbers))}")
    t.add_column("SMILES")
    t.add_column(f"prediction ({resp.units})" if resp.units else "prediction")
    for s, v in zip(smiles, resp.values, strict=True):
        t.add_row(s, f"{v:.4f}")
    console.print(t)
    return 0


# `molhpo list` waits this long for a coordinator before it lists the local catalogue.
_LIST_TIMEOUT_S = 5.0
# Answers that mean "no coordinator to ask" (none running, or one without ListCapabilities).
_NO_ANSWER = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
}


def cmd_list(args: argparse.Namespace) -> int:
    """What the coordinator's registered trainers and the coordinator offer; the local
    catalogue when no coordinator answers (said in one line on stderr)."""
    address = coordinator_address(args)
    offered = None
    try:
        with open_client(args) as c:
            offered = c.list_capabilities(timeout_s=_LIST_TIMEOUT_S)
    except MolhpoError as err:
        if err.code not in _NO_ANSWER:
            raise
        err_console.print(
            f"no coordinator answered at {address} ({err.code.name}); "
            "listing this installation's catalogue",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if offered is not None and args.what in ("models", "datasets"):
        if offered.trainers:
            ids = ", ".join(t.trainer_id for t in offered.trainers)
            console.print(
                f"offered by the trainers registered at {address}: {ids}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        else:
            err_console.print(
                f"no trainer is registered at the coordinator at {address}; "
                "listing this installation's catalogue",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    elif offered is not None:
        console.print(f"{args.what} of the coordinator at {address}", markup=False, highlight=False)
    report.print_catalogue(args.what, console, offered)
    return 0


# ---- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="molhpo", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    _add_service_commands(sub)
    _add_local_commands(sub)
    client_flags = _client_flags()
    _add_study_commands(sub, client_flags)
    _add_race_commands(sub, client_flags)
    _add_result_commands(sub, client_flags)
    _add_list_command(sub, client_flags)
    return p


_Commands = argparse._SubParsersAction  # the subcommands of one parser


def _add_service_commands(sub: _Commands[argparse.ArgumentParser]) -> None:
    """``coordinator`` and ``trainer``: a flag for every setting of the service."""
    from coordinator.settings import CoordinatorSettings
    from trainer.settings import TrainerSettings

    c = sub.add_parser("coordinator", help="run the coordinator service")
    _add_settings_flags(c, CoordinatorSettings, "MOLHPO_COORDINATOR_")
    c.set_defaults(fn=cmd_coordinator)

    t = sub.add_parser("trainer", help="run a trainer service")
    _add_settings_flags(t, TrainerSettings, "MOLHPO_TRAINER_")
    t.set_defaults(fn=cmd_trainer)


def _add_local_commands(sub: _Commands[argparse.ArgumentParser]) -> None:
    """``up`` and ``demo``: the whole stack on this machine."""
    u = sub.add_parser("up", help="run redis-server, a coordinator and trainers locally")
    u.add_argument("--trainers", type=int, default=2, help="trainer processes [default 2]")
    u.add_argument("--slots", type=int, default=1, help="trial slots per trainer [default 1]")
    u.add_argument("--state-dir", default=".molhpo", help="local state [default .molhpo]")
    u.add_argument("--listen", default="127.0.0.1:50051", help="coordinator address")
    u.add_argument("--redis-url", default=None, help="use this Redis instead of starting one")
    u.add_argument("--storage-url", default=None, help="study store URL [default SQLite]")
    u.set_defaults(fn=cmd_up)

    d = sub.add_parser("demo", help="start the local stack, run the demo study, report, stop")
    d.add_argument("--study", default="examples/freesolv_gin.yaml", help="study file")
    d.add_argument("--state-dir", default=".molhpo", help="local state [default .molhpo]")
    d.add_argument("--trainers", type=int, default=2, help="trainer processes [default 2]")
    d.set_defaults(fn=cmd_demo)


def _client_flags() -> argparse.ArgumentParser:
    """The flags of every command that calls a coordinator: its address, token and TLS."""
    client_flags = argparse.ArgumentParser(add_help=False)
    client_flags.add_argument(
        "--coordinator",
        default=None,
        help="coordinator address [env MOLHPO_ADDRESS; default: the local "
        "stack's, else 127.0.0.1:50051]",
    )
    client_flags.add_argument("--state-dir", default=".molhpo", help=argparse.SUPPRESS)
    client_flags.add_argument(
        "--token",
        default=None,
        help="bearer token for a coordinator with auth_tokens [env MOLHPO_TOKEN; prefer the "
        "env variable or --token-file: flags show in the process list]",
    )
    client_flags.add_argument(
        "--token-file",
        default=None,
        help="file whose first line is the bearer token [env MOLHPO_TOKEN_FILE]",
    )
    client_flags.add_argument(
        "--tls-ca",
        default=None,
        help="CA file (PEM) that signs the coordinator's certificate: TLS on [env MOLHPO_TLS_CA]",
    )
    client_flags.add_argument(
        "--tls-cert",
        default=None,
        help="own certificate (PEM) for mutual TLS [env MOLHPO_TLS_CERT]",
    )
    client_flags.add_argument(
        "--tls-key", default=None, help="private key of --tls-cert (PEM) [env MOLHPO_TLS_KEY]"
    )
    client_flags.add_argument(
        "--tls-server-name",
        default=None,
        help="name to check the coordinator's certificate against (default: the address's "
        "host) [env MOLHPO_TLS_SERVER_NAME]",
    )
    return client_flags


def _add_study_commands(
    sub: _Commands[argparse.ArgumentParser], client_flags: argparse.ArgumentParser
) -> None:
    """``study start|list|show|stop|resume|delete``, then the studies made from a study."""
    s = sub.add_parser("study", help="start, list, show or stop studies")
    ssub = s.add_subparsers(dest="study_command", required=True)
    st = ssub.add_parser("start", parents=[client_flags], help="start a study from a YAML file")
    st.add_argument("file")
    st.add_argument("--name", default=None, help="override the study name")
    st.add_argument("--trials", type=int, default=0, help="override budget.n_trials")
    st.add_argument("--max-epochs", type=int, default=0, help="override budget.max_epochs")
    st.add_argument("--watch", action="store_true", help="follow it and print the summary")
    st.set_defaults(fn=cmd_study_start)
    sl = ssub.add_parser("list", parents=[client_flags], help="list studies")
    sl.set_defaults(fn=cmd_study_list)
    ss = ssub.add_parser("show", parents=[client_flags], help="show a study")
    ss.add_argument("name")
    ss.add_argument("--trials", action="store_true", help="list every trial")
    ss.set_defaults(fn=cmd_study_show)
    sp = ssub.add_parser("stop", parents=[client_flags], help="stop a study")
    sp.add_argument("name")
    sp.add_argument("--cancel", action="store_true", help="cancel running trials too")
    sp.set_defaults(fn=cmd_study_stop)

    sr = ssub.add_parser("resume", parents=[client_flags], help="continue a stopped study")
    sr.add_argument("name")
    sr.add_argument(
        "--trials", type=int, default=0, help="total trials wanted [default: as started]"
    )
    sr.add_argument("--watch", action="store_true")
    sr.set_defaults(fn=cmd_study_resume)
    sd = ssub.add_parser("delete", parents=[client_flags], help="delete a study")
    sd.add_argument("name")
    sd.set_defaults(fn=cmd_study_delete)
    _add_derived_study_commands(ssub, client_flags)


def _add_derived_study_commands(
    ssub: _Commands[argparse.ArgumentParser], client_flags: argparse.ArgumentParser
) -> None:
    """``study refine`` and ``study evaluate``: new studies from a study's best trials."""
    sf = ssub.add_parser("refine", parents=[client_flags], help="search close to a study's best")
    sf.add_argument("parent")
    sf.add_argument("--name", default=None)
    sf.add_argument("--percent", type=float, default=0.0, help="+/- percent [default 20]")
    sf.add_argument("--trials", type=int, default=0, help="trials [default: the parent's]")
    sf.add_argument("--watch", action="store_true")
    sf.set_defaults(fn=cmd_study_refine)
    se = ssub.add_parser(
        "evaluate", parents=[client_flags], help="retrain the top-k with several seeds"
    )
    se.add_argument("name")
    se.add_argument("--top-k", type=int, default=0, help="configurations [default 3]")
    se.add_argument("--seeds", type=int, default=0, help="seeds each [default 3]")
    se.add_argument("--skip-default", action="store_true", help="leave out the default config")
    se.add_argument("--max-epochs", type=int, default=0, help="[default: the study's]")
    se.add_argument("--watch", action="store_true")
    se.set_defaults(fn=cmd_study_evaluate)


def _add_race_commands(
    sub: _Commands[argparse.ArgumentParser], client_flags: argparse.ArgumentParser
) -> None:
    """``race start|show``."""
    rc = sub.add_parser("race", help="compare algorithm set-ups on one workload")
    rsub = rc.add_subparsers(dest="race_command", required=True)
    rs = rsub.add_parser("start", parents=[client_flags], help="start a race from a YAML file")
    rs.add_argument("file")
    rs.add_argument("--watch", action="store_true", help="wait and print the table")
    rs.set_defaults(fn=cmd_race_start)
    rw = rsub.add_parser("show", parents=[client_flags], help="print a race's table")
    rw.add_argument("name")
    rw.set_defaults(fn=cmd_race_show)


def _add_result_commands(
    sub: _Commands[argparse.ArgumentParser], client_flags: argparse.ArgumentParser
) -> None:
    """``report`` and ``predict``: what a study's trials give."""
    rp = sub.add_parser("report", parents=[client_flags], help="write a study's report")
    rp.add_argument("name")
    rp.add_argument("--out", default=None, help="folder [default reports/NAME]")
    rp.set_defaults(fn=cmd_report)

    pr = sub.add_parser("predict", parents=[client_flags], help="predict with a study's models")
    pr.add_argument("study")
    pr.add_argument("smiles", nargs="*")
    pr.add_argument("--file", default=None, help="a file of SMILES, one per line")
    pr.add_argument("--top-k", type=int, default=1, help="average the k best models")
    pr.set_defaults(fn=cmd_predict)


def _add_list_command(
    sub: _Commands[argparse.ArgumentParser], client_flags: argparse.ArgumentParser
) -> None:
    """``list``: what the running stack (or this installation) offers."""
    ls = sub.add_parser(
        "list",
        parents=[client_flags],
        help="list the models, datasets, samplers or pruners the coordinator and its trainers "
        "offer (this installation's catalogue when no coordinator answers)",
    )
    ls.add_argument("what", choices=["models", "datasets", "samplers", "pruners"])
    ls.set_defaults(fn=cmd_list)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except MolhpoError as err:
        # One line, however long: a message is never wrapped or read as markup.
        err_console.print(f"[red]error[/red] ({err.code.name}): {escape(str(err))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
