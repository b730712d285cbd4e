"""How many CPUs this process may use, for sizing torch's thread pool.

``os.cpu_count()`` is the node's core count. A container limited to 2 CPUs on a 64-core node
that starts 64 threads per slot gets throttled by the kernel's CFS quota: the threads run for
a few milliseconds, then all wait out the rest of every 100 ms period. What a process may use
is the smallest of: the cores of its CPU affinity mask (cpusets), and its cgroup's CPU quota,
``cpu.max`` under cgroup v2 ("200000 100000": 2 CPUs; "max 100000": no limit), or
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under cgroup v1 (quota -1: no limit). Kubernetes
turns a container's CPU limit into exactly this quota.

The parsing functions take the files' contents and return values; ``read_cpu_quota`` and
``usable_cpus`` are the thin I/O around them. The trainer sizes its threads with them, and the
local launcher (``molhpo/local.py``) its trainers' slots and threads, so they live outside both
services and import neither.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
_V1_FOLDERS = ("cpu", "cpu,cpuacct", "cpuacct,cpu", ".")
"""Where cgroup v1 mounts the cpu controller, relative to CGROUP_ROOT."""


def cgroup_v2_quota(cpu_max: str) -> float | None:
    """CPUs allowed by the contents of a cgroup v2 ``cpu.max`` file ("$QUOTA $PERIOD", both
    in microseconds; quota "max" means no limit); None when unlimited or unreadable."""
    parts = cpu_max.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_v1_quota(cfs_quota_us: str, cfs_period_us: str) -> float | None:
    """CPUs allowed by the contents of cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``
    (quota -1 means no limit); None when unlimited or unreadable."""
    try:
        quota, period = int(cfs_quota_us.strip()), int(cfs_period_us.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cpus_allowed(cores: int, quota: float | None) -> int:
    """Whole CPUs a process may keep busy: ``cores`` (its affinity mask), capped by ``quota``
    CPUs (rounded down: a thread beyond the quota only waits), at least 1."""
    allowed = max(cores, 1)
    if quota is not None:
        allowed = min(allowed, max(math.floor(quota), 1))
    return allowed


def threads_per_slot(setting: int, slots: int, cpus: int) -> int:
    """Torch intra-op threads of each trial: ``setting`` when set (> 0), else the usable CPUs
    shared among the ``slots`` trials that run at once (at least 1)."""
    if setting > 0:
        return setting
    return max(cpus // max(slots, 1), 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def read_cpu_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup, v2 first, then v1; None when there is none."""
    cpu_max = _read(root / "cpu.max")
    if cpu_max is not None:
        return cgroup_v2_quota(cpu_max)
    for folder in _V1_FOLDERS:
        quota = _read(root / folder / "cpu.cfs_quota_us")
        period = _read(root / folder / "cpu.cfs_period_us")
        if quota is not None and period is not None:
            return cgroup_v1_quota(quota, period)
    return None


def usable_cpus(root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may keep busy: its affinity mask's cores capped by its cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity masks on this platform
        cores = os.cpu_count() or 1
    quota = read_cpu_quota(root)
    allowed = cpus_allowed(cores, quota)
    log.debug("usable CPUs: %d (cores %d, cgroup quota %s)", allowed, cores, quota)
    return allowed
