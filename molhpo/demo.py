"""``molhpo demo``: start the local stack, run a real study, print the report, stop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

from molhpo import report, studyfile
from molhpo.client import MolhpoClient
from molhpo.contract.errors import InvalidArgument
from molhpo.local import LocalStack

console = Console()


def run_demo(study_file: Path, state_dir: Path, n_trainers: int) -> int:
    """Run the demo study end to end; returns the exit code (0 when every trial ended)."""
    req = studyfile.load(study_file)
    req.name = f"{req.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.monotonic()
    with console.status(f"starting redis-server, coordinator and {n_trainers} trainers"):
        stack = LocalStack(
            state_dir=state_dir, n_trainers=n_trainers, coordinator_listen="127.0.0.1:0"
        ).start()
    try:
        console.print(
            f"local stack up in {time.monotonic() - t0:.1f} s: coordinator "
            f"{stack.coordinator_address}, {stack.redis_url}, state {stack.state_dir}"
        )
        with MolhpoClient(stack.coordinator_address) as client:
            info = client.start_study(req)
            console.print(
                f"study [bold]{info.name}[/bold]: {req.model} on {req.dataset.name}, "
                f"{req.budget.n_trials} trials, {req.sampler.name or 'tpe'} + "
                f"{req.pruner.name or 'hyperband'}, max {req.budget.max_epochs} "
                f"epochs, {n_trainers} trainers"
            )
            final = report.watch_with_progress(client, info.name, req.budget.n_trials, console)
            trials = client.list_trials(info.name)
            report.print_summary(final, trials, console)
            out = stack.state_dir / "reports" / info.name
            written = report.write_report(client.get_report(info.name), out)
            console.print(f"\nreport: {out}/ ({', '.join(p.name for p in written)})")
            molecules = ["CCO", "c1ccccc1O", "ClC(Cl)Cl"]
            pred = client.predict(info.name, molecules)
            console.print(
                "predictions of the best model ("
                + pred.units
                + "): "
                + ", ".join(f"{s} {v:.2f}" for s, v in zip(molecules, pred.values, strict=True))
            )
            try:
                client.predict(info.name, ["C1CC"])
            except InvalidArgument as err:
                console.print(f"an unparsable SMILES is refused: {err}")
        store = f"sqlite:///{stack.state_dir / 'studies.db'}"
        bindir = Path(sys.executable).parent
        console.print(
            "\nThe study store is Optuna's own; try:\n"
            f"  {bindir / 'optuna'} trials --storage {store} --study-name {info.name}\n"
            f"  {bindir / 'optuna-dashboard'} {store}"
        )
        unfinished = final.n_running
        return 0 if unfinished == 0 and final.n_complete > 0 else 1
    finally:
        stack.stop()
        console.print(f"stack stopped; demo took {time.monotonic() - t0:.0f} s")
