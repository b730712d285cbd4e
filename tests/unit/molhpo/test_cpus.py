"""CPUs a trainer may use: cgroup quotas (v2 and v1), affinity, threads per slot."""

from __future__ import annotations

from pathlib import Path

import pytest

from molhpo.cpus import (
    cgroup_v1_quota,
    cgroup_v2_quota,
    cpus_allowed,
    read_cpu_quota,
    threads_per_slot,
)


@pytest.mark.parametrize(
    ("contents", "cpus"),
    [
        ("max 100000\n", None),
        ("200000 100000\n", 2.0),
        ("150000 100000", 1.5),
        ("50000 100000", 0.5),
        ("400000", 4.0),  # period omitted: the kernel's default 100 ms
        ("", None),
        ("garbage here", None),
        ("0 100000", None),
    ],
)
def test_cgroup_v2_cpu_max(contents: str, cpus: float | None) -> None:
    assert cgroup_v2_quota(contents) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [
        ("-1\n", "100000\n", None),
        ("300000\n", "100000\n", 3.0),
        ("25000", "50000", 0.5),
        ("x", "100000", None),
        ("100000", "0", None),
    ],
)
def test_cgroup_v1_cfs_quota(quota: str, period: str, cpus: float | None) -> None:
    assert cgroup_v1_quota(quota, period) == cpus


@pytest.mark.parametrize(
    ("cores", "quota", "allowed"),
    [(64, None, 64), (64, 2.0, 2), (64, 2.9, 2), (64, 0.5, 1), (4, 16.0, 4), (0, None, 1)],
)
def test_the_quota_caps_the_cores(cores: int, quota: float | None, allowed: int) -> None:
    assert cpus_allowed(cores, quota) == allowed


@pytest.mark.parametrize(
    ("setting", "slots", "cpus", "threads"),
    [(0, 1, 2, 2), (0, 4, 2, 1), (0, 2, 16, 8), (3, 4, 2, 3), (0, 3, 8, 2)],
)
def test_threads_per_slot(setting: int, slots: int, cpus: int, threads: int) -> None:
    assert threads_per_slot(setting, slots, cpus) == threads


def test_a_64_core_node_with_a_2_cpu_limit_gives_a_slot_2_threads(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert threads_per_slot(0, 1, cpus_allowed(64, read_cpu_quota(tmp_path))) == 2


def test_cgroup_v1_files_are_found_where_v1_mounts_them(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert read_cpu_quota(tmp_path) == 1.5


def test_v2_wins_over_v1_and_no_files_mean_no_quota(tmp_path: Path) -> None:
    assert read_cpu_quota(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    (tmp_path / "cpu.max").write_text("max 100000")
    assert read_cpu_quota(tmp_path) is None
