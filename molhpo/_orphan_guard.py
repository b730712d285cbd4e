"""Run a command that dies with its parent: ``python -m molhpo._orphan_guard PARENT_PID CMD...``.

The local stack starts its children through this small, single-threaded process: it asks the
kernel (Linux PR_SET_PDEATHSIG, kept across exec) to send SIGTERM when the parent dies, checks
the parent is still there, then replaces itself with the command. Doing the same in a
``preexec_fn`` is unsafe when the parent has threads (the forked child can deadlock before
exec), which the launcher and its tests do.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    """Arm the parent-death signal, then exec the command."""
    if len(argv) < 2:
        print("usage: python -m molhpo._orphan_guard PARENT_PID COMMAND [ARGS...]", file=sys.stderr)
        return 2
    parent = int(argv[0])
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        return 1  # the parent died before the signal was armed: do not start orphaned
    os.execvp(argv[1], argv[1:])
    return 127  # execvp does not return


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
