"""The molhpo command line: parsing, server flags mirroring settings, and `molhpo list`."""

from __future__ import annotations

import argparse

import pytest
from pydantic import BaseModel

from coordinator.optimizer.pruners import PRUNERS
from coordinator.optimizer.samplers import SAMPLERS
from coordinator.settings import CoordinatorSettings
from molhpo import cli
from molhpo.contract import catalogue
from molhpo.local import free_port
from trainer.settings import TrainerSettings

SERVERS: list[tuple[str, type[BaseModel], str]] = [
    ("coordinator", CoordinatorSettings, "MOLHPO_COORDINATOR_"),
    ("trainer", TrainerSettings, "MOLHPO_TRAINER_"),
]


# `molhpo list` asks the coordinator first: this address has none, so it lists the catalogue
# (tests/service/test_list_capabilities.py asks a real one).
NO_COORDINATOR = ("--coordinator", f"127.0.0.1:{free_port()}")


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide output so help text and tables do not fold names."""
    monkeypatch.setenv("COLUMNS", "200")


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _sample_value(model: type[BaseModel], field: str) -> tuple[str, object]:
    """A command-line string for the field and what argparse should turn it into."""
    ann = model.model_fields[field].annotation
    if ann is int:
        return "7", 7
    if ann is float:
        return "1.5", 1.5
    return "some-value", "some-value"


@pytest.mark.parametrize("what", ["models", "datasets", "samplers", "pruners"])
def test_list_commands_parse(what: str) -> None:
    args = cli.build_parser().parse_args(["list", what])
    assert args.command == "list"
    assert args.what == what
    assert args.fn is cli.cmd_list


def test_list_of_unknown_thing_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["list", "trainers"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_a_command_is_required() -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args([])
    assert exit_.value.code == 2


def test_study_start_parses_file_name_and_watch() -> None:
    args = cli.build_parser().parse_args(
        ["study", "start", "examples/freesolv_gin.yaml", "--name", "n1", "--watch"]
    )
    assert (args.study_command, args.file, args.name, args.watch) == (
        "start",
        "examples/freesolv_gin.yaml",
        "n1",
        True,
    )
    assert args.coordinator is None
    assert args.fn is cli.cmd_study_start


def test_study_stop_parses_cancel_and_coordinator() -> None:
    args = cli.build_parser().parse_args(
        ["study", "stop", "s1", "--cancel", "--coordinator", "10.0.0.1:50051"]
    )
    assert (args.name, args.cancel, args.coordinator) == ("s1", True, "10.0.0.1:50051")
    assert args.fn is cli.cmd_study_stop


def test_up_and_demo_have_defaults() -> None:
    up = cli.build_parser().parse_args(["up"])
    assert (up.trainers, up.slots, up.state_dir, up.listen) == (2, 1, ".molhpo", "127.0.0.1:50051")
    demo = cli.build_parser().parse_args(["demo", "--trainers", "3"])
    assert (demo.study, demo.trainers) == ("examples/freesolv_gin.yaml", 3)


@pytest.mark.parametrize(("command", "model", "prefix"), SERVERS)
def test_server_flags_default_to_none_so_settings_fill_them(
    command: str, model: type[BaseModel], prefix: str
) -> None:
    args = cli.build_parser().parse_args([command])
    for field in model.model_fields:
        assert getattr(args, field) is None, field


@pytest.mark.parametrize(("command", "model", "prefix"), SERVERS)
def test_every_settings_field_has_a_server_flag(
    command: str, model: type[BaseModel], prefix: str
) -> None:
    for field in model.model_fields:
        text, expected = _sample_value(model, field)
        args = cli.build_parser().parse_args([command, _flag(field), text])
        assert getattr(args, field) == expected, field
        assert type(getattr(args, field)) is type(expected), field


@pytest.mark.parametrize(("command", "model", "prefix"), SERVERS)
def test_server_flag_help_names_the_environment_variable(
    command: str, model: type[BaseModel], prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for field in model.model_fields:
        assert _flag(field) in out, field
        assert f"env {prefix}{field.upper()}" in out, field


@pytest.mark.parametrize(("command", "model", "prefix"), SERVERS)
def test_server_flag_help_is_attached_to_its_own_flag(
    command: str, model: type[BaseModel], prefix: str
) -> None:
    parser = argparse.ArgumentParser()
    cli._add_settings_flags(parser, model, prefix)
    by_dest = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(by_dest) == set(model.model_fields)
    for field, info in model.model_fields.items():
        action = by_dest[field]
        assert action.option_strings == [_flag(field)]
        assert action.help is not None
        assert f"env {prefix}{field.upper()};" in action.help
        assert str(info.description) in action.help


def test_settings_env_prefixes_match_the_flag_help() -> None:
    assert CoordinatorSettings.model_config["env_prefix"] == "MOLHPO_COORDINATOR_"
    assert TrainerSettings.model_config["env_prefix"] == "MOLHPO_TRAINER_"


def test_list_models_prints_every_family_and_hyperparameter(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["list", "models", *NO_COORDINATOR]) == 0
    out = capsys.readouterr().out
    for fam in catalogue.MODELS.values():
        assert f"{fam.name}: " in out
        for hp in fam.hyperparameters:
            assert hp.name in out, (fam.name, hp.name)
    for hp in catalogue.TRAINING_HYPERPARAMETERS:
        assert hp.name in out


def test_list_datasets_prints_every_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "datasets", *NO_COORDINATOR]) == 0
    out = capsys.readouterr().out
    for ds in catalogue.DATASETS.values():
        assert ds.name in out
        assert str(ds.size) in out


def test_list_samplers_prints_every_sampler_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "samplers", *NO_COORDINATOR]) == 0
    out = capsys.readouterr().out
    for name, comp in SAMPLERS.items():
        assert name in out
        for opt in comp.options.model_fields:
            assert opt in out, (name, opt)


def test_list_pruners_prints_every_pruner_and_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["list", "pruners", *NO_COORDINATOR]) == 0
    out = capsys.readouterr().out
    for name, comp in PRUNERS.items():
        assert name in out
        for opt in comp.options.model_fields:
            assert opt in out, (name, opt)


@pytest.mark.parametrize("what", ["models", "datasets", "samplers", "pruners"])
def test_list_without_a_coordinator_says_so_in_one_line(
    what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["list", what, *NO_COORDINATOR]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"no coordinator answered at {NO_COORDINATOR[1]} (UNAVAILABLE); "
        "listing this installation's catalogue"
    ]
    assert out.strip()


def test_list_finds_the_coordinator_as_other_client_commands_do(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOLHPO_ADDRESS", NO_COORDINATOR[1])
    assert cli.main(["list", "datasets"]) == 0
    assert f"no coordinator answered at {NO_COORDINATOR[1]}" in capsys.readouterr().err
