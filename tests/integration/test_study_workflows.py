"""The study workflows on real processes: every sampler and pruner, several studies sharing the
pool, stop and resume, refine, final evaluation, race, report, predict, delete."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import optuna
import pytest
from conftest import RedisServer

from molhpo.client import MolhpoClient
from molhpo.contract.errors import FailedPrecondition, InvalidArgument, NotFound
from molhpo.local import LocalStack
from molhpo.v1 import common_pb2, study_pb2

pytestmark = pytest.mark.integration

SMALL: dict[str, Any] = {
    "dataset": {"name": "freesolv", "max_molecules": 160},
    "model": "mlp",
    "search_space": {
        "units": {"type": "int", "low": 16, "high": 64, "step": 16},
        "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        "lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "fixed_params": {"batch_size": 32},
    "budget": {"n_trials": 4, "max_epochs": 4},
    "parallelism": 2,
}
SAMPLERS = ["random", "tpe", "gp", "cmaes", "qmc", "grid", "nsga2"]
PRUNERS = ["hyperband", "asha", "median", "percentile", "patient", "none"]


def small(name: str, **over: Any) -> dict[str, Any]:
    study = {**SMALL, "name": name, **over}
    if study.get("sampler", {}).get("name") == "grid":
        study["search_space"] = {
            "units": {"type": "int", "low": 16, "high": 32, "step": 16},
            "lr": {"type": "categorical", "choices": [1e-3, 1e-2]},
        }
    return study


@pytest.fixture(scope="module")
def stack(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalStack]:
    with LocalStack(
        state_dir=tmp_path_factory.mktemp("flows"),
        n_trainers=2,
        slots=2,
        coordinator_listen="127.0.0.1:0",
        redis_url=redis_server.url,
        key_prefix="flows",
    ) as st:
        yield st


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> Iterator[MolhpoClient]:
    with MolhpoClient(stack.coordinator_address, timeout_s=60) as c:
        yield c


def wait_all(client: MolhpoClient, names: list[str]) -> dict[str, study_pb2.StudyInfo]:
    return {n: client.wait(n, timeout_s=600) for n in names}


def test_every_sampler_and_pruner_runs_a_study_with_others_sharing_the_pool(
    client: MolhpoClient,
) -> None:
    """Thirteen studies at once on four slots all complete; how fairly they share the slots is
    checked in test_pool_sharing.py."""
    names = []
    for s in SAMPLERS:
        extra: dict[str, Any] = {"sampler": {"name": s}}
        if s == "nsga2":
            extra["objectives"] = [{"metric": "rmse"}, {"metric": "n_parameters"}]
        elif s != "grid":
            extra["pruner"] = {"name": "none"}
        client.start_study(small(f"s-{s}", **extra))
        names.append(f"s-{s}")
    for p in PRUNERS:
        client.start_study(small(f"p-{p}", sampler={"name": "random"}, pruner={"name": p}))
        names.append(f"p-{p}")
    infos = wait_all(client, names)
    for name, info in infos.items():
        assert info.state == common_pb2.STUDY_STATE_COMPLETE, name
        trials = client.list_trials(name)
        assert len(trials) == 4, name
        assert info.n_complete + info.n_pruned == 4, (
            name,
            info.n_failed,
            [t.failure_reason for t in trials],
        )
    multi = infos["s-nsga2"]
    assert not multi.HasField("best_trial") and len(multi.best_trials) >= 1
    assert all(len(t.values) == 2 for t in multi.best_trials)
    # Trial 0 of each study is the default configuration, clipped into the space.
    t0 = client.list_trials("p-none")[0]
    assert t0.params["units"].int_value == 64  # default 128 clipped to the high end


def test_bad_sampler_option_is_invalid_argument_naming_it(client: MolhpoClient) -> None:
    with pytest.raises(InvalidArgument, match=r"sampler\.options\.population_size"):
        client.start_study(
            small("bad", sampler={"name": "nsga2", "options": {"population_size": 1}})
        )
    with pytest.raises(InvalidArgument, match=r"pruner\.options\.patience"):
        client.start_study(small("bad", pruner={"name": "patient", "options": {"patience": -1}}))
    bad_grid = {**small("bad-grid"), "sampler": {"name": "grid"}}  # continuous lr, no n_points
    with pytest.raises(InvalidArgument, match="n_points"):
        client.start_study(bad_grid)


def test_stopped_study_resumes_to_the_requested_trial_count(client: MolhpoClient) -> None:
    client.start_study(
        small("resume", budget={"n_trials": 30, "max_epochs": 4}, pruner={"name": "none"})
    )
    for event in client.watch("resume", timeout_s=300):
        if event.kind == study_pb2.StudyEvent.KIND_TRIAL_COMPLETED:
            break
    stopped = client.stop_study("resume")
    assert stopped.name == "resume"
    info = client.wait("resume", timeout_s=300)
    assert info.state == common_pb2.STUDY_STATE_STOPPED
    done = len(client.list_trials("resume"))
    assert done < 30
    with pytest.raises(InvalidArgument):
        client.resume_study("resume", n_trials=done)
    client.resume_study("resume", n_trials=done + 3)
    info = client.wait("resume", timeout_s=300)
    trials = client.list_trials("resume")
    assert info.state == common_pb2.STUDY_STATE_COMPLETE
    assert len(trials) == done + 3
    assert all(t.state != common_pb2.TRIAL_STATE_RUNNING for t in trials)


def test_refined_study_stays_inside_the_range_around_the_parent_best(
    client: MolhpoClient,
) -> None:
    client.start_study(
        small("parent", budget={"n_trials": 6, "max_epochs": 4}, pruner={"name": "none"})
    )
    client.wait("parent", timeout_s=300)
    best = client.get_study("parent").best_trial
    lr = best.params["lr"].float_value
    units = best.params["units"].int_value
    client.refine_study("parent", "parent-refine", percent=10, n_trials=5)
    client.wait("parent-refine", timeout_s=300)
    trials = client.list_trials("parent-refine")
    assert len(trials) == 5
    for t in trials:
        assert lr / 1.1 - 1e-12 <= t.params["lr"].float_value <= lr * 1.1 + 1e-12
        assert abs(t.params["units"].int_value - units) <= 16  # one step of 16
    assert trials[0].params["lr"].float_value == pytest.approx(lr)  # starts from the best


def _recomputed_evaluation(
    trials: list[optuna.trial.FrozenTrial],
) -> tuple[dict[str, dict[str, tuple[float, float]]], list[float]]:
    """Per configuration, each test metric's (mean, sample std) over its seeds; and per seed,
    the test RMSE of the ranked configurations' averaged predictions. From the stored trials
    alone, without molhpo's evaluation code."""
    runs: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE, (t.number, t.user_attrs)
        runs.setdefault(str(t.user_attrs["eval_config"]), []).append(t)
    stats = {}
    for config, ts in runs.items():
        metrics = {m for t in ts for m in t.user_attrs["test_metrics"]}
        stats[config] = {
            m: (
                float(np.mean([t.user_attrs["test_metrics"][m] for t in ts])),
                float(np.std([t.user_attrs["test_metrics"][m] for t in ts], ddof=1)),
            )
            for m in metrics
        }
    ensemble = []
    for seed in sorted({int(t.user_attrs["eval_seed_index"]) for t in trials}):
        members = [
            t
            for t in trials
            if str(t.user_attrs["eval_config"]).startswith("rank-")
            and int(t.user_attrs["eval_seed_index"]) == seed
        ]
        truth = np.asarray(members[0].user_attrs["test_targets"], float)
        for t in members:  # every member predicted the same test molecules
            assert np.array_equal(np.asarray(t.user_attrs["test_targets"], float), truth)
        mean = np.mean([np.asarray(t.user_attrs["test_predictions"], float) for t in members], 0)
        ensemble.append(float(np.sqrt(np.mean((mean - truth) ** 2))))
    return stats, ensemble


