"""The start-up checks' pure parts: addresses, URL redaction, ports, folders, dataset roots."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from coordinator.settings import CoordinatorSettings
from molhpo.startup_checks import (
    dataset_roots_problem,
    folder_problem,
    listen_problem,
    redact_url,
    setting_error,
    split_address,
)
from trainer.settings import TrainerSettings


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9000", ("::1", 9000)),
        ("molhpo-coordinator:50051", ("molhpo-coordinator", 50051)),
    ],
)
def test_split_address_reads_host_and_port(value: str, expected: tuple[str, int]) -> None:
    assert split_address(value) == expected


@pytest.mark.parametrize("value", ["", "50051", ":50051", "host:", "host:http", "h:70000", "a b:1"])
def test_split_address_refuses_what_is_no_address(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_address(value)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_setting_error_names_setting_flag_env_and_value() -> None:
    err = setting_error(CoordinatorSettings, "lease_s", -1, "must be > 0")
    assert str(err) == "lease_s (--lease-s, env MOLHPO_COORDINATOR_LEASE_S) = '-1': must be > 0"


def test_listen_problem_sees_a_port_in_use_and_a_foreign_address() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert "already in use" in (listen_problem("127.0.0.1", port) or "")
    assert listen_problem("127.0.0.1", 0) is None
    assert "no address of this machine" in (listen_problem("192.0.2.1", 0) or "")
    assert "cannot resolve" in (listen_problem("no-such-host.invalid", 0) or "")


def test_folder_problem_makes_missing_folders_and_refuses_files(tmp_path: Path) -> None:
    assert folder_problem(tmp_path / "a" / "b", create=True) is None
    assert (tmp_path / "a" / "b").is_dir()
    assert "no such folder" in (folder_problem(tmp_path / "c", create=False) or "")
    (tmp_path / "f").write_text("")
    assert "is a file" in (folder_problem(tmp_path / "f", create=True) or "")


def test_dataset_roots_must_all_be_folders(tmp_path: Path) -> None:
    assert dataset_roots_problem((tmp_path,)) is None
    assert "does not exist" in (dataset_roots_problem((tmp_path, tmp_path / "x")) or "")
    assert "at least one" in (dataset_roots_problem(()) or "")


@pytest.mark.parametrize(
    ("field", "value"),
    [("listen", "50052"), ("coordinator", "host"), ("advertise", "pod"), ("device", "gpu")],
)
def test_trainer_settings_refuse_bad_formats(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        kwargs: dict[str, Any] = {field: value}
        TrainerSettings(**kwargs)


def test_trainer_settings_take_good_values() -> None:
    s = TrainerSettings(listen="0.0.0.0:50052", advertise="", device="cuda:1", coordinator="c:1")
    assert s.device == "cuda:1"