def test_final_evaluation_report_and_predictions(
    client: MolhpoClient, stack: LocalStack, tmp_path: Path
) -> None:
    client.start_study(
        small("final", budget={"n_trials": 5, "max_epochs": 5}, pruner={"name": "none"})
    )
    client.wait("final", timeout_s=300)
    ev = client.evaluate_study("final", top_k=2, seeds=2)
    info = client.wait(ev.name, timeout_s=600)
    assert info.n_complete == 6  # (2 best + default) x 2 seeds
    report = client.get_report(ev.name)
    assert "## Final evaluation" in report.markdown
    assert "Ensemble of rank-1, rank-2" in report.markdown
    assert "Tuning cut test RMSE from" in report.markdown

    # The numbers, recomputed from the evaluation study's trials in the store.
    store = f"sqlite:///{stack.state_dir / 'studies.db'}"
    trials = optuna.load_study(study_name=ev.name, storage=store).trials
    listed = {t.number: t for t in client.list_trials(ev.name)}
    for t in trials:  # ListTrials tells the same test metrics as the store
        assert dict(listed[t.number].test.values) == pytest.approx(t.user_attrs["test_metrics"])
    stats, ensemble = _recomputed_evaluation(trials)
    assert sorted(stats) == ["default", "rank-1", "rank-2"]
    assert len(ensemble) == 2  # one ensemble per seed
    # The configurations are the parent's two best trials and the default one.
    parent = sorted(
        (t for t in client.list_trials("final") if t.state == common_pb2.TRIAL_STATE_COMPLETE),
        key=lambda t: t.value,
    )
    for rank in (1, 2):
        seeds = [t for t in trials if t.user_attrs["eval_config"] == f"rank-{rank}"]
        assert len(seeds) == 2 and seeds[0].params == seeds[1].params
        assert listed[seeds[0].number].params == parent[rank - 1].params, rank

    evaluation = json.loads(report.json)["evaluation"]
    by_config = {c["config"]: c for c in evaluation["configs"]}
    assert [c["config"] for c in evaluation["configs"]] == ["rank-1", "rank-2", "default"]
    for config, metrics in stats.items():
        got = by_config[config]
        assert got["n_runs"] == 2
        assert set(got["test_mean"]) == set(metrics)
        for m, (mean, std) in metrics.items():
            assert got["test_mean"][m] == pytest.approx(mean, rel=1e-9, abs=1e-12), (config, m)
            assert got["test_std"][m] == pytest.approx(std, rel=1e-9, abs=1e-12), (config, m)
    assert evaluation["ensemble_members"] == ["rank-1", "rank-2"]
    ens_mean, ens_std = float(np.mean(ensemble)), float(np.std(ensemble, ddof=1))
    assert evaluation["ensemble_rmse_mean"] == pytest.approx(ens_mean, rel=1e-9)
    assert evaluation["ensemble_rmse_std"] == pytest.approx(ens_std, rel=1e-9, abs=1e-12)
    # The Markdown table and sentences show the same numbers.
    for config in ("rank-1", "rank-2", "default"):
        cells = [
            f"{stats[config][m][0]:.4f} +/- {stats[config][m][1]:.4f}"
            for m in ("rmse", "mae", "r2")
        ]
        assert f"| {config} | 2 | " + " | ".join(cells) + " |" in report.markdown, config
    assert (
        f"Ensemble of rank-1, rank-2 (averaged predictions): test rmse {ens_mean:.4f} "
        f"+/- {ens_std:.4f}." in report.markdown
    )
    assert (
        f"Tuning cut test RMSE from {stats['default']['rmse'][0]:.4f} (default configuration) "
        f"to {stats['rank-1']['rmse'][0]:.4f}." in report.markdown
    )

    report = client.get_report("final")
    names = {p.name for p in report.plots}
    assert {"history.png", "intermediate.png", "predicted_vs_true.png"} <= names
    for plot in report.plots:
        assert plot.png[:8] == b"\x89PNG\r\n\x1a\n"
        image = matplotlib.image.imread(io.BytesIO(plot.png), format="png")
        assert image.shape[0] > 50 and image.shape[1] > 50
    assert '"' in report.best_params_json

    resp = client.predict("final", ["CCO", "c1ccccc1O"])
    assert len(resp.values) == 2 and resp.units == "kcal/mol"
    ens = client.predict("final", ["CCO"], top_k=2)
    assert len(ens.members) == 2
    assert ens.values[0] == pytest.approx(sum(m.values[0] for m in ens.members) / 2)
    with pytest.raises(InvalidArgument, match="C1CC"):
        client.predict("final", ["CCO", "C1CC"])


def test_race_reports_each_setup(client: MolhpoClient) -> None:
    base = small("race-base", budget={"n_trials": 4, "max_epochs": 4})
    from molhpo import studyfile

    req = study_pb2.StartRaceRequest(name="race", base=studyfile.from_dict(base))
    for label, sampler, pruner in [
        ("random", "random", "none"),
        ("random-hb", "random", "hyperband"),
    ]:
        e = req.entries.add(label=label)
        e.sampler.name = sampler
        e.pruner.name = pruner
    client.start_race(req)
    deadline = time.monotonic() + 600
    race = client.get_race("race")
    while not (race.finished and len(race.rows) == 2) and time.monotonic() < deadline:
        time.sleep(1.0)
        race = client.get_race("race")
    assert [r.label for r in race.rows] == ["random", "random-hb"]
    for r in race.rows:
        assert r.epochs > 0 and r.wall_seconds > 0 and r.trainer_seconds > 0
        assert "rmse" in r.best_test.values
    assert race.rows[0].epochs_to_target >= 0  # the first set-up reaches its own best


def test_delete_study(client: MolhpoClient, stack: LocalStack) -> None:
    client.start_study(small("doomed", pruner={"name": "none"}))
    with pytest.raises(FailedPrecondition):
        client.delete_study("doomed")
    client.wait("doomed", timeout_s=300)
    assert (stack.state_dir / "artifacts" / "doomed").is_dir()
    client.delete_study("doomed")
    with pytest.raises(NotFound):
        client.get_study("doomed")
    assert not (stack.state_dir / "artifacts" / "doomed").exists()


def test_report_and_predict_commands(
    stack: LocalStack, client: MolhpoClient, tmp_path: Path
) -> None:
    import subprocess
    import sys

    client.start_study(small("cli", pruner={"name": "none"}))
    client.wait("cli", timeout_s=300)
    base = [sys.executable, "-m", "molhpo"]
    where = ["--coordinator", stack.coordinator_address]
    out = tmp_path / "rep"
    done = subprocess.run(
        [*base, "report", "cli", *where, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert {"report.md", "report.json", "best_params.json", "history.png"} <= {
        p.name for p in out.iterdir()
    }
    done = subprocess.run(
        [*base, "predict", "cli", "CCO", "c1ccccc1", *where],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CCO" in done.stdout and "kcal/mol" in done.stdout
    done = subprocess.run(
        [*base, "predict", "cli", "C1CC", *where],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 2
    assert "INVALID_ARGUMENT" in done.stderr and "C1CC" in done.stderr
